//! Maintenance instead of deletion (`recovery::space`), on the simulated CSM 1.6's three real
//! members of BSS's cluster with a small quota: a database full of history gets its space back
//! with every key kept; one full of live data is left armed, saying what would help.

use std::time::Duration;

use etcd_repopulator::etcd::{EtcdClient, EtcdConfig};
use etcd_repopulator::recovery::space::{Member, SpaceError, reclaim_space};
use sim::SimCluster;

use crate::common;
use crate::metrics::sample;

const STS: &str = "cray-bss-bitnami-etcd";
const QUOTA: u64 = 2 << 20;

fn client(url: &str) -> EtcdClient {
    EtcdClient::new(url, &EtcdConfig::default()).unwrap()
}

fn members(sim: &SimCluster) -> Vec<Member> {
    sim.etcd_members(STS)
        .into_iter()
        .map(|m| Member {
            name: m.pod.clone(),
            client: client(&m.client_url),
        })
        .collect()
}

/// Writes versions of the same few keys until etcd refuses with NOSPACE: the history fills it.
async fn fill_with_history(url: &str) {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let http = reqwest::Client::new();
    let value = STANDARD.encode("h".repeat(32 * 1024));
    for i in 0..2_000 {
        let key = STANDARD.encode(format!("/history/{}", i % 4));
        let put = serde_json::json!({ "key": key, "value": value });
        let resp = http
            .post(format!("{url}/v3/kv/put"))
            .json(&put)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        if body.contains("space exceeded") {
            return;
        }
        assert!(status.is_success(), "put: {status} {body}");
    }
    panic!("2000 versions did not fill a {QUOTA}-byte quota");
}

#[tokio::test]
async fn a_database_full_of_history_gets_its_space_back_and_keeps_every_key() {
    let sim = sim::testing::real_etcd_sim_with_quota("1.6", STS, QUOTA).await;
    let url = sim.etcd_url(STS).unwrap();
    let cluster = client(&url);
    let (keys_before, _) = cluster.key_count(false).await.unwrap();
    fill_with_history(&url).await;
    assert!(
        cluster
            .alarms()
            .await
            .unwrap()
            .iter()
            .any(|a| a.alarm == "NOSPACE"),
        "the fill raised NOSPACE"
    );
    let (keys_full, _) = cluster.key_count(false).await.unwrap();
    assert_eq!(keys_full, keys_before + 4);

    let done = reclaim_space(
        &cluster,
        &members(&sim),
        Some(QUOTA),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(done.compacted_to.is_some(), "{done:?}");
    // Every member defragmented once, the former leader last, after leadership moved away.
    assert_eq!(done.defragmented.len(), 3, "{done:?}");
    let (from, _) = done.leader_moved.clone().expect("the leadership moved");
    assert_eq!(done.defragmented.last().unwrap().member, from);
    assert!(
        done.defragmented
            .iter()
            .all(|d| d.size_after < d.size_before),
        "{done:?}"
    );
    assert!(
        done.disarmed.iter().any(|a| a.starts_with("NOSPACE")),
        "{done:?}"
    );
    assert!(cluster.alarms().await.unwrap().is_empty());
    // Writable again, and nothing lost.
    common::etcd::put_at(&reqwest::Client::new(), &url, "/after/repair", "1").await;
    let (keys_after, _) = cluster.key_count(false).await.unwrap();
    assert_eq!(keys_after, keys_full + 1);

    // Again: nothing left to compact, nothing to disarm, still every key.
    let again = reclaim_space(
        &cluster,
        &members(&sim),
        Some(QUOTA),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(again.disarmed.is_empty(), "{again:?}");
    assert_eq!(cluster.key_count(false).await.unwrap().0, keys_after);
}

/// The live data the sim's fill writes is about half of the 2 MiB database that raised the
/// alarm (bbolt's free pages are the rest, which the repair returns): weighed against a quota
/// of 1 MiB, as if the quota had been lowered under the data (CSM 1.7 lowered it from 10 GiB to
/// 2 GiB), it is the data that fills it.
#[tokio::test]
async fn live_data_that_fills_the_quota_is_left_armed_saying_to_raise_it() {
    const LOWERED: u64 = 1 << 20;
    let sim = sim::testing::real_etcd_sim_with_quota("1.6", STS, QUOTA).await;
    let url = sim.etcd_url(STS).unwrap();
    sim.fill_etcd_quota(STS).await.unwrap();
    let cluster = client(&url);
    let (keys, _) = cluster.key_count(true).await.unwrap();
    let err = reclaim_space(
        &cluster,
        &members(&sim),
        Some(LOWERED),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    let SpaceError::DataFillsQuota {
        in_use,
        quota,
        done,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*quota, LOWERED);
    assert!(*in_use as f64 > LOWERED as f64 * 0.9, "{err}");
    assert_eq!(done.defragmented.len(), 3);
    assert!(
        err.to_string().contains("Raise ETCD_QUOTA_BACKEND_BYTES"),
        "{err}"
    );
    // Still armed, and nothing deleted.
    assert!(
        cluster
            .alarms()
            .await
            .unwrap()
            .iter()
            .any(|a| a.alarm == "NOSPACE")
    );
    assert_eq!(cluster.key_count(true).await.unwrap().0, keys);
}

/// Through the API: `"etcd": "repair"` on BSS's full cluster (history) gives it its space back
/// in the run's `etcd-recover` step, with no `confirm` and no safety snapshot; every key stays,
/// BSS is writable again; `auto` on the same full cluster plans the same, and `repair` of a
/// healthy cluster does nothing.
#[tokio::test]
async fn repair_and_auto_give_a_full_cluster_its_space_back_through_a_run() {
    let sim = sim::testing::real_etcd_sim_with_quota("1.6", STS, QUOTA).await;
    let url = sim.etcd_url(STS).unwrap();
    let cluster = client(&url);
    // A member at its own address: it answers while the Service has no Ready member.
    let member = client(&sim.etcd_members(STS).remove(0).client_url);
    let app = common::start_on(sim, etcd_repopulator::config::Config::default()).await;
    let id = app
        .start_run(serde_json::json!({ "services": ["bss"], "etcd": "repair" }))
        .await;
    let healthy = app.finished_run(&id).await;
    let recover = common::step(&healthy, "bss", "etcd-recover");
    assert_eq!(recover["state"], "skipped", "{healthy:#}");
    // A repair that found nothing to do is no recovery.
    let repairs = "etcd_repopulator_recovery_runs_total{mode=\"repair\",outcome=\"succeeded\"}";
    assert_eq!(sample(&app.metrics().await, repairs), 0.0);
    assert!(
        common::step(&healthy, "bss", "etcd-assess")["message"]
            .as_str()
            .unwrap()
            .contains("nothing to recover"),
        "{healthy:#}"
    );

    fill_with_history(&url).await;
    let (keys, _) = cluster.key_count(false).await.unwrap();
    // With the alarm raised the chart's probe fails on every member: the client Service has no
    // endpoint left, and the repair reaches the members at their own addresses.
    common::cluster_until(&app, STS, |r| r["ready"] == 0).await;
    let id = app
        .start_run(serde_json::json!({ "services": ["bss"], "etcd": "auto", "dry_run": true }))
        .await;
    let planned = app.finished_run(&id).await;
    let assess = common::step(&planned, "bss", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["action"], "reclaim-space",
        "{planned:#}"
    );
    assert!(
        member
            .alarms()
            .await
            .unwrap()
            .iter()
            .any(|a| a.alarm == "NOSPACE")
    );

    let id = app
        .start_run(serde_json::json!({ "services": ["bss"], "etcd": "repair" }))
        .await;
    let repaired = app.finished_run(&id).await;
    assert_eq!(repaired["state"], "succeeded", "{repaired:#}");
    assert_eq!(
        common::step(&repaired, "bss", "etcd-safety-snapshot")["state"],
        "skipped"
    );
    let recover = common::step(&repaired, "bss", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{repaired:#}");
    assert!(
        recover["message"]
            .as_str()
            .unwrap()
            .contains("has its space back, every key kept"),
        "{recover:#}"
    );
    assert_eq!(recover["data"]["defragmented"].as_array().unwrap().len(), 3);
    assert!(member.alarms().await.unwrap().is_empty());
    // Ready again, so the Service has its members back.
    common::cluster_until(&app, STS, |r| r["healthy"] == true).await;
    assert_eq!(cluster.key_count(false).await.unwrap().0, keys);
    common::etcd::put_at(&reqwest::Client::new(), &url, "/after/repair", "1").await;
    // The one that gave the space back is.
    assert_eq!(sample(&app.metrics().await, repairs), 1.0);
}
