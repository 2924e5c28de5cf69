//! Helpers for tests against the simulated cluster (the sim's own, in `crates/sim/tests`, and
//! the service's): a fresh cluster, waiting on a condition with a deadline (never a fixed
//! sleep), the etcd-operator's resources.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{SimCluster, SimOptions};

/// The services' namespace.
pub const NS: &str = "services";
/// How long [`wait_for`] waits for a watched condition.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How long [`until`] polls.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it finds something (a condition with a deadline, [`WAIT`], not a sleep
/// to let work happen); panics naming `what` when it never does.
pub async fn until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    until_within(WAIT, what, check).await
}

/// [`until`] with another deadline.
pub async fn until_within<T>(
    deadline: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    tokio::time::timeout(deadline, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The file name of the newest backup CSM's snapshotter took of the Bitnami cluster `sts`
/// (`db-*` in the snapshotter PVC; not a safety snapshot of the service's, which are newer).
pub fn newest_snapshotter_backup(sim: &SimCluster, sts: &str) -> String {
    let dir = sim
        .snapshots_dir()
        .expect("the release has the snapshotter PVC")
        .join(sts);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db-"))
        .collect();
    names.sort();
    names
        .pop()
        .unwrap_or_else(|| panic!("no snapshotter backup of {sts} in {}", dir.display()))
}

/// A fresh simulated cluster with an empty `services` namespace, and a client for it.
pub async fn cluster() -> (SimCluster, Client) {
    cluster_with(SimOptions::default()).await
}

/// Like [`cluster`], with `options` (e.g. another Kubernetes version).
pub async fn cluster_with(options: SimOptions) -> (SimCluster, Client) {
    let sim = SimCluster::start("127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("start sim");
    let client = sim.kube_client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": NS } })).expect("namespace");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    (sim, client)
}

/// A simulated cluster laid out as CSM `release` with `options`, settled.
pub async fn release_sim(release: &str, options: SimOptions) -> SimCluster {
    let sim = SimCluster::start("127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("simulated cluster starts");
    sim.seed_csm_release(release).await.expect("seeding");
    sim.wait_settled(WAIT)
        .await
        .expect("seeded cluster settles");
    sim
}

/// [`release_sim`] with real etcd processes behind the etcd clusters `only` names (e.g.
/// `cray-bss-bitnami-etcd`; None: all of them; the others' pods are Ready without a process).
pub async fn real_etcd_sim(release: &str, only: Option<&[&str]>) -> SimCluster {
    release_sim(
        release,
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: only.map(|names| names.iter().map(|n| (*n).to_owned()).collect()),
            ..SimOptions::default()
        },
    )
    .await
}

/// [`release_sim`] with real etcd behind the one etcd cluster `cluster`, whose members run with
/// a backend quota of `quota_bytes` (small enough to fill in a test: `NOSPACE`).
pub async fn real_etcd_sim_with_quota(
    release: &str,
    cluster: &str,
    quota_bytes: u64,
) -> SimCluster {
    release_sim(
        release,
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: Some(vec![cluster.to_owned()]),
            etcd_quota_backend_bytes: Some(quota_bytes),
            ..SimOptions::default()
        },
    )
    .await
}

pub fn etcd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", "EtcdCluster"),
        "etcdclusters",
    )
}

pub fn etcd_api(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &etcd_resource())
}

/// Waits for `cond` on the named object, failing the test after [`DEADLINE`].
pub async fn wait_for<K>(api: &Api<K>, name: &str, cond: impl Condition<K>) -> Option<K>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, cond))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {name}"))
        .expect("watch for condition")
}

/// The `kube::Error::Api` inside an error, or a panic.
pub fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A client putting `/load/<n>` through an etcd's JSON gateway at a steady rate until stopped,
/// remembering every put etcd acknowledged: after a recovery, the acknowledged keys absent
/// are writes lost.
pub struct EtcdWriter {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Written>,
}

/// What an [`EtcdWriter`] did.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// The keys etcd acknowledged, in order.
    pub acked: Vec<String>,
    /// Puts that failed (refused, or no answer within 5 s).
    pub failed: usize,
}

/// The prefix an [`EtcdWriter`] writes under.
pub const LOAD_PREFIX: &str = "/load/";

impl EtcdWriter {
    /// Starts putting a key through the gateway at `url` every `every`.
    pub fn start(url: &str, every: Duration) -> EtcdWriter {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        let stop = tokio_util::sync::CancellationToken::new();
        let (url, token) = (url.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client");
            let mut written = Written::default();
            // Each writer's keys its own: `/load/<its start, µs>/<n>`.
            let tag = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            let mut n = 0;
            while !token.is_cancelled() {
                let key = format!("{LOAD_PREFIX}{tag}/{n:06}");
                let put = json!({ "key": STANDARD.encode(&key), "value": STANDARD.encode("v") });
                let ok = match http
                    .post(format!("{url}/v3/kv/put"))
                    .json(&put)
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => resp
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|body| body.get("header").is_some()),
                    _ => false,
                };
                if ok {
                    written.acked.push(key);
                } else {
                    written.failed += 1;
                }
                n += 1;
                tokio::select! {
                    () = token.cancelled() => {}
                    () = tokio::time::sleep(every) => {}
                }
            }
            written
        });
        EtcdWriter { stop, task }
    }

    /// Stops it: what it wrote.
    pub async fn stop(self) -> Written {
        self.stop.cancel();
        self.task.await.expect("the writer")
    }
}

/// The acknowledged keys of `written` that the etcd at `url` no longer holds.
pub async fn writes_lost(url: &str, written: &Written) -> Vec<String> {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let range = json!({
        "key": STANDARD.encode(LOAD_PREFIX),
        "range_end": STANDARD.encode("/load0"),
        "keys_only": true,
    });
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v3/kv/range"))
        .json(&range)
        .send()
        .await
        .expect("range")
        .json()
        .await
        .expect("range answer");
    let held: std::collections::BTreeSet<String> = body["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| STANDARD.decode(kv["key"].as_str()?).ok())
        .filter_map(|key| String::from_utf8(key).ok())
        .collect();
    written
        .acked
        .iter()
        .filter(|k| !held.contains(*k))
        .cloned()
        .collect()
}
