//! `GET /etcd-clusters/{name}` member by member: the simulated CSM 1.6 with a real etcd per
//! member of BSS's cluster, broken the ways the field breaks it, as an admin sees it.

use std::{collections::BTreeSet, time::Duration};

use etcd_repopulator::config::Config;
use serde_json::Value;
use sim::kube::controllers::etcd_member::faults::Damage;

use crate::common;

const STS: &str = "cray-bss-bitnami-etcd";
const PATH: &str = "/etcd-clusters/cray-bss-bitnami-etcd";

fn members(report: &Value) -> &Vec<Value> {
    report["member_health"].as_array().unwrap()
}

fn member<'a>(report: &'a Value, pod: &str) -> &'a Value {
    members(report)
        .iter()
        .find(|m| m["pod"] == pod)
        .unwrap_or_else(|| panic!("no member with pod {pod}: {report:#}"))
}

fn problems(report: &Value) -> Vec<&str> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_healthy_cluster_shows_three_distinct_members_and_one_leader() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let real = sim.etcd_members(STS);
    let app = common::start_on(sim, Config::default()).await;
    let report = common::cluster_until(&app, STS, |r| r["healthy"] == true).await;
    let listed = members(&report);
    assert_eq!(listed.len(), 3, "{report:#}");
    let ids: BTreeSet<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{report:#}");
    let leaders: Vec<&Value> = listed.iter().filter(|m| m["is_leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "{report:#}");
    assert_eq!(report["leader"], leaders[0]["id"], "{report:#}");
    // How a member starts, as the chart renders it (no ETCD_INITIAL_CLUSTER_STATE: `new`).
    assert_eq!(
        report["recovery_env"],
        serde_json::json!({
            "ETCD_DISASTER_RECOVERY": "yes",
            "ETCD_QUOTA_BACKEND_BYTES": "2147483648",
            "ETCD_START_FROM_SNAPSHOT": "no",
        }),
        "{report:#}"
    );
    for (view, real) in listed.iter().zip(&real) {
        // As etcd sees it: named after its pod, at its pod's address, started, a voter.
        assert_eq!(view["name"], real.pod.as_str(), "{view:#}");
        assert_eq!(view["pod"], real.pod.as_str());
        assert_eq!(view["client_url"], real.client_url.as_str());
        assert_eq!(
            view["peer_urls"][0],
            format!("http://{}:2380", real.ip),
            "{view:#}"
        );
        assert_eq!(
            (&view["started"], &view["is_learner"], &view["healthy"]),
            (&Value::Bool(true), &Value::Bool(false), &Value::Bool(true)),
            "{view:#}"
        );
        // What it holds.
        assert!(view["raft_term"].as_u64().unwrap() >= 1, "{view:#}");
        assert!(view["raft_index"].as_u64().unwrap() >= 1, "{view:#}");
        assert!(view["revision"].as_i64().unwrap() >= 1, "{view:#}");
        let (size, in_use) = (
            view["db_size"].as_u64().unwrap(),
            view["db_size_in_use"].as_u64().unwrap(),
        );
        assert!(size >= in_use && in_use > 0, "{view:#}");
        assert!(view["version"].as_str().unwrap().starts_with("3."));
        assert_eq!(view["alarms"], serde_json::json!([]));
        // As Kubernetes sees it.
        assert_eq!(view["pod_ready"], true);
        assert!(view.get("container").is_none(), "{view:#}");
    }
    assert!(problems(&report).is_empty(), "{report:#}");
    // The list shows the same members.
    let (status, list) = app.get("/etcd-clusters").await;
    assert_eq!(status, 200);
    let bss = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == STS)
        .unwrap();
    assert_eq!(members(bss).len(), 3, "{bss:#}");
}

#[tokio::test]
async fn a_stopped_member_and_a_crash_looping_one_are_problems_with_their_pods_state() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let stopped = format!("{STS}-1");
    sim.stop_etcd_member(&stopped).await.unwrap();
    let app = common::start_on(sim, Config::default()).await;
    let report = common::cluster_until(&app, STS, |r| {
        r["serving"] == true
            && r["member_health"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["pod"] == stopped.as_str() && m["pod_ready"] == false)
            })
    })
    .await;
    // The member is still one etcd lists, down; its pod says how.
    let down = member(&report, &stopped);
    assert!(down["id"].is_string(), "{down:#}");
    assert_eq!(down["healthy"], false, "{down:#}");
    assert_eq!(
        down["container"], "terminated: Error, exit code 137",
        "{down:#}"
    );
    assert!(
        problems(&report)
            .contains(&format!("pod {stopped}: terminated: Error, exit code 137").as_str()),
        "{report:#}"
    );
    assert_eq!(report["healthy"], false);
    // The two others still hold the quorum: one leads.
    assert_eq!(
        members(&report)
            .iter()
            .filter(|m| m["is_leader"] == true)
            .count(),
        1,
        "{report:#}"
    );

    // A second member's database damaged: it crash-loops, the quorum is lost, and the cluster
    // is read through the member left, which still answers for itself.
    let broken = format!("{STS}-2");
    app.sim
        .damage_etcd_member(&broken, Damage::CorruptDb)
        .await
        .unwrap();
    // The kubelet's back-off doubles from 10 s, and the first exits may say something else (a
    // peer not reachable): this waits through a few restarts.
    let crash_looping = |r: &Value| {
        members(r).iter().any(|m| {
            m["pod"] == broken.as_str()
                && m["container"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("CrashLoopBackOff: "))
        })
    };
    let what = format!("{broken} crash-looping in the report");
    let report = sim::testing::until_within(Duration::from_secs(120), &what, async || {
        let (status, report) = app.get(PATH).await;
        assert_eq!(status, 200, "{report:#}");
        crash_looping(&report).then_some(report)
    })
    .await;
    let looping = member(&report, &broken);
    assert_eq!(looping["healthy"], false, "{looping:#}");
    assert!(looping["restarts"].as_i64().unwrap() >= 1, "{looping:#}");
    let message = looping["container"].as_str().unwrap();
    assert!(
        problems(&report).contains(&format!("pod {broken}: {message}").as_str()),
        "{report:#}"
    );
    assert_eq!(members(&report).len(), 3, "{report:#}");
    let survivor = member(&report, &format!("{STS}-0"));
    assert!(survivor["revision"].as_i64().unwrap() >= 1, "{survivor:#}");
    assert_eq!(survivor["healthy"], false, "{survivor:#}");
}

#[tokio::test]
async fn a_full_quota_shows_as_nospace_on_the_members_that_raised_it() {
    let sim = sim::testing::real_etcd_sim_with_quota("1.6", STS, 2 << 20).await;
    sim.fill_etcd_quota(STS).await.unwrap();
    let app = common::start_on(sim, Config::default()).await;
    let report = common::cluster_until(&app, STS, |r| {
        r["alarms"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let raised: Vec<&Value> = members(&report)
        .iter()
        .filter(|m| m["alarms"] == serde_json::json!(["NOSPACE"]))
        .collect();
    assert!(!raised.is_empty(), "{report:#}");
    for member in &raised {
        assert_eq!(member["healthy"], false, "{member:#}");
        let id = member["id"].as_str().unwrap();
        assert!(
            problems(&report).contains(&format!("alarm NOSPACE raised by member {id}").as_str()),
            "{report:#}"
        );
    }
    // Its database is at the quota.
    let size = raised[0]["db_size"].as_u64().unwrap();
    assert!(size >= 2 << 20, "{size}");
    assert_eq!(report["healthy"], false);
}
