//! Restoring and rebuilding an etcd cluster in a run (`"etcd": "rebuild" | "restore" |
//! "auto"`) on the Bitnami layout (CSM 1.6), against the simulated cluster with real etcd
//! processes behind the etcd pods: the StatefulSet, its environment, its PVCs and the real
//! keys are what the tests look at.

use crate::common;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{PersistentVolumeClaim, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::wait::await_condition,
};
use serde_json::{Value, json};
use sim::SimOptions;

use etcd_repopulator::{config::Config, etcd::backups::Backups};

pub const FAS_STS: &str = "cray-fas-bitnami-etcd";
pub const FAS_SELECTOR: &str = "app.kubernetes.io/name=etcd,app.kubernetes.io/instance=cray-fas";

/// Every phase of `etcd-recover`, in order.
pub const PHASES: [&str; 8] = [
    "stored",
    "scaled-down",
    "env-set",
    "pvcs-deleted",
    "scaled-up",
    "healthy",
    "env-restored",
    "settled",
];

/// The service's configuration with a snapshotter directory of its own (`dir`).
pub fn config_with_snapshots(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.recovery.snapshots_dir = dir.to_owned();
    config
}

/// CSM 1.6 with real etcd behind the two clusters these tests recover (BSS's and FAS's).
pub async fn real_etcd_sim() -> sim::SimCluster {
    common::real_etcd_sim_of("1.6", Some(&REAL_CLUSTERS)).await
}

/// The etcd clusters the recovery tests run for real.
pub const REAL_CLUSTERS: [&str; 2] = [BSS_STS, FAS_STS];

/// [`REAL_CLUSTERS`], for `SimOptions::real_etcd_clusters`.
pub fn real_clusters() -> Option<Vec<String>> {
    Some(REAL_CLUSTERS.iter().map(|c| (*c).to_owned()).collect())
}

/// The etcd container's environment of the StatefulSet `name`, as a map.
pub async fn etcd_env(client: &kube::Client, name: &str) -> BTreeMap<String, String> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "services");
    let set = api.get(name).await.unwrap();
    set.spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .find(|c| c.name == "etcd")
        .unwrap()
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name, v.value.unwrap_or_default()))
        .collect()
}

pub async fn replicas(client: &kube::Client, name: &str) -> i32 {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "services");
    api.get(name).await.unwrap().spec.unwrap().replicas.unwrap()
}

/// name -> uid of the PVCs of `selector`.
pub async fn pvcs(client: &kube::Client, selector: &str) -> BTreeMap<String, String> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.uid().unwrap()))
        .collect()
}

/// resourceVersions of the StatefulSet, its pods and PVCs.
async fn versions(client: &kube::Client) -> Vec<(String, String)> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "services");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "services");
    let params = ListParams::default().labels(FAS_SELECTOR);
    let mut out = vec![(
        FAS_STS.to_owned(),
        sets.get(FAS_STS).await.unwrap().resource_version().unwrap(),
    )];
    for p in pvcs.list(&params).await.unwrap().items {
        out.push((p.name_any(), p.resource_version().unwrap()));
    }
    for p in pods.list(&params).await.unwrap().items {
        out.push((p.name_any(), p.resource_version().unwrap()));
    }
    out
}

/// The phases `etcd-recover` journalled, in order.
pub fn phases(step: &Value) -> Vec<String> {
    step["data"]["phases"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["phase"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn rebuild_empties_the_cluster_brings_it_back_healthy_and_repopulates() {
    let sim = real_etcd_sim().await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    let url = sim.etcd_url(FAS_STS).expect("fas etcd runs");
    common::etcd_put(&url, "/fas/stale", "from before the rebuild").await;
    let before_pvcs = pvcs(&client, FAS_SELECTOR).await;
    assert_eq!(before_pvcs.len(), 3);
    let before_env = etcd_env(&client, FAS_STS).await;
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    let before = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(before["keys"], 1);

    // The cluster holds a key: a rebuild without `discard_newer` stops before it changes
    // anything, saying what it would lose.
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    let refused = app.finished_run(&id).await;
    assert_eq!(refused["state"], "failed", "{refused:#}");
    let assess = common::step(&refused, "fas", "etcd-assess");
    let message = assess["message"].as_str().unwrap();
    assert!(
        message.contains("holds 1 key(s)") && message.contains("\"discard_newer\": true"),
        "{message}"
    );
    assert_eq!(
        common::step(&refused, "fas", "etcd-recover")["state"],
        "skipped"
    );
    assert_eq!(
        pvcs(&client, FAS_SELECTOR).await,
        before_pvcs,
        "nothing touched"
    );

    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS], "discard_newer": true }))
        .await;
    let run = app.finished_run(&id).await;
    // FAS's own last step names what a rebuild loses for good (actions, snapshots).
    assert_eq!(run["state"], "action_required", "{run:#}");
    let names: Vec<&str> = run["services"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &names[..4],
        [
            "etcd-assess",
            "etcd-safety-snapshot",
            "etcd-recover",
            "check-etcd-cluster"
        ],
        "{run:#}"
    );
    let assess = common::step(&run, "fas", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["action"], "rebuild",
        "{assess:#}"
    );
    assert_eq!(assess["data"]["report"]["healthy"], true);
    // What the cluster held before is kept, listed as a backup of the service.
    let safety = common::step(&run, "fas", "etcd-safety-snapshot");
    assert_eq!(safety["state"], "succeeded", "{safety:#}");
    assert_eq!(safety["data"]["keys"], 1, "{safety:#}");
    let name = safety["data"]["backup"].as_str().unwrap();
    assert!(
        name.starts_with("repopulator-") && name.ends_with(&id),
        "{name}"
    );
    let listed = Backups::new(&config_with_snapshots(snapshots.path()).recovery)
        .list("cray-fas", FAS_STS)
        .await
        .unwrap();
    let listed = listed.iter().find(|b| b.name == name).expect("listed");
    assert_eq!(listed.safety.as_ref().unwrap().run_id, id);
    assert!(!listed.safety.as_ref().unwrap().empty);
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    assert_eq!(phases(recover), PHASES, "{recover:#}");
    assert_eq!(recover["data"]["replicas"], 3);
    assert_eq!(
        recover["data"]["pvcs"],
        json!([
            "data-cray-fas-bitnami-etcd-0",
            "data-cray-fas-bitnami-etcd-1",
            "data-cray-fas-bitnami-etcd-2"
        ])
    );
    // A rebuild does not start from a snapshot: the chart's ETCD_START_FROM_SNAPSHOT stays no,
    // and CSM's ETCD_DISASTER_RECOVERY as it was.
    assert_eq!(
        recover["data"]["recovery_env"],
        json!([
            { "name": "ETCD_INITIAL_CLUSTER_STATE", "value": "new" },
            { "name": "ETCD_START_FROM_SNAPSHOT", "value": "no" },
            { "name": "ETCD_DISASTER_RECOVERY", "value": "yes" },
        ])
    );
    // The repopulation ran on the empty cluster.
    let check = common::step(&run, "fas", "check-etcd-cluster");
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .contains("empty, as after a rebuild"),
        "{check:#}"
    );
    assert_eq!(
        common::step(&run, "fas", "reload-fas-images-from-nexus")["state"],
        "succeeded",
        "{run:#}"
    );
    let verify = common::step(&run, "fas", "verify-fas-images");
    assert_eq!(verify["state"], "action_required", "{verify:#}");
    assert!(
        verify["message"]
            .as_str()
            .unwrap()
            .contains("lists 5 firmware image(s)"),
        "{verify:#}"
    );
    for s in run["services"][0]["steps"].as_array().unwrap() {
        assert_ne!(s["state"], "failed", "{s:#}");
    }

    // The StatefulSet is as it was, its PVCs are new and the cluster is healthy and empty.
    let client = app.sim.kube_client();
    assert_eq!(replicas(&client, FAS_STS).await, 3);
    // As CSM's scripts leave it: ETCD_INITIAL_CLUSTER_STATE=existing, the rest as it was.
    let mut expected = before_env.clone();
    expected.insert(
        "ETCD_INITIAL_CLUSTER_STATE".to_owned(),
        "existing".to_owned(),
    );
    assert_eq!(etcd_env(&client, FAS_STS).await, expected);
    let after_pvcs = pvcs(&client, FAS_SELECTOR).await;
    assert_eq!(
        after_pvcs.keys().collect::<Vec<_>>(),
        before_pvcs.keys().collect::<Vec<_>>()
    );
    for (name, uid) in &after_pvcs {
        assert_ne!(uid, &before_pvcs[name], "{name} was created again");
    }
    let after = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(after["ready"], 3);
    assert_eq!(
        after["keys"], 0,
        "the rebuild emptied the cluster: {after:#}"
    );

    // The run's log tells each phase (the stored log of a finished run, as SSE).
    let log = app
        .http
        .get(app.url(&format!("/repopulations/{id}/events")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .filter(|e: &Value| e["step"] == "etcd-recover")
        .collect();
    for phase in PHASES {
        assert!(
            lines.iter().any(|e| e["message"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("{phase}: "))),
            "{phase} not in the log: {lines:#?}"
        );
    }

    // Exactly the verbs the Role grants for it, and nothing outside the Role.
    let log = app.sim.access_log();
    assert!(log.iter().all(|r| r.allowed), "outside the Role");
    let used = |group: &str, resource: &str, verb: &str| {
        log.iter().any(|r| {
            let q = &r.request;
            let full = if q.subresource.is_empty() {
                q.resource.clone()
            } else {
                format!("{}/{}", q.resource, q.subresource)
            };
            q.api_group == group && full == resource && q.verb == verb
        })
    };
    for (group, resource, verb) in [
        ("apps", "statefulsets", "patch"),
        ("apps", "statefulsets", "watch"),
        ("apps", "statefulsets/scale", "patch"),
        ("", "persistentvolumeclaims", "list"),
        ("", "persistentvolumeclaims", "delete"),
    ] {
        assert!(
            used(group, resource, verb),
            "{group}/{resource} {verb} unused"
        );
    }
}

#[tokio::test]
async fn a_dry_run_shows_the_plan_and_changes_nothing() {
    let sim = real_etcd_sim().await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    let before = versions(&client).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let recover = common::step(&run, "fas", "etcd-recover");
    let message = recover["message"].as_str().unwrap();
    for part in [
        "dry run: the rebuild of cray-fas-bitnami-etcd would scale StatefulSet \
         cray-fas-bitnami-etcd from 3 replica(s) to 0",
        "set ETCD_INITIAL_CLUSTER_STATE=new",
        "delete the PVCs data-cray-fas-bitnami-etcd-0, data-cray-fas-bitnami-etcd-1, \
         data-cray-fas-bitnami-etcd-2",
        "scale back to 3",
        "then set ETCD_INITIAL_CLUSTER_STATE=existing",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert!(
        common::step(&run, "fas", "reload-fas-images-from-nexus")["message"]
            .as_str()
            .unwrap()
            .contains("would"),
        "the steps that follow are shown: {run:#}"
    );
    assert_eq!(versions(&client).await, before, "nothing changed");
    assert!(phases(recover).is_empty());
}

/// Once the data PVCs are being deleted there is no going back: a cancel there is noted and the
/// rebuild finished (here once the PVC a finalizer held is released), and only then does the
/// run end `cancelled`, saying so, with a healthy cluster (not put back with `existing` over
/// empty volumes, which crash-loops).
#[tokio::test]
async fn a_cancel_once_the_pvcs_are_being_deleted_finishes_the_recovery_first() {
    let sim = real_etcd_sim().await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    // A finalizer holds the second PVC: the run waits there, in the middle of the rebuild.
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    let held = "data-cray-fas-bitnami-etcd-1";
    let hold =
        |finalizers: Vec<&str>| Patch::Merge(json!({ "metadata": { "finalizers": finalizers } }));
    pvc_api
        .patch(
            held,
            &PatchParams::default(),
            &hold(vec!["kubernetes.io/pvc-protection", "example.com/hold"]),
        )
        .await
        .unwrap();
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    tokio::time::timeout(
        common::WAIT,
        await_condition(
            pvc_api.clone(),
            held,
            |p: Option<&PersistentVolumeClaim>| {
                p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
            },
        ),
    )
    .await
    .expect("the run deletes the PVCs")
    .unwrap();
    assert_eq!(replicas(&client, FAS_STS).await, 0);

    app.cancel(&id).await;
    common::until("the cancel noted in the journal", async || {
        let (_, run) = app.get(&format!("/repopulations/{id}")).await;
        common::step(&run, "fas", "etcd-recover")["data"]["cancel_deferred"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    // Waiting for a PVC whose finalizer holds it is a watch (the Role's PVC `watch`).
    assert!(
        app.sim.access_log().iter().any(|r| r.allowed
            && r.request.resource == "persistentvolumeclaims"
            && r.request.verb == "watch"),
        "the wait for the held PVC watched it"
    );
    pvc_api
        .patch(
            held,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "cancelled", "{recover:#}");
    assert_eq!(
        phases(recover),
        PHASES,
        "every phase, to the end: {recover:#}"
    );
    let message = recover["message"].as_str().unwrap();
    assert!(
        message.contains("once the data PVCs of cray-fas-bitnami-etcd were being deleted")
            && message.contains("the recovery was finished first")
            && message.contains("cray-fas-bitnami-etcd is healthy"),
        "{message}"
    );
    assert!(!message.contains("resume"), "{message}");
    assert_eq!(
        common::step(&run, "fas", "reload-fas-images-from-nexus")["state"],
        "cancelled",
        "nothing after it ran"
    );
    // As the run ended: healthy, every member Ready, the environment back.
    let (_, report) = app.get(&format!("/etcd-clusters/{FAS_STS}")).await;
    assert_eq!(report["healthy"], true, "{report:#}");
    assert_eq!(report["ready"], 3, "{report:#}");
    assert_eq!(replicas(&client, FAS_STS).await, 3);
    let env = etcd_env(&client, FAS_STS).await;
    assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing");
    assert!(!env.contains_key("ETCD_INIT_SNAPSHOT_FILENAME"), "{env:?}");
}

/// A cancel while the StatefulSet is scaled down (a finalizer holds a member pod) puts it back,
/// and the run ends only once the cluster is back and healthy, saying so.
#[tokio::test]
async fn a_cancel_during_the_scale_down_ends_once_the_cluster_is_back() {
    let sim = real_etcd_sim().await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "services");
    let held = "cray-fas-bitnami-etcd-2";
    let hold =
        |finalizers: Value| Patch::Merge(json!({ "metadata": { "finalizers": finalizers } }));
    pods.patch(
        held,
        &PatchParams::default(),
        &hold(json!(["example.com/hold"])),
    )
    .await
    .unwrap();
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    let before = pvcs(&client, FAS_SELECTOR).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    tokio::time::timeout(
        common::WAIT,
        await_condition(pods.clone(), held, |p: Option<&Pod>| {
            p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
        }),
    )
    .await
    .expect("the run scales the set down")
    .unwrap();
    app.cancel(&id).await;
    common::until("the set put back", async || {
        (replicas(&client, FAS_STS).await == 3).then_some(())
    })
    .await;
    pods.patch(held, &PatchParams::default(), &hold(Value::Null))
        .await
        .unwrap();
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    let recover = common::step(&run, "fas", "etcd-recover");
    let message = recover["message"].as_str().unwrap();
    assert!(
        message.contains("was put back: 3 replica(s)")
            && message.contains("now cray-fas-bitnami-etcd is healthy")
            && message.contains("its data PVCs were not touched"),
        "{message}"
    );
    assert!(!message.contains("resume"), "{message}");
    // As the run ended: healthy, every member Ready, the same volumes.
    let (_, report) = app.get(&format!("/etcd-clusters/{FAS_STS}")).await;
    assert_eq!(report["healthy"], true, "{report:#}");
    assert_eq!(report["ready"], 3, "{report:#}");
    assert_eq!(pvcs(&client, FAS_SELECTOR).await, before);
}

pub const BSS_STS: &str = "cray-bss-bitnami-etcd";
pub(crate) const BSS_SELECTOR: &str =
    "app.kubernetes.io/name=etcd,app.kubernetes.io/instance=cray-bss";

/// The service's configuration with the simulated cluster's snapshotter directory (what the
/// chart mounts from the PVC `bitnami-etcd-snapshotter`).
fn config_on(sim: &sim::SimCluster) -> Config {
    config_with_snapshots(sim.snapshots_dir().expect("1.6 has the snapshotter PVC"))
}

/// BSS's boot parameters, as its API lists them.
async fn bss_list(sim: &sim::SimCluster) -> Value {
    let url = format!(
        "{}/boot/v1/bootparameters",
        sim::csm::service_url(&sim.url(), csm_wire::CsmService::Bss)
    );
    let (status, list) = common::json(reqwest::get(url).await.unwrap()).await;
    assert_eq!(status, 200, "{list:#}");
    list
}

/// The backups in the snapshotter directory of `sts`, oldest first.
fn snapshotter_files(sim: &sim::SimCluster, sts: &str) -> Vec<std::path::PathBuf> {
    let dir = sim.snapshots_dir().unwrap().join(sts);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    files
}

fn set_age(path: &std::path::Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

/// The service on `sim` (with its snapshotter directory), once the cluster `sts` is broken.
async fn start_broken(sim: sim::SimCluster, sts: &str, selector: &str) -> common::TestApp {
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    break_cluster(&app, sts, selector).await;
    app
}

/// Breaks the cluster `sts`: scaled to 0 and its data PVCs deleted, as a lost cluster is (no
/// member answers, the data is gone).
pub(crate) async fn break_cluster(app: &common::TestApp, sts: &str, selector: &str) {
    let client = app.sim.kube_client();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "services");
    sets.patch_scale(
        sts,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
    )
    .await
    .unwrap();
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    for name in pvcs(&client, selector).await.into_keys() {
        pvc_api.delete(&name, &Default::default()).await.unwrap();
    }
    common::cluster_until(app, sts, |c| {
        c["healthy"] == false && c["pods"].as_array().unwrap().is_empty()
    })
    .await;
    tokio::time::timeout(common::WAIT, async {
        while !pvcs(&client, selector).await.is_empty() {
            // Polling a condition with a deadline.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the PVCs go once the pods have");
}

#[tokio::test]
async fn auto_with_a_recent_backup_restores_bss_and_skips_its_repopulation() {
    let sim = real_etcd_sim().await;
    let keys = sim.bss_key_count().await.unwrap();
    let before = bss_list(&sim).await;
    assert!(keys > 1 && before.as_array().unwrap().len() == keys);
    let backup = snapshotter_files(&sim, BSS_STS)
        .pop()
        .expect("a seeded backup");
    let backup = backup.file_name().unwrap().to_str().unwrap().to_owned();
    let app = start_broken(sim, BSS_STS, BSS_SELECTOR).await;

    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "auto", "confirm": [BSS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let assess = common::step(&run, "bss", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["action"], "restore",
        "{assess:#}"
    );
    assert_eq!(assess["data"]["decision"]["backup"], backup.as_str());
    assert_eq!(assess["data"]["healthy"], false);
    assert!(
        assess["data"]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == backup.as_str() && b["age_seconds"].as_u64().unwrap() < 3600),
        "the backups seen, with their ages: {assess:#}"
    );
    let safety = common::step(&run, "bss", "etcd-safety-snapshot");
    assert_eq!(safety["state"], "skipped", "{safety:#}");
    assert!(
        safety["message"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{safety:#}"
    );
    let recover = common::step(&run, "bss", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    assert_eq!(phases(recover), PHASES);
    let during: BTreeMap<String, String> = recover["data"]["recovery_env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(during["ETCD_INITIAL_CLUSTER_STATE"], "new");
    assert_eq!(during["ETCD_START_FROM_SNAPSHOT"], "yes");
    assert_eq!(
        during["ETCD_INIT_SNAPSHOTS_DIR"],
        format!("/snapshots/{BSS_STS}")
    );
    assert_eq!(during["ETCD_INIT_SNAPSHOT_FILENAME"], backup);
    assert!(
        recover["data"]["replicas_from"]
            .as_str()
            .unwrap()
            .contains("0 replicas"),
        "{recover:#}"
    );
    let check = common::step(&run, "bss", "check-etcd-cluster");
    assert!(
        check["message"].as_str().unwrap().contains(&format!(
            "holds {keys} key(s), restored from {backup} by step etcd-recover"
        )),
        "{check:#}"
    );
    // BSS's repopulation is what the restore did: skipped, saying so.
    let bss = common::step(&run, "bss", "restore-bss-from-backup");
    assert_eq!(bss["state"], "skipped", "{bss:#}");
    assert!(
        bss["message"].as_str().unwrap().contains(&format!(
            "from backup {backup} (step etcd-recover) brings this data back"
        )),
        "{bss:#}"
    );
    // The data is back, identical; the StatefulSet is as CSM leaves it.
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
    assert_eq!(bss_list(&app.sim).await, before);
    let client = app.sim.kube_client();
    let env = etcd_env(&client, BSS_STS).await;
    assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing");
    assert_eq!(env["ETCD_START_FROM_SNAPSHOT"], "no");
    assert!(!env.contains_key("ETCD_INIT_SNAPSHOT_FILENAME"), "{env:?}");
    assert_eq!(replicas(&client, BSS_STS).await, 3);
    let report = common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["keys"].as_u64(), Some(keys as u64), "{report:#}");
}

#[tokio::test]
async fn auto_with_only_an_old_backup_rebuilds_and_repopulates() {
    let sim = real_etcd_sim().await;
    for file in snapshotter_files(&sim, FAS_STS) {
        set_age(&file, Duration::from_secs(10 * 86_400));
    }
    let app = start_broken(sim, FAS_STS, FAS_SELECTOR).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "auto", "confirm": [FAS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    let assess = common::step(&run, "fas", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["action"], "rebuild",
        "{assess:#}"
    );
    let reason = assess["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("older than restore_max_age 7days"),
        "{reason}"
    );
    assert_eq!(
        common::step(&run, "fas", "etcd-recover")["state"],
        "succeeded",
        "{run:#}"
    );
    // Repopulated: FAS reloaded its images into the rebuilt cluster.
    let reload = common::step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    assert_eq!(run["state"], "action_required", "{run:#}");
    let report = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["ready"], 3, "{report:#}");
}

#[tokio::test]
async fn restore_with_a_corrupt_newest_backup_takes_the_next_and_names_it() {
    let sim = real_etcd_sim().await;
    let keys = sim.bss_key_count().await.unwrap();
    let good = snapshotter_files(&sim, BSS_STS).pop().unwrap();
    set_age(&good, Duration::from_secs(3600));
    // A newer backup whose content does not match its SHA-256 trailer.
    let corrupt = good.with_file_name("db-2099-01-01_00-00");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let app = start_broken(sim, BSS_STS, BSS_SELECTOR).await;
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let assess = common::step(&run, "bss", "etcd-assess");
    let good_name = good.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        assess["data"]["decision"]["backup"], good_name,
        "{assess:#}"
    );
    assert!(
        assess["message"]
            .as_str()
            .unwrap()
            .contains("db-2099-01-01_00-00 is corrupt, not used"),
        "{assess:#}"
    );
    let seen = assess["data"]["backups"].as_array().unwrap();
    assert_eq!(seen[0]["name"], "db-2099-01-01_00-00");
    assert!(seen[0]["corrupt"].as_str().unwrap().len() > 1, "{seen:#?}");
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);

    // Named, a corrupt backup is refused, naming it; nothing is touched.
    let client = app.sim.kube_client();
    let before = pvcs(&client, BSS_SELECTOR).await;
    let id = app
        .start_run(
            json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS], "backup": "db-2099-01-01_00-00" }),
        )
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let assess = common::step(&run, "bss", "etcd-assess");
    assert!(
        assess["message"]
            .as_str()
            .unwrap()
            .contains("backup db-2099-01-01_00-00 is corrupt"),
        "{assess:#}"
    );
    assert_eq!(pvcs(&client, BSS_SELECTOR).await, before);
}

#[tokio::test]
async fn rebuild_then_restore_without_naming_a_backup_brings_back_the_data_from_before() {
    let sim = real_etcd_sim().await;
    let url = sim.etcd_url(FAS_STS).unwrap();
    // Written after the seeded backup: only the rebuild's safety snapshot has it.
    common::etcd_put(&url, "/fas/after-the-backup", "kept by the safety snapshot").await;
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    let keys = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await["keys"]
        .as_u64()
        .unwrap();

    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS], "discard_newer": true }))
        .await;
    let rebuild = app.finished_run(&id).await;
    let safety = common::step(&rebuild, "fas", "etcd-safety-snapshot")["data"]["backup"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        common::step(&rebuild, "fas", "etcd-recover")["state"],
        "succeeded",
        "{rebuild:#}"
    );

    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "restore", "confirm": [FAS_STS], "discard_newer": true }))
        .await;
    let restore = app.finished_run(&id).await;
    let assess = common::step(&restore, "fas", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["backup"],
        safety.as_str(),
        "{assess:#}"
    );
    assert_eq!(
        common::step(&restore, "fas", "etcd-recover")["state"],
        "succeeded"
    );
    let report = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["keys"].as_u64(), Some(keys), "{report:#}");

    // The restore's own safety snapshot (of what the rebuild left) is listed, and a later
    // restore still prefers the newest snapshot that is not of an empty cluster.
    let own = common::step(&restore, "fas", "etcd-safety-snapshot");
    assert_eq!(own["state"], "succeeded", "{own:#}");
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "restore", "confirm": [FAS_STS], "dry_run": true, "discard_newer": true }))
        .await;
    let again = app.finished_run(&id).await;
    let decided = &common::step(&again, "fas", "etcd-assess")["data"]["decision"]["backup"];
    let seen = common::step(&again, "fas", "etcd-assess")["data"]["backups"].clone();
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == own["data"]["backup"]),
        "{seen:#}"
    );
    assert_eq!(
        own["data"]["empty"], true,
        "the rebuilt cluster was empty: {own:#}"
    );
    assert_eq!(decided, safety.as_str(), "{seen:#}");
}

/// Every object in the simulated S3 (its files), with its size.
fn s3_objects(sim: &sim::SimCluster) -> BTreeMap<String, u64> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut BTreeMap<String, u64>) {
        for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let key = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(key, entry.metadata().unwrap().len());
            }
        }
    }
    let root = sim.s3().unwrap().root();
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test]
async fn a_backup_only_in_s3_is_downloaded_before_the_restore_and_a_dry_run_does_not() {
    let sim = common::release_sim(
        "1.6",
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: real_clusters(),
            s3: true,
            ..SimOptions::default()
        },
    )
    .await;
    let keys = sim.bss_key_count().await.unwrap();
    sim.sync_snapshots_to_s3().await.unwrap();
    // Only S3 has it now (the snapshotter PVC lost it).
    let local = snapshotter_files(&sim, BSS_STS).pop().unwrap();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::remove_file(&local).unwrap();
    let app = start_broken(sim, BSS_STS, BSS_SELECTOR).await;
    let objects = s3_objects(&app.sim);
    assert!(
        objects
            .keys()
            .any(|k| k.ends_with(&format!("cray-bss/{name}"))),
        "{objects:#?}"
    );

    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "restore", "dry_run": true }))
        .await;
    let dry = app.finished_run(&id).await;
    assert_eq!(dry["state"], "succeeded", "{dry:#}");
    let assess = common::step(&dry, "bss", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["backup"],
        name.as_str(),
        "{assess:#}"
    );
    assert!(
        assess["message"]
            .as_str()
            .unwrap()
            .contains("a real run downloads it from S3 and checks it"),
        "{assess:#}"
    );
    assert!(!local.exists(), "a dry run downloads nothing");
    assert_eq!(
        s3_objects(&app.sim),
        objects,
        "a dry run changes no S3 object"
    );
    assert!(pvcs(&app.sim.kube_client(), BSS_SELECTOR).await.is_empty());

    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let seen = &common::step(&run, "bss", "etcd-assess")["data"]["backups"][0];
    assert!(
        seen["location"].as_str().unwrap().starts_with("s3://"),
        "{seen:#}"
    );
    assert!(
        local.exists(),
        "downloaded into the snapshotter directory first"
    );
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
}

#[tokio::test]
async fn a_timeout_fails_the_step_puts_the_statefulset_back_and_a_resume_starts_over() {
    let sim = real_etcd_sim().await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    let held = "data-cray-fas-bitnami-etcd-2";
    pvc_api
        .patch(
            held,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": {
                "finalizers": ["kubernetes.io/pvc-protection", "example.com/hold"],
            }})),
        )
        .await
        .unwrap();
    let mut config = config_with_snapshots(snapshots.path());
    config.recovery.timeout = Duration::from_secs(3);
    let app = common::start_on(sim, config).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "failed", "{recover:#}");
    let message = recover["message"].as_str().unwrap();
    assert!(
        message.contains(
            "[recovery] timeout (3s) ran out waiting for PersistentVolumeClaim \
             data-cray-fas-bitnami-etcd-2 in namespace services to be deleted"
        ),
        "{message}"
    );
    assert!(
        message.contains(
            "(after phase env-set); the StatefulSet cray-fas-bitnami-etcd was put back: 3 \
             replica(s), ETCD_INITIAL_CLUSTER_STATE=existing"
        ),
        "{message}"
    );
    assert_eq!(replicas(&client, FAS_STS).await, 3);
    assert_eq!(
        etcd_env(&client, FAS_STS).await["ETCD_INITIAL_CLUSTER_STATE"],
        "existing"
    );
    assert_eq!(
        common::step(&run, "fas", "check-etcd-cluster")["state"],
        "skipped"
    );

    // Released, and the service restarted with the default timeout (a resume uses the one in
    // force), a resume starts over from the stored count and environment, and succeeds.
    let app = app
        .restart_with(config_with_snapshots(snapshots.path()))
        .await;
    pvc_api
        .patch(
            held,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
    app.ask(&id, "resume").await;
    let run = app.finished_run(&id).await;
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    assert_eq!(recover["attempts"][0]["state"], "failed");
    let put_back = recover["data"]["put_back"].as_array().unwrap();
    assert_eq!(put_back.len(), 1, "{recover:#}");
    assert_eq!(put_back[0]["after"], "env-set");
    // Phases of both attempts: the first up to env-set, the second all over again.
    let journalled = phases(recover);
    assert_eq!(&journalled[..3], &PHASES[..3], "{journalled:?}");
    assert_eq!(&journalled[3..], &PHASES[1..], "{journalled:?}");
    let report = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["ready"], 3, "{report:#}");
}

/// The data PVCs are found by name, as the StatefulSet claims them and CSM's scripts delete
/// them: one without the set's labels (made by hand before the set, to bind a given volume)
/// is deleted too, not left behind with the old member's data under a "rebuilt" cluster.
#[tokio::test]
async fn a_rebuild_deletes_a_data_pvc_without_the_sets_labels() {
    let sim = real_etcd_sim().await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    let unlabelled = "data-cray-fas-bitnami-etcd-1";
    let before = pvc_api.get(unlabelled).await.unwrap();
    pvc_api
        .patch(
            unlabelled,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": null } })),
        )
        .await
        .unwrap();
    assert!(!pvcs(&client, FAS_SELECTOR).await.contains_key(unlabelled));
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    let deleted = recover["data"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "pvcs-deleted")
        .unwrap()["what"]
        .clone();
    assert_eq!(
        deleted,
        "deleted the PVCs data-cray-fas-bitnami-etcd-0, data-cray-fas-bitnami-etcd-1, \
         data-cray-fas-bitnami-etcd-2",
        "{recover:#}"
    );
    let after = pvc_api.get(unlabelled).await.unwrap();
    assert_ne!(after.uid(), before.uid(), "made again by the StatefulSet");
    let report = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["ready"], 3, "{report:#}");
}

/// A stop (here: the service shut down) once the cluster was recovered (`healthy` journalled;
/// the rollout of the environment put back was left) says the recovery was complete, not that
/// the cluster is empty, and a resume finishes the rollout without scaling to 0 and deleting
/// the recovered data again.
#[tokio::test]
async fn a_stop_after_the_cluster_is_healthy_keeps_the_recovery_and_a_resume_finishes_it() {
    let sim = common::release_sim(
        "1.6",
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: real_clusters(),
            // The rollout of the environment put back takes a few seconds, pod by pod.
            kubelet_ready_delay: Duration::from_secs(2),
            ..SimOptions::default()
        },
    )
    .await;
    let snapshots = tempfile::tempdir().unwrap();
    let client = sim.kube_client();
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    common::until("the environment put back", async || {
        let (_, run) = app.get(&format!("/repopulations/{id}")).await;
        phases(common::step(&run, "fas", "etcd-recover"))
            .contains(&"env-restored".to_owned())
            .then_some(())
    })
    .await;
    let pvcs_recovered = pvcs(&client, FAS_SELECTOR).await;
    let app = app
        .restart_with(config_with_snapshots(snapshots.path()))
        .await;
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert_eq!(run["state"], "interrupted", "{run:#}");
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "interrupted", "{recover:#}");
    let message = recover["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the rebuild of cray-fas-bitnami-etcd itself was complete (the cluster was healthy \
             after it)"
        ),
        "{message}"
    );
    assert!(!message.contains("empty"), "{message}");
    assert_eq!(replicas(&client, FAS_STS).await, 3);

    app.ask(&id, "resume").await;
    let run = app.finished_run(&id).await;
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    // Each phase once: the resume carried on with the rollout (`settled`).
    assert_eq!(phases(recover), PHASES, "{recover:#}");
    assert_eq!(
        pvcs(&client, FAS_SELECTOR).await,
        pvcs_recovered,
        "the recovered data PVCs were kept"
    );
    assert_eq!(
        etcd_env(&client, FAS_STS).await["ETCD_INITIAL_CLUSTER_STATE"],
        "existing"
    );
    let report = common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["ready"], 3, "{report:#}");
}

/// What `etcd-assess` decided and why, and whether the run touched the cluster at all.
fn decision(run: &Value, service: &str) -> (String, String) {
    let assess = common::step(run, service, "etcd-assess");
    (
        assess["data"]["decision"]["action"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        assess["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// One member pod not Ready (the others hold quorum and serve reads) is a degraded cluster,
/// not a lost one: `auto` leaves it and its data alone, and says what is degraded.
#[tokio::test]
async fn auto_leaves_a_serving_cluster_with_a_member_pod_down_alone() {
    let sim = real_etcd_sim().await;
    let keys = sim.bss_key_count().await.unwrap();
    let client = sim.kube_client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "services");
    pods.patch(
        "cray-bss-bitnami-etcd-1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": {
            sim::kube::controllers::NEVER_READY: "true",
        }}})),
    )
    .await
    .unwrap();
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    let report =
        common::cluster_until(&app, BSS_STS, |c| c["ready"] == 2 && c["serving"] == true).await;
    assert_eq!(report["healthy"], false, "{report:#}");
    let before = pvcs(&client, BSS_SELECTOR).await;

    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "auto", "confirm": [BSS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let (action, message) = decision(&run, "bss");
    assert_eq!(action, "none", "{message}");
    assert!(
        message.contains("serving but degraded (2 of 3 member pods are Ready)")
            && message.contains("auto never restores or rebuilds a serving cluster"),
        "{message}"
    );
    assert_eq!(
        common::step(&run, "bss", "etcd-assess")["state"],
        "action_required"
    );
    for untouched in ["etcd-safety-snapshot", "etcd-recover"] {
        assert_eq!(
            common::step(&run, "bss", untouched)["state"],
            "skipped",
            "{untouched}"
        );
    }
    assert_eq!(pvcs(&client, BSS_SELECTOR).await, before, "no PVC touched");
    assert_eq!(replicas(&client, BSS_STS).await, 3);
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
}

/// A recovery finds the StatefulSet left mid-recovery (by CSM's script or an abandoned run):
/// `ETCD_INITIAL_CLUSTER_STATE=new`, the snapshot variables. It says so, and ends with none of
/// them on the template.
#[tokio::test]
async fn a_recovery_cleans_up_what_an_earlier_one_left_on_the_statefulset() {
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "services");
    let set = sets.get(FAS_STS).await.unwrap();
    let mut env = set.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    for (name, value) in [
        ("ETCD_INITIAL_CLUSTER_STATE", "new"),
        ("ETCD_START_FROM_SNAPSHOT", "yes"),
        (
            "ETCD_INIT_SNAPSHOTS_DIR",
            "/snapshots/cray-fas-bitnami-etcd",
        ),
        ("ETCD_INIT_SNAPSHOT_FILENAME", "db-2020-01-01_00-00"),
    ] {
        env.retain(|v| v.name != name);
        env.push(k8s_openapi::api::core::v1::EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        });
    }
    sets.patch(
        FAS_STS,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "etcd", "env": env }
        ]}}}})),
    )
    .await
    .unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let app = common::start_on(sim, config_with_snapshots(snapshots.path())).await;
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;

    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    let recover = common::step(&run, "fas", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    let leftover = recover["data"]["leftover"].as_str().unwrap();
    assert!(
        leftover.starts_with("left mid-recovery: ")
            && leftover.contains("ETCD_INITIAL_CLUSTER_STATE=new")
            && leftover.contains("ETCD_INIT_SNAPSHOT_FILENAME=db-2020-01-01_00-00"),
        "{leftover}"
    );
    let env = etcd_env(&client, FAS_STS).await;
    assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing", "{env:?}");
    assert_eq!(env["ETCD_START_FROM_SNAPSHOT"], "no", "{env:?}");
    assert!(!env.contains_key("ETCD_INIT_SNAPSHOTS_DIR"), "{env:?}");
    assert!(!env.contains_key("ETCD_INIT_SNAPSHOT_FILENAME"), "{env:?}");
    common::cluster_until(&app, FAS_STS, |c| c["healthy"] == true).await;
}

/// A restore whose snapshot fails in the pods once the data PVCs are gone (here the file is
/// replaced under the run, as a pruning would) does not leave an empty cluster crash-looping:
/// the run brings it back from its own safety snapshot, ends `failed` and says so.
#[tokio::test]
async fn a_restore_that_fails_in_the_pods_brings_the_cluster_back_from_the_safety_snapshot() {
    let sim = real_etcd_sim().await;
    let keys = sim.bss_key_count().await.unwrap();
    let before = bss_list(&sim).await;
    let client = sim.kube_client();
    // A finalizer holds a PVC: the run waits there, after the backup was checked.
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    let held = "data-cray-bss-bitnami-etcd-2";
    let hold =
        |finalizers: Value| Patch::Merge(json!({ "metadata": { "finalizers": finalizers } }));
    pvc_api
        .patch(
            held,
            &PatchParams::default(),
            &hold(json!(["kubernetes.io/pvc-protection", "example.com/hold"])),
        )
        .await
        .unwrap();
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS] }))
        .await;
    tokio::time::timeout(
        common::WAIT,
        await_condition(
            pvc_api.clone(),
            held,
            |p: Option<&PersistentVolumeClaim>| {
                p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
            },
        ),
    )
    .await
    .expect("the run deletes the PVCs")
    .unwrap();
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    let file = common::step(&run, "bss", "etcd-assess")["data"]["decision"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let snapshot = app.sim.snapshots_dir().unwrap().join(BSS_STS).join(&file);
    std::fs::write(&snapshot, vec![0x5a; 64 * 1024]).unwrap();
    pvc_api
        .patch(held, &PatchParams::default(), &hold(Value::Null))
        .await
        .unwrap();

    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let recover = common::step(&run, "bss", "etcd-recover");
    assert_eq!(recover["state"], "failed", "{recover:#}");
    let message = recover["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "the restore from {file} failed after its data PVCs were deleted"
        )) && message.contains("crash-loop")
            && message.contains("brought back from this run's safety snapshot repopulator-")
            && message.contains("cray-bss-bitnami-etcd is healthy"),
        "{message}"
    );
    assert_eq!(recover["data"]["fallback"]["to"]["action"], "restore");
    // What the cluster held when the run began is back, and nothing is left on the template.
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
    assert_eq!(bss_list(&app.sim).await, before);
    let env = etcd_env(&client, BSS_STS).await;
    assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing", "{env:?}");
    assert_eq!(env["ETCD_START_FROM_SNAPSHOT"], "no", "{env:?}");
    assert!(!env.contains_key("ETCD_INIT_SNAPSHOT_FILENAME"), "{env:?}");
    let (_, report) = app.get(&format!("/etcd-clusters/{BSS_STS}")).await;
    assert_eq!(report["healthy"], true, "{report:#}");
}

/// Writes made after the newest backup are not thrown away by a restore unless the request says
/// so (`discard_newer`), and the dry run says how much would be lost; a restore that did
/// discard them names the safety snapshot that holds them and the request that brings them back.
#[tokio::test]
async fn a_restore_over_newer_writes_needs_discard_newer_and_says_how_to_get_them_back() {
    let sim = real_etcd_sim().await;
    let url = sim.etcd_url(BSS_STS).expect("bss etcd runs");
    common::etcd_put(&url, "/bss/written-after-the-backup", "newer").await;
    let client = sim.kube_client();
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    let keys = common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await["keys"]
        .as_u64()
        .unwrap();
    let keys_now = async || {
        common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await["keys"]
            .as_u64()
            .unwrap()
    };
    let before = pvcs(&client, BSS_SELECTOR).await;
    let restore = json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS] });

    let mut dry = restore.clone();
    dry["dry_run"] = json!(true);
    let run = app.finished_run(&app.start_run(dry).await).await;
    let (_, message) = decision(&run, "bss");
    assert!(
        message.starts_with("dry run: a real run would end failed here")
            && message.contains("1 revision(s) newer than backup db-")
            && message.contains("1 key(s) written or changed since")
            && message.contains("\"discard_newer\": true"),
        "{message}"
    );
    let run = app
        .finished_run(&app.start_run(restore.clone()).await)
        .await;
    assert_eq!(run["state"], "failed", "{run:#}");
    assert_eq!(
        common::step(&run, "bss", "etcd-recover")["state"],
        "skipped"
    );
    assert_eq!(pvcs(&client, BSS_SELECTOR).await, before, "nothing touched");
    assert_eq!(keys_now().await, keys);

    let mut discard = restore;
    discard["discard_newer"] = json!(true);
    let run = app.finished_run(&app.start_run(discard).await).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(keys_now().await, keys - 1, "the newer write is gone");
    let assess = common::step(&run, "bss", "etcd-assess");
    assert_eq!(assess["data"]["discarded"]["revisions"], 1, "{assess:#}");
    assert_eq!(assess["data"]["discarded"]["acknowledged"], true);
    let message = common::step(&run, "bss", "etcd-recover")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let safety = common::step(&run, "bss", "etcd-safety-snapshot")["data"]["backup"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("the safety snapshot {safety} holds it")),
        "{message}"
    );
    // The request the message gives brings them back.
    let request: Value = serde_json::from_str(
        message
            .split("to bring it back, POST /repopulations ")
            .nth(1)
            .expect("the message names the request"),
    )
    .unwrap();
    assert_eq!(request["backup"], safety.as_str(), "{request:#}");
    let run = app.finished_run(&app.start_run(request).await).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(keys_now().await, keys, "the newer write is back");
}

/// A "backup" that is not an etcd database (random bytes followed by their SHA-256, so the
/// trailer matches) is refused before anything changes, naming why; a restore takes the next
/// backup, and the listing flags it unusable from then on.
#[tokio::test]
async fn a_backup_that_is_not_an_etcd_database_is_refused_before_anything_changes() {
    use sha2::Digest as _;
    let sim = real_etcd_sim().await;
    let keys = sim.bss_key_count().await.unwrap();
    let good = snapshotter_files(&sim, BSS_STS).pop().unwrap();
    set_age(&good, Duration::from_secs(3600));
    let mut bytes: Vec<u8> = (0..20 * 1024).map(|_| rand::random::<u8>()).collect();
    let trailer = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&trailer);
    let garbage = good.with_file_name("db-2099-01-01_00-00");
    std::fs::write(&garbage, bytes).unwrap();
    let client = sim.kube_client();
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    let before = pvcs(&client, BSS_SELECTOR).await;

    let named = json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS],
                        "backup": "db-2099-01-01_00-00" });
    let run = app.finished_run(&app.start_run(named).await).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let (_, message) = decision(&run, "bss");
    assert!(
        message.contains("db-2099-01-01_00-00") && message.contains("not a bbolt database"),
        "{message}"
    );
    assert_eq!(pvcs(&client, BSS_SELECTOR).await, before, "nothing touched");
    let (_, listed) = app.get(&format!("/etcd-clusters/{BSS_STS}/backups")).await;
    let flagged = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "db-2099-01-01_00-00")
        .unwrap();
    assert_eq!(flagged["usable"], false, "{flagged:#}");

    let run = app
        .finished_run(
            &app.start_run(json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS] }))
                .await,
        )
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let assess = common::step(&run, "bss", "etcd-assess");
    assert_eq!(
        assess["data"]["decision"]["backup"],
        good.file_name().unwrap().to_str().unwrap(),
        "{assess:#}"
    );
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
}

/// A cancel at every phase of a rebuild and of a restore ends with a cluster that serves: put
/// back with its data before the data PVCs go, finished (with the backup's data) after; never
/// `existing` over empty volumes, never the recovery environment left on the template.
#[tokio::test]
async fn a_cancel_at_every_phase_ends_with_a_serving_cluster() {
    let sim = real_etcd_sim().await;
    let keys = sim.bss_key_count().await.unwrap();
    let client = sim.kube_client();
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    for (service, sts, mode) in [("fas", FAS_STS, "rebuild"), ("bss", BSS_STS, "restore")] {
        for phase in PHASES {
            common::cluster_until(&app, sts, |c| c["healthy"] == true).await;
            let id = app
                .start_run(json!({ "services": [service], "etcd": mode, "confirm": [sts] }))
                .await;
            let run = app
                .cancel_when(&id, &format!("{mode} at phase {phase}"), |run| {
                    phases(common::step(run, service, "etcd-recover")).contains(&phase.to_owned())
                })
                .await;
            let state = run["state"].as_str().unwrap();
            assert!(
                state == "cancelled" || state == "succeeded" || state == "action_required",
                "{mode} cancelled after {phase}: {run:#}"
            );
            let (_, report) = app.get(&format!("/etcd-clusters/{sts}")).await;
            assert_eq!(
                report["serving"], true,
                "{mode} cancelled after {phase}: {report:#}"
            );
            assert_eq!(
                report["ready"], 3,
                "{mode} cancelled after {phase}: {report:#}"
            );
            let env = etcd_env(&client, sts).await;
            assert_eq!(
                env["ETCD_INITIAL_CLUSTER_STATE"], "existing",
                "{mode} {phase}"
            );
            assert!(
                !env.contains_key("ETCD_INIT_SNAPSHOT_FILENAME"),
                "{mode} {phase}"
            );
            assert_eq!(replicas(&client, sts).await, 3, "{mode} {phase}");
            if service == "bss" {
                assert_eq!(app.sim.bss_key_count().await.unwrap(), keys, "{phase}");
            }
        }
    }
}

/// After the whole cluster restarted with its data (scaled to 0 and back, as after a power-on),
/// CSM's disaster recovery makes every member crash-loop: none answers, but their volumes hold
/// the data. An explicit restore needs `discard_newer`; `auto` restores nothing over it but
/// starts the members with their data (`ETCD_DISASTER_RECOVERY=no` while they restart, then
/// back): healthy, every key, no volume touched.
#[tokio::test]
async fn members_crash_looping_with_their_data_are_started_with_it_not_restored_over() {
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    let config = config_on(&sim);
    let app = common::start_on(sim, config).await;
    common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    let before = pvcs(&client, BSS_SELECTOR).await;
    let keys = app.sim.bss_key_count().await.unwrap();
    common::restart_whole_cluster(&app.sim, BSS_STS, BSS_SELECTOR).await;
    common::cluster_until(&app, BSS_STS, |r| r["serving"] == false).await;

    let restore = json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS] });
    let run = app.finished_run(&app.start_run(restore).await).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let (_, message) = decision(&run, "bss");
    assert!(message.contains("\"discard_newer\": true"), "{message}");

    // A dry run plans the start, changing nothing.
    let dry = json!({ "services": ["bss"], "etcd": "auto", "dry_run": true });
    let run = app.finished_run(&app.start_run(dry).await).await;
    let (action, message) = decision(&run, "bss");
    assert_eq!(action, "start-with-data", "{message}");
    assert!(
        message.contains("no member of cray-bss-bitnami-etcd answers and its data PVCs remain"),
        "{message}"
    );
    assert_eq!(
        etcd_env(&client, BSS_STS).await["ETCD_DISASTER_RECOVERY"],
        "yes"
    );

    let auto = json!({ "services": ["bss"], "etcd": "auto", "confirm": [BSS_STS] });
    let run = app.finished_run(&app.start_run(auto).await).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let recover = common::step(&run, "bss", "etcd-recover");
    assert!(
        recover["message"]
            .as_str()
            .unwrap()
            .contains("started with their data"),
        "{recover:#}"
    );
    assert_eq!(
        common::step(&run, "bss", "etcd-safety-snapshot")["state"],
        "skipped"
    );
    let report = common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    assert_eq!(report["ready"], 3, "{report:#}");
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys, "every key");
    assert_eq!(
        etcd_env(&client, BSS_STS).await["ETCD_DISASTER_RECOVERY"],
        "yes"
    );
    assert_eq!(
        pvcs(&client, BSS_SELECTOR).await,
        before,
        "no volume touched"
    );
}

/// A cancel while the members kept down by disaster recovery are being started with their data
/// ends with the variable back as it was (nothing was deleted, so the cluster is as found or
/// already healthy); a second `repair` then ends healthy with every key.
#[tokio::test]
async fn a_cancel_while_starting_members_with_their_data_puts_the_variable_back() {
    let sim = common::real_etcd_sim_of("1.6", Some(&[BSS_STS])).await;
    let client = sim.kube_client();
    let app = common::start_on(sim, Config::default()).await;
    common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    let keys = app.sim.bss_key_count().await.unwrap();
    common::restart_whole_cluster(&app.sim, BSS_STS, BSS_SELECTOR).await;
    common::cluster_until(&app, BSS_STS, |r| r["serving"] == false).await;
    let repair = json!({ "services": ["bss"], "etcd": "repair" });
    let id = app.start_run(repair.clone()).await;
    let run = app
        .cancel_when(&id, "the variable set", |run| {
            common::step(run, "bss", "etcd-recover")["data"]["phase"] == "env-set"
        })
        .await;
    let state = run["state"].as_str().unwrap();
    assert!(state == "cancelled" || state == "succeeded", "{run:#}");
    assert_eq!(
        etcd_env(&client, BSS_STS).await["ETCD_DISASTER_RECOVERY"],
        "yes",
        "{run:#}"
    );
    if state == "cancelled" {
        let message = common::step(&run, "bss", "etcd-recover")["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("is back as it was"), "{message}");
        // As found: the members crash-loop again; a repair starts them.
        common::until("the members crash-looping again", async || {
            let (_, report) = app.get(&format!("/etcd-clusters/{BSS_STS}")).await;
            let looping = report["member_health"].as_array().is_some_and(|ms| {
                ms.len() == 3 && ms.iter().all(|m| m["restarts"].as_i64().unwrap_or(0) >= 1)
            });
            (report["serving"] == false && looping).then_some(())
        })
        .await;
        let run = app.finished_run(&app.start_run(repair).await).await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
    }
    common::cluster_until(&app, BSS_STS, |c| c["healthy"] == true).await;
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
}
