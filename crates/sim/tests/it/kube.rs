//! The simulated Kubernetes API server, driven through the real kube-rs client over HTTP.

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event as V1Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
use kube::runtime::wait::{Condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use sim::testing::{DEADLINE, NS, api_err, cluster, cluster_with, etcd_api, wait_for};
use sim::{KubeVersion, SimCluster, SimOptions};

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "main", "image": "busybox" }] },
    }))
    .expect("pod")
}

fn job(name: &str, annotations: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "template": {
                "metadata": { "annotations": annotations },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": name, "image": "busybox" }],
                },
            },
        },
    }))
    .expect("job")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": { "containers": [{ "name": name, "image": "busybox" }] },
            },
        },
    }))
    .expect("deployment")
}

/// A watch of `api` from now, with `params` (e.g. a label selector).
pub async fn watch_from_now<K>(
    api: &Api<K>,
    params: &WatchParams,
) -> BoxStream<'static, kube::Result<WatchEvent<K>>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    api.watch(params, &rv).await.expect("watch").boxed()
}

/// A watch on the pods labelled `app=<app>`, from now.
pub async fn watch_pods(
    pods: &Api<Pod>,
    app: &str,
) -> BoxStream<'static, kube::Result<WatchEvent<Pod>>> {
    watch_from_now(pods, &WatchParams::default().labels(&format!("app={app}"))).await
}

pub fn is_pod_ready() -> impl Condition<Pod> {
    |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }
}

fn is_job_failed() -> impl Condition<Job> {
    |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    }
}

fn etcd_phase_is(phase: &'static str) -> impl Condition<DynamicObject> {
    move |o: Option<&DynamicObject>| {
        o.and_then(|o| o.data.pointer("/status/phase"))
            .and_then(|p| p.as_str())
            == Some(phase)
    }
}

async fn names(api: &Api<Pod>, lp: &ListParams) -> Vec<String> {
    let mut n: Vec<String> = api
        .list(lp)
        .await
        .expect("list")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn create_get_list_delete_round_trip() {
    let (_sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let created = pods
        .create(&PostParams::default(), &pod("a", &[("app", "x")]))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().expect("uid");
    let rv: u64 = created
        .resource_version()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));

    let got = pods.get("a").await.expect("get");
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));

    let list = pods.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list
        .metadata
        .resource_version
        .expect("list rv")
        .parse()
        .expect("rv");
    assert!(list_rv >= rv);

    // generateName
    let mut gen_pod = pod("", &[]);
    gen_pod.metadata.name = None;
    gen_pod.metadata.generate_name = Some("gen-".into());
    let g = pods
        .create(&PostParams::default(), &gen_pod)
        .await
        .expect("create");
    assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9);

    // Unscheduled pods are deleted at once, and the deleted object comes back.
    let gone = pods
        .delete("a", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    assert!(gone.is_left());
    assert_eq!(api_err(pods.get("a").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn errors_are_status_objects() {
    let (sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod("a", &[]))
        .await
        .expect("create");
    let dup = api_err(
        pods.create(&PostParams::default(), &pod("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "pods \"a\" already exists");

    let missing = api_err(pods.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "pods \"nope\" not found");

    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let e = api_err(
        jobs.delete("nope", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message, "jobs.batch \"nope\" not found");

    // Stale resourceVersion on update.
    let mut p = pods.get("a").await.expect("get");
    p.metadata.resource_version = Some("1".into());
    let conflict = api_err(
        pods.replace("a", &PostParams::default(), &p)
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(conflict.message.contains("the object has been modified"));

    // Raw HTTP: malformed JSON, namespace mismatch, unknown resource.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/namespaces/{NS}/pods", sim.url());
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("status json");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "BadRequest");

    let r = http
        .post(&url)
        .json(&json!({"metadata": {"name": "b", "namespace": "other"}, "spec": {"containers": [{"name": "c"}]}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);

    let r = http
        .get(format!("{}/apis/nope/v1/things", sim.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("status json");
    assert_eq!(body["reason"], "NotFound");

    // Creating in a namespace that does not exist.
    let other: Api<Pod> = Api::namespaced(client, "missing");
    let e = api_err(
        other
            .create(&PostParams::default(), &pod("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "namespaces \"missing\" not found");
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    for (name, app, tier) in [
        ("a", "reds", "be"),
        ("b", "meds", "be"),
        ("c", "reds", "fe"),
    ] {
        pods.create(
            &PostParams::default(),
            &pod(name, &[("app", app), ("tier", tier)]),
        )
        .await
        .expect("create");
    }
    let by = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&pods, &by("app=reds")).await, ["a", "c"]);
    assert_eq!(names(&pods, &by("app==reds,tier=be")).await, ["a"]);
    assert_eq!(names(&pods, &by("app!=reds")).await, ["b"]);
    assert_eq!(names(&pods, &by("tier in (fe, x)")).await, ["c"]);
    assert_eq!(names(&pods, &by("app notin (reds)")).await, ["b"]);
    assert_eq!(names(&pods, &by("tier")).await, ["a", "b", "c"]);
    assert!(names(&pods, &by("!tier")).await.is_empty());
    let f = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(&pods, &f).await, ["b"]);
    let f = ListParams::default().fields("metadata.name!=b");
    assert_eq!(names(&pods, &f).await, ["a", "c"]);

    let bad = api_err(pods.list(&by("app in reds")).await.unwrap_err());
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
    let bad = api_err(
        pods.list(&ListParams::default().fields("spec.foo=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad.code, 400);
    assert_eq!(bad.message, "field label not supported: spec.foo");
}

#[tokio::test]
async fn watch_streams_events_in_order_and_resumes() {
    let (_sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut stream = watch_pods(&pods, "w").await;

    pods.create(&PostParams::default(), &pod("w", &[("app", "w")]))
        .await
        .expect("create");
    let patched = pods
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"k": "v"}}})),
        )
        .await
        .expect("patch");
    // Relabelling out of the selector is a DELETED for this watcher.
    pods.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .expect("patch");

    // The kubelet also updates the pod (scheduling, start), so expect ADDED, MODIFIED...,
    // then DELETED, with increasing resourceVersions.
    let mut seen: Vec<(&str, u64)> = Vec::new();
    while seen.last().is_none_or(|(k, _)| *k != "DELETED") {
        let ev = next_event(&mut stream).await;
        let rv = |p: &Pod| {
            p.resource_version()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)
        };
        match ev {
            WatchEvent::Added(p) => seen.push(("ADDED", rv(&p))),
            WatchEvent::Modified(p) => seen.push(("MODIFIED", rv(&p))),
            WatchEvent::Deleted(p) => seen.push(("DELETED", rv(&p))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen[0].0, "ADDED", "{seen:?}");
    assert!(
        seen[1..seen.len() - 1]
            .iter()
            .all(|(k, _)| *k == "MODIFIED"),
        "{seen:?}"
    );
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");

    // Resuming from the annotation patch's resourceVersion replays only what came after,
    // including the relabel.
    let resume_rv: u64 = patched
        .resource_version()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    let mut resumed = pods
        .watch(&WatchParams::default(), &resume_rv.to_string())
        .await
        .expect("watch")
        .boxed();
    loop {
        match next_event(&mut resumed).await {
            WatchEvent::Modified(p) => {
                let rv: u64 = p
                    .resource_version()
                    .and_then(|r| r.parse().ok())
                    .expect("rv");
                assert!(rv > resume_rv);
                if p.labels().get("app").map(String::as_str) == Some("other") {
                    break;
                }
            }
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    }
}

/// The next watch event that is not a bookmark, failing the test after [`DEADLINE`].
async fn next_event<K>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    loop {
        let ev = tokio::time::timeout(DEADLINE, stream.try_next())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("stream open");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

async fn watcher_sees_pod(client: Client, config: watcher::Config) {
    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&PostParams::default(), &pod("before", &[]))
        .await
        .expect("create");
    let stream = watcher(pods.clone(), config).applied_objects().boxed();
    let creator = pods.clone();
    tokio::spawn(async move {
        let _ = creator
            .create(&PostParams::default(), &pod("after", &[]))
            .await;
    });
    let found = tokio::time::timeout(
        DEADLINE,
        stream
            .try_filter(|p| futures::future::ready(p.name_any() == "after"))
            .try_next(),
    )
    .await
    .expect("in time")
    .expect("ok");
    assert!(found.is_some());
}

#[tokio::test]
async fn runtime_watcher_with_list_watch() {
    let (_sim, client) = cluster().await;
    watcher_sees_pod(client, watcher::Config::default()).await;
}

#[tokio::test]
async fn runtime_watcher_with_streaming_list() {
    let (_sim, client) = cluster().await;
    watcher_sees_pod(client, watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn deleted_replicaset_pod_is_replaced_and_becomes_ready() {
    let (_sim, client) = cluster().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment("cray-reds", 1))
        .await
        .expect("create");
    wait_for(
        &deployments,
        "cray-reds",
        conditions::is_deployment_completed(),
    )
    .await;
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let sets = rs.list(&ListParams::default()).await.expect("list rs");
    assert_eq!(sets.items.len(), 1);
    assert!(sets.items[0].name_any().starts_with("cray-reds-"));

    let pods: Api<Pod> = Api::namespaced(client, NS);
    let lp = ListParams::default().labels("app.kubernetes.io/name=cray-reds");
    let old = pods.list(&lp).await.expect("list").items.remove(0);
    let old_uid = old.uid().expect("uid");
    pods.delete(&old.name_any(), &DeleteParams::default())
        .await
        .expect("delete");

    // A replacement with a new uid becomes Ready; the old one goes away.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let replacement = loop {
        let items = pods.list(&lp).await.expect("list").items;
        if let Some(p) = items
            .iter()
            .find(|p| p.uid().as_deref() != Some(old_uid.as_str()))
        {
            break p.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no replacement pod");
        tokio::task::yield_now().await;
    };
    wait_for(&pods, &replacement.name_any(), is_pod_ready()).await;
    wait_for(&pods, &old.name_any(), conditions::is_deleted(&old_uid)).await;
}

/// Runs a Job to Complete on a cluster of `version`; returns it and its pod.
async fn completed_job(version: KubeVersion) -> (Job, Pod) {
    let (_sim, client) = cluster_with(SimOptions {
        kubernetes_version: version,
        ..SimOptions::default()
    })
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    jobs.create(&PostParams::default(), &job("ok", json!({})))
        .await
        .expect("create");
    let done = wait_for(&jobs, "ok", conditions::is_job_completed())
        .await
        .expect("job");
    assert_eq!(
        done.status.as_ref().expect("status").succeeded,
        Some(1),
        "{version}"
    );
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let p = pods
        .list(&ListParams::default().labels("job-name=ok"))
        .await
        .expect("list")
        .items
        .remove(0);
    let logs = pods
        .logs(&p.name_any(), &LogParams::default())
        .await
        .expect("logs");
    assert!(!logs.is_empty());
    (done, p)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn job_runs_to_complete_with_the_labels_of_kubernetes_before_1_27() {
    // What CSM 1.0 to 1.6 run (and the simulation's default).
    assert_eq!(
        SimOptions::default().kubernetes_version,
        KubeVersion::new(1, 26)
    );
    let (job, pod) = completed_job(KubeVersion::new(1, 26)).await;
    let uid = job.uid().expect("uid");
    let generated = labels(&[("controller-uid", &uid), ("job-name", "ok")]);
    let spec = job.spec.as_ref().expect("spec");
    assert_eq!(
        spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
        Some(labels(&[("controller-uid", &uid)]))
    );
    assert_eq!(pod.metadata.labels.as_ref(), Some(&generated));
    // SetDefaults_Job: a Job without labels shows its template's.
    assert_eq!(job.metadata.labels.as_ref(), Some(&generated));
    assert!(spec.pod_replacement_policy.is_none());
    let conditions: Vec<String> = job
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(conditions, ["Complete"]);
}

#[tokio::test]
async fn job_runs_to_complete_with_the_prefixed_labels_from_kubernetes_1_27() {
    let (job, pod) = completed_job(KubeVersion::new(1, 33)).await;
    let uid = job.uid().expect("uid");
    assert_eq!(
        job.spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.clone()),
        Some(labels(&[("batch.kubernetes.io/controller-uid", &uid)]))
    );
    assert_eq!(
        pod.metadata.labels,
        Some(labels(&[
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", "ok"),
            ("controller-uid", &uid),
            ("job-name", "ok"),
        ]))
    );
    let conditions: Vec<String> = job
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(conditions, ["SuccessCriteriaMet", "Complete"]);
}

#[tokio::test]
async fn failing_job_fails_with_readable_log() {
    let (_sim, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let annotations = json!({
        "sim.etcd-repopulator.io/fail": "true",
        "sim.etcd-repopulator.io/log": "line one\nError: boom",
    });
    jobs.create(&PostParams::default(), &job("bad", annotations))
        .await
        .expect("create");
    let failed = wait_for(&jobs, "bad", is_job_failed()).await.expect("job");
    let conds = failed
        .status
        .and_then(|s| s.conditions)
        .expect("conditions");
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("BackoffLimitExceeded"))
    );
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let lp = ListParams::default().labels("job-name=bad");
    let p = pods.list(&lp).await.expect("list").items.remove(0);
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    let tail = pods
        .logs(
            &p.name_any(),
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(tail, "Error: boom\n");
}

#[tokio::test]
async fn recreating_a_job_from_its_manifest_needs_sanitizing() {
    let (_sim, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    jobs.create(&PostParams::default(), &job("cray-reds-init", json!({})))
        .await
        .expect("create");
    let saved = wait_for(&jobs, "cray-reds-init", conditions::is_job_completed())
        .await
        .expect("job");
    jobs.delete("cray-reds-init", &DeleteParams::background())
        .await
        .expect("delete");
    wait_for(
        &jobs,
        "cray-reds-init",
        conditions::is_deleted(&saved.uid().expect("uid")),
    )
    .await;

    let mut base = saved.clone();
    base.status = None;
    base.metadata.uid = None;
    base.metadata.creation_timestamp = None;
    base.metadata.managed_fields = None;
    base.metadata.generation = None;

    // Everything but resourceVersion stripped: selector and labels from the old Job.
    let mut with_selector = base.clone();
    with_selector.metadata.resource_version = None;
    let e = api_err(
        jobs.create(&PostParams::default(), &with_selector)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with("Job.batch \"cray-reds-init\" is invalid: "),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("spec.selector: Invalid value: "),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("`selector` not auto-generated"),
        "{}",
        e.message
    );

    // Selector removed but the controller-uid labels left behind.
    let mut with_labels = with_selector.clone();
    if let Some(spec) = with_labels.spec.as_mut() {
        spec.selector = None;
    }
    let e = api_err(
        jobs.create(&PostParams::default(), &with_labels)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .contains("spec.template.metadata.labels[controller-uid]: Invalid value: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("must be '"), "{}", e.message);

    // resourceVersion left in: the storage layer's plain 500.
    let mut sanitized = with_labels.clone();
    if let Some(labels) = sanitized
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .and_then(|m| m.labels.as_mut())
    {
        for k in [
            "controller-uid",
            "batch.kubernetes.io/controller-uid",
            "job-name",
            "batch.kubernetes.io/job-name",
        ] {
            labels.remove(k);
        }
    }
    let mut with_rv = sanitized.clone();
    with_rv.metadata.resource_version = saved.metadata.resource_version.clone();
    let e = api_err(
        jobs.create(&PostParams::default(), &with_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert_eq!(
        e.message,
        "resourceVersion should not be set on objects to be created"
    );

    let created = jobs
        .create(&PostParams::default(), &sanitized)
        .await
        .expect("sanitized create");
    assert_ne!(created.uid(), saved.uid());
    wait_for(&jobs, "cray-reds-init", conditions::is_job_completed()).await;
}

#[tokio::test]
async fn job_delete_orphans_pods_by_default_and_background_removes_them() {
    let (_sim, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for name in ["orphaning", "cascading"] {
        jobs.create(&PostParams::default(), &job(name, json!({})))
            .await
            .expect("create");
        wait_for(&jobs, name, conditions::is_job_completed()).await;
    }
    let pod_of = |name: &str| ListParams::default().labels(&format!("job-name={name}"));

    let j = jobs.get("orphaning").await.expect("get");
    jobs.delete("orphaning", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        &jobs,
        "orphaning",
        conditions::is_deleted(&j.uid().expect("uid")),
    )
    .await;
    let left = pods.list(&pod_of("orphaning")).await.expect("list").items;
    assert_eq!(left.len(), 1, "batch/v1 Jobs orphan their pods by default");
    assert!(left[0].metadata.owner_references.is_none());

    let j = jobs.get("cascading").await.expect("get");
    let p = pods
        .list(&pod_of("cascading"))
        .await
        .expect("list")
        .items
        .remove(0);
    jobs.delete("cascading", &DeleteParams::background())
        .await
        .expect("delete");
    wait_for(
        &jobs,
        "cascading",
        conditions::is_deleted(&j.uid().expect("uid")),
    )
    .await;
    wait_for(
        &pods,
        &p.name_any(),
        conditions::is_deleted(&p.uid().expect("uid")),
    )
    .await;
}

#[tokio::test]
async fn etcd_cluster_delete_waits_for_finalizer_and_recreate_runs() {
    let (sim, client) = cluster().await;
    sim.seed_csm().await.expect("seed");
    let etcd = etcd_api(&client);
    let name = "cray-externaldns-etcd";
    let running = wait_for(&etcd, name, etcd_phase_is("Running"))
        .await
        .expect("cluster");
    assert_eq!(running.data.pointer("/status/size"), Some(&json!(3)));

    let deleting = etcd
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let pending = deleting.left().expect("object with deletionTimestamp");
    assert!(pending.metadata.deletion_timestamp.is_some());
    wait_for(
        &etcd,
        name,
        conditions::is_deleted(&running.uid().expect("uid")),
    )
    .await;

    let mut manifest = running.clone();
    manifest.metadata.uid = None;
    manifest.metadata.resource_version = None;
    manifest.metadata.creation_timestamp = None;
    manifest.metadata.generation = None;
    manifest.metadata.finalizers = None;
    if let Some(m) = manifest.data.as_object_mut() {
        m.remove("status");
    }
    etcd.create(&PostParams::default(), &manifest)
        .await
        .expect("recreate");
    wait_for(&etcd, name, etcd_phase_is("Running")).await;
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let (_sim, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let real = jobs
        .create(&PostParams::default(), &job("real", json!({})))
        .await
        .expect("create");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let would = jobs
        .create(&dry, &job("dry", json!({})))
        .await
        .expect("dry create");
    assert_eq!(would.name_any(), "dry");
    assert_eq!(api_err(jobs.get("dry").await.unwrap_err()).code, 404);
    // Same validation as a real write.
    let dup = api_err(
        jobs.create(&dry, &job("real", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(dup.code, 409);

    let before = jobs.get("real").await.expect("get");
    jobs.delete("real", &DeleteParams::default().dry_run())
        .await
        .expect("dry delete");
    let after = jobs.get("real").await.expect("still there");
    assert_eq!(after.uid(), real.uid());
    assert!(after.metadata.deletion_timestamp.is_none());
    // The job controller may have moved on meanwhile; compare only when nothing else wrote.
    if before.resource_version() == after.resource_version() {
        assert_eq!(before, after);
    }
    let e = api_err(
        jobs.delete("missing", &DeleteParams::default().dry_run())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn injected_500_surfaces_as_an_error() {
    let (sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    sim.faults().fail_next_500(1, Some("/pods"));
    let e = api_err(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 500);
    pods.list(&ListParams::default())
        .await
        .expect("next call succeeds");

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/sim/faults", sim.url()))
        .json(&json!({"fail": {"count": 1, "status": 429}}))
        .send()
        .await
        .expect("post faults");
    assert_eq!(r.status(), 204);
    let r = http
        .get(format!("{}/api/v1/namespaces/{NS}/pods", sim.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let r = http
        .get(format!("{}/sim/healthz", sim.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn seeded_csm_namespace_settles() {
    let (sim, client) = cluster().await;
    sim.seed_csm().await.expect("seed");
    sim.wait_settled(DEADLINE).await.expect("settled");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let reds = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=cray-reds"))
        .await
        .expect("list");
    assert_eq!(reds.items.len(), 1);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let init = jobs.get("cray-reds-init").await.expect("job");
    assert!(
        init.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .is_some_and(|l| l.contains_key("controller-uid"))
    );
    let etcd = etcd_api(&client);
    assert_eq!(
        etcd.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        8
    );
}

/// kubectl (when installed) can discover and read the simulated cluster.
#[tokio::test]
async fn kubectl_reads_the_simulated_cluster() {
    let kubectl = std::path::Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let (sim, _client) = cluster().await;
    sim.seed_csm().await.expect("seed");
    sim.wait_settled(DEADLINE).await.expect("settled");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("kubeconfig");
    std::fs::write(&cfg, sim.kubeconfig_yaml()).expect("write kubeconfig");
    for args in [
        vec!["get", "pods", "-n", "services"],
        vec!["get", "etcd", "-n", "services"],
        vec!["get", "jobs", "-n", "services", "-o", "json"],
    ] {
        let out = tokio::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&cfg)
            .args(&args)
            .env("HOME", dir.path())
            .output()
            .await
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("kubectl {args:?}\n{stdout}\n{stderr}");
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
    }
}

/// A dropped watch is re-established by the runtime watcher, which keeps delivering.
#[tokio::test]
async fn runtime_watcher_survives_dropped_watches() {
    let (sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut stream = watcher(pods.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    pods.create(&PostParams::default(), &pod("one", &[]))
        .await
        .expect("create");
    let first = tokio::time::timeout(DEADLINE, stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    assert_eq!(first.name_any(), "one");
    sim.faults().drop_watches();
    pods.create(&PostParams::default(), &pod("two", &[]))
        .await
        .expect("create");
    let found = tokio::time::timeout(
        DEADLINE,
        stream
            .try_filter(|p| futures::future::ready(p.name_any() == "two"))
            .try_next(),
    )
    .await
    .expect("in time")
    .expect("ok");
    assert!(found.is_some());
}

fn reporter() -> Reporter {
    Reporter {
        controller: "etcd-repopulator".into(),
        instance: Some("etcd-repopulator-0".into()),
    }
}

fn restarted() -> RecorderEvent {
    RecorderEvent {
        type_: EventType::Normal,
        reason: "Restarted".into(),
        note: Some("restarted the pod".into()),
        action: "Restart".into(),
        secondary: None,
    }
}

/// A legacy core/v1 event (no eventTime), as old clients and `kubectl` write them.
fn core_event(name: &str, about: &Pod) -> CoreEvent {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": about.name_any(),
            "namespace": NS,
            "uid": about.uid(),
        },
        "reason": "Pulled",
        "message": "image pulled",
        "type": "Normal",
        "count": 3,
        "firstTimestamp": "2025-01-01T00:00:00Z",
        "lastTimestamp": "2025-01-01T00:01:00Z",
        "source": { "component": "kubelet", "host": "node-1" },
    }))
    .expect("core event")
}

/// An events.k8s.io/v1 event as `Recorder` writes it, for hand-made invalid variants.
fn v1_event(name: &str, about: &Pod) -> V1Event {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "eventTime": "2025-01-01T00:00:00.000001Z",
        "action": "Restart",
        "reason": "Restarted",
        "note": "restarted the pod",
        "type": "Normal",
        "regarding": about.object_ref(&()),
        "reportingController": "etcd-repopulator",
        "reportingInstance": "etcd-repopulator-0",
    }))
    .expect("v1 event")
}

/// The field selector `kubectl describe` uses for an object's events.
fn describe_selector(about: &Pod) -> String {
    format!(
        "involvedObject.uid={},involvedObject.name={},involvedObject.namespace={NS},involvedObject.kind=Pod",
        about.uid().expect("uid"),
        about.name_any(),
    )
}

/// A cluster with a pod `p` to report events about, and both event APIs.
struct Events {
    _sim: SimCluster,
    client: Client,
    pod: Pod,
    core: Api<CoreEvent>,
    v1: Api<V1Event>,
}

async fn events_fixture() -> Events {
    let (sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let p = pods
        .create(&PostParams::default(), &pod("p", &[]))
        .await
        .expect("create pod");
    Events {
        _sim: sim,
        pod: p,
        core: Api::namespaced(client.clone(), NS),
        v1: Api::namespaced(client.clone(), NS),
        client,
    }
}

/// Events published through events.k8s.io/v1 (kube-runtime's `Recorder`) are core/v1 events
/// too: one storage, two versions, as on a real cluster.
#[tokio::test]
async fn recorder_events_are_listed_as_core_events() {
    let f = events_fixture().await;
    let (client, p, core, v1) = (&f.client, &f.pod, &f.core, &f.v1);
    let recorder = Recorder::new(client.clone(), reporter());
    // The same event twice: created, then merge-patched with a series.
    for _ in 0..2 {
        recorder
            .publish(&restarted(), &p.object_ref(&()))
            .await
            .expect("publish");
    }

    let list = core
        .list(&ListParams::default().fields(&describe_selector(p)))
        .await
        .expect("list core events");
    assert_eq!(list.items.len(), 1, "{list:?}");
    let ev = &list.items[0];
    assert_eq!(ev.message.as_deref(), Some("restarted the pod"));
    assert_eq!(ev.reason.as_deref(), Some("Restarted"));
    assert_eq!(ev.action.as_deref(), Some("Restart"));
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(ev.reporting_component.as_deref(), Some("etcd-repopulator"));
    assert_eq!(ev.involved_object.uid, p.uid());
    assert_eq!(ev.series.as_ref().and_then(|s| s.count), Some(2));
    assert!(ev.name_any().starts_with("p."));
    // `source` falls back to the reporting controller for new-style events.
    let by_source = ListParams::default().fields("source=etcd-repopulator");
    assert_eq!(core.list(&by_source).await.expect("list").items.len(), 1);

    let by_regarding = ListParams::default().fields(&format!(
        "regarding.uid={},reportingController=etcd-repopulator",
        p.uid().expect("uid")
    ));
    let list = v1.list(&by_regarding).await.expect("list v1 events");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].note.as_deref(), Some("restarted the pod"));
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    // Each version has its own field labels.
    let e = api_err(
        v1.list(&ListParams::default().fields("involvedObject.uid=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: involvedObject.uid")
    );
}

/// A core/v1 event reads, patches, updates and deletes through events.k8s.io/v1, converted.
#[tokio::test]
async fn core_events_are_served_as_events_k8s_io() {
    let f = events_fixture().await;
    let (client, p, core, v1) = (&f.client, &f.pod, &f.core, &f.v1);
    core.create(&PostParams::default(), &core_event("p.pulled", p))
        .await
        .expect("create core event");

    let ev = v1.get("p.pulled").await.expect("get via events.k8s.io");
    assert_eq!(ev.note.as_deref(), Some("image pulled"));
    assert_eq!(ev.regarding.as_ref().and_then(|r| r.uid.clone()), p.uid());
    assert_eq!(ev.deprecated_count, Some(3));
    let source = ev.deprecated_source.as_ref().expect("deprecatedSource");
    assert_eq!(source.component.as_deref(), Some("kubelet"));
    assert!(ev.deprecated_first_timestamp.is_some() && ev.deprecated_last_timestamp.is_some());
    // The object comes back in the requested version.
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<V1Event>(&()));
    let dynamic = raw.get("p.pulled").await.expect("get dynamic");
    let types = dynamic.types.expect("types");
    assert_eq!(types.api_version, "events.k8s.io/v1");
    assert!(dynamic.data.get("message").is_none());

    // A merge patch through events.k8s.io/v1 lands in the one stored object.
    let label = Patch::Merge(json!({ "metadata": { "labels": { "seen": "yes" } } }));
    let patched = v1.patch("p.pulled", &PatchParams::default(), &label).await;
    patched.expect("patch via events.k8s.io");
    let mut stored = core.get("p.pulled").await.expect("get core");
    assert_eq!(stored.labels().get("seen").map(String::as_str), Some("yes"));
    // core/v1 updates are not held to the events.k8s.io immutability rules.
    stored.message = Some("image pulled again".into());
    core.replace("p.pulled", &PostParams::default(), &stored)
        .await
        .expect("update via core");
    let ev = v1.get("p.pulled").await.expect("get via events.k8s.io");
    assert_eq!(ev.note.as_deref(), Some("image pulled again"));

    v1.delete("p.pulled", &DeleteParams::default())
        .await
        .expect("delete via events.k8s.io");
    assert_eq!(api_err(core.get("p.pulled").await.unwrap_err()).code, 404);
}

async fn next_added<K: std::fmt::Debug>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> K {
    match next_event(stream).await {
        WatchEvent::Added(o) => o,
        other => panic!("expected ADDED, got {other:?}"),
    }
}

/// A watch on either version sees events written through the other, in its own version.
#[tokio::test]
async fn event_watches_see_writes_through_the_other_version() {
    let f = events_fixture().await;
    let (client, p, core, v1) = (&f.client, &f.pod, &f.core, &f.v1);
    // No event was written before the pod: watch from its resourceVersion.
    let rv = p.resource_version().expect("rv");
    let mut v1_watch = v1
        .watch(&WatchParams::default().fields("regarding.name=p"), &rv)
        .await
        .expect("watch v1")
        .boxed();
    let mut core_watch = core
        .watch(&WatchParams::default().fields(&describe_selector(p)), &rv)
        .await
        .expect("watch core")
        .boxed();

    core.create(&PostParams::default(), &core_event("p.pulled", p))
        .await
        .expect("create core event");
    Recorder::new(client.clone(), reporter())
        .publish(&restarted(), &p.object_ref(&()))
        .await
        .expect("publish");

    let seen = next_added(&mut v1_watch).await;
    assert_eq!(seen.note.as_deref(), Some("image pulled"));
    assert_eq!(seen.regarding.and_then(|r| r.name).as_deref(), Some("p"));
    let seen = next_added(&mut v1_watch).await;
    assert_eq!(seen.note.as_deref(), Some("restarted the pod"));

    let seen = next_added(&mut core_watch).await;
    assert_eq!(seen.message.as_deref(), Some("image pulled"));
    let seen = next_added(&mut core_watch).await;
    assert_eq!(seen.message.as_deref(), Some("restarted the pod"));
    assert_eq!(
        seen.reporting_component.as_deref(),
        Some("etcd-repopulator")
    );
}

/// The fields of a 422 Invalid Status.
fn invalid_fields(e: kube::Error) -> (kube::core::Status, Vec<String>) {
    let s = api_err(e);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
    let fields = s
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default();
    (s, fields)
}

/// `ValidateEventCreate`/`ValidateEventUpdate`: strict for events.k8s.io/v1, legacy for core/v1.
#[tokio::test]
async fn invalid_events_are_rejected() {
    let f = events_fixture().await;
    let (p, core, v1) = (&f.pod, &f.core, &f.v1);
    let create_v1 = async |ev: &V1Event| {
        invalid_fields(v1.create(&PostParams::default(), ev).await.unwrap_err())
    };

    let mut no_reason = v1_event("p.a", p);
    no_reason.reason = None;
    let (e, fields) = create_v1(&no_reason).await;
    assert_eq!(
        e.message,
        "Event \"p.a\" is invalid: reason: Required value"
    );
    assert_eq!(fields, ["reason"]);

    // A new-style event about a namespaced object without its namespace, outside
    // default/kube-system.
    let mut no_ns = v1_event("p.b", p);
    if let Some(r) = no_ns.regarding.as_mut() {
        r.namespace = None;
    }
    no_ns.type_ = Some("Bad".into());
    assert_eq!(
        create_v1(&no_ns).await.1,
        ["involvedObject.namespace", "type"]
    );

    // Deprecated fields are core/v1 business: events.k8s.io/v1 wants them unset.
    let mut counted = v1_event("p.c", p);
    counted.deprecated_count = Some(2);
    assert_eq!(create_v1(&counted).await.1, ["count"]);

    // A legacy core/v1 event in another namespace than its object's.
    let mut elsewhere = core_event("p.d", p);
    elsewhere.involved_object.namespace = Some("default".into());
    let (e, _) = invalid_fields(
        core.create(&PostParams::default(), &elsewhere)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains(
            "involvedObject.namespace: Invalid value: \"default\": does not match event.namespace"
        ),
        "{}",
        e.message
    );

    // Through events.k8s.io/v1 only the series of an event may change.
    v1.create(&PostParams::default(), &v1_event("p.e", p))
        .await
        .expect("valid event");
    let patch_v1 = async |patch: serde_json::Value| {
        let e = v1
            .patch("p.e", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_err();
        invalid_fields(e).1
    };
    assert_eq!(patch_v1(json!({ "note": "rewritten" })).await, ["message"]);
    let series =
        json!({ "series": { "count": 1, "lastObservedTime": "2025-01-01T00:00:01.000000Z" } });
    assert_eq!(patch_v1(series).await, ["series.count"]);
}
