//! One real etcd per member of a Bitnami cluster: what etcd shows matches what Kubernetes
//! shows, and a member breaks and comes back the ways the field sees.

use serde_json::{Value, json};
use sim::SimCluster;

use crate::common;

const STS: &str = "cray-bss-bitnami-etcd";

async fn bss_only() -> SimCluster {
    common::real_etcd_sim("1.6", Some(&[STS])).await
}

/// `member list` through `url`: (id, name, peer URLs, client URLs) by name.
async fn member_list(url: &str) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v3/cluster/member/list"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, list) = common::json(resp).await;
    assert_eq!(status, 200, "{list}");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut members: Vec<_> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["ID"].as_str().unwrap().to_owned(),
                m["name"].as_str().unwrap_or_default().to_owned(),
                strings(&m["peerURLs"]),
                strings(&m["clientURLs"]),
            )
        })
        .collect();
    members.sort_by(|a, b| a.1.cmp(&b.1));
    members
}

/// The member id that answers at `url` (`endpoint status`).
async fn member_id(url: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v3/maintenance/status"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = common::json(resp).await;
    assert_eq!(status, 200, "{body}");
    body["header"]["member_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_three_member_cluster_is_three_etcd_members_each_at_its_pod_ip() {
    let sim = bss_only().await;
    let members = sim.etcd_members(STS);
    let pods: Vec<&str> = members.iter().map(|m| m.pod.as_str()).collect();
    assert_eq!(
        pods,
        [format!("{STS}-0"), format!("{STS}-1"), format!("{STS}-2")]
    );
    let service = sim.etcd_url(STS).unwrap();
    let listed = member_list(&service).await;
    let names: Vec<&str> = listed.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(names, pods);
    for (member, (id, _, peers, clients)) in members.iter().zip(&listed) {
        // Registered at its pod's address, started.
        assert_eq!(peers, &[format!("http://{}:2380", member.ip)]);
        assert_eq!(clients[0], member.client_url);
        // Each answers at its own address, as itself, and sees the same three members.
        assert_eq!(&member_id(&member.client_url).await, id);
        assert_eq!(member_list(&member.client_url).await, listed);
    }
    let ids: std::collections::BTreeSet<&String> = listed.iter().map(|m| &m.0).collect();
    assert_eq!(ids.len(), 3);
    // The pod IPs Kubernetes shows are the members' addresses.
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(sim.kube_client(), "services");
    for member in &members {
        let pod = api.get(&member.pod).await.unwrap();
        assert_eq!(pod.status.unwrap().pod_ip.unwrap(), member.ip.to_string());
    }
}

/// A JSON gateway call: its status and body.
async fn call(url: &str, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
    let resp = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await;
    match resp {
        Ok(resp) => common::json(resp).await,
        Err(e) => (
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            json!({ "transport": e.to_string() }),
        ),
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn put(url: &str, key: &str, value: &str) {
    let (status, body) = call(
        url,
        "/v3/kv/put",
        json!({ "key": b64(key), "value": b64(value) }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// How many keys start with `/test/`, read at `url` alone (`serializable`: the member's own
/// data, no leader needed) or through the leader.
async fn test_keys(url: &str, serializable: bool) -> Result<u64, Value> {
    let (status, body) = call(
        url,
        "/v3/kv/range",
        json!({
            "key": b64("/test/"), "range_end": b64("/test0"),
            "count_only": true, "serializable": serializable,
        }),
    )
    .await;
    if status != 200 || body.get("error").is_some() {
        return Err(body);
    }
    Ok(body["count"].as_str().map_or(0, |c| c.parse().unwrap()))
}

async fn put_test_keys(url: &str, n: u64) {
    for i in 0..n {
        put(url, &format!("/test/{i}"), "v").await;
    }
}

fn pods(sim: &SimCluster) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
    kube::Api::namespaced(sim.kube_client(), "services")
}

/// The etcd container of `pod`: (ready, restarts, waiting reason, last termination
/// message); not ready while the pod is not there.
async fn container(sim: &SimCluster, pod: &str) -> (bool, i32, Option<String>, Option<String>) {
    let Some(c) = pods(sim)
        .get_opt(pod)
        .await
        .unwrap()
        .and_then(|p| p.status?.container_statuses?.into_iter().next())
    else {
        return (false, 0, None, None);
    };
    (
        c.ready,
        c.restart_count,
        c.state.and_then(|s| s.waiting).and_then(|w| w.reason),
        c.last_state
            .and_then(|s| s.terminated)
            .and_then(|t| t.message),
    )
}

/// Waits until `pod` crash-loops with a last message that contains `words`. The kubelet's
/// back-off doubles from 10 s, and on a loaded machine the first exit can be another error
/// (a peer not yet reachable), so this waits through a few restarts rather than [`common::WAIT`].
async fn crash_loops_with(sim: &SimCluster, pod: &str, words: &str) -> String {
    let what = format!("{pod} crash-looping with {words:?}");
    common::until_within(std::time::Duration::from_secs(120), &what, async || {
        let (ready, restarts, waiting, message) = container(sim, pod).await;
        (!ready && restarts >= 1 && waiting.as_deref() == Some("CrashLoopBackOff"))
            .then_some(message)
            .flatten()
            .filter(|m| m.contains(words))
    })
    .await
}

#[tokio::test]
async fn a_member_whose_volume_is_lost_rejoins_as_a_new_member_once_the_old_one_is_removed() {
    let sim = bss_only().await;
    let service = sim.etcd_url(STS).unwrap();
    put_test_keys(&service, 20).await;
    let before = member_list(&service).await;
    let lost = format!("{STS}-2");
    let old_id = before.iter().find(|m| m.1 == lost).unwrap().0.clone();

    // The field's way: the PVC deleted (it waits, Terminating, for its pod), then the pod.
    let client = sim.kube_client();
    let pvcs: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(client.clone(), "services");
    pvcs.delete(&format!("data-{lost}"), &Default::default())
        .await
        .unwrap();
    pods(&sim).delete(&lost, &Default::default()).await.unwrap();

    // The new pod finds a member that does not answer in the list, so it bootstraps; etcd,
    // with the chart's ETCD_INITIAL_CLUSTER_STATE (new), refuses: the cluster knows it.
    crash_loops_with(&sim, &lost, "has already been bootstrapped").await;
    // The two others serve all along.
    assert_eq!(test_keys(&service, false).await.unwrap(), 20);

    // Removing the old member (what a repair does first) lets the container join: etcd
    // learns it was removed, the script wipes its data, `member add`s it and starts it.
    let id: u64 = old_id.parse().unwrap();
    let (status, body) = call(
        &service,
        "/v3/cluster/member/remove",
        json!({ "ID": id.to_string() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let member = common::until("the new member started and Ready", async || {
        let (ready, ..) = container(&sim, &lost).await;
        let listed = member_list(&service).await;
        let new = listed
            .iter()
            .find(|m| m.1 == lost && !m.3.is_empty())?
            .clone();
        (ready && listed.len() == 3).then_some(new)
    })
    .await;
    assert_ne!(member.0, old_id, "a new member id");
    assert!(!member_list(&service).await.iter().any(|m| m.0 == old_id));
    // It has the data, on its own.
    let url = &sim
        .etcd_members(STS)
        .into_iter()
        .find(|m| m.pod == lost)
        .unwrap()
        .client_url;
    let synced = common::until("the keys on the new member", async || {
        test_keys(url, true).await.ok().filter(|n| *n == 20)
    })
    .await;
    assert_eq!(synced, 20);
    let log = pods(&sim).logs(&lost, &Default::default()).await.unwrap();
    assert!(
        log.contains("Adding new member to existing cluster"),
        "{log}"
    );
}

#[tokio::test]
async fn two_of_three_members_stopped_lose_quorum_and_do_not_come_back_by_themselves() {
    let sim = bss_only().await;
    let service = sim.etcd_url(STS).unwrap();
    put_test_keys(&service, 5).await;
    let survivor = sim.etcd_members(STS).remove(0);
    for pod in [format!("{STS}-1"), format!("{STS}-2")] {
        sim.stop_etcd_member(&pod).await.unwrap();
    }
    let stopped: Vec<bool> = sim.etcd_members(STS).iter().map(|m| m.stopped).collect();
    assert_eq!(stopped, [false, true, true]);
    // No quorum: a read through the leader fails on the survivor...
    let err = test_keys(&survivor.client_url, false).await.unwrap_err();
    assert!(err.to_string().contains("etcdserver"), "{err}");
    // ...and through the Service, once the survivor is not Ready (it has no endpoint left).
    common::until("the survivor not Ready", async || {
        (!container(&sim, &survivor.pod).await.0).then_some(())
    })
    .await;
    assert!(test_keys(&service, false).await.is_err());
    // The survivor still answers for itself: its status, and its own data.
    let (status, body) = call(&survivor.client_url, "/v3/maintenance/status", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(test_keys(&survivor.client_url, true).await.unwrap(), 5);

    // Started again, each finds the cluster not responding (one member of three answers, and
    // not healthily) and, with ETCD_DISASTER_RECOVERY=yes, no /snapshots/db-* to restore:
    // they crash-loop, and quorum stays lost.
    for pod in [format!("{STS}-1"), format!("{STS}-2")] {
        sim.start_etcd_member(&pod).unwrap();
    }
    for pod in [format!("{STS}-1"), format!("{STS}-2")] {
        crash_loops_with(&sim, &pod, "There was no snapshot to restore!").await;
        let log = pods(&sim).logs(&pod, &Default::default()).await.unwrap();
        assert!(log.contains("Cluster not responding!"), "{log}");
    }
    assert!(test_keys(&survivor.client_url, false).await.is_err());
}

#[tokio::test]
async fn a_small_quota_filled_raises_nospace_and_the_members_go_not_ready() {
    let sim = sim::testing::real_etcd_sim_with_quota("1.6", STS, 2 << 20).await;
    let filled = sim.fill_etcd_quota(STS).await.unwrap();
    assert!(filled.keys >= 1, "{filled:?}");
    assert!(
        filled.refused.contains("database space exceeded"),
        "{filled:?}"
    );
    let member = sim.etcd_members(STS).remove(0);
    let (status, alarms) = call(
        &member.client_url,
        "/v3/maintenance/alarm",
        json!({ "action": "GET" }),
    )
    .await;
    assert_eq!(status, 200, "{alarms}");
    let raised: Vec<&str> = alarms["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alarm"].as_str().unwrap())
        .collect();
    assert!(
        !raised.is_empty() && raised.iter().all(|a| *a == "NOSPACE"),
        "{alarms}"
    );
    // The chart's probe fails with an alarm raised: no member is Ready.
    common::until("every member not Ready", async || {
        let mut ready = false;
        for m in sim.etcd_members(STS) {
            ready |= container(&sim, &m.pod).await.0;
        }
        (!ready).then_some(())
    })
    .await;
    // Reads still work on a member; writes do not.
    assert!(test_keys(&member.client_url, false).await.is_ok());
    let (_, refused) = call(
        &member.client_url,
        "/v3/kv/put",
        json!({ "key": b64("/k"), "value": b64("v") }),
    )
    .await;
    assert!(
        refused.to_string().contains("database space exceeded"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_member_with_a_corrupt_database_crash_loops_while_the_others_serve() {
    let sim = bss_only().await;
    let service = sim.etcd_url(STS).unwrap();
    put_test_keys(&service, 5).await;
    let broken = format!("{STS}-1");
    sim.damage_etcd_member(
        &broken,
        sim::kube::controllers::etcd_member::faults::Damage::CorruptDb,
    )
    .await
    .unwrap();
    let message = crash_loops_with(&sim, &broken, "etcd exited").await;
    assert!(message.contains("database"), "{message}");
    // Still three members, two of them serving through the Service.
    assert_eq!(member_list(&service).await.len(), 3);
    assert_eq!(test_keys(&service, false).await.unwrap(), 5);
    let (ready, restarts, ..) = container(&sim, &broken).await;
    assert!(!ready && restarts >= 1);
}

#[tokio::test]
async fn with_state_existing_a_member_whose_volume_is_lost_panics_on_the_leaders_log() {
    let sim = bss_only().await;
    let service = sim.etcd_url(STS).unwrap();
    put_test_keys(&service, 5).await;
    // What CSM's restore leaves behind: ETCD_INITIAL_CLUSTER_STATE=existing, rolled out.
    let sets: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(sim.kube_client(), "services");
    sets.patch(
        STS,
        &Default::default(),
        &kube::api::Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": [{
            "name": "etcd", "env": [{ "name": "ETCD_INITIAL_CLUSTER_STATE", "value": "existing" }],
        }]}}}})),
    )
    .await
    .unwrap();
    common::until("the rollout", async || {
        let status = sets.get(STS).await.unwrap().status?;
        (status.updated_replicas == Some(3) && status.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let lost = format!("{STS}-1");
    let pvcs: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(sim.kube_client(), "services");
    pvcs.delete(&format!("data-{lost}"), &Default::default())
        .await
        .unwrap();
    pods(&sim).delete(&lost, &Default::default()).await.unwrap();
    // It joins as the member the cluster knows, with an empty log, and the leader's commit
    // index is beyond it: raft panics, every time.
    crash_loops_with(
        &sim,
        &lost,
        "Was the raft log corrupted, truncated, or lost?",
    )
    .await;
    assert_eq!(test_keys(&service, false).await.unwrap(), 5);
}
