//! The chart rendered with the default values, the values files of `ci/` and `--set`
//! variations: each checked by [`check`] and for what its values change.

use super::*;

#[test]
fn chart_renders_with_the_default_values() {
    let expected = Expected::defaults(DEFAULT_RELEASE, "etcd-repopulator");
    let (rendered, config) = render_and_check(&expected, &[]);
    assert_eq!(config.auth.mode, AuthMode::Token);

    // No tokens (every API call refused until some are set) and no webhook key (disabled).
    let secret = &rendered.secrets[0];
    assert_eq!(string_data(secret, "tokens"), "");
    assert_eq!(config.webhooks.hmac_key_file, None);

    let pod = pod_spec(&rendered);
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("etcd-repopulator:0.1.0"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert!(pod.image_pull_secrets.is_none() && pod.node_selector.is_none());
    assert!(pod.tolerations.is_none() && pod.affinity.is_none());
    assert_eq!(claim_class_and_size(&rendered), (None, "1Gi"));
    assert_eq!(tmp_size_limit(&rendered), "64Mi");
    // The Secret volumes are readable by their owner only (0400, octal as Kubernetes reads it).
    let auth = pod.volumes.iter().flatten().find(|v| v.name == "auth");
    let mode = auth
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.default_mode);
    assert_eq!(mode, Some(0o400));
}

#[test]
fn chart_renders_with_every_optional_feature_on() {
    let expected = Expected {
        name: "repopulator",
        target_namespace: "csm-services".to_owned(),
        service_account: "repopulator-sa".to_owned(),
        auth_items: BTreeMap::from([
            ("tokens", "tokens"),
            ("webhook-hmac-key", "webhook-hmac-key"),
        ]),
        ssh: Some(("repopulator-ssh", "id_rsa", Some("known_hosts"))),
        etcd_tls: Some(("csm-etcd-client-tls", "ca.pem", "tls.crt", "tls.key")),
        snapshotter: Some("bitnami-etcd-snapshotter"),
        s3_secret: Some("etcd-backup-s3-credentials"),
        service_port: 9090,
        test_token: Some(("etcd-repopulator-auth".to_owned(), "test-token")),
        // The release name contains nameOverride, so it is the full name.
        ..Expected::defaults(DEFAULT_RELEASE, "etcd-repopulator")
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
    assert_eq!(
        format!("{tokens:?}"),
        r#"["ops:write", "grafana:read", "oncall:recover"]"#
    );
    assert_eq!(
        config.webhooks.recover_clusters["cray-bss-bitnami-etcd"],
        etcd_repopulator::model::EtcdMode::Auto
    );
    assert_eq!(
        string_data(secret, "webhook-hmac-key"),
        "an-hmac-key-of-at-least-16-bytes"
    );
    // The test reads, so it gets the read token, not the first one.
    assert_eq!(
        string_data(secret, "test-token"),
        "fedcba9876543210fedcba9876543210"
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
        pod_annotation(&rendered, "example.com/team").as_deref(),
        Some("csm")
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
    assert_eq!(tmp_size_limit(&rendered), "128Mi");
    // The test pod is scheduled where the service may be.
    let test_pod = rendered.pods[0].spec.as_ref().unwrap();
    assert_eq!(test_pod.image_pull_secrets, pod.image_pull_secrets);
    assert_eq!(test_pod.tolerations, pod.tolerations);
}

/// The values of ci/existing-objects-values.yaml, for `release`.
fn existing_objects(release: Release) -> Expected {
    Expected {
        service_account: "csm-repopulator".to_owned(),
        creates_service_account: false,
        auth_secret: "repopulator-api-credentials".to_owned(),
        creates_auth_secret: false,
        // JWT mode: no `tokens` in the Secret, only the webhook key, under its own name.
        auth_items: BTreeMap::from([("webhook-hmac-key", "hmac-key")]),
        claim: "repopulator-history".to_owned(),
        creates_claim: false,
        ssh: Some(("repopulator-ssh", "id_ed25519", None)),
        test_token: Some(("repopulator-test-jwt".to_owned(), "jwt")),
        ..Expected::defaults(release, "repopulator")
    }
}

pub(super) const EXISTING_OBJECTS: [&str; 2] = [
    "--values",
    "charts/etcd-repopulator/ci/existing-objects-values.yaml",
];

const PROD_RELEASE: Release = Release {
    name: "repopulator-prod",
    namespace: "csm-tools",
};

#[test]
fn chart_renders_with_existing_objects_and_jwt() {
    let (_, config) = render_and_check(&existing_objects(PROD_RELEASE), &EXISTING_OBJECTS);
    assert_eq!(config.auth.mode, AuthMode::Jwt);
    assert_eq!(config.auth.jwt.audience.as_deref(), Some("shasta"));
    assert_eq!(config.auth.jwt.recover_roles, ["etcd-recover"]);
}

#[test]
fn in_jwt_mode_without_a_webhook_key_no_auth_secret_is_needed() {
    // An existing Secret: nothing of it is mounted.
    let expected = Expected {
        auth_items: BTreeMap::new(),
        ..existing_objects(PROD_RELEASE)
    };
    let mut values = EXISTING_OBJECTS.to_vec();
    values.extend(["--set", "auth.webhookHmacKeyItem="]);
    let (_, config) = render_and_check(&expected, &values);
    assert_eq!(config.auth.mode, AuthMode::Jwt);

    // No existing Secret: the chart creates none, having nothing to put in it.
    let expected = Expected {
        creates_auth_secret: false,
        auth_items: BTreeMap::new(),
        ..Expected::defaults(DEFAULT_RELEASE, "etcd-repopulator")
    };
    let (_, config) = render_and_check(
        &expected,
        &[
            "--set",
            "auth.mode=jwt",
            "--set-json",
            r#"config={"auth":{"jwt":{"jwks_url":"https://keycloak.local/certs","issuer":"https://keycloak.local","audience":"shasta"}}}"#,
        ],
    );
    assert_eq!(config.auth.mode, AuthMode::Jwt);
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
    let yaml = helm_template(DEFAULT_RELEASE, &[]);
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
    // Sorted by kind as helm installs them, the test hook last; partials (_*.tpl) and
    // NOTES.txt render nothing here.
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
            "templates/tests/services-list.yaml",
        ]
    );
    // With the defaults every template but those and the monitoring's (off by default)
    // renders something.
    let mut templates = BTreeSet::new();
    let mut dirs = vec![PathBuf::from("templates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root().join(CHART).join(&dir)).expect("templates/") {
            let entry = entry.unwrap();
            let path = dir.join(entry.file_name());
            let name = entry.file_name().into_string().unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if !name.starts_with('_')
                && name != "NOTES.txt"
                && !super::monitoring::TEMPLATES.contains(&path.to_str().unwrap())
            {
                templates.insert(path.to_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(
        sources
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        templates
    );
}
