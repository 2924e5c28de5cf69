//! The Helm chart, checked by what each test file looks at: `role` (the Role is the code's
//! rules, namespaced and narrow), `values` (every value documented, upgrades restart the pod,
//! names required), `schema` (values.schema.json refuses typos and bad values), `lint`
//! (`helm lint --strict`, Chart.yaml), `rendering` (the chart rendered with the default values,
//! the values files of `ci/` and `--set` variations, checked as typed objects that fit
//! together), `notes` (NOTES.txt and the credentials it speaks of) and `monitoring` (the
//! ServiceMonitor, PrometheusRule and Grafana dashboard).
//!
//! Here, the machinery they share: helm itself renders the chart (`helm template`;
//! scripts/tools puts helm into target/tools); every object passes `kubernetes-validate
//! --strict` against the schemas of Kubernetes 1.24 (the chart's minimum), 1.29 and 1.33 (it has
//! none for the custom resources of kube-prometheus-stack: `monitoring` checks those) and is
//! typed; [`check`] then checks what must hold whatever the values: the Role has exactly
//! `cluster::rbac::policy_rules()` and is bound to the pod's ServiceAccount, the Deployment is a
//! single non-root writer with probes on the port the Service targets, every volume, Secret,
//! ConfigMap and claim it names exists (or is one the values name as existing), the ConfigMap's
//! config.toml is one the service loads, pointing at the files mounted, and the `helm test` pod
//! runs the image's client against the Service.

mod lint;
mod monitoring;
mod notes;
mod rendering;
mod role;
mod schema;
mod values;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use axum::http::{HeaderMap, HeaderValue, header};
use clap::Parser;
use etcd_repopulator::{
    api::auth::{Authenticator, Role as AuthRole, TokenSet},
    cli::{Cli, Command as CliCommand, ServicesCommand},
    cluster::rbac::{self, Permission},
    config::{AuthMode, Config},
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{
            ConfigMap, Container, PersistentVolumeClaim, Pod, PodSpec, Secret, Service,
            ServiceAccount, Volume,
        },
        rbac::v1::{Role, RoleBinding, Subject},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

fn chart_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("charts/etcd-repopulator")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// The chart rendered by helm (`helm template`, target/tools/bin/helm from scripts/tools), each
// object validated strictly against Kubernetes' schemas, then checked as a typed object.

const CHART: &str = "charts/etcd-repopulator";

/// The Kubernetes versions every rendered object is validated against: the chart's minimum
/// (Chart.yaml's kubeVersion), one between, and the newest of kubernetes-validate 1.33.1.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.24.0", "1.29.0", "1.33.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/tools/bin, with helm and kubernetes-validate: scripts/tools fetches them the first
/// time and finds them afterwards.
fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let output = Command::new("bash")
            .arg(root().join("scripts/tools"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run `bash scripts/tools`: {e}"));
        assert!(
            output.status.success(),
            "scripts/tools could not provide helm and kubernetes-validate ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).expect("UTF-8").trim())
    })
}

/// Runs `tool` of target/tools/bin in the repository's root.
fn run_tool(tool: &str, args: &[&str]) -> Output {
    Command::new(tools().join(tool))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

/// `helm template` of `chart` for `release` with `values` (more helm arguments: `--values FILE`,
/// `--set-json PATH=JSON`, ...): the rendered stream, or helm's error. A warning fails the test.
fn helm_template_of(chart: &str, release: Release, values: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "template",
        release.name,
        chart,
        "--namespace",
        release.namespace,
    ];
    args.extend_from_slice(values);
    let output = run_tool("helm", &args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(stderr);
    }
    assert!(
        stderr.is_empty(),
        "helm template {values:?} warned:\n{stderr}"
    );
    Ok(String::from_utf8(output.stdout).expect("the rendered chart is UTF-8"))
}

fn helm_template(release: Release, values: &[&str]) -> String {
    helm_template_of(CHART, release, values)
        .unwrap_or_else(|stderr| panic!("helm template {values:?} failed:\n{stderr}"))
}

/// Validates every object of `yaml` against the schemas of each of [`KUBERNETES_VERSIONS`],
/// strictly: an unknown or misplaced field fails too.
fn validate(yaml: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let path = file.path().to_str().expect("UTF-8 path");
    for version in KUBERNETES_VERSIONS {
        let output = run_tool(
            "kubernetes-validate",
            &["--strict", "--quiet", "--kubernetes-version", version, path],
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && printed.trim().is_empty(),
            "not valid Kubernetes {version} objects:\n{printed}\n{yaml}"
        );
    }
}

/// The stream without the documents of kube-prometheus-stack's custom resources, for which
/// kubernetes-validate has no schema (it would warn).
fn without_custom_resources(yaml: &str) -> String {
    yaml.split("---\n")
        .filter(|document| !document.contains("\napiVersion: monitoring.coreos.com/"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The documents of a YAML stream as Kubernetes reads them (YAML 1.1: `0400` is octal).
fn yaml_documents(yaml: &str) -> Vec<serde_json::Value> {
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    serde_saphyr::from_multiple_with_options(yaml, options)
        .unwrap_or_else(|e| panic!("helm's output does not parse: {e}\n{yaml}"))
}

#[derive(Clone, Copy)]
struct Release {
    name: &'static str,
    namespace: &'static str,
}

/// The rendered documents as typed objects, and their kinds and metadata in output order.
#[derive(Default)]
struct Rendered {
    kinds: Vec<String>,
    metadata: Vec<(String, ObjectMeta)>,
    service_accounts: Vec<ServiceAccount>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    claims: Vec<PersistentVolumeClaim>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    /// The `helm test` pod.
    pods: Vec<Pod>,
    /// The custom resources of kube-prometheus-stack (ServiceMonitor, PrometheusRule), which
    /// k8s-openapi has no type for.
    monitoring: Vec<serde_json::Value>,
}

/// Renders the chart for `release` with `values`, validates every object against Kubernetes'
/// schemas and types it.
fn render(release: Release, values: &[&str]) -> Rendered {
    let yaml = helm_template(release, values);
    validate(&without_custom_resources(&yaml));
    let mut rendered = Rendered::default();
    for document in &yaml_documents(&yaml) {
        let kind = document["kind"].as_str().unwrap_or_else(|| {
            panic!("a document without a kind (empty or only comments?): {document}")
        });
        match kind {
            "ServiceAccount" => rendered.service_accounts.push(typed(document)),
            "Secret" => rendered.secrets.push(typed(document)),
            "ConfigMap" => rendered.config_maps.push(typed(document)),
            "PersistentVolumeClaim" => rendered.claims.push(typed(document)),
            "Role" => rendered.roles.push(typed(document)),
            "RoleBinding" => rendered.role_bindings.push(typed(document)),
            "Service" => rendered.services.push(typed(document)),
            "Deployment" => rendered.deployments.push(typed(document)),
            "Pod" => rendered.pods.push(typed(document)),
            "ServiceMonitor" | "PrometheusRule" => rendered.monitoring.push(document.clone()),
            other => panic!("the chart rendered an unexpected {other}: {document}"),
        }
        rendered.kinds.push(kind.to_owned());
        let metadata = serde_json::from_value(document["metadata"].clone()).expect("metadata");
        rendered.metadata.push((kind.to_owned(), metadata));
    }
    rendered
}

/// `document` as a `T`: its apiVersion and kind must be `T`'s, and it must have no field `T`
/// does not know (a misspelled or misplaced key would be dropped, so the object would not
/// serialize back to the same JSON).
fn typed<T: DeserializeOwned + Serialize>(document: &serde_json::Value) -> T {
    let type_name = std::any::type_name::<T>();
    let object: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("not a valid {type_name}: {e}\n{document:#}"));
    let back = serde_json::to_value(&object).expect("serializes");
    let mut differences = Vec::new();
    json_differences(document, &back, "", &mut differences);
    assert!(
        differences.is_empty(),
        "fields a {type_name} does not have (misspelled or misplaced): {differences:?}\n{document:#}"
    );
    object
}

fn json_differences(
    rendered: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                let path = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => json_differences(x, y, &path, out),
                    (Some(_), None) => out.push(format!("{path} is dropped")),
                    (None, Some(_)) => out.push(format!("{path} appears")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_differences(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} becomes {b}")),
    }
}

/// What the values of one rendering say the release consists of.
struct Expected {
    release: Release,
    /// Name of the Deployment, Service, ConfigMap, Role and RoleBinding.
    fullname: String,
    /// The `app.kubernetes.io/name` label.
    name: &'static str,
    target_namespace: String,
    service_account: String,
    /// Whether the chart creates the ServiceAccount, auth Secret and claim, or the values name
    /// existing ones.
    creates_service_account: bool,
    auth_secret: String,
    creates_auth_secret: bool,
    /// The files of the auth Secret mounted (`tokens`, `webhook-hmac-key`) and their keys.
    auth_items: BTreeMap<&'static str, &'static str>,
    claim: String,
    creates_claim: bool,
    rbac: bool,
    /// The SSH Secret, its private key's key, and its known_hosts key, when one is mounted.
    ssh: Option<(&'static str, &'static str, Option<&'static str>)>,
    /// The etcd TLS Secret and its CA, client certificate and key keys, when one is mounted.
    etcd_tls: Option<(&'static str, &'static str, &'static str, &'static str)>,
    /// The snapshotter PVC mounted at /snapshots, if any.
    snapshotter: Option<&'static str>,
    /// The Secret with the S3 credentials of the backups, if one is mounted.
    s3_secret: Option<&'static str>,
    service_port: i32,
    /// The Secret and key of the `helm test` pod's token, if it has one.
    test_token: Option<(String, &'static str)>,
}

impl Expected {
    /// What the chart's default values give for `release` when its resources are named
    /// `fullname`.
    fn defaults(release: Release, fullname: &str) -> Expected {
        Expected {
            release,
            fullname: fullname.to_owned(),
            name: "etcd-repopulator",
            target_namespace: "services".to_owned(),
            service_account: fullname.to_owned(),
            creates_service_account: true,
            auth_secret: format!("{fullname}-auth"),
            creates_auth_secret: true,
            auth_items: BTreeMap::from([("tokens", "tokens")]),
            claim: fullname.to_owned(),
            creates_claim: true,
            rbac: true,
            ssh: None,
            etcd_tls: None,
            snapshotter: None,
            s3_secret: None,
            service_port: 8080,
            test_token: None,
        }
    }
}

/// A snapshotter directory of one cluster (`/snapshots/<sts>/`).
const STS_DIR: &str = "cray-bss-bitnami-etcd";

const ARGS: [&str; 5] = [
    "serve",
    "--config",
    "/etc/etcd-repopulator/config.toml",
    "--database",
    "/var/lib/etcd-repopulator/runs.db",
];

/// The recommended labels every object carries (Kubernetes' "Recommended Labels", and helm's).
const RECOMMENDED_LABELS: [&str; 7] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

/// Renders the chart with `values` for `expected.release` and checks it against `expected`.
fn render_and_check(expected: &Expected, values: &[&str]) -> (Rendered, Config) {
    let rendered = render(expected.release, values);
    let config = check(&rendered, expected);
    (rendered, config)
}

/// Whether `selector` selects an object labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Checks what must hold whatever the values, and returns the service's configuration as it
/// Checks what must hold whatever the values, and returns the service's configuration as it
/// loads the rendered config.toml.
fn check(rendered: &Rendered, expected: &Expected) -> Config {
    check_objects(rendered, expected);
    let server = check_deployment(rendered, expected);
    let service_selector = check_service(rendered, expected, &server);
    check_rbac_objects(rendered, expected);
    check_volumes(rendered, expected, &server);
    let config = check_config(rendered, expected, &server);
    check_auth(rendered, expected, &server, &config);
    check_mounted_secrets(expected, &server, &config);
    check_backups(expected, &server, &config);
    check_claim(rendered, expected);
    check_test_pod(rendered, expected, server.container, &service_selector);
    config
}

/// The service's pod as the Deployment runs it.
struct ServerPod<'a> {
    pod: &'a PodSpec,
    container: &'a Container,
    labels: BTreeMap<String, String>,
    /// Its container's named ports.
    ports: BTreeMap<String, i32>,
    volumes: BTreeMap<&'a str, &'a Volume>,
}

/// Which objects, and that each is the release's.
fn check_objects(rendered: &Rendered, expected: &Expected) {
    // Which objects, in helm's install order, hooks last.
    let mut kinds = Vec::new();
    if expected.creates_service_account {
        kinds.push("ServiceAccount");
    }
    if expected.creates_auth_secret {
        kinds.push("Secret");
    }
    kinds.push("ConfigMap");
    if expected.creates_claim {
        kinds.push("PersistentVolumeClaim");
    }
    if expected.rbac {
        kinds.extend(["Role", "RoleBinding"]);
    }
    kinds.extend(["Service", "Deployment", "Pod"]);
    assert_eq!(rendered.kinds, kinds);

    // Every object is the release's, carries the recommended labels, and only the RBAC objects
    // leave its namespace.
    for (kind, meta) in &rendered.metadata {
        let labels = meta.labels.clone().unwrap_or_default();
        let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(RECOMMENDED_LABELS), "{kind}");
        let component = if kind == "Pod" { "test" } else { "server" };
        for (key, value) in [
            ("app.kubernetes.io/name", expected.name),
            ("app.kubernetes.io/instance", expected.release.name),
            ("app.kubernetes.io/version", "0.1.0"),
            ("app.kubernetes.io/component", component),
            ("app.kubernetes.io/part-of", expected.name),
            ("app.kubernetes.io/managed-by", "Helm"),
            ("helm.sh/chart", "etcd-repopulator-0.1.0"),
        ] {
            assert_eq!(labels[key], value, "{kind} {key}");
        }
        let namespace = matches!(kind.as_str(), "Role" | "RoleBinding")
            .then_some(expected.target_namespace.as_str());
        assert_eq!(meta.namespace.as_deref(), namespace, "{kind}");
    }
}

fn check_deployment<'a>(rendered: &'a Rendered, expected: &Expected) -> ServerPod<'a> {
    // The Deployment: one non-root writer, its pod labelled like the Deployment.
    let deployment = &rendered.deployments[0];
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some(expected.fullname.as_str())
    );
    let spec = deployment.spec.as_ref().expect("Deployment spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
    let selector = spec.selector.match_labels.clone().expect("matchLabels");
    let pod_meta = spec.template.metadata.as_ref().expect("pod metadata");
    let pod_labels = pod_meta.labels.clone().unwrap_or_default();
    assert_eq!(Some(&pod_labels), deployment.metadata.labels.as_ref());
    assert!(selects(&selector, &pod_labels));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(expected.service_account.as_str())
    );
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid != 0));
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    assert_eq!(container.args.as_deref(), Some(&ARGS.map(String::from)[..]));
    check_container_security(container);
    let resources = container.resources.as_ref().expect("resources");
    for (what, quantities) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let quantities = quantities.clone().unwrap_or_default();
        for resource in ["cpu", "memory"] {
            assert!(quantities.contains_key(resource), "no {resource} {what}");
        }
    }
    let pod_name = container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "POD_NAME")
        .expect("env POD_NAME");
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .and_then(|source| source.field_ref.as_ref())
            .map(|field| field.field_path.as_str()),
        Some("metadata.name")
    );
    let ports: BTreeMap<String, i32> = container
        .ports
        .iter()
        .flatten()
        .map(|port| (port.name.clone().expect("named port"), port.container_port))
        .collect();
    assert_eq!(ports, BTreeMap::from([("http".to_owned(), 8080)]));
    for (what, probe, path) in [
        ("startup", &container.startup_probe, "/healthz"),
        ("liveness", &container.liveness_probe, "/healthz"),
        ("readiness", &container.readiness_probe, "/readyz"),
    ] {
        let probe = probe.as_ref().unwrap_or_else(|| panic!("no {what} probe"));
        let get = probe
            .http_get
            .as_ref()
            .unwrap_or_else(|| panic!("the {what} probe is not HTTP"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("http".to_owned()));
        assert!(
            probe.timeout_seconds.is_some_and(|s| s > 0),
            "the {what} probe has no timeoutSeconds"
        );
    }

    let volumes = pod
        .volumes
        .iter()
        .flatten()
        .map(|volume| (volume.name.as_str(), volume))
        .collect();
    ServerPod {
        pod,
        container,
        labels: pod_labels,
        ports,
        volumes,
    }
}

/// Returns the Service's selector.
fn check_service(
    rendered: &Rendered,
    expected: &Expected,
    server: &ServerPod<'_>,
) -> BTreeMap<String, String> {
    let (pod_labels, ports) = (&server.labels, &server.ports);
    // The Service sends to that port of those pods (and not to the test pod).
    let service = &rendered.services[0];
    assert_eq!(
        service.metadata.name.as_deref(),
        Some(expected.fullname.as_str())
    );
    let service_spec = service.spec.as_ref().expect("Service spec");
    let service_selector = service_spec.selector.clone().expect("Service selector");
    assert!(selects(&service_selector, pod_labels));
    let service_ports = service_spec.ports.as_deref().expect("Service ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(service_ports[0].port, expected.service_port);
    match &service_ports[0].target_port {
        Some(IntOrString::String(name)) => assert!(ports.contains_key(name), "{name}"),
        other => panic!("targetPort {other:?} is not a named container port"),
    }

    service_selector
}

fn check_rbac_objects(rendered: &Rendered, expected: &Expected) {
    // RBAC: exactly the code's rules, in the services' namespace, for the pod's account.
    if expected.rbac {
        let role = &rendered.roles[0];
        assert_eq!(
            role.metadata.name.as_deref(),
            Some(expected.fullname.as_str())
        );
        assert_eq!(role.rules, Some(rbac::policy_rules()));
        let binding = &rendered.role_bindings[0];
        assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
        assert_eq!(binding.role_ref.kind, "Role");
        assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
        assert_eq!(
            binding.subjects,
            Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: expected.service_account.to_owned(),
                namespace: Some(expected.release.namespace.to_owned()),
                api_group: None,
            }])
        );
    }
    if expected.creates_service_account {
        assert_eq!(
            rendered.service_accounts[0].metadata.name.as_deref(),
            Some(expected.service_account.as_str())
        );
    }
}

fn check_volumes(rendered: &Rendered, expected: &Expected, server: &ServerPod<'_>) {
    // Volumes: every mount has its volume, every volume is mounted, every object a volume
    // names is rendered or one the values say exists.
    let ServerPod {
        pod,
        container,
        volumes,
        ..
    } = server;
    assert_eq!(volumes.len(), pod.volumes.as_ref().map_or(0, Vec::len));
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    for mount in mounts {
        assert!(
            volumes.contains_key(mount.name.as_str()),
            "volumeMount {} has no volume",
            mount.name
        );
    }
    for name in volumes.keys() {
        assert!(
            mounts.iter().any(|mount| mount.name == *name),
            "volume {name} is not mounted"
        );
    }
    let mut external_secrets = BTreeSet::new();
    if !expected.creates_auth_secret {
        external_secrets.insert(expected.auth_secret.as_str());
    }
    if let Some((secret, _, _)) = expected.ssh {
        external_secrets.insert(secret);
    }
    if let Some((secret, _, _, _)) = expected.etcd_tls {
        external_secrets.insert(secret);
    }
    if let Some(secret) = expected.s3_secret {
        external_secrets.insert(secret);
    }
    let mut secrets_mounted = BTreeSet::new();
    for volume in volumes.values() {
        if let Some(claim) = &volume.persistent_volume_claim
            && volume.name == "snapshots"
        {
            // CSM's snapshotter PVC, never the chart's.
            assert_eq!(Some(claim.claim_name.as_str()), expected.snapshotter);
            assert_eq!(claim.read_only, None);
        } else if let Some(claim) = &volume.persistent_volume_claim {
            assert_eq!(claim.claim_name, expected.claim);
            assert_eq!(
                rendered
                    .claims
                    .iter()
                    .any(|pvc| pvc.metadata.name.as_deref() == Some(expected.claim.as_str())),
                expected.creates_claim
            );
        } else if let Some(config_map) = &volume.config_map {
            let rendered_map = rendered
                .config_maps
                .iter()
                .find(|map| map.metadata.name.as_deref() == Some(&config_map.name))
                .unwrap_or_else(|| panic!("ConfigMap {} is not rendered", config_map.name));
            for item in config_map.items.iter().flatten() {
                assert!(
                    rendered_map
                        .data
                        .iter()
                        .flatten()
                        .any(|(k, _)| *k == item.key)
                );
            }
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().expect("secretName");
            secrets_mounted.insert(name);
            match rendered
                .secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
            {
                Some(rendered_secret) => {
                    let keys = secret_keys(rendered_secret);
                    for item in secret.items.iter().flatten() {
                        assert!(
                            keys.contains(&item.key),
                            "Secret {name} has no {}",
                            item.key
                        );
                    }
                }
                None => assert!(
                    external_secrets.contains(name),
                    "Secret {name} is neither rendered nor named by the values"
                ),
            }
        } else {
            let empty_dir = volume
                .empty_dir
                .as_ref()
                .unwrap_or_else(|| panic!("unexpected volume {volume:?}"));
            assert!(
                empty_dir.size_limit.is_some(),
                "{} has no sizeLimit",
                volume.name
            );
        }
    }
    assert_eq!(
        secrets_mounted.len(),
        usize::from(!expected.auth_items.is_empty())
            + usize::from(expected.ssh.is_some())
            + usize::from(expected.etcd_tls.is_some())
            + usize::from(expected.s3_secret.is_some()),
        "{secrets_mounted:?}"
    );

    // The paths the service writes to are writable volumes; the rest of / is read-only.
    for dir in ["/var/lib/etcd-repopulator", "/tmp"] {
        let (mount, _) = mount_of(container, Path::new(dir).join("file").as_path());
        assert_ne!(mount.read_only, Some(true), "{dir}");
    }
    let (data, _) = mount_of(container, Path::new(ARGS[4]));
    assert!(
        volumes[data.name.as_str()]
            .persistent_volume_claim
            .is_some()
    );
}

fn check_config(rendered: &Rendered, expected: &Expected, server: &ServerPod<'_>) -> Config {
    let (container, volumes) = (server.container, &server.volumes);
    // config.toml: the ConfigMap's, loadable by the service, the pod restarts when it changes.
    let config_map = &rendered.config_maps[0];
    assert_eq!(
        config_map.metadata.name.as_deref(),
        Some(expected.fullname.as_str())
    );
    let (volume, key) = file_source(container, volumes, Path::new(ARGS[2]));
    assert_eq!(
        volume.config_map.as_ref().map(|c| c.name.as_str()),
        config_map.metadata.name.as_deref()
    );
    let toml = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(&key))
        .unwrap_or_else(|| panic!("ConfigMap has no {key}"));
    let config = Config::from_toml(toml)
        .unwrap_or_else(|e| panic!("the service refuses the rendered config.toml: {e}\n{toml}"));
    assert_eq!(config.namespace, expected.target_namespace);
    // The drills' scratch directory is a writable emptyDir of bounded size.
    let (scratch, _) = mount_of(container, &config.drills.scratch_dir.join("drill-x"));
    assert_ne!(scratch.read_only, Some(true));
    let scratch = volumes[scratch.name.as_str()]
        .empty_dir
        .as_ref()
        .expect("the drills' scratch directory is an emptyDir");
    assert!(scratch.size_limit.is_some());
    let checksum = pod_annotation(rendered, "checksum/config").expect("checksum/config");
    // Over toToml's output, which ends with a newline that helm's trimming of the document's
    // end takes from the ConfigMap (TOML does not need it).
    let hashed = format!("{}\n", toml.trim_end_matches('\n'));
    assert_eq!(checksum, hex::encode(Sha256::digest(hashed.as_bytes())));
    assert_eq!(
        pod_annotation(rendered, "checksum/auth").is_some(),
        expected.creates_auth_secret
    );

    config
}

fn check_auth(rendered: &Rendered, expected: &Expected, server: &ServerPod<'_>, config: &Config) {
    let (container, volumes) = (server.container, &server.volumes);
    // The auth Secret: only the keys the configured modes read are mounted, at the files
    // config.toml names.
    match volumes.get("auth") {
        None => assert!(expected.auth_items.is_empty(), "no auth volume"),
        Some(volume) => {
            let secret = volume.secret.as_ref().expect("the auth volume is a Secret");
            assert_eq!(
                secret.secret_name.as_deref(),
                Some(expected.auth_secret.as_str())
            );
            let items: BTreeMap<&str, &str> = secret
                .items
                .iter()
                .flatten()
                .map(|item| (item.path.as_str(), item.key.as_str()))
                .collect();
            assert_eq!(items, expected.auth_items);
        }
    }
    let auth_files = [
        ("tokens", Some(config.auth.tokens_file.clone())),
        ("webhook-hmac-key", config.webhooks.hmac_key_file.clone()),
    ];
    for (item, file) in auth_files {
        match expected.auth_items.get(item) {
            Some(expected_key) => {
                let file = file.unwrap_or_else(|| panic!("config.toml names no {item} file"));
                let (volume, key) = file_source(container, volumes, &file);
                assert_eq!(volume.name, "auth");
                assert_eq!(key, *expected_key);
            }
            None if item == "tokens" => assert_ne!(config.auth.mode, AuthMode::Token),
            None => assert_eq!(file, None, "config.toml names a webhook key not mounted"),
        }
    }
    if let Some(secret) = rendered.secrets.first() {
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some(expected.auth_secret.as_str())
        );
        let mut keys: BTreeSet<String> = expected
            .auth_items
            .keys()
            .map(|key| (*key).to_owned())
            .collect();
        if expected.test_token.as_ref().map(|(s, _)| s) == Some(&expected.auth_secret) {
            keys.insert("test-token".to_owned());
        }
        assert_eq!(secret_keys(secret), keys);
    }
}

/// The SSH and etcd TLS Secrets, at the files config.toml names.
fn check_mounted_secrets(expected: &Expected, server: &ServerPod<'_>, config: &Config) {
    let ServerPod {
        pod,
        container,
        volumes,
        ..
    } = server;

    if let Some((ssh_secret, key_item, known_hosts_item)) = expected.ssh {
        let (volume, key) = file_source(container, volumes, &config.ssh.identity_file);
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some(ssh_secret)
        );
        assert_eq!(key, key_item);
        if let Some(known_hosts_item) = known_hosts_item {
            let (volume, key) = file_source(container, volumes, &config.ssh.known_hosts_file);
            assert_eq!(volume.name, volumes_of_secret(pod, ssh_secret));
            assert_eq!(key, known_hosts_item);
        }
    }

    if let Some((etcd_secret, ca_item, cert_item, key_item)) = expected.etcd_tls {
        let files = [
            (config.etcd.ca_file.clone(), ca_item),
            (config.etcd.cert_file.clone(), cert_item),
            (config.etcd.key_file.clone(), key_item),
        ];
        for (file, expected_key) in files {
            let file = file.expect("config.toml names every etcd TLS file");
            let (volume, key) = file_source(container, volumes, &file);
            assert_eq!(volume.name, volumes_of_secret(pod, etcd_secret));
            assert_eq!(key, expected_key);
        }
    } else {
        assert_eq!(config.etcd.ca_file, None);
    }
}

fn check_backups(expected: &Expected, server: &ServerPod<'_>, config: &Config) {
    let ServerPod {
        pod,
        container,
        volumes,
        ..
    } = server;

    // The backups: the snapshotter PVC at recovery.snapshots_dir, writable; the S3 Secret's
    // three keys at recovery.s3_credentials_dir.
    match expected.snapshotter {
        Some(claim) => {
            let dir = config.recovery.snapshots_dir.clone();
            let (mount, _) = mount_of(container, &dir.join(STS_DIR).join("db-x"));
            assert_ne!(mount.read_only, Some(true));
            let volume = volumes[mount.name.as_str()];
            assert_eq!(
                volume
                    .persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.as_str()),
                Some(claim)
            );
        }
        None => assert_eq!(config.recovery.snapshots_dir, Path::new("")),
    }
    match expected.s3_secret {
        Some(secret) => {
            for key in ["access_key", "secret_key", "http_s3_endpoint"] {
                let file = config.recovery.s3_credentials_dir.join(key);
                let (volume, item) = file_source(container, volumes, &file);
                assert_eq!(volume.name, volumes_of_secret(pod, secret));
                assert_eq!(item, key);
            }
        }
        None => assert_eq!(config.recovery.s3_credentials_dir, Path::new("")),
    }
}

fn check_claim(rendered: &Rendered, expected: &Expected) {
    if expected.creates_claim {
        let claim = &rendered.claims[0];
        assert_eq!(
            claim.metadata.name.as_deref(),
            Some(expected.claim.as_str())
        );
        let keep = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("helm.sh/resource-policy"));
        assert_eq!(keep.map(String::as_str), Some("keep"));
        let claim_spec = claim.spec.as_ref().expect("PVC spec");
        assert_eq!(
            claim_spec.access_modes,
            Some(vec!["ReadWriteOnce".to_owned()])
        );
        assert!(
            claim_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| r.contains_key("storage"))
        );
    }
}

/// The non-root, read-only, unprivileged container every pod of the chart runs.
fn check_container_security(container: &Container) {
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
}

/// The `helm test` pod: the service's image runs `services list` against the Service, with the
/// expected token, and the Service does not send to it.
fn check_test_pod(
    rendered: &Rendered,
    expected: &Expected,
    server: &Container,
    service_selector: &BTreeMap<String, String>,
) {
    let pod = &rendered.pods[0];
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["helm.sh/hook"], "test");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    assert!(
        !selects(service_selector, &labels),
        "the Service selects the test pod"
    );
    let spec = pod.spec.as_ref().expect("test pod spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.containers.len(), 1);
    let container = &spec.containers[0];
    check_container_security(container);
    assert_eq!(container.image, server.image);

    // The arguments are a `services list` of the image's own command line, at the Service.
    let args = container.args.clone().expect("test pod args");
    let cli = Cli::try_parse_from(std::iter::once("etcd-repopulator".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("the test pod's arguments are not a command: {e}"));
    let CliCommand::Services(services) = cli.command else {
        panic!("the test pod runs {:?}, not `services`", cli.command);
    };
    assert!(matches!(services.command, ServicesCommand::List));
    // The client options are global: they belong to the whole command line.
    assert_eq!(
        cli.client.url,
        Some(format!(
            "http://{}.{}.svc:{}",
            expected.fullname, expected.release.namespace, expected.service_port
        ))
    );

    let token_source = container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "ETCD_REPOPULATOR_TOKEN")
        .map(|var| {
            let key = var
                .value_from
                .as_ref()
                .and_then(|from| from.secret_key_ref.as_ref())
                .expect("the token comes from a Secret");
            (key.name.clone(), key.key.clone())
        });
    assert_eq!(
        token_source,
        expected
            .test_token
            .as_ref()
            .map(|(secret, key)| (secret.clone(), (*key).to_owned()))
    );
}

fn pod_annotation(rendered: &Rendered, key: &str) -> Option<String> {
    let template = &rendered.deployments[0].spec.as_ref()?.template;
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

fn secret_keys(secret: &Secret) -> BTreeSet<String> {
    let string_data = secret.string_data.iter().flatten().map(|(k, _)| k.clone());
    let data = secret.data.iter().flatten().map(|(k, _)| k.clone());
    string_data.chain(data).collect()
}

fn volumes_of_secret(pod: &PodSpec, secret: &str) -> String {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
        .map(|v| v.name.clone())
        .unwrap_or_else(|| panic!("no volume of Secret {secret}"))
}

/// The mount `file` is on (the one with the longest path), and the path below it.
fn mount_of<'a>(
    container: &'a Container,
    file: &Path,
) -> (&'a k8s_openapi::api::core::v1::VolumeMount, PathBuf) {
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|mount| {
            let rest = file.strip_prefix(&mount.mount_path).ok()?;
            Some((mount, rest.to_path_buf()))
        })
        .max_by_key(|(mount, _)| mount.mount_path.len())
        .unwrap_or_else(|| panic!("{} is on no volume", file.display()))
}

/// The volume `file` comes from and its key there (a Secret's or ConfigMap's key).
fn file_source<'a>(
    container: &Container,
    volumes: &BTreeMap<&str, &'a Volume>,
    file: &Path,
) -> (&'a Volume, String) {
    let (mount, rest) = mount_of(container, file);
    let volume = volumes[mount.name.as_str()];
    if let Some(sub_path) = &mount.sub_path {
        assert_eq!(
            rest,
            Path::new(""),
            "{} is a file (subPath)",
            mount.mount_path
        );
        return (volume, sub_path.clone());
    }
    let rest = rest.to_str().expect("UTF-8 path").to_owned();
    let items = match (&volume.secret, &volume.config_map) {
        (Some(secret), _) => secret.items.as_ref(),
        (_, Some(config_map)) => config_map.items.as_ref(),
        _ => None,
    };
    let key = match items {
        Some(items) => items
            .iter()
            .find(|item| item.path == rest)
            .unwrap_or_else(|| panic!("volume {} puts nothing at {rest}", volume.name))
            .key
            .clone(),
        None => rest,
    };
    (volume, key)
}

fn string_data(secret: &Secret, key: &str) -> String {
    secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(key))
        .unwrap_or_else(|| panic!("Secret has no {key}"))
        .clone()
}

/// The storage class and size of the rendered claim.
fn claim_class_and_size(rendered: &Rendered) -> (Option<&str>, &str) {
    let spec = rendered.claims[0].spec.as_ref().expect("PVC spec");
    let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let size = requests
        .map(|r| r["storage"].0.as_str())
        .expect("storage request");
    (spec.storage_class_name.as_deref(), size)
}

fn pod_spec(rendered: &Rendered) -> &PodSpec {
    rendered.deployments[0]
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("pod spec")
}

fn tmp_size_limit(rendered: &Rendered) -> String {
    let tmp = pod_spec(rendered)
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "tmp")
        .and_then(|volume| volume.empty_dir.as_ref())
        .expect("the tmp emptyDir");
    tmp.size_limit.clone().expect("sizeLimit").0
}

const DEFAULT_RELEASE: Release = Release {
    name: "etcd-repopulator",
    namespace: "etcd-repopulator",
};

fn render_error(values: &[&str]) -> String {
    match helm_template_of(CHART, DEFAULT_RELEASE, values) {
        Ok(yaml) => panic!("helm template {values:?} rendered:\n{yaml}"),
        Err(stderr) => stderr,
    }
}
