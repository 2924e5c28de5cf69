//! A CSM-like `services` namespace: the Deployments, Jobs and EtcdClusters that the runbook
//! "Repopulate Data in etcd Clusters When Rebuilding Them" touches. Everything is created
//! through the normal create path, so Jobs carry generated selectors and labels like real ones.

use serde_json::{Value, json};

use super::controllers::etcd::{BACKED_UP, periodic_backup};
use super::controllers::etcd_member::SNAPSHOTTER_PVC;
use super::controllers::volumes::PVC_PROTECTION;
use super::controllers::{
    EFFECT, EFFECT_RELOAD_FAS_IMAGES, EFFECT_REPOPULATE_BSS, UPGRADED_AT_REVISION,
};
use super::error::{ApiError, ApiResult};
use super::resources::{
    CONFIGMAPS, DEPLOYMENTS, ETCDBACKUPS, ETCDCLUSTERS, ETCDRESTORES, JOBS, NAMESPACES,
    PERSISTENTVOLUMECLAIMS, ResourceDef, SERVICES, STATEFULSETS,
};
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

/// The CSM releases the simulated cluster can be laid out as.
pub const RELEASES: &[&str] = &["1.0", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7"];

/// The Helm revision of each cray-etcd-base release on the simulated 1.7: installed (1), then
/// upgraded to 1.7 (2), whose pre-upgrade Job saved the snapshot
/// `<service>_etcd_upgrade.snapshot-2.db` ([`UPGRADED_AT_REVISION`]).
pub const UPGRADE_HELM_REVISION: u32 = 2;

/// The services' namespace as CSM `release` lays it out: etcd-operator `EtcdCluster`s up to
/// 1.4 (External DNS's only on 1.0), Bitnami etcd StatefulSets (with their client and headless
/// Services and ConfigMap; the StatefulSet controller makes the PVCs) and no EtcdCluster CRD
/// from 1.5; CRUS up to 1.3; REDS and CPS up to 1.4; the `cray-fas-loader` Job on 1.0 only (FAS
/// loads from Nexus through its API from 1.2); from 1.7, each Bitnami cluster was upgraded by
/// Helm, whose pre-upgrade Job left a snapshot in S3 ([`UPGRADED_AT_REVISION`]). 1.7's
/// cray-etcd-base (mid-2025: Bitnami chart 11.2.3, etcd 3.5.21, a 2 GiB quota) renders what
/// 1.5 and 1.6 are simulated with. The product catalog records the release.
pub fn seed_release(store: &Store, release: &str, quota: Option<u64>) -> ApiResult<()> {
    let Some(index) = RELEASES.iter().position(|r| *r == release) else {
        return Err(ApiError::BadRequest(format!(
            "unknown CSM release {release:?}; the simulated cluster knows {}",
            RELEASES.join(", ")
        )));
    };
    let at_least = |r: &str| index >= RELEASES.iter().position(|x| *x == r).unwrap_or(0);
    let upgraded = at_least("1.7").then_some(UPGRADE_HELM_REVISION);
    let (bitnami, crus, reds, externaldns) = (
        at_least("1.5"),
        !at_least("1.4"),
        !at_least("1.5"),
        !at_least("1.2"),
    );
    ensure(
        store,
        &NAMESPACES,
        "",
        json!({ "metadata": { "name": NAMESPACE } }),
    )?;
    for (name, replicas) in DEPLOYMENTS_SEED {
        let removed = (*name == "cray-crus" && !crus)
            || (!reds && matches!(*name, "cray-reds" | "cray-cps" | "cray-cps-cm-pm"));
        if !removed {
            ensure(store, &DEPLOYMENTS, NAMESPACE, deployment(name, *replicas))?;
        }
    }
    if reds {
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
    }
    if externaldns {
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
    }
    if bitnami {
        store.hide(&ETCDCLUSTERS);
        store.hide(&ETCDRESTORES);
        store.hide(&ETCDBACKUPS);
        ensure(store, &PERSISTENTVOLUMECLAIMS, NAMESPACE, snapshotter_pvc())?;
        for csm in BITNAMI_CLUSTERS {
            for (def, object) in bitnami_etcd(csm, quota, upgraded) {
                ensure(store, def, NAMESPACE, object)?;
            }
        }
    } else {
        for name in ETCD_CLUSTERS {
            if *name == "cray-crus-etcd" && !crus {
                continue;
            }
            ensure(store, &ETCDCLUSTERS, NAMESPACE, etcd_cluster(name))?;
            if BACKED_UP.iter().any(|csm| *name == format!("{csm}-etcd")) {
                ensure(
                    store,
                    &ETCDBACKUPS,
                    NAMESPACE,
                    periodic_backup(name, NAMESPACE),
                )?;
            }
        }
    }
    ensure(store, &CONFIGMAPS, NAMESPACE, product_catalog(release))?;
    Ok(())
}

/// The RWX PVC every Bitnami etcd pod mounts at `/snapshots` (cray-etcd-base's
/// `disasterRecovery.pvc.existingClaim`), where the snapshotter CronJobs write
/// `<sts>/db-YYYY-MM-DD_HH-MM` and CSM's restore script looks for them.
fn snapshotter_pvc() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": { "name": SNAPSHOTTER_PVC, "finalizers": [PVC_PROTECTION] },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "ceph-cephfs-external",
            "resources": { "requests": { "storage": "2Gi" } },
        },
        "status": { "phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": { "storage": "2Gi" } },
    })
}

/// The services with a Bitnami etcd cluster on CSM 1.5+ that the runbook lists.
const BITNAMI_CLUSTERS: &[&str] = &["cray-bos", "cray-bss", "cray-fas", "cray-hmnfd"];

/// `cray-product-catalog` with a `csm` entry for `<release>.0` (CSM's installer writes one key
/// per installed version).
fn product_catalog(release: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "cray-product-catalog" },
        "data": {
            "csm": format!(
                "{release}.0:\n  configuration:\n    clone_url: https://vcs.cmn.example/vcs/cray/csm-config-management.git\n"
            ),
        },
    })
}

/// What `cray-etcd-base` (Bitnami etcd chart 11.2.3) renders for the CSM service `csm`: the
/// StatefulSet `<csm>-bitnami-etcd` (3 members, `Parallel`, PVC template `data`), its client
/// and headless Services and the ConfigMap `<sts>-config` (plain HTTP, no auth); `quota` in
/// place of CSM's `ETCD_QUOTA_BACKEND_BYTES` (2 GiB); `upgraded`: the Helm revision of the
/// upgrade whose pre-upgrade Job snapshotted it, if any.
fn bitnami_etcd(
    csm: &str,
    quota: Option<u64>,
    upgraded: Option<u32>,
) -> Vec<(&'static ResourceDef, Value)> {
    let sts = format!("{csm}-bitnami-etcd");
    let headless = format!("{sts}-headless");
    let labels = json!({ "app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": csm });
    let ports = json!([
        { "name": "client", "port": 2379, "protocol": "TCP", "targetPort": "client" },
        { "name": "peer", "port": 2380, "protocol": "TCP", "targetPort": "peer" },
    ]);
    let service = |name: &str, headless: bool| {
        let mut spec = json!({ "type": "ClusterIP", "selector": labels, "ports": ports });
        if headless {
            spec["clusterIP"] = json!("None");
            spec["publishNotReadyAddresses"] = json!(true);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "labels": labels },
            "spec": spec,
        })
    };
    let initial_cluster: Vec<String> = (0..3)
        .map(|i| {
            format!("{sts}-{i}=http://{sts}-{i}.{headless}.{NAMESPACE}.svc.cluster.local:2380")
        })
        .collect();
    let config = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": format!("{sts}-config"), "labels": labels },
        "data": {
            "etcd.conf.yml": format!(
                "name: POD_NAME\ninitial-cluster: \"{}\"\nlisten-client-urls: http://0.0.0.0:2379\ndata-dir: /bitnami/etcd/data\n",
                initial_cluster.join(",")
            ),
        },
    });
    // The container env the chart renders with cray-etcd-base's values (no
    // ETCD_INITIAL_CLUSTER_STATE: etcd's default, `new`, until CSM's rebuild or restore scripts
    // `kubectl set env` it), in the chart's order, so `$(MY_POD_NAME)` expands.
    let domain = format!("{headless}.{NAMESPACE}.svc.cluster.local");
    let env = json!([
        { "name": "BITNAMI_DEBUG", "value": "false" },
        { "name": "MY_POD_IP", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "status.podIP" } } },
        { "name": "MY_POD_NAME", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.name" } } },
        { "name": "MY_STS_NAME", "value": sts },
        { "name": "ETCDCTL_API", "value": "3" },
        { "name": "ETCD_ON_K8S", "value": "yes" },
        { "name": "ETCD_START_FROM_SNAPSHOT", "value": "no" },
        { "name": "ETCD_DISASTER_RECOVERY", "value": "yes" },
        { "name": "ETCD_NAME", "value": "$(MY_POD_NAME)" },
        { "name": "ETCD_DATA_DIR", "value": "/bitnami/etcd/data" },
        { "name": "ETCD_LOG_LEVEL", "value": "info" },
        { "name": "ALLOW_NONE_AUTHENTICATION", "value": "yes" },
        { "name": "ETCD_ADVERTISE_CLIENT_URLS", "value": format!("http://$(MY_POD_NAME).{domain}:2379,http://{sts}.{NAMESPACE}.svc.cluster.local:2379") },
        { "name": "ETCD_LISTEN_CLIENT_URLS", "value": "http://0.0.0.0:2379" },
        { "name": "ETCD_INITIAL_ADVERTISE_PEER_URLS", "value": format!("http://$(MY_POD_NAME).{domain}:2380") },
        { "name": "ETCD_LISTEN_PEER_URLS", "value": "http://0.0.0.0:2380" },
        { "name": "ETCD_AUTO_COMPACTION_MODE", "value": "periodic" },
        { "name": "ETCD_AUTO_COMPACTION_RETENTION", "value": "1" },
        { "name": "ETCD_INITIAL_CLUSTER_TOKEN", "value": "etcd-cluster-k8s" },
        { "name": "ETCD_INITIAL_CLUSTER", "value": initial_cluster.join(",") },
        { "name": "ETCD_CLUSTER_DOMAIN", "value": domain },
        { "name": "ETCD_HEARTBEAT_INTERVAL", "value": "4200" },
        { "name": "ETCD_ELECTION_TIMEOUT", "value": "21000" },
        { "name": "ETCD_MAX_SNAPSHOTS", "value": "5" },
        { "name": "ETCD_QUOTA_BACKEND_BYTES", "value": quota.unwrap_or(2_147_483_648).to_string() },
        { "name": "ETCD_SNAPSHOT_COUNT", "value": "10000" },
        { "name": "ETCD_SNAPSHOT_HISTORY_LIMIT", "value": "24" },
        { "name": "ETCD_DISABLE_PRESTOP", "value": "yes" },
    ]);
    let mut statefulset = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": { "name": sts, "labels": labels },
        "spec": {
            "replicas": 3,
            "podManagementPolicy": "Parallel",
            "serviceName": headless,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "containers": [{
                        "name": "etcd",
                        "image": "artifactory.algol60.net/csm-docker/stable/docker.io/bitnami/etcd:3.5.21-debian-12-r6",
                        "env": env,
                        "ports": [
                            { "name": "client", "containerPort": 2379 },
                            { "name": "peer", "containerPort": 2380 },
                        ],
                        // cray-etcd-base's probe values.
                        "livenessProbe": {
                            "httpGet": { "path": "/livez", "port": 2379, "scheme": "HTTP" },
                            "initialDelaySeconds": 20, "periodSeconds": 5, "timeoutSeconds": 5,
                            "successThreshold": 1, "failureThreshold": 10,
                        },
                        "readinessProbe": {
                            "exec": { "command": ["/opt/bitnami/scripts/etcd/healthcheck.sh"] },
                            "initialDelaySeconds": 20, "periodSeconds": 5, "timeoutSeconds": 5,
                            "successThreshold": 1, "failureThreshold": 10,
                        },
                        "volumeMounts": [
                            { "name": "data", "mountPath": "/bitnami/etcd" },
                            { "name": "snapshot-volume", "mountPath": "/snapshots" },
                        ],
                    }],
                    "volumes": [{
                        "name": "snapshot-volume",
                        "persistentVolumeClaim": { "claimName": SNAPSHOTTER_PVC },
                    }],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "3Gi" } },
                },
            }],
        },
    });
    if let Some(revision) = upgraded {
        statefulset["metadata"]["annotations"] =
            json!({ UPGRADED_AT_REVISION: revision.to_string() });
    }
    vec![
        (&SERVICES, service(&sts, false)),
        (&SERVICES, service(&headless, true)),
        (&CONFIGMAPS, config),
        (&STATEFULSETS, statefulset),
    ]
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
