//! The chart's Role against what the handlers really do: the service runs as its service
//! account in the simulated cluster, which authorizes every request as the real API server
//! would (`sim::kube::authz`). `tests/it/chart.rs` checks the chart carries exactly
//! `cluster::rbac::REQUIRED`; these check `REQUIRED` is enough for every run and not wider
//! than what the runs use.

use crate::common;

use std::collections::BTreeSet;

use etcd_repopulator::{cluster::rbac, config::Config};
use serde_json::json;
use sim::SimOptions;

/// Every service that only needs the cluster and the CSM APIs (HMNFD needs sshd: its Kubernetes
/// calls are none, see tests/it/hmnfd.rs).
const SERVICES: [&str; 8] = [
    "reds",
    "meds",
    "bss",
    "fas",
    "externaldns",
    "crus",
    "cps",
    "bos",
];

/// Permissions of `REQUIRED` that only some configurations or failures use, so a run of every
/// service in the default configuration does not: External DNS as a StatefulSet and the pod
/// log of a failed Job. `tests/it/handlers.rs` runs both, as the same service account.
const USED_ONLY_SOMETIMES: [(&str, &str, &str); 22] = [
    // A restore or rebuild of a Bitnami etcd cluster (CSM 1.5+, `"etcd": "rebuild"`):
    // tests/it/recovery.rs checks a rebuild uses exactly these, as the same service account.
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets/scale", "patch"),
    ("", "persistentvolumeclaims", "watch"),
    ("", "persistentvolumeclaims", "delete"),
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("apps", "statefulsets", "create"),
    ("apps", "statefulsets", "delete"),
    ("", "pods/log", "get"),
    // The data PVCs of Bitnami etcd clusters: only on CSM 1.5+ (the default simulated
    // cluster is 1.0); tests/it/releases.rs lists them on 1.6, as the same service account.
    ("", "persistentvolumeclaims", "list"),
    // Rebuild and restore of an etcd-operator cluster (CSM ≤ 1.4): only when a run recovers a
    // cluster; tests/it/operator_recovery.rs runs both as the same service account and checks
    // each of these is used.
    ("apps", "deployments/scale", "get"),
    ("apps", "deployments/scale", "patch"),
    ("etcd.database.coreos.com", "etcdrestores", "get"),
    ("etcd.database.coreos.com", "etcdrestores", "list"),
    ("etcd.database.coreos.com", "etcdrestores", "watch"),
    ("etcd.database.coreos.com", "etcdrestores", "create"),
    ("etcd.database.coreos.com", "etcdrestores", "delete"),
    ("etcd.database.coreos.com", "etcdbackups", "get"),
    ("etcd.database.coreos.com", "etcdbackups", "list"),
    ("etcd.database.coreos.com", "etcdbackups", "watch"),
    ("etcd.database.coreos.com", "etcdbackups", "delete"),
];

fn combined(resource: &str, subresource: &str) -> String {
    if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    }
}

#[tokio::test]
async fn every_service_runs_within_the_charts_role_and_uses_all_of_it() {
    let app = common::start().await;
    let id = app.start_run(json!({ "services": SERVICES })).await;
    let run = app.finished_run(&id).await;
    let (status, clusters) = app.get("/etcd-clusters").await;
    assert_eq!(status, 200, "{clusters:#}");
    for task in run["services"].as_array().unwrap() {
        let state = task["state"].as_str().unwrap();
        assert!(
            state == "succeeded" || state == "action_required",
            "{}: {state}: {}",
            task["service"],
            task["message"]
        );
    }

    let log = app.sim.access_log();
    let denied: Vec<_> = log.iter().filter(|record| !record.allowed).collect();
    assert!(denied.is_empty(), "requests outside the Role: {denied:#?}");
    assert!(
        log.iter().all(
            |r| r.user == "system:serviceaccount:services:etcd-repopulator"
                && r.request.namespace == "services"
        ),
        "only the services' namespace, as the service account"
    );
    let used: BTreeSet<(String, String, String)> = log
        .iter()
        .map(|r| {
            let request = &r.request;
            (
                request.api_group.clone(),
                combined(&request.resource, &request.subresource),
                request.verb.clone(),
            )
        })
        .collect();
    let unused: Vec<(&str, &str, &str)> = rbac::REQUIRED
        .iter()
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(move |verb| (p.api_group, p.resource, *verb))
        })
        .filter(|(group, resource, verb)| {
            !used.contains(&(group.to_string(), resource.to_string(), verb.to_string()))
        })
        .collect();
    let unexplained: Vec<_> = unused
        .iter()
        .filter(|permission| !USED_ONLY_SOMETIMES.contains(permission))
        .collect();
    assert!(
        unexplained.is_empty(),
        "the Role grants what no run uses (remove it from cluster::rbac::REQUIRED, or explain \
         it in USED_ONLY_SOMETIMES): {unexplained:?}"
    );
}

#[tokio::test]
async fn a_call_the_role_does_not_allow_fails_the_run_with_the_servers_reason() {
    let sim = common::seeded_sim(SimOptions::default()).await;
    let mut rules = rbac::policy_rules();
    for rule in &mut rules {
        if rule.resources.as_deref() == Some(&["pods".to_owned()][..]) {
            rule.verbs.retain(|verb| verb != "delete");
        }
    }
    let app = common::start_as(sim, Config::default(), rules).await;
    let before = app.pods_matching("app.kubernetes.io/name=cray-reds").await;
    let id = app.start_run(json!({ "services": ["reds"] })).await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let message = run["services"][0]["steps"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "User \"system:serviceaccount:services:etcd-repopulator\" cannot delete resource \
             \"pods\" in API group \"\" in the namespace \"services\""
        ),
        "{message}"
    );
    assert_eq!(
        app.pods_matching("app.kubernetes.io/name=cray-reds").await,
        before,
        "nothing was deleted"
    );
}
