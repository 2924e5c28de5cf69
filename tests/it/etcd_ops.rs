//! The etcd operations the repairs are built from, each against real etcd: a plain
//! single-member etcd for what one member does (status, alarms, compaction, defragmentation,
//! snapshot), the simulated cluster's three real members for what needs several (member list
//! and removal, leadership transfer).

use std::{sync::atomic::AtomicBool, time::Duration};

use etcd_repopulator::etcd::{EtcdAlarm, EtcdClient, EtcdConfig, snapshot_db};
use serde_json::json;

use crate::common::{self, etcd::Etcd};

fn client(url: &str) -> EtcdClient {
    EtcdClient::new(url, &EtcdConfig::default()).unwrap()
}

#[tokio::test]
async fn one_members_status_answers_for_that_member() {
    let etcd = Etcd::start().await;
    etcd.put("/a", "1").await;
    let etcd_client = client(&etcd.url);
    let status = etcd_client.member_status().await.unwrap();
    let members = etcd_client.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(status.member_id, members[0].id);
    // A single member leads itself.
    assert_eq!(status.leader.as_deref(), Some(status.member_id.as_str()));
    assert!(
        status.raft_term >= 1 && status.raft_index >= 1,
        "{status:?}"
    );
    assert!(status.revision >= 2, "{status:?}");
    assert!(status.db_size >= status.db_size_in_use && status.db_size_in_use > 0);
    assert!(status.errors.is_empty(), "{status:?}");
}

#[tokio::test]
async fn a_nospace_alarm_is_listed_then_disarmed() {
    let etcd = Etcd::start().await;
    let etcd_client = client(&etcd.url);
    let id = etcd_client.member_status().await.unwrap().member_id;
    common::etcd::gateway(
        &etcd.url,
        "/v3/maintenance/alarm",
        json!({ "action": "ACTIVATE", "memberID": id, "alarm": "NOSPACE" }),
    )
    .await;
    let raised = vec![EtcdAlarm {
        member_id: id.clone(),
        alarm: "NOSPACE".to_owned(),
    }];
    assert_eq!(etcd_client.alarms().await.unwrap(), raised);
    // The member says so in its own status too, and refuses writes.
    let status = etcd_client.member_status().await.unwrap();
    assert!(
        status.errors.iter().any(|e| e.contains("NOSPACE")),
        "{status:?}"
    );
    assert_eq!(etcd_client.disarm_all().await.unwrap(), raised);
    assert!(etcd_client.alarms().await.unwrap().is_empty());
    etcd.put("/after", "writable").await;
    // Nothing to disarm is not an error.
    assert!(etcd_client.disarm_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn compaction_then_defragmentation_returns_the_space_and_keeps_the_keys() {
    let etcd = Etcd::start().await;
    let etcd_client = client(&etcd.url);
    // Many versions of a few keys: the history fills the database.
    let value = "x".repeat(16 * 1024);
    for i in 0..200 {
        etcd.put(&format!("/k{}", i % 4), &value).await;
    }
    let before = etcd_client.member_status().await.unwrap();
    etcd_client.compact(before.revision).await.unwrap();
    // The old versions are gone: a read at an old revision is refused.
    let old = etcd_client.key_page(b"", Some(2), 10).await.unwrap_err();
    assert!(old.to_string().contains("compacted"), "{old}");
    // Compacting again to the same revision is refused.
    let again = etcd_client.compact(before.revision).await.unwrap_err();
    assert!(again.to_string().contains("compacted"), "{again}");
    etcd_client
        .defragment(Duration::from_secs(30))
        .await
        .unwrap();
    let after = etcd_client.member_status().await.unwrap();
    assert!(
        after.db_size * 2 < before.db_size,
        "{} bytes before, {} after",
        before.db_size,
        after.db_size
    );
    assert_eq!(after.revision, before.revision);
    assert_eq!(etcd_client.count_keys().await.unwrap().0, 4);
}

#[tokio::test]
async fn a_snapshot_of_one_member_is_written_whole_to_a_file() {
    let etcd = Etcd::start().await;
    for i in 0..10 {
        etcd.put(&format!("/snap/{i}"), "v").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.db");
    let etcd_client = client(&etcd.url);
    let written = etcd_client
        .snapshot_to_file(&path, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
    assert!(!dir.path().join("member.db.part").exists());
    let facts = snapshot_db::read_snapshot_file(&path, &AtomicBool::new(false)).unwrap();
    assert_eq!(
        facts.live_keys_by_prefix.get("/snap/"),
        Some(&10),
        "{facts:?}"
    );
    let status = etcd_client.member_status().await.unwrap();
    assert_eq!(facts.revision, status.revision as u64);
    // A member that does not answer leaves no file behind.
    drop(etcd);
    let gone = dir.path().join("gone.db");
    assert!(
        etcd_client
            .snapshot_to_file(&gone, Duration::from_secs(5))
            .await
            .is_err()
    );
    assert!(!gone.exists() && !dir.path().join("gone.db.part").exists());
}

const STS: &str = "cray-bss-bitnami-etcd";

#[tokio::test]
async fn leadership_moves_to_a_follower_and_a_member_is_removed() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[STS])).await;
    let service = client(&sim.etcd_url(STS).unwrap());
    let members = service.members().await.unwrap();
    assert_eq!(members.len(), 3);
    // Each member answers for itself at its own address.
    let mut statuses = Vec::new();
    for member in sim.etcd_members(STS) {
        let status = client(&member.client_url).member_status().await.unwrap();
        statuses.push((member.client_url, status));
    }
    let leader = statuses[0].1.leader.clone().unwrap();
    let (leader_url, _) = statuses
        .iter()
        .find(|(_, s)| s.member_id == leader)
        .unwrap();
    let (follower_url, follower) = statuses
        .iter()
        .find(|(_, s)| s.member_id != leader)
        .unwrap();
    // Only the leader hands leadership over.
    let refused = client(follower_url).move_leader(&leader).await.unwrap_err();
    assert!(refused.to_string().contains("leader"), "{refused}");
    client(leader_url)
        .move_leader(&follower.member_id)
        .await
        .unwrap();
    let now = client(follower_url).member_status().await.unwrap();
    assert_eq!(now.leader.as_ref(), Some(&follower.member_id));
    assert!(now.raft_term > follower.raft_term);

    // The old leader, now a follower, is removed: two members remain, serving.
    // The new leader refuses a removal until it has heard from enough members for etcd's
    // health interval (5 s): right after a leader change, `unhealthy cluster`.
    common::until("the removal accepted", async || {
        match client(follower_url).remove_member(&leader).await {
            Ok(()) => Some(()),
            Err(err) if err.to_string().contains("unhealthy cluster") => None,
            Err(err) => panic!("{err}"),
        }
    })
    .await;
    let remaining = client(follower_url).members().await.unwrap();
    assert_eq!(remaining.len(), 2);
    assert!(remaining.iter().all(|m| m.id != leader));
    let unknown = client(follower_url)
        .remove_member(&leader)
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("not found"), "{unknown}");
    common::until("the cluster serving with two members", async || {
        client(follower_url).count_keys().await.ok()
    })
    .await;
}
