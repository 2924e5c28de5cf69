//! Quorum loss with one member's data readable (`Decision::RestoreFromMember`), on the
//! simulated CSM 1.6's three real members of BSS's cluster: two members' databases corrupt
//! (they crash-loop, the cluster serves nothing), writes made after the newest backup on the
//! member left. `auto` restores every member from that member's snapshot: no write it held is
//! lost, where CSM's restore of the newest backup would lose every write since.

use std::time::Duration;

use etcd_repopulator::config::Config;
use etcd_repopulator::etcd::{EtcdClient, EtcdConfig};
use serde_json::{Value, json};
use sim::kube::controllers::etcd_member::faults::Damage;

use crate::common::{self, TestApp};

const STS: &str = "cray-bss-bitnami-etcd";

async fn report(app: &TestApp) -> Value {
    let (status, report) = app.get(&format!("/etcd-clusters/{STS}")).await;
    assert_eq!(status, 200, "{report:#}");
    report
}

fn looping(report: &Value, pod: &str) -> bool {
    report["member_health"].as_array().is_some_and(|ms| {
        ms.iter().any(|m| {
            m["pod"] == pod
                && m["container"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("CrashLoopBackOff"))
        })
    })
}

#[tokio::test]
async fn auto_restores_every_member_from_the_member_left_when_quorum_is_lost_for_good() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let url = sim.etcd_url(STS).unwrap();
    let survivor = sim.etcd_members(STS).remove(0);
    // Writes after the seeded backup: only the members hold them.
    for i in 0..10 {
        common::etcd_put(&url, &format!("/after-backup/{i}"), "v").await;
    }
    let (keys, _) = EtcdClient::new(&url, &EtcdConfig::default())
        .unwrap()
        .key_count(false)
        .await
        .unwrap();
    for pod in [format!("{STS}-1"), format!("{STS}-2")] {
        sim.damage_etcd_member(&pod, Damage::CorruptDb)
            .await
            .unwrap();
    }
    let app = common::start_on(sim, Config::default()).await;
    sim::testing::until_within(
        Duration::from_secs(180),
        "the quorum lost, both damaged members crash-looping",
        async || {
            let r = report(&app).await;
            (r["serving"] == false
                && looping(&r, &format!("{STS}-1"))
                && looping(&r, &format!("{STS}-2")))
            .then_some(())
        },
    )
    .await;

    // A dry run plans it, changing nothing.
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "auto", "dry_run": true }))
        .await;
    let planned = app.finished_run(&id).await;
    let assess = common::step(&planned, "bss", "etcd-assess");
    // A container between two back-offs runs for a moment (it is not then shown crash-looping,
    // and may come back): the real run is asked for until the assessment sees both looping.
    let mut run = Value::Null;
    if assess["data"]["decision"]["action"] == "restore-from-member" {
        assert_eq!(
            assess["data"]["decision"]["pod"],
            survivor.pod.as_str(),
            "{assess:#}"
        );
    }
    for _ in 0..10 {
        let id = app
            .start_run(json!({ "services": ["bss"], "etcd": "auto", "confirm": [STS] }))
            .await;
        run = app.finished_run(&id).await;
        let decision = &common::step(&run, "bss", "etcd-assess")["data"]["decision"];
        if decision["action"] == "restore-from-member" {
            break;
        }
        assert_eq!(decision["action"], "none", "{run:#}");
        common::until("both damaged members crash-looping again", async || {
            let r = report(&app).await;
            (looping(&r, &format!("{STS}-1")) && looping(&r, &format!("{STS}-2"))).then_some(())
        })
        .await;
    }
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let assess = common::step(&run, "bss", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["pod"],
        survivor.pod.as_str(),
        "{assess:#}"
    );
    assert!(
        assess["message"]
            .as_str()
            .unwrap()
            .contains("no write it holds is lost"),
        "{assess:#}"
    );
    let snapshot = common::step(&run, "bss", "etcd-safety-snapshot");
    assert!(
        snapshot["message"]
            .as_str()
            .unwrap()
            .contains(&format!("member pod {}", survivor.pod))
            || snapshot["data"]["backup"].is_string(),
        "{snapshot:#}"
    );
    // BSS's own restore is covered: the member's snapshot brought its data back.
    assert_eq!(
        common::step(&run, "bss", "restore-bss-from-backup")["state"],
        "skipped",
        "{run:#}"
    );
    let healthy = common::cluster_until(&app, STS, |r| r["healthy"] == true).await;
    assert_eq!(healthy["member_health"].as_array().unwrap().len(), 3);
    let (after, _) = EtcdClient::new(&url, &EtcdConfig::default())
        .unwrap()
        .key_count(false)
        .await
        .unwrap();
    assert_eq!(after, keys, "every key the member held");
    for i in 0..10 {
        let url = app.sim.etcd_url(STS).unwrap();
        let body: Value = reqwest::Client::new()
            .post(format!("{url}/v3/kv/range"))
            .json(&json!({ "key": b64(&format!("/after-backup/{i}")) }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["count"], "1", "/after-backup/{i}: {body}");
    }
}

fn b64(s: &str) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    STANDARD.encode(s)
}
