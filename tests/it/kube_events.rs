//! Kubernetes Events on the objects a run touches: `kubectl describe` on a restarted pod or a
//! re-run Job shows reason `Repopulation` and the run id. Read back the way kubectl does
//! (core/v1 Events by `involvedObject.uid`), although the service publishes them through
//! events.k8s.io/v1.

use crate::common;

use k8s_openapi::api::{batch::v1::Job, core::v1::Event};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const REDS: &str = "app.kubernetes.io/name=cray-reds";

async fn run(app: &common::TestApp, body: Value) -> (String, Value) {
    let id = app.start_run(body).await;
    let run = app.finished_run(&id).await;
    (id, run)
}

/// (type, action, message) of each Event, checking what every Event of ours has in common.
fn summary(events: &[Event], run_id: &str) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|event| {
            assert_eq!(event.reason.as_deref(), Some("Repopulation"), "{event:?}");
            assert_eq!(
                event.reporting_component.as_deref(),
                Some("etcd-repopulator"),
                "{event:?}"
            );
            let message = event.message.clone().unwrap_or_default();
            assert!(message.contains(run_id), "{message}");
            (
                event.type_.clone().unwrap_or_default(),
                event.action.clone().unwrap_or_default(),
                message,
            )
        })
        .collect()
}

#[tokio::test]
async fn restarted_pods_say_which_run_deleted_and_replaced_them() {
    let app = common::start().await;
    let before = app.pods_matching(REDS).await;
    let (id, run) = run(&app, json!({"services": ["reds"]})).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    for (name, uid, _) in &before {
        let events = summary(&app.events_about(uid).await, &id);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        let (kind, action, message) = &events[0];
        assert_eq!((kind.as_str(), action.as_str()), ("Normal", "Delete"));
        assert!(
            message.contains("service reds, step restart-reds-pods"),
            "{message}"
        );
    }
    let after = app.pods_matching(REDS).await;
    assert!(!after.is_empty());
    for (name, uid, _) in &after {
        let events = summary(&app.events_about(uid).await, &id);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        let (kind, action, message) = &events[0];
        assert_eq!((kind.as_str(), action.as_str()), ("Normal", "Restart"));
        assert!(
            message.contains(&before[0].0),
            "names what it replaces: {message}"
        );
    }
}

#[tokio::test]
async fn a_rerun_job_shows_its_recreation_and_its_end() {
    let app = common::start().await;
    let jobs: Api<Job> = Api::namespaced(app.sim.kube_client(), "services");
    let old_uid = jobs.get("cray-reds-init").await.unwrap().uid().unwrap();
    let (id, run) = run(&app, json!({"services": ["bss"]})).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let new_uid = jobs.get("cray-reds-init").await.unwrap().uid().unwrap();
    assert_ne!(old_uid, new_uid);

    let old = summary(&app.events_about(&old_uid).await, &id);
    let actions: Vec<&str> = old.iter().map(|(_, action, _)| action.as_str()).collect();
    assert_eq!(actions, ["Delete"]);
    let new = summary(&app.events_about(&new_uid).await, &id);
    let actions: Vec<&str> = new.iter().map(|(_, action, _)| action.as_str()).collect();
    assert_eq!(actions, ["Recreate", "Complete"], "{new:?}");
    assert!(
        new[0].2.contains(&old_uid),
        "names the Job it replaces: {}",
        new[0].2
    );
}

#[tokio::test]
async fn a_recreated_etcd_cluster_says_it_runs_again() {
    let app = common::start().await;
    let (id, run) = run(&app, json!({"services": ["externaldns"]})).await;
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["state"], "succeeded", "{run:#}");
    let new_uid = step["data"]["new_uid"].as_str().unwrap();
    let events = summary(&app.events_about(new_uid).await, &id);
    let actions: Vec<&str> = events.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(actions, ["Recreate", "Running"], "{events:?}");
    let involved = app.events_about(new_uid).await[0].involved_object.clone();
    assert_eq!(involved.kind.as_deref(), Some("EtcdCluster"));
    assert_eq!(involved.name.as_deref(), Some("cray-externaldns-etcd"));
}

#[tokio::test]
async fn a_dry_run_publishes_no_events() {
    let app = common::start().await;
    let before = app.pods_matching(REDS).await;
    let (_, run) = run(&app, json!({"services": ["reds", "bss"], "dry_run": true})).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let events: Api<Event> = Api::namespaced(app.sim.kube_client(), "services");
    let all = events.list(&Default::default()).await.unwrap().items;
    let ours: Vec<&Event> = all
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Repopulation"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    assert_eq!(app.pods_matching(REDS).await, before);
}
