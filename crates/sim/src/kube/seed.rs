//! A CSM-like `services` namespace: the Deployments, Jobs and EtcdClusters that the runbook
//! "Repopulate Data in etcd Clusters When Rebuilding Them" touches. Everything is created
//! through the normal create path, so Jobs carry generated selectors and labels like real ones.

use serde_json::{Value, json};

use super::controllers::{EFFECT, EFFECT_RELOAD_FAS_IMAGES, EFFECT_REPOPULATE_BSS};
use super::error::{ApiError, ApiResult};
use super::resources::{DEPLOYMENTS, ETCDCLUSTERS, JOBS, NAMESPACES, ResourceDef, STATEFULSETS};
use super::store::Store;

pub const NAMESPACE: &str = "services";

/// (name, replicas). The CPS content/projection manager (`cray-cps-cm-pm`) is a DaemonSet on
/// the worker NCNs in CSM; the simulator has no DaemonSet controller, so it is a Deployment
/// with one pod per simulated worker.
const DEPLOYMENTS_SEED: &[(&str, i64)] = &[
    ("cray-bos", 1),
    ("cray-bss", 1),
    ("cray-cps", 2),
    ("cray-cps-cm-pm", 3),
    ("cray-crus", 1),
    ("cray-fas", 1),
    ("cray-hmnfd", 1),
    ("cray-meds", 1),
    ("cray-reds", 1),
    ("cray-smd", 1),
];

pub const SEEDED_JOBS: &[&str] = &["cray-reds-init", "cray-fas-loader"];

const ETCD_CLUSTERS: &[&str] = &[
    "cray-bos-etcd",
    "cray-bss-etcd",
    "cray-cps-etcd",
    "cray-crus-etcd",
    "cray-fas-etcd",
    "cray-hmnfd-etcd",
    "cray-reds-etcd",
];

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/name": name, "app.kubernetes.io/instance": name },
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": {
                    "containers": [{
                        "name": name,
                        "image": format!("artifactory.algol60.net/csm-docker/stable/{name}:1.0.0"),
                    }],
                },
            },
        },
    })
}

/// A Job whose pod, when it succeeds, does `effect` to the fake CSM services (see
/// `controllers::EFFECT`), as the real Job's container would.
fn job(name: &str, image: &str, effect: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/name": name },
        },
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {
                    "labels": { "app.kubernetes.io/name": name },
                    "annotations": {
                        "sidecar.istio.io/inject": "false",
                        EFFECT: effect,
                    },
                },
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [{ "name": name, "image": image }],
                },
            },
        },
    })
}

/// The example from the runbook's "External DNS" section, verbatim.
fn externaldns_etcd() -> Value {
    json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2",
        "kind": "EtcdCluster",
        "metadata": {
            "annotations": { "etcd.database.coreos.com/scope": "clusterwide" },
            "labels": { "app.kubernetes.io/name": "cray-externaldns-etcd" },
            "name": "cray-externaldns-etcd",
            "namespace": "services",
        },
        "spec": {
            "pod": {
                "ClusterDomain": "",
                "annotations": { "sidecar.istio.io/inject": "false" },
                "busyboxImage": "registry.local/library/busybox:1.28.0-glibc",
                "persistentVolumeClaimSpec": {
                    "accessModes": ["ReadWriteOnce"],
                    "dataSource": null,
                    "resources": { "requests": { "storage": "1Gi" } },
                },
                "resources": {},
            },
            "repository": "registry.local/coreos/etcd",
            "size": 3,
            "version": "3.3.8",
        },
    })
}

fn etcd_cluster(name: &str) -> Value {
    let mut c = externaldns_etcd();
    c["metadata"]["name"] = json!(name);
    c["metadata"]["labels"]["app.kubernetes.io/name"] = json!(name);
    c
}

/// Creates unless it exists, so seeding twice is harmless.
fn ensure(store: &Store, def: &'static ResourceDef, ns: &str, obj: Value) -> ApiResult<()> {
    match store.create(def, ns, obj, false) {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn seed(store: &Store) -> ApiResult<()> {
    ensure(
        store,
        &NAMESPACES,
        "",
        json!({ "metadata": { "name": NAMESPACE } }),
    )?;
    for (name, replicas) in DEPLOYMENTS_SEED {
        ensure(store, &DEPLOYMENTS, NAMESPACE, deployment(name, *replicas))?;
    }
    ensure(
        store,
        &JOBS,
        NAMESPACE,
        job(
            "cray-reds-init",
            "artifactory.algol60.net/csm-docker/stable/cray-reds:2.1.0",
            EFFECT_REPOPULATE_BSS,
        ),
    )?;
    ensure(
        store,
        &JOBS,
        NAMESPACE,
        job(
            "cray-fas-loader",
            "artifactory.algol60.net/csm-docker/stable/cray-firmware-action:1.30.0",
            EFFECT_RELOAD_FAS_IMAGES,
        ),
    )?;
    ensure(store, &ETCDCLUSTERS, NAMESPACE, externaldns_etcd())?;
    for name in ETCD_CLUSTERS {
        ensure(store, &ETCDCLUSTERS, NAMESPACE, etcd_cluster(name))?;
    }
    Ok(())
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn job_finished(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
            })
        })
}

/// Every Deployment and StatefulSet has its ready replicas, every Job has finished and every
/// EtcdCluster (not annotated never-ready) is Running.
pub fn settled(store: &Store) -> bool {
    let sel = Default::default();
    let workloads_ready = [&DEPLOYMENTS, &STATEFULSETS].into_iter().all(|def| {
        store.list(def, None, &sel).0.iter().all(|d| {
            int(d, "/status/readyReplicas") >= int(d, "/spec/replicas")
                && d.pointer("/status/observedGeneration") == d.pointer("/metadata/generation")
        })
    });
    let jobs_done = store.list(&JOBS, None, &sel).0.iter().all(job_finished);
    let etcd_running = store.list(&ETCDCLUSTERS, None, &sel).0.iter().all(|c| {
        super::meta::annotation(c, super::controllers::NEVER_READY) == Some("true")
            || c.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
    });
    workloads_ready && jobs_done && etcd_running
}
