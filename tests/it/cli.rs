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
    // For people: a row per cluster with its layout and members Ready.
    let output = cli(&app.base, &["etcd-clusters", "list", "--format", "table"]).await;
    let text = stdout(&output);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SERVICE", "LAYOUT", "READY", "HEALTHY", "LEADER", "KEYS", "PROBLEMS"
        ],
        "{text}"
    );
    let bss = text
        .lines()
        .find(|l| l.starts_with("cray-bss-etcd "))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = bss.split_whitespace().collect();
    assert_eq!(cells[1..3], ["bss", "etcd-operator"], "{bss}");
    assert!(cells[3].ends_with("/3"), "members Ready of 3: {bss}");
    // One cluster described: its facts, then its members, PVCs and problems.
    let output = cli(
        &app.base,
        &[
            "etcd-clusters",
            "describe",
            "cray-bss-etcd",
            "--format",
            "table",
        ],
    )
    .await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("Name        cray-bss-etcd\n"), "{text}");
    assert!(
        text.contains("Layout      etcd-operator (EtcdCluster cray-bss-etcd)"),
        "{text}"
    );
    assert!(text.contains("Pods Ready  "), "{text}");
    assert!(
        text.contains("no problems") || text.contains("Problems:\n  - "),
        "{text}"
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

/// The binary with `args` as given (global options may come first), isolated from the user's
/// client config, its stdout and stderr piped.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"));
    command
        .args(args)
        .env_remove("ETCD_REPOPULATOR_URL")
        .env_remove("ETCD_REPOPULATOR_TOKEN")
        .env_remove("ETCD_REPOPULATOR_CLIENT_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Dry runs of `services`, finished, newest last.
async fn dry_runs(app: &common::TestApp, services: &[&[&str]]) -> Vec<String> {
    let mut ids = Vec::new();
    for s in services {
        let id = app
            .start_run(serde_json::json!({ "services": s, "dry_run": true }))
            .await;
        app.finished_run(&id).await;
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn wait_prints_the_id_at_once_then_each_step_then_the_outcome() {
    let app = common::start().await;
    let output = cli(
        &app.base,
        &[
            "repopulations",
            "create",
            "--services",
            "reds,meds",
            "--wait",
            "--format",
            "table",
        ],
    )
    .await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("run ") && lines[0].contains("started"),
        "{text}"
    );
    let id = lines[0].split_whitespace().nth(1).unwrap();
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert_eq!(run["state"], "succeeded");
    // One line when each step started, one when it ended, in that order.
    for (service, step) in [("reds", "restart-reds-pods"), ("meds", "restart-meds-pods")] {
        let position = |state: &str| {
            lines
                .iter()
                .position(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    words.get(1) == Some(&service)
                        && words.get(2) == Some(&step)
                        && words.get(3) == Some(&state)
                })
                .unwrap_or_else(|| panic!("no {service} {step} {state} line in:\n{text}"))
        };
        assert!(position("running") < position("succeeded"), "{text}");
    }
    // The outcome: the run, its services and steps.
    let state = lines
        .iter()
        .find(|l| l.starts_with("State"))
        .expect("a State line");
    assert!(state.contains("succeeded"), "{text}");
    assert!(
        lines.iter().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["restart-reds-pods", "succeeded"])),
        "{text}"
    );
}

#[tokio::test]
async fn ctrl_c_stops_following_and_leaves_the_run_going() {
    use tokio::io::AsyncBufReadExt;
    // Slow pods: the run is still going when the first line arrives.
    let options = sim::SimOptions {
        kubelet_ready_delay: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let app = common::start_with(options, etcd_repopulator::config::Config::default()).await;
    let mut child = command(&[
        "--url",
        &app.base,
        "repopulations",
        "create",
        "--services",
        "reds",
        "--wait",
    ])
    .spawn()
    .unwrap();
    // Not a terminal: progress goes to stderr, the final run (TOML) to stdout.
    let mut progress = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(common::WAIT, progress.next_line())
        .await
        .expect("the id comes at once")
        .unwrap()
        .expect("a first line");
    let id = first
        .split_whitespace()
        .nth(1)
        .expect("run <id> started")
        .to_owned();
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert!(
        matches!(run["state"].as_str(), Some("pending" | "running")),
        "{run}"
    );
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(common::WAIT, progress.next_line())
        .await
        .expect("stderr ends")
    {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = tokio::time::timeout(common::WAIT, child.wait())
        .await
        .expect("the client exits")
        .unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains(&format!("repopulations logs {id} --follow")),
        "{rest}"
    );
    // The run was not cancelled: it ends as it would have.
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
}

#[tokio::test]
async fn table_format_lists_runs_and_describes_steps() {
    let app = common::start().await;
    let ids = dry_runs(&app, &[&["reds"], &["bss", "meds"]]).await;

    let output = cli(&app.base, &["repopulations", "list", "--format", "table"]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "STATE",
            "SERVICES",
            "CREATED",
            "DURATION",
            "REQUESTED",
            "BY",
            "REASON"
        ],
        "{text}"
    );
    let row = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{text}"))
            .to_owned()
    };
    assert!(row(&ids[0]).contains("reds"), "{text}");
    assert!(row(&ids[1]).contains("bss meds"), "{text}");
    assert!(row(&ids[1]).contains("(dry run)"), "{text}");

    let output = cli(
        &app.base,
        &["repopulations", "describe", &ids[1], "--format", "table"],
    )
    .await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!("Run          {}", ids[1])),
        "{text}"
    );
    let (_, run) = app.get(&format!("/repopulations/{}", ids[1])).await;
    for task in run["services"].as_array().unwrap() {
        for step in task["steps"].as_array().unwrap() {
            let name = step["name"].as_str().unwrap();
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no line for step {name}:\n{text}"));
            assert!(line.contains(step["state"].as_str().unwrap()), "{line}");
            // A finished step shows how long it took.
            assert!(
                line.split_whitespace()
                    .any(|w| w.ends_with('s') && w.trim_end_matches('s').parse::<f64>().is_ok()),
                "{line}"
            );
        }
    }

    // A run started without --wait says how to follow it.
    let output = cli(
        &app.base,
        &[
            "repopulations",
            "create",
            "--services",
            "reds",
            "--dry-run",
            "--format",
            "table",
        ],
    )
    .await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let id = text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    assert!(
        text.ends_with(&format!("repopulations logs {id} --follow\n")),
        "{text}"
    );
    app.finished_run(id).await;

    let output = cli(&app.base, &["services", "list", "--format", "table"]).await;
    let text = stdout(&output);
    assert!(
        text.lines()
            .any(|l| l.starts_with("reds") && l.contains("restart-reds-pods")),
        "{text}"
    );
}

#[tokio::test]
async fn list_follows_cursors_one_page_or_all() {
    let app = common::start().await;
    let ids = dry_runs(&app, &[&["reds"], &["meds"], &["reds"]]).await;
    let page = |args: Vec<String>| {
        let base = app.base.clone();
        async move {
            let mut all = vec!["repopulations", "list", "--format", "json"];
            all.extend(args.iter().map(String::as_str));
            let output = cli(&base, &all).await;
            assert!(output.status.success(), "stderr: {}", stderr(&output));
            serde_json::from_str::<Value>(&stdout(&output)).unwrap()
        }
    };
    let first = page(vec!["--limit".into(), "1".into()]).await;
    assert_eq!(first["items"][0]["id"], ids[2].as_str());
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = page(vec![
        "--limit".into(),
        "1".into(),
        "--cursor".into(),
        cursor,
    ])
    .await;
    assert_eq!(second["items"][0]["id"], ids[1].as_str());
    assert_eq!(second["items"].as_array().unwrap().len(), 1);

    let all = page(vec!["--limit".into(), "1".into(), "--all".into()]).await;
    let listed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
}

#[tokio::test]
async fn snapshots_create_and_list() {
    let app = common::start().await;
    let output = cli(&app.base, &["snapshots", "create", "--format", "json"]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let stored = report["stored"].as_array().unwrap();
    assert_eq!(stored.len(), 2, "{report:#}");

    let output = cli(
        &app.base,
        &["snapshots", "list", "--source", "bos-session-templates"],
    )
    .await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let list: toml::Table = toml::from_str(&stdout(&output)).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["source"].as_str(), Some("bos-session-templates"));
    assert!(items[0].get("content").is_none());

    let output = cli(&app.base, &["snapshots", "list", "--format", "table"]).await;
    let text = stdout(&output);
    assert!(text.contains("hmnfd-subscriptions"), "{text}");
    assert!(text.contains("bos-session-templates"), "{text}");
}

#[tokio::test]
async fn logs_print_the_stored_log_or_follow_it_to_the_end() {
    let app = common::start().await;
    let ids = dry_runs(&app, &[&["reds"]]).await;
    let (_, run) = app.get(&format!("/repopulations/{}", ids[0])).await;
    assert_eq!(run["state"], "succeeded");

    let output = cli(&app.base, &["repopulations", "logs", &ids[0]]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.is_empty());
    assert!(text.lines().any(|l| l.contains("reds")), "{text}");

    let output = cli(
        &app.base,
        &["repopulations", "logs", &ids[0], "--format", "json"],
    )
    .await;
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), text.lines().count());
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64())
    );

    // Following a run from its start prints its whole log and ends with it.
    let options = sim::SimOptions {
        kubelet_ready_delay: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let app = common::start_with(options, etcd_repopulator::config::Config::default()).await;
    let id = app
        .start_run(serde_json::json!({ "services": ["reds"] }))
        .await;
    let output = cli(&app.base, &["repopulations", "logs", &id, "--follow"]).await;
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert_eq!(run["state"], "succeeded", "the log ends when the run does");
    assert!(
        stderr(&output).contains("ended: succeeded"),
        "{}",
        stderr(&output)
    );
    let stored = cli(&app.base, &["repopulations", "logs", &id]).await;
    assert_eq!(stdout(&output), stdout(&stored));
}

#[tokio::test]
async fn global_options_go_before_the_subcommand() {
    let app = common::start().await;
    let output = command(&["--url", &app.base, "--format", "json", "services", "list"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(json["items"].as_array().is_some_and(|i| !i.is_empty()));
}

#[tokio::test]
async fn a_closed_output_ends_quietly() {
    let app = common::start().await;
    dry_runs(&app, &[&["reds"]]).await;
    // The reader is gone before the first write: every write fails with EPIPE.
    let mut child = command(&["--url", &app.base, "repopulations", "list"])
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().await.unwrap();
    let err = stderr(&output);
    assert!(err.is_empty(), "{err}");
    // What a shell reports for a writer ended by SIGPIPE, as `yes | head -1` does.
    assert_eq!(output.status.code(), Some(141));
}

#[tokio::test]
async fn connection_errors_name_the_cause() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let output = cli(&url, &["services", "list"]).await;
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

/// What the client sends for `--services`, seen by a stand-in for the service.
#[tokio::test]
async fn create_sends_the_services_as_given() {
    use std::sync::{Arc, Mutex};
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = bodies.clone();
    let router = axum::Router::new().route(
        "/repopulations",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"id": "r", "state": "pending"})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    for args in [
        vec!["repopulations", "create", "--services", "all", "--dry-run"],
        vec!["repopulations", "create", "--services", "bss,reds"],
        vec![
            "repopulations",
            "create",
            "--services",
            "bss,reds",
            "--etcd",
            "restore",
            "--backup",
            "snap-1",
            "--confirm",
            "cray-bss-etcd",
            "--confirm",
            "cray-reds-etcd",
        ],
        // --etcd check is the default: not sent.
        vec![
            "repopulations",
            "create",
            "--services",
            "bss",
            "--etcd",
            "check",
        ],
    ] {
        let output = cli(&base, &args).await;
        assert!(output.status.success(), "stderr: {}", stderr(&output));
    }
    let bodies = bodies.lock().unwrap();
    assert_eq!(
        bodies[0],
        serde_json::json!({"services": ["all"], "dry_run": true})
    );
    assert_eq!(bodies[1], serde_json::json!({"services": ["bss", "reds"]}));
    assert_eq!(
        bodies[2],
        serde_json::json!({"services": ["bss", "reds"], "etcd": "restore", "backup": "snap-1",
                           "confirm": ["cray-bss-etcd", "cray-reds-etcd"]})
    );
    assert_eq!(bodies[3], serde_json::json!({"services": ["bss"]}));
}

#[tokio::test]
async fn create_etcd_modes_say_they_are_destructive_and_need_confirm() {
    let help = cli("http://127.0.0.1:9", &["repopulations", "create", "--help"]).await;
    assert!(help.status.success(), "stderr: {}", stderr(&help));
    let help = stdout(&help);
    for text in [
        "--etcd <ETCD>",
        "DESTRUCTIVE: replace each cluster's data with a backup",
        "DESTRUCTIVE: delete each cluster's data and start it empty",
        "DESTRUCTIVE when a cluster is unhealthy",
        "needs the `recover` role",
        "--backup <BACKUP>",
        "--confirm <CLUSTER>",
    ] {
        assert!(help.contains(text), "{text:?} is not in\n{help}");
    }
    let wrong = cli(
        "http://127.0.0.1:9",
        &[
            "repopulations",
            "create",
            "--services",
            "reds",
            "--etcd",
            "wipe",
        ],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("[possible values: check, restore, rebuild, auto, repair]"),
        "{}",
        stderr(&wrong)
    );

    let app = common::start().await;
    let unconfirmed = cli(
        &app.base,
        &[
            "repopulations",
            "create",
            "--services",
            "reds",
            "--etcd",
            "auto",
        ],
    )
    .await;
    assert_eq!(unconfirmed.status.code(), Some(1));
    let err = stderr(&unconfirmed);
    assert!(
        err.contains("etcd clusters not confirmed (422)")
            && err.contains("add to the command: --confirm cray-reds-etcd"),
        "{err}"
    );
    let created = cli(
        &app.base,
        &[
            "repopulations",
            "create",
            "--services",
            "reds",
            "--etcd",
            "auto",
            "--confirm",
            "cray-reds-etcd",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(created.status.success(), "stderr: {}", stderr(&created));
    let run: Value = serde_json::from_str(&stdout(&created)).unwrap();
    assert_eq!(run["etcd"], "auto");
    assert_eq!(run["confirm"], serde_json::json!(["cray-reds-etcd"]));
    let id = run["id"].as_str().unwrap().to_owned();
    app.finished_run(&id).await;
    let described = cli(
        &app.base,
        &["repopulations", "describe", &id, "--format", "table"],
    )
    .await;
    assert!(
        stdout(&described).contains("etcd         auto (confirmed: cray-reds-etcd)"),
        "{}",
        stdout(&described)
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

/// Runs the binary as [`cli`] does, on a terminal (a pseudo-terminal made by util-linux's
/// `script`) whose keyboard types `typed`.
async fn cli_on_a_terminal(base: &str, args: &[&str], typed: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let config_home = tempfile::tempdir().unwrap();
    let mut line = vec![env!("CARGO_BIN_EXE_etcd-repopulator").to_owned()];
    line.extend(args.iter().map(|a| a.to_string()));
    line.extend(["--url".to_owned(), base.to_owned()]);
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env_remove("ETCD_REPOPULATOR_URL")
        .env_remove("ETCD_REPOPULATOR_TOKEN")
        .env_remove("ETCD_REPOPULATOR_CLIENT_CONFIG")
        .env("XDG_CONFIG_HOME", config_home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux's script runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).await.unwrap();
    let output = tokio::time::timeout(common::WAIT, child.wait_with_output())
        .await
        .expect("the command ends")
        .unwrap();
    drop(stdin);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// From a terminal, a destructive run asks yes/no naming its clusters; "no" starts nothing,
/// "yes" and `--yes` start it; a dry run does not ask.
#[tokio::test]
async fn a_destructive_run_from_a_terminal_asks_first() {
    let app = common::start().await;
    let create = [
        "repopulations",
        "create",
        "--services",
        "reds",
        "--etcd",
        "rebuild",
        "--confirm",
        "cray-reds-etcd",
        "-o",
        "json",
    ];
    let refused = cli_on_a_terminal(&app.base, &create, "no\n").await;
    assert!(
        refused.contains("etcd rebuild may DELETE the data of cray-reds-etcd")
            && refused.contains("Proceed? (yes/no)")
            && refused.contains("Not started."),
        "{refused}"
    );
    let (_, runs) = app.get("/repopulations").await;
    assert_eq!(
        runs["items"],
        serde_json::json!([]),
        "nothing started: {refused}"
    );

    // One run of a service at a time: each ends before the next starts.
    let started = async |output: String| {
        let at = output
            .find('{')
            .unwrap_or_else(|| panic!("no run in {output}"));
        let run: Value = serde_json::from_str(output[at..].trim()).unwrap();
        assert_eq!(run["etcd"], "rebuild", "{run}");
        app.finished_run(run["id"].as_str().unwrap()).await;
        output
    };
    let accepted = started(cli_on_a_terminal(&app.base, &create, "yes\n").await).await;
    assert!(accepted.contains("Proceed? (yes/no)"), "{accepted}");
    let mut with_yes = create.to_vec();
    with_yes.push("--yes");
    let unasked = started(cli_on_a_terminal(&app.base, &with_yes, "").await).await;
    assert!(!unasked.contains("Proceed?"), "{unasked}");
    let mut dry = create.to_vec();
    dry.push("--dry-run");
    let planned = started(cli_on_a_terminal(&app.base, &dry, "").await).await;
    assert!(!planned.contains("Proceed?"), "{planned}");
    let (_, runs) = app.get("/repopulations").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 3, "{runs:#}");
}

/// A unique prefix of a run id stands for it; an ambiguous or unknown one says so.
#[tokio::test]
async fn a_run_id_prefix_stands_for_the_run() {
    let app = common::start().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = cli(
            &app.base,
            &[
                "repopulations",
                "create",
                "--services",
                "reds",
                "--dry-run",
                "-o",
                "json",
            ],
        )
        .await;
        assert!(created.status.success(), "{}", stderr(&created));
        let run: Value = serde_json::from_str(&stdout(&created)).unwrap();
        let id = run["id"].as_str().unwrap().to_owned();
        app.finished_run(&id).await;
        ids.push(id);
    }
    // The ids differ at last in their random part, the end.
    let shared = ids[0]
        .chars()
        .zip(ids[1].chars())
        .take_while(|(a, b)| a == b)
        .count();
    let unique = &ids[1][..(shared + 1).max(8)];
    let described = cli(
        &app.base,
        &["repopulations", "describe", unique, "--output", "json"],
    )
    .await;
    assert!(described.status.success(), "{}", stderr(&described));
    let run: Value = serde_json::from_str(&stdout(&described)).unwrap();
    assert_eq!(run["id"], ids[1].as_str());

    let ambiguous = cli(&app.base, &["repopulations", "logs", &ids[0][..4]]).await;
    assert_eq!(ambiguous.status.code(), Some(1));
    let err = stderr(&ambiguous);
    assert!(
        err.contains("2 runs' ids start with") && err.contains(&ids[0]) && err.contains(&ids[1]),
        "{err}"
    );
    let unknown = cli(&app.base, &["repopulations", "cancel", "ffffffff"]).await;
    assert!(
        stderr(&unknown).contains("no run id starts with \"ffffffff\""),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test]
async fn completion_scripts_for_the_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let script = cli("http://127.0.0.1:9", &["completion", shell]).await;
        assert!(script.status.success(), "{}", stderr(&script));
        let text = stdout(&script);
        assert!(
            text.contains("etcd-repopulator") && text.contains("repopulations"),
            "{shell}"
        );
    }
}

/// `--wait` on a recovery shows its phases as they are logged, not one "etcd-recover running"
/// line for the whole destructive part.
#[tokio::test]
async fn wait_shows_the_phases_of_an_etcd_recovery() {
    let app = common::start().await;
    let output = cli(
        &app.base,
        &[
            "repopulations",
            "create",
            "--services",
            "reds",
            "--etcd",
            "rebuild",
            "--confirm",
            "cray-reds-etcd",
            "--wait",
            "--format",
            "table",
        ],
    )
    .await;
    // (The default simulated cluster's etcd does not serve: the run fails after the recovery,
    // which is all this test is about.)
    let text = stdout(&output);
    let phases: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("reds/etcd-recover: "))
        .collect();
    assert!(
        phases.len() >= 2,
        "the recovery's phases, logged, in:\n{text}"
    );
    assert!(
        phases
            .iter()
            .any(|l| l.contains("created EtcdCluster cray-reds-etcd")),
        "{text}"
    );
    assert!(
        !phases.iter().any(|l| l.contains("etcd-recover: started")),
        "a step's start is its step line: {text}"
    );
    let running = text
        .lines()
        .position(|l| l.contains("etcd-recover") && l.contains("running"))
        .unwrap_or_else(|| panic!("etcd-recover running in:\n{text}"));
    let first_phase = text.lines().position(|l| l == phases[0]).unwrap();
    assert!(running < first_phase, "{text}");
}
