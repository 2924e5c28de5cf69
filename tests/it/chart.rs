//! The Helm chart, checked without helm (which cannot be installed here): textually, its
//! Role's rules are the output of `etcd-repopulator rbac-rules` and every value is documented;
//! rendered by `scripts/render-chart.sh` (Go's text/template + sprig + helm's functions, as
//! `helm template` renders) with the default values and with the values files of `ci/`, every
//! document is a valid object of its kind and the objects fit together: the Role has exactly
//! `cluster::rbac::policy_rules()` and is bound to the pod's ServiceAccount, the Deployment is
//! a single non-root writer with probes on the port the Service targets, every volume, Secret,
//! ConfigMap and claim it names exists (or is one the values name as existing), and the
//! ConfigMap's config.toml is one the service loads, pointing at the files mounted.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use etcd_repopulator::{
    api::auth::{AuthMode, TokenSet},
    cluster::rbac::{self, Permission},
    config::Config,
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{
            ConfigMap, Container, PersistentVolumeClaim, PodSpec, Secret, Service, ServiceAccount,
            Volume,
        },
        rbac::v1::{Role, RoleBinding, Subject},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

const BEGIN: &str = "# BEGIN rbac-rules";
const END: &str = "# END rbac-rules";

fn chart_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("charts/etcd-repopulator")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The plain-YAML block between the marker comments of templates/role.yaml.
fn role_rules_block() -> String {
    let role = chart_file("templates/role.yaml");
    let start = role.find(BEGIN).expect("role.yaml has the BEGIN marker");
    let start = start + role[start..].find('\n').expect("marker line ends") + 1;
    let end = role.find(END).expect("role.yaml has the END marker");
    role[start..end].to_owned()
}

/// One rule as written: (apiGroups, resources, verbs).
#[derive(Debug, Default, PartialEq, Eq)]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// Parses the subset of YAML a Role's `rules:` are written in here: a `rules:` line, then
/// items `- apiGroups: [...]` with `resources: [...]` and `verbs: [...]` as flow lists of
/// quoted or plain strings. Anything else fails the test, so the block stays in this form.
fn parse_rules(block: &str) -> Vec<Rule> {
    let mut lines = block.lines().filter(|line| !line.trim().is_empty());
    assert_eq!(lines.next().map(str::trim_end), Some("rules:"), "{block}");
    let mut rules: Vec<Rule> = Vec::new();
    for line in lines {
        let trimmed = line.trim();
        let entry = match trimmed.strip_prefix("- ") {
            Some(entry) => {
                rules.push(Rule::default());
                entry
            }
            None => trimmed,
        };
        let (key, value) = entry
            .split_once(':')
            .unwrap_or_else(|| panic!("not `key: [list]`: {line:?}"));
        let rule = rules
            .last_mut()
            .unwrap_or_else(|| panic!("key before the first `- `: {line:?}"));
        let list = parse_flow_list(value.trim());
        let slot = match key.trim() {
            "apiGroups" => &mut rule.api_groups,
            "resources" => &mut rule.resources,
            "verbs" => &mut rule.verbs,
            other => panic!("unexpected key {other:?} in a rule"),
        };
        assert!(slot.is_empty(), "{key} given twice: {line:?}");
        *slot = list;
    }
    rules
}

fn parse_flow_list(text: &str) -> Vec<String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a flow list: {text:?}"));
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            let unquoted = item
                .strip_prefix('"')
                .and_then(|i| i.strip_suffix('"'))
                .or_else(|| item.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')))
                .unwrap_or(item);
            assert!(!unquoted.contains(['"', '\\']), "unsupported item {item:?}");
            unquoted.to_owned()
        })
        .collect()
}

fn rule_of(permission: &Permission) -> Rule {
    Rule {
        api_groups: vec![permission.api_group.to_owned()],
        resources: vec![permission.resource.to_owned()],
        verbs: permission.verbs.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn role_rules_are_exactly_the_required_permissions() {
    let in_chart = parse_rules(&role_rules_block());
    let in_code: Vec<Rule> = rbac::REQUIRED.iter().map(rule_of).collect();
    assert_eq!(
        in_chart, in_code,
        "templates/role.yaml differs from cluster::rbac::REQUIRED; regenerate the block \
         between the markers with `etcd-repopulator rbac-rules`"
    );
}

#[test]
fn role_rules_block_is_the_rbac_rules_output() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
        .arg("rbac-rules")
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed, rbac::rules_yaml());
    assert_eq!(role_rules_block(), printed);
}

#[test]
fn rbac_is_namespaced_and_narrow() {
    for template in ["templates/role.yaml", "templates/rolebinding.yaml"] {
        let text = chart_file(template);
        assert!(!text.contains("ClusterRole"), "{template}");
        assert!(
            text.contains("namespace: {{ .Values.targetNamespace }}"),
            "{template}"
        );
    }
    let rules = parse_rules(&role_rules_block());
    for rule in &rules {
        for item in rule
            .api_groups
            .iter()
            .chain(&rule.resources)
            .chain(&rule.verbs)
        {
            assert_ne!(item, "*");
        }
        assert!(!rule.resources.iter().any(|r| r == "secrets"));
    }
}

/// Dotted paths of every key in values.yaml (block mappings only; flow values are leaves).
fn value_paths(values: &str) -> BTreeSet<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut paths = BTreeSet::new();
    for line in values.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        stack.push((indent, key.to_owned()));
        paths.insert(path);
    }
    paths
}

#[test]
fn every_value_is_documented_in_the_chart_readme() {
    let paths = value_paths(&chart_file("values.yaml"));
    assert!(paths.contains("ssh.existingSecret"), "{paths:?}");
    assert!(paths.contains("targetNamespace"), "{paths:?}");
    let readme = chart_file("README.md");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| !readme.contains(&format!("`{path}`")))
        .collect();
    assert!(missing.is_empty(), "undocumented values: {missing:?}");
}

// The chart rendered as `helm template` renders it, checked as typed Kubernetes objects.

const CHART: &str = "charts/etcd-repopulator";

/// What scripts/render-chart.sh needs; it installs them itself when run as root on Debian.
const RENDERER_PACKAGES: &str = "golang-go golang-github-masterminds-sprig-dev \
    golang-k8s-sigs-yaml-dev golang-github-burntsushi-toml-dev golang-gopkg-yaml.v3-dev";

/// Runs scripts/render-chart.sh with `args` and returns its output. Fails the test, saying
/// what to install, when the renderer cannot run here, and when it warns (a values table
/// overridden by a non-table, ...).
fn run_renderer(args: &[&str]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("scripts/render-chart.sh"))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `bash scripts/render-chart.sh`: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "the chart renderer cannot run on this machine: install its Debian packages \
             (apt-get install {RENDERER_PACKAGES}), or run the tests as root so that \
             scripts/render-chart.sh installs them\n{stderr}"
        ),
        _ => panic!(
            "scripts/render-chart.sh {args:?} failed ({}):\n{stderr}",
            output.status
        ),
    }
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("warning:"))
        .collect();
    assert!(
        warnings.is_empty(),
        "rendering {args:?} warned:\n{}",
        warnings.join("\n")
    );
    String::from_utf8(output.stdout).expect("the rendered chart is UTF-8")
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
}

/// Renders the chart for `release` with `values` (extra renderer arguments: `--values FILE`,
/// `--set-json PATH=JSON`).
fn render(release: Release, values: &[&str]) -> Rendered {
    let mut args = vec![
        release.name,
        CHART,
        "--namespace",
        release.namespace,
        "--output",
        "json",
    ];
    args.extend_from_slice(values);
    let json = run_renderer(&args);
    let documents: Vec<serde_json::Value> = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the renderer's JSON does not parse: {e}\n{json}"));
    let mut rendered = Rendered::default();
    for document in &documents {
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
    target_namespace: String,
    service_account: String,
    /// Whether the chart creates the ServiceAccount, auth Secret and claim, or the values name
    /// existing ones.
    creates_service_account: bool,
    auth_secret: String,
    creates_auth_secret: bool,
    claim: String,
    creates_claim: bool,
    rbac: bool,
    /// The SSH Secret, its private key's key, and its known_hosts key, when one is mounted.
    ssh: Option<(&'static str, &'static str, Option<&'static str>)>,
    /// The etcd TLS Secret and its CA, client certificate and key keys, when one is mounted.
    etcd_tls: Option<(&'static str, &'static str, &'static str, &'static str)>,
    service_port: i32,
}

impl Expected {
    /// What the chart's default values give for `release` when its resources are named
    /// `fullname`.
    fn defaults(release: Release, fullname: &str) -> Expected {
        Expected {
            release,
            fullname: fullname.to_owned(),
            target_namespace: "services".to_owned(),
            service_account: fullname.to_owned(),
            creates_service_account: true,
            auth_secret: format!("{fullname}-auth"),
            creates_auth_secret: true,
            claim: fullname.to_owned(),
            creates_claim: true,
            rbac: true,
            ssh: None,
            etcd_tls: None,
            service_port: 8080,
        }
    }
}

const ARGS: [&str; 5] = [
    "serve",
    "--config",
    "/etc/etcd-repopulator/config.toml",
    "--database",
    "/var/lib/etcd-repopulator/runs.db",
];

/// Renders the chart with `values` for `expected.release` and checks it against `expected`.
fn render_and_check(expected: &Expected, values: &[&str]) -> (Rendered, Config) {
    let rendered = render(expected.release, values);
    let config = check(&rendered, expected);
    (rendered, config)
}

/// Checks what must hold whatever the values, and returns the service's configuration as it
/// loads the rendered config.toml.
fn check(rendered: &Rendered, expected: &Expected) -> Config {
    // Which objects, in helm's install order.
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
    kinds.extend(["Service", "Deployment"]);
    assert_eq!(rendered.kinds, kinds);

    // Every object is the release's, and only the RBAC objects leave its namespace.
    for (kind, meta) in &rendered.metadata {
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("Helm"),
            "{kind}"
        );
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some(expected.release.name),
            "{kind}"
        );
        let namespace = matches!(kind.as_str(), "Role" | "RoleBinding")
            .then_some(expected.target_namespace.as_str());
        assert_eq!(meta.namespace.as_deref(), namespace, "{kind}");
    }

    // The Deployment: one non-root writer.
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
    for (key, value) in &selector {
        assert_eq!(pod_labels.get(key), Some(value), "pod labels lack {key}");
    }
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
    for (probe, path) in [
        (&container.liveness_probe, "/healthz"),
        (&container.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no HTTP probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("http".to_owned()));
    }

    // The Service sends to that port of those pods.
    let service = &rendered.services[0];
    assert_eq!(
        service.metadata.name.as_deref(),
        Some(expected.fullname.as_str())
    );
    let service_spec = service.spec.as_ref().expect("Service spec");
    assert_eq!(service_spec.selector.as_ref(), Some(&selector));
    let service_ports = service_spec.ports.as_deref().expect("Service ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(service_ports[0].port, expected.service_port);
    match &service_ports[0].target_port {
        Some(IntOrString::String(name)) => assert!(ports.contains_key(name), "{name}"),
        other => panic!("targetPort {other:?} is not a named container port"),
    }

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

    // Volumes: every mount has its volume, every volume is mounted, every object a volume
    // names is rendered or one the values say exists.
    let volumes: BTreeMap<&str, &Volume> = pod
        .volumes
        .iter()
        .flatten()
        .map(|volume| (volume.name.as_str(), volume))
        .collect();
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
    let mut secrets_mounted = BTreeSet::new();
    for volume in volumes.values() {
        if let Some(claim) = &volume.persistent_volume_claim {
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
            assert!(volume.empty_dir.is_some(), "unexpected volume {volume:?}");
        }
    }
    assert!(secrets_mounted.contains(expected.auth_secret.as_str()));
    assert_eq!(
        secrets_mounted.len(),
        1 + usize::from(expected.ssh.is_some()) + usize::from(expected.etcd_tls.is_some()),
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

    // config.toml: the ConfigMap's, loadable by the service, the pod restarts when it changes.
    let config_map = &rendered.config_maps[0];
    assert_eq!(
        config_map.metadata.name.as_deref(),
        Some(expected.fullname.as_str())
    );
    let (volume, key) = file_source(container, &volumes, Path::new(ARGS[2]));
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
    let checksum = pod_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get("checksum/config"))
        .expect("checksum/config annotation");
    // Over toToml's output, which ends with a newline that helm's trimming of the document's
    // end takes from the ConfigMap (TOML does not need it).
    let hashed = format!("{}\n", toml.trim_end_matches('\n'));
    assert_eq!(*checksum, hex::encode(Sha256::digest(hashed.as_bytes())));

    // The files config.toml names are the keys of the Secrets mounted there.
    let auth_files = [
        (config.auth.tokens_file.clone(), "tokens"),
        (
            config
                .webhooks
                .hmac_key_file
                .clone()
                .expect("webhooks.hmac_key_file"),
            "webhook-hmac-key",
        ),
    ];
    for (file, expected_key) in auth_files {
        let (volume, key) = file_source(container, &volumes, &file);
        let secret = volume.secret.as_ref().unwrap_or_else(|| panic!("{file:?}"));
        assert_eq!(
            secret.secret_name.as_deref(),
            Some(expected.auth_secret.as_str())
        );
        assert_eq!(key, expected_key);
    }
    if let Some(secret) = rendered.secrets.first() {
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some(expected.auth_secret.as_str())
        );
        assert_eq!(
            secret_keys(secret),
            BTreeSet::from(["tokens".to_owned(), "webhook-hmac-key".to_owned()])
        );
    }
    if let Some((ssh_secret, key_item, known_hosts_item)) = expected.ssh {
        let (volume, key) = file_source(container, &volumes, &config.ssh.identity_file);
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some(ssh_secret)
        );
        assert_eq!(key, key_item);
        if let Some(known_hosts_item) = known_hosts_item {
            let (volume, key) = file_source(container, &volumes, &config.ssh.known_hosts_file);
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
            let (volume, key) = file_source(container, &volumes, &file);
            assert_eq!(volume.name, volumes_of_secret(pod, etcd_secret));
            assert_eq!(key, expected_key);
        }
    } else {
        assert_eq!(config.etcd.ca_file, None);
    }

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
    config
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

#[test]
fn chart_renders_with_the_default_values() {
    let release = Release {
        name: "etcd-repopulator",
        namespace: "etcd-repopulator",
    };
    let expected = Expected::defaults(release, "etcd-repopulator");
    let (rendered, config) = render_and_check(&expected, &[]);
    assert_eq!(config.auth.mode, AuthMode::Token);

    // No tokens (every API call refused until some are set) and no webhook key (disabled).
    let secret = &rendered.secrets[0];
    assert_eq!(string_data(secret, "tokens"), "");
    assert_eq!(string_data(secret, "webhook-hmac-key"), "");

    let pod = pod_spec(&rendered);
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("etcd-repopulator:0.1.0"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert!(pod.image_pull_secrets.is_none() && pod.node_selector.is_none());
    assert!(pod.tolerations.is_none() && pod.affinity.is_none());
    assert_eq!(claim_class_and_size(&rendered), (None, "1Gi"));
}

#[test]
fn chart_renders_with_every_optional_feature_on() {
    let release = Release {
        name: "etcd-repopulator",
        namespace: "etcd-repopulator",
    };
    let expected = Expected {
        target_namespace: "csm-services".to_owned(),
        service_account: "repopulator-sa".to_owned(),
        ssh: Some(("repopulator-ssh", "id_rsa", Some("known_hosts"))),
        etcd_tls: Some(("csm-etcd-client-tls", "ca.pem", "tls.crt", "tls.key")),
        service_port: 9090,
        // The release name contains nameOverride, so it is the full name.
        ..Expected::defaults(release, "etcd-repopulator")
    };
    let (rendered, config) = render_and_check(
        &expected,
        &[
            "--values",
            "charts/etcd-repopulator/ci/all-features-values.yaml",
        ],
    );

    // Integers stay integers (helm hands values files' numbers to templates as floats).
    assert_eq!(config.step_timeout.as_secs(), 15 * 60);
    assert_eq!(config.csm.retry.max_attempts, 7);
    assert_eq!(config.ssh.fanout, 16);
    assert_eq!(config.ssh.port, 2222);
    assert_eq!(config.snapshots.retain, 96);
    assert!(config.hmnfd.discover_ncns);
    assert_eq!(config.ssh.hosts["ncn-w001"], "10.252.1.7");
    assert_eq!(
        config.webhooks.alertmanager.alertnames,
        ["EtcdClusterRebuilt"]
    );
    assert_eq!(config.auth.mode, AuthMode::Token);

    let secret = &rendered.secrets[0];
    let tokens = TokenSet::parse(&string_data(secret, "tokens"))
        .unwrap_or_else(|(line, problem)| panic!("tokens line {line}: {problem}"));
    assert_eq!(format!("{tokens:?}"), r#"["ops:write", "grafana:read"]"#);
    assert_eq!(
        string_data(secret, "webhook-hmac-key"),
        "an-hmac-key-of-at-least-16-bytes"
    );

    let account = &rendered.service_accounts[0].metadata;
    assert_eq!(
        account.annotations.as_ref().unwrap()["example.com/owner"],
        "platform"
    );
    let service = rendered.services[0].spec.as_ref().unwrap();
    assert_eq!(service.type_.as_deref(), Some("NodePort"));
    let service_meta = &rendered.services[0].metadata;
    assert_eq!(
        service_meta.annotations.as_ref().unwrap()["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        service_meta.labels.as_ref().unwrap()["app.kubernetes.io/name"],
        "repopulator"
    );

    let deployment = rendered.deployments[0].spec.as_ref().unwrap();
    let pod_annotations = deployment.template.metadata.as_ref().unwrap();
    assert_eq!(
        pod_annotations.annotations.as_ref().unwrap()["example.com/team"],
        "csm"
    );
    let pod = pod_spec(&rendered);
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    assert_eq!(
        pod.node_selector.as_ref().unwrap()["kubernetes.io/os"],
        "linux"
    );
    assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
    assert!(
        pod.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .is_some()
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.local/etcd-repopulator:0.1.0-rc1")
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    let rust_log = container
        .env
        .iter()
        .flatten()
        .find(|v| v.name == "RUST_LOG");
    assert_eq!(
        rust_log.and_then(|v| v.value.as_deref()),
        Some("info,etcd_repopulator=debug")
    );
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["cpu"].0, "2");
    assert_eq!(limits["memory"].0, "512Mi");
    assert_eq!(claim_class_and_size(&rendered), (Some("fast-ssd"), "5Gi"));
}

#[test]
fn chart_renders_with_existing_objects_and_jwt() {
    let release = Release {
        name: "repopulator-prod",
        namespace: "csm-tools",
    };
    let expected = Expected {
        service_account: "csm-repopulator".to_owned(),
        creates_service_account: false,
        auth_secret: "repopulator-api-credentials".to_owned(),
        creates_auth_secret: false,
        claim: "repopulator-history".to_owned(),
        creates_claim: false,
        ssh: Some(("repopulator-ssh", "id_ed25519", None)),
        ..Expected::defaults(release, "repopulator")
    };
    let (_, config) = render_and_check(
        &expected,
        &[
            "--values",
            "charts/etcd-repopulator/ci/existing-objects-values.yaml",
        ],
    );
    assert_eq!(config.auth.mode, AuthMode::Jwt);
    assert_eq!(config.auth.jwt.audience.as_deref(), Some("shasta"));
}

#[test]
fn chart_renders_without_rbac_and_with_set_json() {
    let release = Release {
        name: "repop",
        namespace: "default",
    };
    let expected = Expected {
        rbac: false,
        ..Expected::defaults(release, "repop-etcd-repopulator")
    };
    let (_, config) = render_and_check(
        &expected,
        &[
            "--set-json",
            "rbac.create=false",
            "--set-json",
            r#"config={"step_timeout":"20m","ssh":{"fanout":4}}"#,
        ],
    );
    assert_eq!(config.step_timeout.as_secs(), 20 * 60);
    assert_eq!(config.ssh.fanout, 4);
}

#[test]
fn yaml_output_is_a_helm_template_stream() {
    let yaml = run_renderer(&["etcd-repopulator", CHART]);
    let documents: Vec<&str> = yaml.split("---\n").collect();
    assert_eq!(documents[0], "", "the stream starts with a separator");
    let sources: Vec<&str> = documents[1..]
        .iter()
        .map(|doc| {
            let header = doc.lines().next().unwrap_or_default();
            header
                .strip_prefix("# Source: etcd-repopulator/")
                .unwrap_or_else(|| panic!("no `# Source:` header: {doc}"))
        })
        .collect();
    // Sorted by kind as helm installs them; partials (_helpers.tpl) render nothing.
    assert_eq!(
        sources,
        [
            "templates/serviceaccount.yaml",
            "templates/secret.yaml",
            "templates/configmap.yaml",
            "templates/pvc.yaml",
            "templates/role.yaml",
            "templates/rolebinding.yaml",
            "templates/service.yaml",
            "templates/deployment.yaml",
        ]
    );
    // With the defaults every template but the partials renders something.
    let templates: BTreeSet<String> = std::fs::read_dir(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(CHART)
            .join("templates"),
    )
    .expect("templates/")
    .map(|entry| entry.unwrap().file_name().into_string().unwrap())
    .filter(|name| !name.starts_with('_'))
    .map(|name| format!("templates/{name}"))
    .collect();
    assert_eq!(
        sources
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        templates
    );
}
