//! The values: every one documented in the chart's README, an upgrade that changes the config
//! or the chart's Secret restarts the pod, and a ServiceAccount the chart does not create must
//! be named.

use super::*;

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

#[test]
fn an_existing_service_account_must_be_named() {
    // Whether or not the chart binds the Role: the pod would run as `default` either way.
    for rbac in ["true", "false"] {
        let error = render_error(&[
            "--set",
            "serviceAccount.create=false",
            "--set",
            &format!("rbac.create={rbac}"),
        ]);
        assert!(
            error.contains(
                "serviceAccount.create is false but serviceAccount.name is empty: name the \
                 existing ServiceAccount the service runs as"
            ),
            "{error}"
        );
    }
}

/// The pod template's checksum annotations for `values`.
fn checksums(values: &[&str]) -> (String, Option<String>) {
    let yaml = helm_template(DEFAULT_RELEASE, values);
    let deployment = yaml_documents(&yaml)
        .into_iter()
        .find(|document| document["kind"] == "Deployment")
        .expect("a Deployment");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    let config = annotations["checksum/config"]
        .as_str()
        .expect("checksum/config");
    let auth = annotations["checksum/auth"].as_str().map(str::to_owned);
    (config.to_owned(), auth)
}

#[test]
fn an_upgrade_that_changes_the_config_or_the_secret_restarts_the_pod() {
    let tokens = |tokens: &str| format!("auth.tokens={tokens}");
    let ops = tokens(r#"["ops:write:0123456789abcdef0123456789abcdef"]"#);
    let (config, auth) = checksums(&["--set-json", &ops]);
    let auth = auth.expect("checksum/auth of the chart's Secret");

    // Another token: the Secret changes, not the config.
    let other = tokens(r#"["ops:write:fedcba9876543210fedcba9876543210"]"#);
    let (config2, auth2) = checksums(&["--set-json", &other]);
    assert_eq!(config2, config);
    assert_ne!(auth2.as_deref(), Some(auth.as_str()));

    // A webhook key: the Secret changes.
    let (_, auth3) = checksums(&[
        "--set-json",
        &ops,
        "--set",
        "auth.webhookHmacKey=an-hmac-key-of-at-least-16-bytes",
    ]);
    assert_ne!(auth3.as_deref(), Some(auth.as_str()));

    // Another config: the config changes, not the Secret.
    let (config4, auth4) = checksums(&["--set-json", &ops, "--set", "config.step_timeout=20m"]);
    assert_ne!(config4, config);
    assert_eq!(auth4.as_deref(), Some(auth.as_str()));

    // An existing Secret is not the chart's to hash.
    let (_, auth5) = checksums(&["--set", "auth.existingSecret=api-credentials"]);
    assert_eq!(auth5, None);
}
