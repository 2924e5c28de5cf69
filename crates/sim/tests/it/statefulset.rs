//! The StatefulSet controller as kube-controller-manager 1.26 runs it (and what OBSERVED.md
//! recorded of a real one): pods in order or in parallel, claims before their pods, a claim
//! that is being deleted holding its pod back, claims `Pending` then `Bound`, and the fields
//! and labels of the Kubernetes version the simulated cluster behaves as.

use futures::TryStreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::Condition;
use kube::{Client, ResourceExt};
use serde_json::json;
use sim::testing::{DEADLINE, NS, cluster, cluster_with, wait_for};
use sim::{KubeVersion, SimCluster, SimOptions};

use crate::kube::{is_pod_ready, watch_from_now, watch_pods};

/// A StatefulSet `name` with pods labelled `app: <name>`, a headless service and a claim
/// template, like Bitnami's etcd chart; `policy` is its podManagementPolicy, if any.
fn statefulset(name: &str, replicas: i32, policy: Option<&str>) -> StatefulSet {
    let mut set = json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "serviceName": format!("{name}-headless"),
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "etcd", "image": "bitnami/etcd" }] },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } },
                },
            }],
        },
    });
    if let Some(policy) = policy {
        set["spec"]["podManagementPolicy"] = json!(policy);
    }
    serde_json::from_value(set).expect("statefulset")
}

fn has_ready_replicas(n: i32) -> impl Condition<StatefulSet> {
    move |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.replicas == n && st.ready_replicas.unwrap_or(0) == n)
    }
}

/// What a pod watch shows, in order, as `step pod` entries joined by ", ": the first time each
/// pod is `seen`, is `ready`, is `terminating` and is `gone`, for the steps in `steps`, up to
/// `until`.
async fn pod_history(
    stream: &mut BoxStream<'static, kube::Result<WatchEvent<Pod>>>,
    steps: &[&str],
    until: &str,
) -> String {
    let mut log: Vec<String> = Vec::new();
    while !log.iter().any(|e| e == until) {
        let ev = tokio::time::timeout(DEADLINE, stream.try_next())
            .await
            .unwrap_or_else(|_| panic!("no pod event in time; so far: {log:?}"))
            .expect("stream ok")
            .expect("stream open");
        let (pod, gone) = match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
            WatchEvent::Deleted(p) => (p, true),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        for (step, happened) in [
            ("seen", true),
            ("ready", is_pod_ready().matches_object(Some(&pod))),
            ("terminating", pod.metadata.deletion_timestamp.is_some()),
            ("gone", gone),
        ] {
            let entry = format!("{step} {}", pod.name_any());
            if happened && steps.contains(&step) && !log.contains(&entry) {
                log.push(entry);
            }
        }
    }
    log.join(", ")
}

/// A fresh cluster, with its StatefulSets and pods in the test namespace.
async fn statefulset_cluster() -> (SimCluster, Api<StatefulSet>, Api<Pod>) {
    let (sim, client) = cluster().await;
    (
        sim,
        Api::namespaced(client.clone(), NS),
        Api::namespaced(client, NS),
    )
}

/// Creates `set` (its pods labelled `app: <set name>`) and returns when its pods were seen and
/// Ready, up to `until`, as [`pod_history`] tells it, and the set once all its replicas are
/// Ready.
async fn create_statefulset(
    sets: &Api<StatefulSet>,
    pods: &Api<Pod>,
    set: StatefulSet,
    until: &str,
) -> (String, StatefulSet) {
    let name = set.name_any();
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut stream = watch_pods(pods, &name).await;
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create");
    let history = pod_history(&mut stream, &["seen", "ready"], until).await;
    let ready = wait_for(sets, &name, has_ready_replicas(replicas)).await;
    (history, ready.expect("statefulset"))
}

#[tokio::test]
async fn statefulset_creates_pods_in_order_and_recreates_a_deleted_one_by_name() {
    let (_sim, sets, pods) = statefulset_cluster().await;
    // No podManagementPolicy: OrderedReady is the default. Each pod is created only once its
    // predecessor is Running and Ready.
    let set = statefulset("web", 3, None);
    let (history, set) = create_statefulset(&sets, &pods, set, "ready web-2").await;
    assert_eq!(
        history,
        "seen web-0, ready web-0, seen web-1, ready web-1, seen web-2, ready web-2"
    );
    let status = serde_json::to_value(set.status.as_ref().expect("status")).expect("json");
    let revision = status["updateRevision"].as_str().expect("updateRevision");
    assert!(revision.starts_with("web-"), "{status}");
    assert_eq!(
        status,
        json!({
            "observedGeneration": 1,
            "replicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "currentReplicas": 3,
            "updatedReplicas": 3,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        })
    );

    let old = pods.get("web-1").await.expect("web-1");
    let labels = old.labels();
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    // 1.28 and later only.
    assert!(
        !labels.contains_key("apps.kubernetes.io/pod-index"),
        "{labels:?}"
    );
    assert_eq!(labels["controller-revision-hash"], revision);
    let spec = old.spec.as_ref().expect("spec");
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web-headless"));
    let claim = spec.volumes.as_ref().expect("volumes")[0]
        .persistent_volume_claim
        .as_ref()
        .expect("claim");
    assert_eq!(claim.claim_name, "data-web-1");
    let owner = &old.owner_references()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.uid.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        (
            "StatefulSet",
            set.uid().expect("uid").as_str(),
            Some(true),
            Some(true)
        )
    );

    // A deleted pod comes back under its name, after the old one is gone; the others stay.
    let others: Vec<Option<String>> = [
        pods.get("web-0").await.expect("web-0").uid(),
        pods.get("web-2").await.expect("web-2").uid(),
    ]
    .into();
    pods.delete("web-1", &DeleteParams::default())
        .await
        .expect("delete");
    let old_uid = old.uid().expect("uid");
    let replacement = wait_for(&pods, "web-1", move |p: Option<&Pod>| {
        p.is_some_and(|p| p.uid().as_deref() != Some(old_uid.as_str()))
            && is_pod_ready().matches_object(p)
    })
    .await
    .expect("replacement");
    assert_eq!(
        replacement.labels()["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(
        others,
        vec![
            pods.get("web-0").await.expect("web-0").uid(),
            pods.get("web-2").await.expect("web-2").uid(),
        ]
    );
    wait_for(&sets, "web", has_ready_replicas(3)).await;
}

#[tokio::test]
async fn statefulset_parallel_creation_rolling_update_and_ordered_scale_down() {
    let (_sim, sets, pods) = statefulset_cluster().await;

    // Parallel: every pod is created before any is Ready.
    let set = statefulset("par", 3, Some("Parallel"));
    let (history, before) = create_statefulset(&sets, &pods, set, "seen par-2").await;
    assert_eq!(history, "seen par-0, seen par-1, seen par-2");
    let old_revision = before.status.and_then(|s| s.update_revision);

    // A new template is rolled out from the highest ordinal, one pod at a time (also with
    // Parallel): the next goes once the one before is back and Ready.
    let mut stream = watch_pods(&pods, "par").await;
    sets.patch(
        "par",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "template": { "metadata": {
            "annotations": { "rollout": "2" } } } } })),
    )
    .await
    .expect("new template");
    assert_eq!(
        pod_history(&mut stream, &["terminating", "gone"], "gone par-0").await,
        "terminating par-2, gone par-2, terminating par-1, gone par-1, terminating par-0, gone par-0"
    );
    let rolled = wait_for(&sets, "par", move |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.ready_replicas == Some(3)
                && st.current_replicas == Some(3)
                && st.update_revision != old_revision
                && st.current_revision == st.update_revision
        })
    })
    .await
    .and_then(|s| s.status)
    .expect("status");
    for pod in pods
        .list(&ListParams::default().labels("app=par"))
        .await
        .expect("list")
    {
        assert_eq!(
            pod.labels().get("controller-revision-hash"),
            rolled.update_revision.as_ref()
        );
    }

    // OrderedReady scale-down: the highest ordinal first, the next once it is gone.
    let set = statefulset("web", 3, Some("OrderedReady"));
    create_statefulset(&sets, &pods, set, "ready web-2").await;
    let mut stream = watch_pods(&pods, "web").await;
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
    )
    .await
    .expect("scale");
    assert_eq!(
        pod_history(&mut stream, &["terminating", "gone"], "gone web-1").await,
        "terminating web-2, gone web-2, terminating web-1, gone web-1"
    );
    let set = wait_for(&sets, "web", has_ready_replicas(1))
        .await
        .expect("statefulset");
    assert_eq!(set.status.and_then(|s| s.observed_generation), Some(2));
}

/// The events of `stream` up to the first one `done` accepts, as (resourceVersion, kind of
/// event, name, the object).
async fn events_until<K>(
    stream: &mut BoxStream<'static, kube::Result<WatchEvent<K>>>,
    mut done: impl FnMut(&str, &K) -> bool,
) -> Vec<(u64, &'static str, String, K)>
where
    K: kube::Resource + Clone,
{
    let mut out = Vec::new();
    loop {
        let ev = tokio::time::timeout(DEADLINE, stream.try_next())
            .await
            .expect("an event in time")
            .expect("stream ok")
            .expect("stream open");
        let (what, obj) = match ev {
            WatchEvent::Added(o) => ("added", o),
            WatchEvent::Modified(o) => ("modified", o),
            WatchEvent::Deleted(o) => ("deleted", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        let rv: u64 = obj
            .resource_version()
            .expect("rv")
            .parse()
            .expect("numeric rv");
        let stop = done(what, &obj);
        out.push((rv, what, obj.name_any(), obj));
        if stop {
            return out;
        }
    }
}

fn claims(client: &Client) -> Api<PersistentVolumeClaim> {
    Api::namespaced(client.clone(), NS)
}

#[tokio::test]
async fn claims_are_created_before_their_pods_pending_then_bound() {
    let (_sim, client) = cluster().await;
    let (sets, pods): (Api<StatefulSet>, Api<Pod>) = (
        Api::namespaced(client.clone(), NS),
        Api::namespaced(client.clone(), NS),
    );
    let pvcs = claims(&client);
    let mut pod_events = watch_from_now(&pods, &WatchParams::default()).await;
    let mut pvc_events = watch_from_now(&pvcs, &WatchParams::default()).await;
    sets.create(
        &PostParams::default(),
        &statefulset("par", 3, Some("Parallel")),
    )
    .await
    .expect("create");
    let pod_added = events_until(&mut pod_events, |what, p: &Pod| {
        what == "added" && p.name_any() == "par-2"
    })
    .await;
    let bound = |p: &PersistentVolumeClaim| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    };
    let mut seen_bound = std::collections::BTreeSet::new();
    let claim_events = events_until(&mut pvc_events, |_, p: &PersistentVolumeClaim| {
        if bound(p) {
            seen_bound.insert(p.name_any());
        }
        seen_bound.len() == 3
    })
    .await;
    for ordinal in 0..3 {
        let pod = format!("par-{ordinal}");
        let claim = format!("data-par-{ordinal}");
        let pod_rv = pod_added.iter().find(|e| e.2 == pod).expect("pod added").0;
        let (claim_rv, _, _, created) = claim_events
            .iter()
            .find(|e| e.1 == "added" && e.2 == claim)
            .expect("claim added");
        // The claim first, then its pod.
        assert!(
            *claim_rv < pod_rv,
            "{claim} at {claim_rv}, {pod} at {pod_rv}"
        );
        // A new claim is Pending; the volume controller binds it.
        assert_eq!(
            created.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Pending")
        );
        let (_, _, _, later) = claim_events
            .iter()
            .find(|e| e.2 == claim && bound(&e.3))
            .expect("claim bound");
        let annotations = later.annotations();
        assert_eq!(annotations["pv.kubernetes.io/bind-completed"], "yes");
        assert_eq!(annotations["pv.kubernetes.io/bound-by-controller"], "yes");
        let uid = later.uid().expect("uid");
        assert_eq!(
            later.spec.as_ref().and_then(|s| s.volume_name.clone()),
            Some(format!("pvc-{uid}"))
        );
        let status = later.status.as_ref().expect("status");
        assert_eq!(
            status.capacity.as_ref().expect("capacity")["storage"].0,
            "1Gi"
        );
        assert_eq!(
            status.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_owned()][..])
        );
    }
    wait_for(&sets, "par", has_ready_replicas(3)).await;
}

#[tokio::test]
async fn a_pod_whose_claim_is_gone_gets_a_new_claim_first_never_while_the_old_one_terminates() {
    let (_sim, client) = cluster().await;
    let (sets, pods): (Api<StatefulSet>, Api<Pod>) = (
        Api::namespaced(client.clone(), NS),
        Api::namespaced(client.clone(), NS),
    );
    let pvcs = claims(&client);
    create_statefulset(
        &sets,
        &pods,
        statefulset("par", 2, Some("Parallel")),
        "ready par-1",
    )
    .await;
    let old_claim = pvcs
        .get("data-par-0")
        .await
        .expect("claim")
        .uid()
        .expect("uid");
    let old_pod = pods.get("par-0").await.expect("pod").uid().expect("uid");

    // The claim of a running pod stays, Terminating, as long as the pod uses it.
    pvcs.delete("data-par-0", &DeleteParams::default())
        .await
        .expect("delete claim");
    let terminating = pvcs.get("data-par-0").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.finalizers(), ["kubernetes.io/pvc-protection"]);

    let mut pod_events = watch_from_now(&pods, &WatchParams::default()).await;
    let mut pvc_events = watch_from_now(&pvcs, &WatchParams::default()).await;
    pods.delete("par-0", &DeleteParams::default())
        .await
        .expect("delete pod");
    let pod_history = events_until(&mut pod_events, |what, p: &Pod| {
        what == "added" && p.name_any() == "par-0"
    })
    .await;
    let claim_history = events_until(&mut pvc_events, |what, p: &PersistentVolumeClaim| {
        what == "added" && p.name_any() == "data-par-0"
    })
    .await;
    let old_pod_gone = pod_history
        .iter()
        .find(|e| e.1 == "deleted" && e.3.uid().as_deref() == Some(old_pod.as_str()))
        .expect("old pod gone")
        .0;
    let old_claim_gone = claim_history
        .iter()
        .find(|e| e.1 == "deleted" && e.3.uid().as_deref() == Some(old_claim.as_str()))
        .expect("old claim gone")
        .0;
    let new_claim = claim_history.last().expect("new claim");
    let new_pod = pod_history.last().expect("new pod");
    // The old claim went once its pod had; then the controller made the claim, then the pod.
    assert!(old_pod_gone < old_claim_gone);
    assert!(old_claim_gone < new_claim.0);
    assert!(
        new_claim.0 < new_pod.0,
        "claim at {}, pod at {}",
        new_claim.0,
        new_pod.0
    );
    assert_ne!(new_claim.3.uid(), Some(old_claim));
    wait_for(&sets, "par", has_ready_replicas(2)).await;
    assert_eq!(
        pvcs.get("data-par-0").await.expect("claim").uid(),
        new_claim.3.uid()
    );
}

#[tokio::test]
async fn the_scheduler_places_a_pod_only_once_its_claims_are_bound() {
    let (_sim, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "p" },
        "spec": {
            "containers": [{ "name": "main", "image": "busybox" }],
            "volumes": [{ "name": "d", "persistentVolumeClaim": { "claimName": "later" } }],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let unschedulable = wait_for(&pods, "p", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref()?.first().cloned())
            .is_some_and(|c| c.reason.as_deref() == Some("Unschedulable"))
    })
    .await
    .expect("pod");
    let status = unschedulable.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let condition = &status.conditions.expect("conditions")[0];
    assert_eq!(
        (condition.type_.as_str(), condition.status.as_str()),
        ("PodScheduled", "False")
    );
    assert_eq!(
        condition.message.as_deref(),
        Some("0/1 nodes are available: persistentvolumeclaim \"later\" not found.")
    );
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "later" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
    }))
    .expect("claim");
    claims(&client)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
    wait_for(&pods, "p", is_pod_ready()).await;
}

#[tokio::test]
async fn kubernetes_1_26_has_no_pod_index_label_and_no_claim_retention_policy() {
    for (version, newer) in [(KubeVersion::CSM, false), (KubeVersion::new(1, 28), true)] {
        let (_sim, client) = cluster_with(SimOptions {
            kubernetes_version: version,
            ..SimOptions::default()
        })
        .await;
        let (sets, pods): (Api<StatefulSet>, Api<Pod>) = (
            Api::namespaced(client.clone(), NS),
            Api::namespaced(client.clone(), NS),
        );
        let mut set = serde_json::to_value(statefulset("web", 1, None)).expect("json");
        if !newer {
            // Dropped by a server whose StatefulSetAutoDeletePVC feature is off.
            set["spec"]["persistentVolumeClaimRetentionPolicy"] =
                json!({ "whenDeleted": "Delete", "whenScaled": "Delete" });
        }
        let set: StatefulSet = serde_json::from_value(set).expect("statefulset");
        let (_, created) = create_statefulset(&sets, &pods, set, "ready web-0").await;
        let policy = created
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.clone());
        let pod = pods.get("web-0").await.expect("pod");
        let index = pod.labels().get("apps.kubernetes.io/pod-index").cloned();
        if newer {
            let policy = policy.expect("defaulted on 1.28");
            assert_eq!(
                (
                    policy.when_deleted.as_deref(),
                    policy.when_scaled.as_deref()
                ),
                (Some("Retain"), Some("Retain"))
            );
            assert_eq!(index.as_deref(), Some("0"));
        } else {
            assert_eq!(policy, None);
            assert_eq!(index, None);
        }
    }
}
