//! Member replacement (`recovery::replace`) on the simulated CSM 1.6's three real members of
//! BSS's cluster, broken the ways the field breaks them: a corrupt database, a lost volume. The
//! broken member is replaced while the two others serve; no acknowledged write is lost, a
//! writer putting keys through the client Service all along included.

use std::time::Duration;

use etcd_repopulator::config::Config;
use etcd_repopulator::etcd::{EtcdClient, EtcdConfig};
use etcd_repopulator::model::{Service::Bss, State};
use etcd_repopulator::recovery::decision::Decision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use sim::kube::controllers::etcd_member::faults::Damage;
use sim::testing::{EtcdWriter, writes_lost};

use crate::common::{self, TestApp};

const STS: &str = "cray-bss-bitnami-etcd";

fn client(url: &str) -> EtcdClient {
    EtcdClient::new(url, &EtcdConfig::default()).unwrap()
}

async fn report(app: &TestApp) -> Value {
    let (status, report) = app.get(&format!("/etcd-clusters/{STS}")).await;
    assert_eq!(status, 200, "{report:#}");
    report
}

fn member<'a>(report: &'a Value, pod: &str) -> &'a Value {
    report["member_health"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["pod"] == pod)
        .unwrap_or_else(|| panic!("no member of pod {pod}: {report:#}"))
}

/// Waits until `pod` crash-loops in the report (the kubelet's back-off doubles from 10 s, and
/// a first exit may say something else: through a few restarts); returns the report.
async fn crash_looping(app: &TestApp, pod: &str) -> Value {
    let what = format!("{pod} crash-looping in the report");
    sim::testing::until_within(Duration::from_secs(120), &what, async || {
        let report = report(app).await;
        let looping = member(&report, pod)["container"]
            .as_str()
            .is_some_and(|c| c.starts_with("CrashLoopBackOff"));
        (looping && report["serving"] == true).then_some(report)
    })
    .await
}

/// Waits until `pod`'s etcd container is in CrashLoopBackOff, as the kubelet reports it (for
/// tests without a service to ask).
pub(crate) async fn pod_crash_looping(sim: &sim::SimCluster, pod: &str) {
    let pods: Api<Pod> = Api::namespaced(sim.kube_client(), "services");
    let what = format!("{pod} in CrashLoopBackOff");
    sim::testing::until_within(Duration::from_secs(120), &what, async || {
        let found = pods.get_opt(pod).await.ok()??;
        found
            .status?
            .container_statuses?
            .iter()
            .any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            })
            .then_some(())
    })
    .await
}

async fn pvc_uid(app: &TestApp, pod: &str) -> String {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(app.sim.kube_client(), "services");
    pvcs.get(&format!("data-{pod}"))
        .await
        .unwrap()
        .uid()
        .unwrap()
}

/// `repair` of BSS's cluster with a member whose database is corrupt: without `confirm` it
/// says what it would replace and changes nothing; with it, the member is replaced one at a
/// time while the others serve, and the cluster ends healthy with three members and every key.
#[tokio::test]
async fn repair_replaces_a_corrupt_member_only_when_confirmed_and_keeps_every_key() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let url = sim.etcd_url(STS).unwrap();
    let cluster = client(&url);
    for i in 0..20 {
        common::etcd_put(&url, &format!("/kept/{i}"), "v").await;
    }
    let (keys, _) = cluster.key_count(false).await.unwrap();
    let broken = format!("{STS}-1");
    sim.damage_etcd_member(&broken, Damage::CorruptDb)
        .await
        .unwrap();
    let app = common::start_on(sim, Config::default()).await;
    let before = crash_looping(&app, &broken).await;
    let old_id = member(&before, &broken)["id"].as_str().unwrap().to_owned();
    let old_pvc = pvc_uid(&app, &broken).await;

    // Not confirmed: left alone, saying what to send.
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "repair" }))
        .await;
    let run = app.finished(&id).await;
    let assess = common::step_of(&run, Bss, "etcd-assess");
    assert_eq!(assess.state, State::ActionRequired, "{run:#?}");
    let message = assess.message.as_deref().unwrap();
    assert!(
        message.contains(&format!("\"confirm\": [\"{STS}\"]"))
            && message.contains(&format!("data-{broken}")),
        "{message}"
    );
    assert_eq!(
        common::step_of(&run, Bss, "etcd-recover").state,
        State::Skipped
    );
    assert_eq!(pvc_uid(&app, &broken).await, old_pvc, "nothing deleted");

    // A dry run plans the replacement and changes nothing.
    let id = app
        .start_run(
            json!({ "services": ["bss"], "etcd": "repair", "confirm": [STS], "dry_run": true }),
        )
        .await;
    let planned = app.finished(&id).await;
    let assess = common::step_of(&planned, Bss, "etcd-assess");
    let decision: Decision =
        serde_json::from_value(assess.data.as_ref().unwrap()["decision"].clone()).unwrap();
    let Decision::ReplaceMembers { members } = decision else {
        panic!("a replacement planned: {assess:#?}");
    };
    assert_eq!(members[0].pod, broken, "{assess:#?}");
    assert_eq!(pvc_uid(&app, &broken).await, old_pvc, "nothing deleted");

    // Confirmed: replaced.
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "repair", "confirm": [STS] }))
        .await;
    let run = app.finished(&id).await;
    assert_eq!(run.state, State::Succeeded, "{run:#?}");
    let recover = common::step_of(&run, Bss, "etcd-recover");
    assert!(
        recover
            .message
            .as_deref()
            .unwrap()
            .contains("has its members back, every write kept"),
        "{recover:#?}"
    );
    let replaced = &recover.data.as_ref().unwrap()["members"][0];
    assert_eq!(replaced["pod"], broken.as_str(), "{recover:#?}");
    assert_eq!(replaced["phase"], "rejoined", "{recover:#?}");
    assert_eq!(replaced["member_id"], old_id.as_str(), "{recover:#?}");
    assert_ne!(replaced["new_member_id"], old_id.as_str(), "{recover:#?}");

    let after = report(&app).await;
    assert_eq!(after["healthy"], true, "{after:#}");
    let ids: Vec<&str> = after["member_health"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{after:#}");
    assert!(!ids.contains(&old_id.as_str()), "{after:#}");
    assert_ne!(pvc_uid(&app, &broken).await, old_pvc, "a new volume");
    assert_eq!(cluster.key_count(false).await.unwrap().0, keys);
    // The new member holds the keys itself.
    let new_url = member(&after, &broken)["client_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(client(&new_url).key_count(true).await.unwrap().0, keys);
}

/// `auto` on BSS's cluster with a member whose volume was lost (its PVC and pod deleted: it
/// comes back empty and crash-loops, "already bootstrapped"), under a writer putting a key
/// through the client Service every 20 ms: the member is replaced, and every put etcd
/// acknowledged is there afterwards.
#[tokio::test]
async fn auto_replaces_a_member_whose_volume_was_lost_and_loses_no_acknowledged_write() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let url = sim.etcd_url(STS).unwrap();
    let lost = format!("{STS}-2");
    let app = common::start_on(sim, Config::default()).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(app.sim.kube_client(), "services");
    let pods: Api<Pod> = Api::namespaced(app.sim.kube_client(), "services");
    pvcs.delete(&format!("data-{lost}"), &Default::default())
        .await
        .unwrap();
    pods.delete(&lost, &Default::default()).await.unwrap();
    crash_looping(&app, &lost).await;

    let writer = EtcdWriter::start(&url, Duration::from_millis(20));
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "auto", "confirm": [STS] }))
        .await;
    let run = app.finished(&id).await;
    let written = writer.stop().await;
    assert_eq!(run.state, State::Succeeded, "{run:#?}");
    let assess = common::step_of(&run, Bss, "etcd-assess");
    let decision: Decision =
        serde_json::from_value(assess.data.as_ref().unwrap()["decision"].clone()).unwrap();
    assert!(
        matches!(decision, Decision::ReplaceMembers { .. }),
        "{assess:#?}"
    );
    let recover = common::step_of(&run, Bss, "etcd-recover");
    assert_eq!(
        recover.data.as_ref().unwrap()["members"][0]["phase"],
        "rejoined"
    );
    // BSS's own repopulation is not skipped (nothing was restored) and succeeds.
    assert!(!written.acked.is_empty());
    let lost_writes = writes_lost(&url, &written).await;
    assert!(
        lost_writes.is_empty(),
        "acknowledged writes lost: {lost_writes:?} ({} acked, {} failed)",
        written.acked.len(),
        written.failed
    );
    let after = report(&app).await;
    assert_eq!(after["healthy"], true, "{after:#}");
}

/// A cancel at every phase of a member replacement leaves a cluster that serves, every key
/// kept; a second `repair` then ends with three healthy members (it finishes what the first
/// began, or finds the member back by itself).
#[tokio::test]
async fn a_cancel_at_every_phase_of_a_replacement_leaves_a_serving_cluster_a_repair_completes() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let url = sim.etcd_url(STS).unwrap();
    let cluster = client(&url);
    let broken = format!("{STS}-1");
    let app = common::start_on(sim, Config::default()).await;
    for phase in ["checked", "removed", "deleted"] {
        common::etcd_put(&url, &format!("/before/{phase}"), "v").await;
        let (keys, _) = cluster.key_count(false).await.unwrap();
        app.sim
            .damage_etcd_member(&broken, Damage::CorruptDb)
            .await
            .unwrap();
        crash_looping(&app, &broken).await;
        let repair = json!({ "services": ["bss"], "etcd": "repair", "confirm": [STS] });
        let id = app.start_run(repair.clone()).await;
        let run = app
            .cancel_when(&id, &format!("the replacement at phase {phase}"), |run| {
                let at = common::step(run, "bss", "etcd-recover")["data"]["members"][0]["phase"]
                    .as_str()
                    .map(str::to_owned);
                let order = ["planned", "checked", "removed", "deleted", "rejoined"];
                at.is_some_and(|at| {
                    order.iter().position(|p| *p == at) >= order.iter().position(|p| *p == phase)
                })
            })
            .await;
        let state = run["state"].as_str().unwrap();
        assert!(
            state == "cancelled" || state == "succeeded",
            "cancelled after {phase}: {run:#}"
        );
        let cancelled = report(&app).await;
        assert_eq!(cancelled["serving"], true, "{phase}: {cancelled:#}");
        assert_eq!(cluster.key_count(false).await.unwrap().0, keys, "{phase}");

        // A second repair replaces what is still broken (a member starting again is left to
        // come back by itself): three healthy members.
        let id = app.start_run(repair.clone()).await;
        let second = app.finished_run(&id).await;
        assert_ne!(second["state"], "failed", "{phase}: {second:#}");
        let healed = sim::testing::until_within(
            Duration::from_secs(120),
            &format!("three healthy members after the cancel at {phase} and a repair"),
            async || {
                let report = report(&app).await;
                (report["healthy"] == true).then_some(report)
            },
        )
        .await;
        assert_eq!(
            healed["member_health"].as_array().unwrap().len(),
            3,
            "{phase}: {healed:#}"
        );
        assert_eq!(cluster.key_count(false).await.unwrap().0, keys, "{phase}");
    }
}
