//! The BSS, FAS, External DNS, CRUS and CPS handlers end to end against the simulated cluster.

use crate::common;

use std::time::Duration;

use etcd_repopulator::{
    config::{Config, ObjectRecreate},
    model::{Service, State},
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
};
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
    runtime::{conditions, wait::await_condition},
};
use serde_json::{Value, json};
use sim::SimOptions;

fn etcd_api(app: &common::TestApp) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", "EtcdCluster"),
        "etcdclusters",
    );
    Api::namespaced_with(app.sim.kube_client(), "services", &ar)
}

fn jobs(app: &common::TestApp) -> Api<Job> {
    Api::namespaced(app.sim.kube_client(), "services")
}

fn job_condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Replaces a Job by a plain one whose pod template carries `annotations` (the simulation's
/// knobs: fail, log lines; without an effect it loads nothing), deleting the old one first.
async fn replace_job(app: &common::TestApp, name: &str, annotations: Value) {
    replace_job_with(app, name, json!({ "name": name }), annotations).await;
}

/// Like [`replace_job`], with the new Job's `metadata` as given.
async fn replace_job_with(app: &common::TestApp, name: &str, metadata: Value, annotations: Value) {
    let api = jobs(app);
    let old = api.get(name).await.unwrap();
    api.delete(name, &DeleteParams::background()).await.unwrap();
    tokio::time::timeout(
        common::WAIT,
        await_condition(
            api.clone(),
            name,
            conditions::is_deleted(&old.uid().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata,
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": annotations},
            "spec": {"restartPolicy": "Never",
                "containers": [{"name": "loader", "image": "registry.local/loader:1"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &job).await.unwrap();
}

/// Replaces a Job by one that fails with `log`.
async fn replace_with_failing_job(app: &common::TestApp, name: &str, log: &str) {
    let annotations = json!({
        "sim.etcd-repopulator.io/fail": "true",
        "sim.etcd-repopulator.io/log": log,
    });
    replace_job(app, name, annotations).await;
}

#[tokio::test]
async fn bss_reruns_the_reds_init_job_from_its_sanitized_manifest() {
    let app = common::start().await;
    let before = jobs(&app).get("cray-reds-init").await.unwrap();
    let seeded = app.sim.csm().bss_bootparameters().len();
    assert!(seeded > 0);
    // The rebuild: BSS's etcd comes back empty.
    assert!(app.sim.csm().wipe("cray-bss-etcd"));
    assert!(app.sim.csm().bss_bootparameters().is_empty());
    let run = app.run_services(json!(["bss"])).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["name"], "rerun-reds-init-job");
    let manifest = &step["data"]["manifest"];
    assert!(manifest["spec"].get("selector").is_none(), "{manifest:#}");
    assert!(manifest["metadata"].get("resourceVersion").is_none());
    let labels = &manifest["spec"]["template"]["metadata"]["labels"];
    assert!(
        labels.get("controller-uid").is_none()
            && labels.get("batch.kubernetes.io/controller-uid").is_none()
    );
    assert_eq!(step["data"]["original_uid"], before.uid().unwrap());

    let after = jobs(&app).get("cray-reds-init").await.unwrap();
    assert_ne!(after.uid(), before.uid());
    assert_eq!(step["data"]["new_uid"], after.uid().unwrap());
    assert!(job_condition(&after, "Complete"));

    // The re-run Job put the boot parameters back, and the run checked it.
    assert_eq!(app.sim.csm().bss_bootparameters().len(), seeded);
    let verify = &run["services"][0]["steps"][1];
    assert_eq!(verify["name"], "verify-bss-boot-parameters");
    assert_eq!(verify["state"], "succeeded");
    assert_eq!(verify["data"]["entries"], seeded);
}

#[tokio::test]
async fn bss_still_empty_after_the_job_fails_the_run() {
    let app = common::start().await;
    // A cray-reds-init that completes without loading anything (no effect in the simulation).
    replace_job(&app, "cray-reds-init", json!({})).await;
    assert!(app.sim.csm().wipe("cray-bss-etcd"));

    let run = app.run_services(json!(["bss"])).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let verify = &run["services"][0]["steps"][1];
    assert_eq!(verify["state"], "failed");
    let message = verify["message"].as_str().unwrap();
    assert!(
        message.contains("BSS holds no boot parameters"),
        "{message}"
    );
}

#[tokio::test]
async fn fas_images_come_back_after_a_rebuild() {
    let app = common::start().await;
    let seeded = app.sim.csm().fas_images().len();
    assert!(seeded > 0);
    assert!(app.sim.csm().wipe("cray-fas-etcd"));
    assert!(app.sim.csm().fas_images().is_empty());
    let run = app.run_services(json!(["fas"])).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    assert_eq!(app.sim.csm().fas_images().len(), seeded);
    assert_eq!(run["services"][0]["steps"][1]["data"]["images"], seeded);
}

#[tokio::test]
async fn bss_without_the_job_fails_and_says_which_job() {
    let app = common::start().await;
    let api = jobs(&app);
    let job = api.get("cray-reds-init").await.unwrap();
    api.delete("cray-reds-init", &DeleteParams::background())
        .await
        .unwrap();
    tokio::time::timeout(
        common::WAIT,
        await_condition(
            api.clone(),
            "cray-reds-init",
            conditions::is_deleted(&job.uid().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let run = app.run_services(json!(["bss"])).await;
    assert_eq!(run["state"], "failed");
    let message = run["services"][0]["steps"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Job cray-reds-init in namespace services does not exist"),
        "{message}"
    );
    assert!(
        api.get_opt("cray-reds-init").await.unwrap().is_none(),
        "no Job was invented"
    );
}

#[tokio::test]
async fn fas_loader_failure_reports_the_pod_log() {
    let app = common::start().await;
    replace_with_failing_job(
        &app,
        "cray-fas-loader",
        "loading images\nerror: firmware repository unreachable",
    )
    .await;
    let run = app.run_services(json!(["fas"])).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["state"], "failed");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains("error: firmware repository unreachable"),
        "{message}"
    );
    assert_eq!(run["services"][0]["steps"][1]["state"], "skipped");
    // `kubectl describe job cray-fas-loader` shows the failure too.
    let new_uid = jobs(&app)
        .get("cray-fas-loader")
        .await
        .unwrap()
        .uid()
        .unwrap();
    let events = app.events_about(&new_uid).await;
    let failed = events
        .iter()
        .find(|e| e.action.as_deref() == Some("Failed"))
        .expect("a Failed Event on the re-run Job");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert!(
        failed
            .message
            .as_deref()
            .unwrap()
            .contains(run["id"].as_str().unwrap()),
        "{failed:?}"
    );
}

#[tokio::test]
async fn fas_success_leaves_the_lost_actions_to_the_operator() {
    let app = common::start().await;
    let run = app.run_services(json!(["fas"])).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let task = &run["services"][0];
    assert_eq!(task["steps"][0]["state"], "succeeded");
    assert_eq!(task["steps"][1]["state"], "action_required");
    let message = task["message"].as_str().unwrap();
    assert!(message.contains("must be recreated"), "{message}");
    assert!(task["steps"][1]["data"]["images"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn externaldns_etcd_cluster_is_recreated_and_running() {
    let app = common::start().await;
    let before = etcd_api(&app).get("cray-externaldns-etcd").await.unwrap();
    let run = app.run_services(json!(["externaldns"])).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let after = etcd_api(&app).get("cray-externaldns-etcd").await.unwrap();
    assert_ne!(after.uid(), before.uid());
    assert_eq!(after.data["status"]["phase"], "Running");
    assert_eq!(after.data["status"]["size"], 3);
    assert_eq!(after.data["spec"], before.data["spec"]);
    let manifest = &run["services"][0]["steps"][0]["data"]["manifest"];
    assert!(manifest.get("status").is_none() && manifest["metadata"].get("uid").is_none());
}

#[tokio::test]
async fn externaldns_that_never_runs_times_out_clearly() {
    let mut config = Config::default();
    config.externaldns.timeout = Duration::from_secs(2);
    let app = common::start_with(SimOptions::default(), config).await;
    let api = etcd_api(&app);
    let mut cluster = api.get("cray-externaldns-etcd").await.unwrap();
    cluster
        .annotations_mut()
        .insert("sim.etcd-repopulator.io/never-ready".into(), "true".into());
    api.replace("cray-externaldns-etcd", &PostParams::default(), &cluster)
        .await
        .unwrap();
    let run = app.run_services(json!(["externaldns"])).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let message = run["services"][0]["steps"][0]["message"].as_str().unwrap();
    assert!(message.contains("timed out after 2s"), "{message}");
    assert!(
        message.contains("EtcdCluster cray-externaldns-etcd"),
        "{message}"
    );
    // The recreated object exists (the stored manifest was used), it just never ran.
    assert!(
        api.get_opt("cray-externaldns-etcd")
            .await
            .unwrap()
            .is_some()
    );
}

/// External DNS's etcd as newer CSM releases run it: a Bitnami etcd StatefulSet.
fn externaldns_statefulset() -> StatefulSet {
    let labels = json!({
        "app.kubernetes.io/name": "etcd",
        "app.kubernetes.io/instance": "cray-externaldns",
    });
    let mut pod_labels = labels.clone();
    pod_labels["app.kubernetes.io/component"] = json!("etcd");
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "cray-externaldns-etcd", "labels": labels},
        "spec": {
            "replicas": 3,
            "podManagementPolicy": "Parallel",
            "serviceName": "cray-externaldns-etcd-headless",
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{
                    "name": "etcd", "image": "docker.io/bitnami/etcd:3.5.17",
                    "ports": [{"name": "client", "containerPort": 2379},
                              {"name": "peer", "containerPort": 2380}]}]}},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "8Gi"}}}}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn externaldns_statefulset_is_recreated_with_new_pods_of_the_same_names() {
    let config = Config {
        externaldns: ObjectRecreate {
            api_version: "apps/v1".to_owned(),
            kind: "StatefulSet".to_owned(),
            plural: "statefulsets".to_owned(),
            name: "cray-externaldns-etcd".to_owned(),
            timeout: common::WAIT,
        },
        ..Config::default()
    };
    let app = common::start_with(SimOptions::default(), config).await;
    let sets: Api<StatefulSet> = Api::namespaced(app.sim.kube_client(), "services");
    sets.create(&PostParams::default(), &externaldns_statefulset())
        .await
        .unwrap();
    app.sim.wait_settled(common::WAIT).await.unwrap();
    let before = sets.get("cray-externaldns-etcd").await.unwrap();
    let selector = "app.kubernetes.io/instance=cray-externaldns";
    let mut pods_before = app.pods_matching(selector).await;
    pods_before.sort();
    let names: Vec<String> = pods_before.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(
        names,
        [
            "cray-externaldns-etcd-0",
            "cray-externaldns-etcd-1",
            "cray-externaldns-etcd-2"
        ]
    );
    assert!(pods_before.iter().all(|(_, _, ready)| *ready));
    let etcd_cluster = etcd_api(&app).get("cray-externaldns-etcd").await.unwrap();

    // As the service account, with the chart's Role only.
    let run = app.run_services(json!(["externaldns"])).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    let after = sets.get("cray-externaldns-etcd").await.unwrap();
    assert_ne!(after.uid(), before.uid());
    assert_eq!(after.spec, before.spec);
    let status = after.status.as_ref().unwrap();
    assert_eq!(status.ready_replicas, Some(3));
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["data"]["original_uid"], before.uid().unwrap());
    assert_eq!(step["data"]["new_uid"], after.uid().unwrap());
    let manifest = &step["data"]["manifest"];
    assert_eq!(manifest["kind"], "StatefulSet");
    assert_eq!(
        manifest["spec"],
        serde_json::to_value(&before.spec).unwrap()
    );
    assert!(manifest.get("status").is_none() && manifest["metadata"].get("uid").is_none());

    // The pods are the new StatefulSet's: the same names, new uids, Ready.
    let mut pods_after = app.pods_matching(selector).await;
    pods_after.sort();
    assert_eq!(
        pods_after
            .iter()
            .map(|(n, _, _)| n.clone())
            .collect::<Vec<_>>(),
        names
    );
    for (name, uid, ready) in &pods_after {
        assert!(*ready, "{name} is not Ready");
        assert!(
            pods_before.iter().all(|(_, old, _)| old != uid),
            "{name} is the old pod"
        );
        let pod = app.pods().get(name).await.unwrap();
        assert_eq!(
            pod.owner_references()[0].uid,
            after.uid().unwrap(),
            "{name} belongs to the new StatefulSet"
        );
    }
    // Every call was within the Role, and the StatefulSet went through it.
    let log = app.sim.access_log();
    assert!(log.iter().all(|r| r.allowed), "{log:#?}");
    for verb in ["get", "delete", "create", "watch"] {
        assert!(
            log.iter()
                .any(|r| r.request.resource == "statefulsets" && r.request.verb == verb),
            "no statefulsets {verb}: {log:#?}"
        );
    }
    // The EtcdCluster of the same name was not what the configuration pointed at.
    assert_eq!(
        etcd_api(&app)
            .get("cray-externaldns-etcd")
            .await
            .unwrap()
            .uid(),
        etcd_cluster.uid()
    );
}

#[tokio::test]
async fn crus_records_sessions_restarts_and_flags_unfinished_sessions() {
    let app = common::start().await;
    let before = app.pods_matching("app.kubernetes.io/name=cray-crus").await;
    let run = app.run_services(json!(["crus"])).await;
    let task = &run["services"][0];
    let steps = task["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    let sessions = steps[0]["data"]["sessions"].as_array().unwrap();
    assert!(!sessions.is_empty());
    assert!(
        sessions
            .iter()
            .all(|s| s["upgrade_id"].is_string() && s["state"].is_string())
    );
    assert_eq!(steps[1]["state"], "succeeded");
    let after = app.pods_matching("app.kubernetes.io/name=cray-crus").await;
    assert!(
        after
            .iter()
            .all(|(_, uid, ready)| *ready && before.iter().all(|(_, old, _)| old != uid))
    );
    let open = steps[2]["data"]["not_completed"].as_array().unwrap();
    if open.is_empty() {
        assert_eq!(run["state"], "succeeded");
    } else {
        assert_eq!(run["state"], "action_required", "{run:#}");
        assert!(task["message"].as_str().unwrap().contains("not completed"));
    }
}

#[tokio::test]
async fn crus_api_down_fails_with_a_clear_error() {
    let app = common::start().await;
    assert!(app.sim.csm().set_available("crus", false));
    let run = app.run_services(json!(["crus"])).await;
    assert_eq!(run["state"], "failed");
    let message = run["services"][0]["steps"][0]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        message.contains("crus") && message.contains("503"),
        "{message}"
    );
}

#[tokio::test]
async fn a_dry_run_reports_a_csm_api_that_does_not_answer() {
    let app = common::start().await;
    assert!(app.sim.csm().set_available("crus", false));
    let id = app
        .start_run(json!({"services": ["crus"], "dry_run": true}))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let message = run["services"][0]["steps"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("dry run: a real run would end failed here: ")
            && message.to_lowercase().contains("crus")
            && message.contains("503"),
        "{message}"
    );
}

#[tokio::test]
async fn cps_with_mounted_content_lists_the_nodes_to_reboot() {
    let app = common::start().await;
    let run = app.run_services(json!(["cps"])).await;
    let task = &run["services"][0];
    assert_eq!(task["steps"][0]["state"], "succeeded");
    assert!(
        task["steps"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nothing restarted")
    );
    assert_eq!(run["state"], "action_required", "{run:#}");
    assert!(
        task["message"]
            .as_str()
            .unwrap()
            .contains("CPS content is exported")
    );
}

/// (kind, name, uid, resourceVersion) of every object the handlers could touch.
async fn cluster_snapshot(app: &common::TestApp) -> Vec<(String, String, String, String)> {
    let mut all = Vec::new();
    let client = app.sim.kube_client();
    for (group, version, kind, plural) in [
        ("", "v1", "Pod", "pods"),
        ("batch", "v1", "Job", "jobs"),
        (
            "etcd.database.coreos.com",
            "v1beta2",
            "EtcdCluster",
            "etcdclusters",
        ),
        ("apps", "v1", "ReplicaSet", "replicasets"),
    ] {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "services", &ar);
        for o in api.list(&Default::default()).await.unwrap() {
            all.push((
                kind.to_owned(),
                o.name_any(),
                o.uid().unwrap(),
                o.resource_version().unwrap(),
            ));
        }
    }
    all.sort();
    all
}

#[tokio::test]
async fn dry_run_of_every_service_changes_nothing() {
    // What a real run needs is there (an SSH identity for HMNFD), so the plan is complete.
    let keys = tempfile::tempdir().unwrap();
    let (identity_file, known_hosts_file) = common::ssh_files(keys.path());
    let mut config = Config::default();
    config.ssh.identity_file = identity_file;
    config.ssh.known_hosts_file = known_hosts_file;
    let app = common::start_with(SimOptions::default(), config).await;
    let before = cluster_snapshot(&app).await;
    let id = app
        .start_run(json!({"services": ["all"], "dry_run": true}))
        .await;
    let run = app.finished_run(&id).await;
    // A plan reads as one: complete, so succeeded, with what a real run would leave to a
    // person said in the conditional.
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let task = |service: &str| {
        run["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["service"] == service)
            .unwrap()
            .clone()
    };
    for task in run["services"].as_array().unwrap() {
        assert_eq!(task["state"], "succeeded", "{task:#}");
        for step in task["steps"].as_array().unwrap() {
            let message = step["message"].as_str().unwrap();
            assert!(
                !message.contains(" were lost") && !message.contains("must be recreated"),
                "{message}"
            );
        }
    }
    let fas = task("fas");
    let verify = &fas["steps"][1];
    assert_eq!(verify["data"]["real_run_state"], "action_required");
    let message = verify["message"].as_str().unwrap();
    assert!(
        message.starts_with("dry run: ") && message.contains("would lose"),
        "{message}"
    );
    assert_eq!(
        task("cps")["steps"][1]["data"]["real_run_state"],
        "action_required"
    );
    let bss = task("bss");
    assert!(
        bss["steps"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("dry run")
    );
    assert!(bss["steps"][0]["data"]["manifest"].is_object());
    assert_eq!(cluster_snapshot(&app).await, before);
}

/// A finalizer no controller removes: deleting an object that has it leaves it terminating
/// until the test takes it off, which holds a step between "delete" and "created again".
const HOLD: &str = "test.etcd-repopulator.io/hold";

fn jobs_dynamic(app: &common::TestApp) -> Api<DynamicObject> {
    Api::namespaced_with(
        app.sim.kube_client(),
        "services",
        &ApiResource::erase::<Job>(&()),
    )
}

async fn set_finalizers(api: &Api<DynamicObject>, name: &str, finalizers: Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
    )
    .await
    .unwrap();
}

/// Waits until the object `name` is being deleted (held by a finalizer).
async fn terminating(api: &Api<DynamicObject>, name: &str) {
    tokio::time::timeout(
        common::WAIT,
        await_condition(api.clone(), name, |o: Option<&DynamicObject>| {
            o.is_some_and(|o| o.metadata.deletion_timestamp.is_some())
        }),
    )
    .await
    .expect("the run deletes the object")
    .unwrap();
}

/// Waits until run `id` logs a line containing `text`, from `events` (subscribed before the
/// line can have been written).
async fn logged(
    events: &mut tokio::sync::broadcast::Receiver<etcd_repopulator::store::AppendedEvent>,
    id: &str,
    text: &str,
) {
    tokio::time::timeout(common::WAIT, async {
        loop {
            let appended = events.recv().await.unwrap();
            if appended.run_id.to_string() == id && appended.event.message.contains(text) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("run {id} never logged {text:?}"));
}

/// The run's log lines.
async fn log_of(app: &common::TestApp, id: &str) -> Vec<String> {
    app.runner
        .store()
        .events(id.parse().unwrap(), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// Cancels a run of `service` while it waits for `name` (held by a finalizer) to be deleted:
/// the step must create the object again before it stops, and say so.
async fn cancel_between_delete_and_create(
    app: &common::TestApp,
    service: &str,
    api: Api<DynamicObject>,
    name: &str,
) {
    let before = api.get(name).await.unwrap();
    set_finalizers(&api, name, json!([HOLD])).await;
    let mut events = app.runner.store().subscribe();
    let id = app.start_run(json!({ "services": [service] })).await;
    terminating(&api, name).await;
    app.cancel(&id).await;
    logged(&mut events, &id, "stop requested while").await;
    set_finalizers(&api, name, Value::Null).await;

    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["state"], "cancelled");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains("it had been deleted already, so it was created again (uid"),
        "{message}"
    );
    let after = api.get(name).await.expect("the object was created again");
    assert_ne!(after.uid(), before.uid());
    assert_eq!(step["data"]["new_uid"], after.uid().unwrap());
    // The finalizer was the old object's (a controller may add its own to the new one).
    assert!(
        !after.finalizers().iter().any(|f| f == HOLD),
        "{:?}",
        after.finalizers()
    );
}

#[tokio::test]
async fn cancel_between_delete_and_create_finishes_the_etcd_cluster() {
    let app = common::start().await;
    cancel_between_delete_and_create(&app, "externaldns", etcd_api(&app), "cray-externaldns-etcd")
        .await;
}

#[tokio::test]
async fn cancel_between_delete_and_create_finishes_the_job() {
    let app = common::start().await;
    cancel_between_delete_and_create(&app, "bss", jobs_dynamic(&app), "cray-reds-init").await;
}

#[tokio::test]
async fn a_later_run_creates_what_an_earlier_run_deleted() {
    let mut config = Config::default();
    config.externaldns.timeout = Duration::from_secs(1);
    let app = common::start_with(SimOptions::default(), config).await;
    let api = etcd_api(&app);
    let name = "cray-externaldns-etcd";
    let before = api.get(name).await.unwrap();
    set_finalizers(&api, name, json!([HOLD])).await;
    // The first run deletes the cluster and gives up waiting for it to go.
    let first = app.run_services(json!(["externaldns"])).await;
    assert_eq!(first["state"], "failed", "{first:#}");
    let message = first["services"][0]["steps"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("timed out after 1s waiting for EtcdCluster cray-externaldns-etcd"),
        "{message}"
    );
    set_finalizers(&api, name, Value::Null).await;
    tokio::time::timeout(
        common::WAIT,
        await_condition(
            api.clone(),
            name,
            conditions::is_deleted(&before.uid().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(api.get_opt(name).await.unwrap().is_none());

    // A new run (not a resume) finds what the first one stored.
    let second = app.run_services(json!(["externaldns"])).await;
    assert_eq!(second["state"], "succeeded", "{second:#}");
    let step = &second["services"][0]["steps"][0];
    assert_eq!(step["data"]["manifest_from_run"], first["id"]);
    assert_eq!(step["data"]["original_uid"], before.uid().unwrap());
    let after = api.get(name).await.unwrap();
    assert_eq!(step["data"]["new_uid"], after.uid().unwrap());
    assert_eq!(after.data["spec"], before.data["spec"]);
}

#[tokio::test]
async fn resume_runs_a_failed_job_again() {
    let app = common::start().await;
    replace_with_failing_job(
        &app,
        "cray-fas-loader",
        "error: firmware repository unreachable",
    )
    .await;
    let first = app.run_services(json!(["fas"])).await;
    assert_eq!(first["state"], "failed", "{first:#}");
    let id = first["id"].as_str().unwrap();
    let failed_uid = first["services"][0]["steps"][0]["data"]["new_uid"]
        .as_str()
        .unwrap()
        .to_owned();

    let resumed = app.resume_to_end(id).await;
    // The Job still fails (its template says so), but it is a new Job that failed.
    assert_eq!(resumed.state, State::Failed, "{resumed:#?}");
    assert_eq!(resumed.attempt, 2);
    let step = common::step_of(&resumed, Service::Fas, "rerun-fas-loader-job");
    let data = step.data.as_ref().expect("the re-run's data");
    let current = jobs(&app).get("cray-fas-loader").await.unwrap();
    assert_ne!(current.uid().unwrap(), failed_uid);
    assert_eq!(data["new_uid"], current.uid().unwrap());
    assert_eq!(data["original_uid"], failed_uid.as_str());
    assert!(job_condition(&current, "Failed"));
    let message = step.message.as_deref().unwrap();
    assert!(
        message.contains(&current.uid().unwrap())
            && message.contains("error: firmware repository unreachable"),
        "{message}"
    );
    let log = log_of(&app, id).await;
    assert!(
        log.iter().any(|l| l.contains("failed; running it again")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("already created again")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn recreated_job_keeps_its_name_labels_and_drops_the_old_finalizers_and_owners() {
    let app = common::start().await;
    let owner = Api::<Deployment>::namespaced(app.sim.kube_client(), "services")
        .get("cray-bss")
        .await
        .unwrap();
    let name = "cray-reds-init";
    replace_job_with(
        &app,
        name,
        json!({
            "name": name,
            "labels": {"app.kubernetes.io/name": name, "job-name": name},
            "finalizers": [HOLD],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                "name": "cray-bss", "uid": owner.uid().unwrap()}],
        }),
        json!({}),
    )
    .await;
    let api = jobs_dynamic(&app);
    let id = app.start_run(json!({ "services": ["bss"] })).await;
    terminating(&api, name).await;
    set_finalizers(&api, name, Value::Null).await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    // `kubectl get jobs -l job-name=cray-reds-init` finds the new Job.
    let found = jobs(&app)
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .unwrap()
        .items;
    assert_eq!(found.len(), 1);
    let job = &found[0];
    assert!(job.finalizers().is_empty(), "{:?}", job.finalizers());
    assert!(job.owner_references().is_empty());
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["data"]["new_uid"], job.uid().unwrap());
    let dropped = step["data"]["dropped"].as_array().unwrap();
    let field = |f: &str| {
        dropped
            .iter()
            .find(|d| d["field"] == f)
            .map(|d| &d["value"])
    };
    assert_eq!(field("metadata.finalizers"), Some(&json!([HOLD])));
    assert_eq!(
        field("metadata.ownerReferences").unwrap()[0]["name"],
        "cray-bss"
    );
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains("metadata.finalizers, metadata.ownerReferences"),
        "{message}"
    );
}

#[tokio::test]
async fn one_transient_api_error_is_retried_and_counted() {
    let app = common::start().await;
    let fault = |path: &str| json!({"fail": {"count": 1, "status": 500, "path_contains": path}});
    for (service, path) in [("reds", "/pods"), ("bss", "/jobs/cray-reds-init")] {
        let resp = app
            .http
            .post(format!("{}/sim/faults", app.sim.url()))
            .json(&fault(path))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let run = app.run_services(json!([service])).await;
        assert_eq!(run["state"], "succeeded", "{service}: {run:#}");
        let step = &run["services"][0]["steps"][0];
        assert_eq!(
            step["data"]["kubernetes_api_retries"], 1,
            "{service}: {step:#}"
        );
        let message = step["message"].as_str().unwrap();
        assert!(
            message.ends_with("(1 Kubernetes API request(s) retried after transient errors)"),
            "{service}: {message}"
        );
    }
}

#[tokio::test]
async fn kubernetes_errors_read_as_status_reason_and_message() {
    // The service account may do everything but touch pods.
    let rules = etcd_repopulator::cluster::rbac::policy_rules()
        .into_iter()
        .filter(|r| {
            !r.resources
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r == "pods"))
        })
        .collect();
    let sim = common::seeded_sim(SimOptions::default()).await;
    let app = common::start_as(sim, Config::default(), rules).await;
    let run = app.run_services(json!(["reds"])).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let message = run["services"][0]["steps"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "listing pods \"app.kubernetes.io/name=cray-reds\" in namespace services failed: \
             403 Forbidden: pods is forbidden: "
        ),
        "{message}"
    );
    assert!(
        !message.contains("ApiError") && !message.contains("Status {"),
        "{message}"
    );
}
