//! The run history: the list shows one summary per run, the run itself every step; a run's
//! message is one line; steps not reached say why; a resume keeps what the first attempt did.

use crate::common;

use std::time::Duration;

use etcd_repopulator::{config::Config, etcd::EtcdConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sim::SimOptions;

const SUMMARY_FIELDS: [&str; 12] = [
    "attempt",
    "created_at",
    "dry_run",
    "etcd",
    "finished_at",
    "id",
    "message",
    "reason",
    "requested_by",
    "services",
    "started_at",
    "state",
];

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn the_list_shows_summaries_with_a_one_line_message_and_the_run_every_step() {
    let app = common::start().await;
    let id = app
        .start_run(json!({"services": ["fas", "meds", "reds"], "reason": "rebuilt"}))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let (status, list) = app.get("/repopulations").await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let summary = &items[0];
    assert_eq!(keys(summary), SUMMARY_FIELDS, "{summary:#}");
    for field in SUMMARY_FIELDS.iter().filter(|f| **f != "services") {
        assert_eq!(summary[field], run[field], "{field}");
    }
    assert_eq!(
        summary["services"],
        json!([
            {"service": "fas", "state": "action_required"},
            {"service": "meds", "state": "succeeded"},
            {"service": "reds", "state": "succeeded"},
        ])
    );
    // One line counting the services by state and naming those left for a person; each
    // service keeps its own message.
    assert_eq!(
        run["message"], "2 succeeded; 1 needs action: fas",
        "{run:#}"
    );
    let fas = &run["services"][0];
    assert_eq!(fas["service"], "fas");
    assert!(
        fas["message"]
            .as_str()
            .unwrap()
            .contains("must be recreated"),
        "{fas:#}"
    );
    assert!(!fas["steps"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_running_run_is_listed_and_shown_as_it_is_now() {
    // Pods take a minute to become Ready: the run is still executing while it is read.
    let sim = sim::SimCluster::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            kubelet_ready_delay: Duration::from_secs(60),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    sim.seed_csm().await.unwrap();
    let app = common::start_on(sim, Config::default()).await;
    let id = app.start_run(json!({"services": ["reds"]})).await;
    let (_, list) = app.get("/repopulations").await;
    let summary = &list["items"][0];
    assert_eq!(summary["id"], id.as_str());
    assert_eq!(keys(summary), SUMMARY_FIELDS, "{summary:#}");
    assert_eq!(keys(&summary["services"][0]), ["service", "state"]);
    assert!(
        ["pending", "running"].contains(&summary["state"].as_str().unwrap()),
        "{summary:#}"
    );
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert!(run["services"][0]["steps"].is_array(), "{run:#}");
    app.cancel(&id).await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["message"], "1 cancelled: reds", "{run:#}");
    let (_, list) = app.get("/repopulations").await;
    assert_eq!(list["items"][0]["state"], "cancelled");
    assert_eq!(
        list["items"][0]["services"],
        json!([{"service": "reds", "state": "cancelled"}])
    );
}

#[tokio::test]
async fn steps_after_a_failure_are_skipped_and_a_resume_keeps_the_first_attempt() {
    // A port nothing listens on: the etcd cluster is down, so the first check fails.
    let port = common::free_port();
    let config = Config {
        etcd: EtcdConfig {
            enabled: true,
            endpoint: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_secs(5),
            ..EtcdConfig::default()
        },
        ..Config::default()
    };
    let app = common::start_with(SimOptions::default(), config).await;
    let id = app.start_run(json!({"services": ["bss"]})).await;
    let first = app.finished_run(&id).await;
    assert_eq!(first["state"], "failed", "{first:#}");
    let steps = first["services"][0]["steps"].as_array().unwrap().clone();
    assert_eq!(steps[0]["name"], "check-etcd-cluster");
    assert_eq!(steps[0]["state"], "failed");
    assert!(steps.len() > 1, "{first:#}");
    for step in &steps[1..] {
        assert_eq!(step["state"], "skipped", "{step:#}");
        assert_eq!(
            step["message"],
            "not started because step check-etcd-cluster failed"
        );
        assert!(step.get("attempts").is_none(), "{step:#}");
    }

    app.ask(&id, "resume").await;
    let second = app.finished_run(&id).await;
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["state"], "failed", "{second:#}");
    for (now, before) in second["services"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&steps)
    {
        // What the first attempt did stays in the history, next to what this one did.
        let attempts = now["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{now:#}");
        let first_attempt = &attempts[0];
        assert_eq!(first_attempt["attempt"], 1);
        for field in ["state", "message", "started_at", "finished_at"] {
            assert_eq!(first_attempt[field], before[field], "{field}: {now:#}");
        }
        assert_ne!(now["finished_at"], before["finished_at"], "{now:#}");
    }
    assert_eq!(second["message"], "1 failed: bss");
    let check = &second["services"][0]["steps"][0];
    assert!(check["started_at"].as_str().unwrap() > steps[0]["finished_at"].as_str().unwrap());
}

#[tokio::test]
async fn what_a_run_does_with_etcd_survives_a_restart() {
    let app = common::start().await;
    let id = app
        .start_run(json!({
            "services": ["reds", "meds"], "dry_run": true, "etcd": "restore",
            "backup": "cray-reds-etcd-2024-05-01", "confirm": ["cray-reds-etcd"],
        }))
        .await;
    let finished = app.finished_run(&id).await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    // A run still executing is assembled from its rows; a finished one is its stored
    // document: both say the same.
    let assembled = app.runner.store().get_run(uuid).await.unwrap().unwrap();
    let assembled = serde_json::to_value(assembled).unwrap();
    for run in [&finished, &assembled] {
        assert_eq!(run["etcd"], "restore", "{run:#}");
        assert_eq!(run["backup"], "cray-reds-etcd-2024-05-01");
        assert_eq!(run["confirm"], json!(["cray-reds-etcd"]));
    }

    // The store opened again on the same database, as the next process opens it (migrations
    // applied, stored documents checked).
    let store = etcd_repopulator::store::Store::open(app.db.to_str().unwrap())
        .await
        .unwrap();
    let run: Value = serde_json::from_slice(&store.run_json(uuid).await.unwrap().unwrap()).unwrap();
    assert_eq!(run, finished);
    let page = store
        .history_page(&etcd_repopulator::store::RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let page: Value = serde_json::from_slice(&page).unwrap();
    assert_eq!(page["items"][0]["etcd"], "restore", "{page:#}");
    let reread = store.get_run(uuid).await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(reread).unwrap(), assembled);
}
