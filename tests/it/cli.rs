//! The client commands, run as the real binary against the real service on a simulated cluster.

use crate::common;

use std::process::Output;

use serde_json::Value;

/// Runs the binary with `--url base` and `args`, isolated from the user's client config.
async fn cli(base: &str, args: &[&str]) -> Output {
    let config_home = tempfile::tempdir().unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
        .args(args)
        .args(["--url", base])
        .env_remove("ETCD_REPOPULATOR_URL")
        .env_remove("ETCD_REPOPULATOR_TOKEN")
        .env_remove("ETCD_REPOPULATOR_CLIENT_CONFIG")
        .env("XDG_CONFIG_HOME", config_home.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test]
async fn create_wait_describe_list_in_toml_and_json() {
    let app = common::start().await;

    let created = cli(
        &app.base,
        &["repopulations", "create", "--services", "reds", "--wait"],
    )
    .await;
    assert!(created.status.success(), "stderr: {}", stderr(&created));
    let text = stdout(&created);
    let run: toml::Table = toml::from_str(&text).expect("TOML output");
    assert_eq!(run["state"].as_str(), Some("succeeded"), "{text}");
    assert!(text.contains("state = \"succeeded\""), "{text}");
    let id = run["id"].as_str().unwrap().to_owned();

    let described = cli(
        &app.base,
        &["repopulations", "describe", &id, "--format", "json"],
    )
    .await;
    assert!(described.status.success(), "stderr: {}", stderr(&described));
    let json: Value = serde_json::from_str(&stdout(&described)).expect("JSON output");
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["state"], "succeeded");
    assert_eq!(json["services"][0]["service"], "reds");

    let described = cli(&app.base, &["repopulations", "describe", &id]).await;
    assert!(described.status.success());
    let toml_run: toml::Table = toml::from_str(&stdout(&described)).unwrap();
    assert_eq!(toml_run["id"].as_str(), Some(id.as_str()));

    let listed = cli(
        &app.base,
        &[
            "repopulations",
            "list",
            "--service",
            "reds",
            "--limit",
            "10",
        ],
    )
    .await;
    assert!(listed.status.success(), "stderr: {}", stderr(&listed));
    let text = stdout(&listed);
    assert!(text.contains("[[items]]"), "{text}");
    let list: toml::Table = toml::from_str(&text).unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|run| run["id"].as_str() == Some(id.as_str())),
        "{text}"
    );

    let listed = cli(
        &app.base,
        &[
            "repopulations",
            "list",
            "--state",
            "failed",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(listed.status.success());
    let json: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(json["items"], Value::Array(vec![]));
}

#[tokio::test]
async fn services_list() {
    let app = common::start().await;
    let output = cli(&app.base, &["services", "list"]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let services: toml::Table = toml::from_str(&text).unwrap();
    let items = services["items"].as_array().unwrap();
    assert!(
        items.iter().any(
            |s| s["service"].as_str() == Some("reds") && s["supported"].as_bool() == Some(true)
        ),
        "{text}"
    );
}

#[tokio::test]
async fn etcd_clusters_list_and_describe() {
    let app = common::start().await;
    let output = cli(&app.base, &["etcd-clusters", "list"]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("cray-bss-etcd"), "{text}");
    let output = cli(&app.base, &["etcd-clusters", "describe", "cray-bss-etcd"]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).contains("etcd-operator"),
        "{}",
        stdout(&output)
    );
    let output = cli(&app.base, &["etcd-clusters", "describe", "cray-nope-etcd"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no etcd cluster"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn failed_calls_exit_non_zero_with_the_detail() {
    let app = common::start().await;

    let output = cli(&app.base, &["repopulations", "describe", "not-a-uuid"]).await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert!(err.contains("(400)") && err.contains("not-a-uuid"), "{err}");

    let output = cli(
        &app.base,
        &["repopulations", "create", "--services", "reds,nosuch"],
    )
    .await;
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("(422)") && err.contains("nosuch"), "{err}");

    // Nothing listening: the failure names the URL.
    let output = cli("http://127.0.0.1:9", &["services", "list"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("127.0.0.1:9"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn url_and_token_come_from_the_client_config() {
    let app = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!("url = {:?}\ntoken = \"secret\"\n", app.base),
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
        .args(["services", "list", "--format", "json", "--client-config"])
        .arg(&config)
        .env_remove("ETCD_REPOPULATOR_URL")
        .env_remove("ETCD_REPOPULATOR_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(
        json["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    );
}

/// A configuration error stops `serve` before it touches anything, says what is wrong once,
/// and names the key.
#[tokio::test]
async fn serve_refuses_a_bad_config_once_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("namspace = \"x\"\n", "unknown field `namspace`"),
        (
            "[reds]\nselector = \"app in (cray-reds\"\n",
            "reds.selector",
        ),
        ("namespace = \"Services\"\n", "namespace"),
    ] {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, text).unwrap();
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
            .args(["serve", "--database"])
            .arg(dir.path().join("runs.db"))
            .arg("--config")
            .arg(&file)
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{text}");
        let err = stderr(&output);
        assert_eq!(err.matches(expected).count(), 1, "{text}: {err}");
        assert!(err.contains("config"), "{text}: {err}");
    }
}

/// A run changes the cluster, so the client asks which services (`all` for every one).
#[tokio::test]
async fn create_needs_services() {
    let app = common::start().await;
    let output = cli(&app.base, &["repopulations", "create", "--dry-run"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--services"),
        "{}",
        stderr(&output)
    );
    let output = cli(
        &app.base,
        &[
            "repopulations",
            "create",
            "--services",
            "all",
            "--dry-run",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let run: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(run["services"].as_array().unwrap().len() > 1, "{run}");
}
