//! The simulated Bitnami etcd pods against CSM's rebuild and restore procedures
//! (`rebuild_cluster`, `restore_from_backup`): scale to 0, `kubectl set env` (a strategic merge
//! patch of the pod template), delete the PVCs, scale to 3, on real etcd and real snapshots,
//! measured on BSS's real keys.

use csm_wire::CsmService;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use sim::SimCluster;

use crate::common::{self, until};

const STS: &str = "cray-bss-bitnami-etcd";

async fn sim_1_6() -> SimCluster {
    common::real_etcd_sim("1.6", Some(&[STS])).await
}

fn pods(sim: &SimCluster) -> Api<Pod> {
    Api::namespaced(sim.kube_client(), "services")
}

async fn members(sim: &SimCluster) -> Vec<Pod> {
    pods(sim)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=cray-bss"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.labels.as_ref().is_some_and(|l| {
                l.get("app.kubernetes.io/name").map(String::as_str) == Some("etcd")
            })
        })
        .collect()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_replicas(sim: &SimCluster) -> i32 {
    let sts: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    let set = sts.get(STS).await.unwrap();
    set.status.and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// `kubectl scale statefulset --replicas=n`.
async fn scale(sim: &SimCluster, replicas: i32) {
    let sts: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    sts.patch_scale(
        STS,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
    )
    .await
    .unwrap();
}

/// CSM's procedure up to the scale back to 3: scale to 0 and wait for the pods to go, `kubectl
/// set env` (`env`), delete the PVCs `data-<sts>-0..2` and wait for them to go, scale to 3.
async fn recreate_with(sim: &SimCluster, env: &[(&str, &str)]) {
    scale(sim, 0).await;
    until("the members to go", async || {
        members(sim).await.is_empty().then_some(())
    })
    .await;
    let sts: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    let env: Vec<Value> = env
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    // What `kubectl set env` sends: a strategic merge patch of the etcd container's env.
    sts.patch(
        STS,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "spec": { "template": { "spec": {
            "containers": [{ "name": "etcd", "env": env }],
        }}}})),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sim.kube_client(), "services");
    for i in 0..3 {
        pvcs.delete(&format!("data-{STS}-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    until("the PVCs to go", async || {
        let left = pvcs.list(&ListParams::default()).await.unwrap().items;
        (!left.iter().any(|p| {
            p.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("data-cray-bss-")
        }))
        .then_some(())
    })
    .await;
    scale(sim, 3).await;
}

/// Waits until the three members run and one of them shows its etcd container crash-looping
/// (a restart done, the last termination's message); returns that message.
async fn crash_looping(sim: &SimCluster) -> String {
    until("the etcd container to crash-loop", async || {
        let pods = members(sim).await;
        if pods.len() < 3 {
            return None;
        }
        pods.iter().find_map(|p| {
            let c = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            (waiting.reason.as_deref() == Some("CrashLoopBackOff") && c.restart_count >= 1)
                .then(|| c.last_state.as_ref()?.terminated.as_ref()?.message.clone())
                .flatten()
        })
    })
    .await
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn put_boot_parameters(sim: &SimCluster, host: &str) {
    let url = format!(
        "{}/boot/v1/bootparameters",
        sim::csm::service_url(&sim.url(), CsmService::Bss)
    );
    let resp = reqwest::Client::new()
        .put(url)
        .json(&json!({
            "hosts": [host],
            "params": "console=ttyS0,115200 ip=dhcp",
            "kernel": "s3://boot-images/k/kernel",
            "initrd": "s3://boot-images/k/initrd",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

async fn bss_list(sim: &SimCluster) -> (reqwest::StatusCode, Value) {
    let url = format!(
        "{}/boot/v1/bootparameters",
        sim::csm::service_url(&sim.url(), CsmService::Bss)
    );
    common::json(reqwest::get(url).await.unwrap()).await
}

/// The seeded backup of the cluster in the snapshotter directory.
fn seeded_backup(sim: &SimCluster, sts: &str) -> std::path::PathBuf {
    let dir = sim
        .snapshots_dir()
        .expect("1.6 has the snapshotter PVC")
        .join(sts);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    files.pop().expect("a seeded backup")
}

#[tokio::test]
async fn every_bitnami_cluster_has_a_seeded_backup_and_bss_keeps_its_data_in_etcd() {
    let sim = common::real_etcd_sim("1.6", None).await;
    for sts in [
        "cray-bos-bitnami-etcd",
        "cray-bss-bitnami-etcd",
        "cray-fas-bitnami-etcd",
        "cray-hmnfd-bitnami-etcd",
    ] {
        let file = seeded_backup(&sim, sts);
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        // snapshot.sh's `db-$(date -u "+%Y-%m-%d_%H-%M")`.
        assert!(
            name.starts_with("db-20") && name.len() == "db-2025-01-01_00-00".len(),
            "{name}"
        );
        // A real etcd snapshot: etcdctl can read it.
        let status = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "status"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }
    let keys = sim.bss_key_count().await.unwrap();
    let (status, list) = bss_list(&sim).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), keys);
    assert!(keys > 1, "{keys}");
    // Every etcd pod is Ready because its etcd answers.
    assert!(members(&sim).await.iter().all(ready));
}

#[tokio::test]
async fn a_restore_from_a_snapshot_brings_bss_keys_back() {
    let sim = sim_1_6().await;
    put_boot_parameters(&sim, "x3000c0s99b0n0").await;
    let keys = sim.bss_key_count().await.unwrap();
    // A backup as the snapshotter CronJob makes it, into the snapshotter PVC.
    let dir = sim.snapshots_dir().unwrap().join(STS);
    let url = sim.etcd_url(STS).unwrap();
    let file = sim::kube::controllers::etcd_member::save_snapshot(&url, &dir)
        .await
        .unwrap();
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    // Lost after the snapshot: it must not come back.
    put_boot_parameters(&sim, "x3000c0s98b0n0").await;
    recreate_with(
        &sim,
        &[
            ("ETCD_START_FROM_SNAPSHOT", "yes"),
            ("ETCD_INIT_SNAPSHOT_FILENAME", &name),
            ("ETCD_INIT_SNAPSHOTS_DIR", &format!("/snapshots/{STS}")),
            ("ETCD_INITIAL_CLUSTER_STATE", "new"),
        ],
    )
    .await;
    until("the members Ready", async || {
        (ready_replicas(&sim).await == 3).then_some(())
    })
    .await;
    assert_eq!(sim.bss_key_count().await.unwrap(), keys);
    // Every member restored the snapshot into the same cluster: three members, each with
    // the keys in its own data.
    let members = sim.etcd_members(STS);
    assert_eq!(members.len(), 3);
    let mut ids = std::collections::BTreeSet::new();
    for member in &members {
        let (status, body) = common::json(
            reqwest::Client::new()
                .post(format!("{}/v3/kv/range", member.client_url))
                .json(&json!({
                    "key": b64("/params/"), "range_end": b64("/params0"),
                    "count_only": true, "serializable": true,
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["count"], keys.to_string(), "{}: {body}", member.pod);
        ids.insert(body["header"]["member_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 3, "{ids:?}");
    let (status, list) = bss_list(&sim).await;
    assert_eq!(status, 200, "{list:#}");
    let hosts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["hosts"][0].as_str().unwrap())
        .collect();
    assert!(hosts.contains(&"x3000c0s99b0n0"), "{hosts:?}");
    assert!(!hosts.contains(&"x3000c0s98b0n0"), "{hosts:?}");
    // CSM's last step: back to `existing`, rolled out with the data kept.
    let sts: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    sts.patch(
        STS,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": [{
            "name": "etcd",
            "env": [
                { "name": "ETCD_START_FROM_SNAPSHOT", "value": "no" },
                { "name": "ETCD_INITIAL_CLUSTER_STATE", "value": "existing" },
            ],
        }]}}}})),
    )
    .await
    .unwrap();
    sim.wait_settled(common::WAIT).await.unwrap();
    until("the rollout to finish", async || {
        let set = sts.get(STS).await.unwrap();
        let status = set.status.unwrap();
        (status.updated_replicas == Some(3) && status.ready_replicas == Some(3)).then_some(())
    })
    .await;
    assert_eq!(sim.bss_key_count().await.unwrap(), keys);
}

#[tokio::test]
async fn a_rebuild_with_state_new_starts_an_empty_cluster() {
    let sim = sim_1_6().await;
    assert!(sim.bss_key_count().await.unwrap() > 0);
    recreate_with(&sim, &[("ETCD_INITIAL_CLUSTER_STATE", "new")]).await;
    until("the members Ready", async || {
        (ready_replicas(&sim).await == 3).then_some(())
    })
    .await;
    assert_eq!(sim.bss_key_count().await.unwrap(), 0);
    let (status, list) = bss_list(&sim).await;
    assert_eq!((status.as_u16(), list), (200, json!([])));
}

#[tokio::test]
async fn pvcs_deleted_with_state_existing_leave_the_members_crash_looping() {
    let sim = sim_1_6().await;
    recreate_with(&sim, &[("ETCD_INITIAL_CLUSTER_STATE", "existing")]).await;
    // Nobody answers, so each member bootstraps and etcd, told to join an existing cluster,
    // finds none and exits, leaving its data directory behind; from then on the container
    // finds data, and a cluster that does not respond, and its disaster recovery finds no
    // `/snapshots/db-*` (CSM's are under `/snapshots/<sts>/`).
    let message = until("the disaster recovery's failure", async || {
        let m = crash_looping(&sim).await;
        m.contains("There was no snapshot to restore!").then_some(m)
    })
    .await;
    assert_eq!(message, "There was no snapshot to restore!");
    // The crash loop went round at least once more, and nobody became Ready.
    assert!(members(&sim).await.iter().all(|p| !ready(p)));
    assert_eq!(ready_replicas(&sim).await, 0);
    // BSS with its etcd down: a 5xx problem.
    let (status, problem) = bss_list(&sim).await;
    assert_eq!(status, 500, "{problem:#}");
    assert!(
        problem["detail"].as_str().unwrap().contains("etcd"),
        "{problem:#}"
    );
    // The error is in the pods' log.
    let log = pods(&sim)
        .logs(&format!("{STS}-0"), &Default::default())
        .await
        .unwrap();
    assert!(
        log.contains("could not retrieve cluster information from the given URLs"),
        "{log}"
    );
    assert!(log.contains("Cluster not responding!"), "{log}");
}

#[tokio::test]
async fn a_corrupt_or_missing_snapshot_fails_the_restore() {
    let sim = sim_1_6().await;
    let good = seeded_backup(&sim, STS);
    let corrupt = good.with_file_name("db-2000-01-01_00-00");
    let mut bytes = std::fs::read(&good).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    recreate_with(
        &sim,
        &[
            ("ETCD_START_FROM_SNAPSHOT", "yes"),
            ("ETCD_INIT_SNAPSHOT_FILENAME", "db-2000-01-01_00-00"),
            ("ETCD_INIT_SNAPSHOTS_DIR", &format!("/snapshots/{STS}")),
            ("ETCD_INITIAL_CLUSTER_STATE", "new"),
        ],
    )
    .await;
    let message = crash_looping(&sim).await;
    assert!(message.contains("etcdctl snapshot restore"), "{message}");
    assert_eq!(ready_replicas(&sim).await, 0);
    assert!(
        sim.etcd_url(STS).is_some(),
        "the member exists, crash-looping"
    );
    assert!(sim.bss_key_count().await.is_err(), "nothing answers");

    // A file that is not there (a name nobody downloaded).
    recreate_with(
        &sim,
        &[("ETCD_INIT_SNAPSHOT_FILENAME", "db-1999-01-01_00-00")],
    )
    .await;
    let message = until("the missing snapshot reported", async || {
        let m = crash_looping(&sim).await;
        m.contains("db-1999").then_some(m)
    })
    .await;
    assert!(
        message.contains("There was no snapshot to restore!"),
        "{message}"
    );
    assert_eq!(ready_replicas(&sim).await, 0);
}
