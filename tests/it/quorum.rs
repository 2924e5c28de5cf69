//! Quorum loss with one member's data readable (`Decision::RestoreFromMember`), on the
//! simulated CSM 1.6's three real members of BSS's cluster: two members' databases corrupt
//! (they crash-loop, the cluster serves nothing), writes made after the newest backup on the
//! member left. `auto` restores every member from that member's snapshot: no write it held is
//! lost, where CSM's restore of the newest backup would lose every write since.

use std::time::Duration;

use etcd_repopulator::config::Config;
use etcd_repopulator::etcd::{EtcdClient, EtcdConfig};
use etcd_repopulator::model::{Service::Bss, State};
use etcd_repopulator::recovery::decision::Decision;
use etcd_repopulator::run::Run;
use serde_json::{Value, json};
use sim::kube::controllers::etcd_member::faults::Damage;

use crate::common::{self, TestApp};

const STS: &str = "cray-bss-bitnami-etcd";

/// What `etcd-assess` decided in `run`, as the recovery's own type.
fn decision(run: &Run) -> Decision {
    let assess = common::step_of(run, Bss, "etcd-assess");
    let data = assess.data.as_ref().expect("the assessment's data");
    serde_json::from_value(data["decision"].clone()).expect("a decision")
}

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
    let planned = app.finished(&id).await;
    // A container between two back-offs runs for a moment (it is not then shown crash-looping,
    // and may come back): the real run is asked for until the assessment sees both looping.
    if let Decision::RestoreFromMember { pod, .. } = decision(&planned) {
        assert_eq!(pod, survivor.pod, "{planned:#?}");
    }
    let mut run = None;
    for _ in 0..10 {
        let id = app
            .start_run(json!({ "services": ["bss"], "etcd": "auto", "confirm": [STS] }))
            .await;
        let ended = app.finished(&id).await;
        match decision(&ended) {
            Decision::RestoreFromMember { .. } => {
                run = Some(ended);
                break;
            }
            other => assert_eq!(other, Decision::LeaveAlone, "{ended:#?}"),
        }
        common::until("both damaged members crash-looping again", async || {
            let r = report(&app).await;
            (looping(&r, &format!("{STS}-1")) && looping(&r, &format!("{STS}-2"))).then_some(())
        })
        .await;
    }
    let run = run.expect("an assessment that saw both damaged members crash-looping");
    assert_eq!(run.state, State::Succeeded, "{run:#?}");
    let Decision::RestoreFromMember { pod, .. } = decision(&run) else {
        unreachable!("the loop above ends on it");
    };
    assert_eq!(pod, survivor.pod, "{run:#?}");
    let assess = common::step_of(&run, Bss, "etcd-assess");
    assert!(
        assess
            .message
            .as_deref()
            .unwrap()
            .contains("no write it holds is lost"),
        "{assess:#?}"
    );
    let snapshot = common::step_of(&run, Bss, "etcd-safety-snapshot");
    assert!(
        snapshot
            .message
            .as_deref()
            .unwrap()
            .contains(&format!("member pod {}", survivor.pod))
            || snapshot.data.as_ref().unwrap()["backup"].is_string(),
        "{snapshot:#?}"
    );
    // BSS's own restore is covered: the member's snapshot brought its data back.
    assert_eq!(
        common::step_of(&run, Bss, "restore-bss-from-backup").state,
        State::Skipped,
        "{run:#?}"
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
