//! NOTES.txt (how to reach the service, and when it refuses every call), and the credentials
//! the rendered pod authenticates callers with.

use super::*;

/// NOTES.txt as `helm install` prints it for `values`. `helm template` does not render
/// NOTES.txt, and `helm install --dry-run` needs a cluster, so this renders the named template
/// NOTES.txt consists of through a probe template in a copy of the chart.
fn notes(values: &[&str]) -> String {
    assert_eq!(
        chart_file("templates/NOTES.txt"),
        "{{- include \"etcd-repopulator.notes\" . }}\n"
    );
    let copy = tempfile::tempdir().unwrap();
    let chart = copy.path().join("etcd-repopulator");
    copy_dir(&root().join(CHART), &chart);
    std::fs::write(
        chart.join("templates/notes-probe.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  \
         notes: {{ include \"etcd-repopulator.notes\" . | toJson }}\n",
    )
    .unwrap();
    let mut args = vec!["--show-only", "templates/notes-probe.yaml"];
    args.extend_from_slice(values);
    let yaml = helm_template_of(chart.to_str().unwrap(), DEFAULT_RELEASE, &args)
        .unwrap_or_else(|stderr| panic!("rendering the notes {values:?} failed:\n{stderr}"));
    let probe = &yaml_documents(&yaml)[0];
    probe["data"]["notes"].as_str().expect("notes").to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const NO_TOKENS: &str = "NO API TOKENS ARE CONFIGURED: every API call is refused (401)";

#[test]
fn notes_say_how_to_reach_the_service_and_when_calls_are_refused() {
    let defaults = notes(&[]);
    for line in [
        "Reach the API inside the cluster at http://etcd-repopulator.etcd-repopulator.svc:8080",
        "kubectl -n etcd-repopulator port-forward service/etcd-repopulator 8080:8080",
        "etcd-repopulator services list --url http://localhost:8080 --token <token>",
        NO_TOKENS,
        "POST /webhooks/generic is disabled",
        "without a token, so it fails (401) until it has one: auth.tokens, or a Secret",
    ] {
        assert!(defaults.contains(line), "{line:?} is not in\n{defaults}");
    }

    let all = notes(&[
        "--values",
        "charts/etcd-repopulator/ci/all-features-values.yaml",
    ]);
    assert!(!all.contains(NO_TOKENS), "{all}");
    for line in [
        "http://etcd-repopulator.etcd-repopulator.svc:9090, or on every node at",
        "Callers send one of auth.tokens",
        "Signed webhooks (POST /webhooks/generic) are enabled.",
        "runs `etcd-repopulator services list` against the\nService.",
    ] {
        assert!(all.contains(line), "{line:?} is not in\n{all}");
    }

    let jwt = notes(&super::rendering::EXISTING_OBJECTS);
    assert!(jwt.contains("Callers send a JWT"), "{jwt}");
    assert!(!jwt.contains(NO_TOKENS), "{jwt}");

    let open = notes(&["--set", "auth.mode=none"]);
    assert!(open.contains("WARNING: auth.mode is \"none\""), "{open}");
}

/// The service's authenticator as the rendered pod sets it up: config.toml's `[auth]` with the
/// files of the chart's Secret.
fn authenticator(rendered: &Rendered, files: &tempfile::TempDir) -> Authenticator {
    let toml = &rendered.config_maps[0].data.as_ref().unwrap()["config.toml"];
    let mut config = Config::from_toml(toml).unwrap();
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, string_data(&rendered.secrets[0], "tokens")).unwrap();
    config.auth.tokens_file = tokens;
    Authenticator::from_config(&config.auth).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

#[tokio::test]
async fn with_default_values_every_api_call_is_refused_until_tokens_are_configured() {
    let files = tempfile::tempdir().unwrap();
    let defaults = render(DEFAULT_RELEASE, &[]);
    let auth = authenticator(&defaults, &files);
    assert_eq!(auth.mode(), AuthMode::Token);
    for headers in [HeaderMap::new(), bearer("anything"), bearer("")] {
        assert!(auth.authenticate(&headers).await.is_err());
    }

    // With tokens, the test pod's token is one of them, and a read token.
    let rendered = render(
        DEFAULT_RELEASE,
        &[
            "--values",
            "charts/etcd-repopulator/ci/all-features-values.yaml",
        ],
    );
    let auth = authenticator(&rendered, &files);
    let test_token = string_data(&rendered.secrets[0], "test-token");
    let principal = auth.authenticate(&bearer(&test_token)).await.unwrap();
    assert_eq!(principal.name, "grafana");
    assert_eq!(principal.role, Some(AuthRole::Read));
}
