//! Fake Kubernetes API server (the subset the handlers use, with the real server's semantics),
//! served over HTTP so that the real kube-rs client code path is exercised end to end.
//!
//! Layout: `resources` (the table of served kinds), `events` (core/v1 and events.k8s.io/v1
//! events over one storage), `store` (objects, resourceVersions, event history), `admission`
//! (defaulting/validation before storing), `http` (REST paths, verbs, discovery), `watch`
//! (watch streams), `selector`, `patch`, `faults` (fault injection), `authz` (service-account
//! authentication and RBAC), `table` (server-side printing for kubectl), `controllers`
//! (Deployment, ReplicaSet, StatefulSet, volumes, kubelet, Job, etcd operator, garbage
//! collector, the real etcd members and kube-proxy in front of them), `etcd_routes` (the
//! `/sim/etcd/...` controls) and `seed` (a CSM-like `services` namespace).

mod admission;
pub mod authz;
pub mod controllers;
mod error;
mod etcd_routes;
mod events;
pub mod faults;
mod http;
mod meta;
pub mod options;
mod patch;
pub mod resources;
mod seed;
mod selector;
mod store;
mod table;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::csm::FakeCsm;

pub use admission::{POD_CIDR, SERVICE_CIDR};
pub use faults::{FailureKind, FaultInjector};
pub use options::{JOB_BACKOFF, KubeVersion, SimOptions, etcd_installed};
pub use seed::{NAMESPACE as CSM_NAMESPACE, RELEASES as CSM_RELEASES, SEEDED_JOBS};

use authz::Authorizer;
use store::Store;

/// A running simulated cluster: the HTTP listener and the controller tasks. Dropping it (or
/// [`SimCluster::shutdown`]) stops them.
pub struct SimCluster {
    addr: SocketAddr,
    store: Arc<Store>,
    faults: FaultInjector,
    authz: Authorizer,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    csm: FakeCsm,
    etcd: Option<Arc<controllers::etcd_member::RealEtcd>>,
    s3: Option<crate::s3::SimS3>,
    ctx: controllers::Ctx,
    /// The volume of the snapshotter PVC (`/snapshots` in the Bitnami pods).
    snapshots: tempfile::TempDir,
}

/// Builder for a cluster whose listener also serves other routes (fake CSM services under
/// `/csm/...`, controls under `/sim/...`).
pub struct SimClusterBuilder {
    extra: axum::Router,
}

impl SimClusterBuilder {
    pub async fn start(self, listen: SocketAddr, opts: SimOptions) -> anyhow::Result<SimCluster> {
        SimCluster::start_with(listen, opts, self.extra).await
    }
}

impl SimCluster {
    /// Starts the API server on `listen` (`127.0.0.1:0` picks a free port) and the controllers.
    pub async fn start(listen: SocketAddr, opts: SimOptions) -> anyhow::Result<SimCluster> {
        Self::start_with(listen, opts, axum::Router::new()).await
    }

    /// Like [`SimCluster::start`], with `extra` routes merged into the same listener. The
    /// Kubernetes routes are `/api`, `/apis`, `/version`, `/openapi/*`; the simulator owns
    /// `/sim/healthz` and `/sim/faults`; anything else (e.g. `/csm/...`) is free. Overlapping
    /// routes make axum panic at start, as with any router merge.
    pub async fn start_with(
        listen: SocketAddr,
        opts: SimOptions,
        extra: axum::Router,
    ) -> anyhow::Result<SimCluster> {
        let store = Arc::new(Store::new(opts.kubernetes_version));
        for ns in ["default", "kube-system", "kube-public"] {
            store
                .create(
                    &resources::NAMESPACES,
                    "",
                    json!({ "metadata": { "name": ns } }),
                    false,
                )
                .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {e}"))?;
        }
        let shutdown = CancellationToken::new();
        let faults = FaultInjector::default();
        // The fake CSM services live on the same address, like services behind one gateway,
        // lose their data when "their" etcd cluster is wiped (a rehearsed rebuild), and get it
        // back from the Jobs that reload it (`cray-reds-init`, `cray-fas-loader`).
        let csm = FakeCsm::seeded();
        let snapshots = tempfile::Builder::new()
            .prefix("sim-snapshots-")
            .tempdir()?;
        let etcd = if opts.real_etcd {
            let etcd = controllers::etcd_member::RealEtcd::new(
                snapshots.path().to_path_buf(),
                opts.real_etcd_clusters.as_deref(),
            )?;
            // BSS keeps its boot parameters in its etcd cluster, reached through the cluster's
            // client Service (the Bitnami layout's or the etcd-operator's).
            let services = store.clone();
            let bss_clusters: Vec<(&str, &str)> = [
                ("cray-bss-bitnami-etcd", "cray-bss-bitnami-etcd"),
                ("cray-bss-etcd", "cray-bss-etcd-client"),
            ]
            .into_iter()
            .filter(|(cluster, _)| etcd.runs(cluster))
            .collect();
            if !bss_clusters.is_empty() {
                csm.use_etcd_for_bss(Arc::new(move || {
                    bss_clusters.iter().find_map(|(_, name)| {
                        let svc = services
                            .get(&resources::SERVICES, seed::NAMESPACE, name)
                            .ok()?;
                        let ip = svc.pointer("/spec/clusterIP")?.as_str()?;
                        Some(format!(
                            "http://{ip}:{}",
                            controllers::etcd_member::CLIENT_PORT
                        ))
                    })
                }));
            }
            Some(Arc::new(etcd))
        } else {
            None
        };
        let s3 = if opts.s3 {
            let s3 = crate::s3::SimS3::start(shutdown.clone()).await?;
            // CSM's CronJob etcd-backup-pvc-snapshots-to-s3 (hourly there; often here, so
            // that the seeded snapshots show up in S3 soon).
            let bucket = s3.client()?;
            let dir = snapshots.path().to_path_buf();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(crate::s3::SYNC_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = every.tick() => {}
                    }
                    if let Err(e) = crate::s3::sync_snapshots_to_s3(&dir, bucket.as_ref()).await {
                        tracing::warn!(error = %e, "simulated S3: syncing the snapshotter PVC");
                    }
                }
            });
            Some(s3)
        } else {
            None
        };
        let ctx = controllers::Ctx {
            store: store.clone(),
            opts,
            shutdown: shutdown.clone(),
            csm: csm.clone(),
            containers: etcd
                .clone()
                .map(|e| e as Arc<dyn controllers::ContainerRuntime>),
            s3_root: s3.as_ref().map(|s3| s3.root().to_path_buf()),
        };
        controllers::start(&ctx, etcd.clone());
        let authz = Authorizer::default();
        let router = http::router(http::ApiContext {
            store: store.clone(),
            faults: faults.clone(),
            authz: authz.clone(),
            shutdown: shutdown.clone(),
        })
        .nest("/csm", csm.router())
        .merge(etcd_routes::router(csm.clone(), etcd.clone(), ctx.clone()))
        .merge(extra);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the simulated API server to {listen}"))?;
        let addr = listener.local_addr()?;
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulated API server stopped");
            }
        });
        tracing::info!(%addr, "simulated Kubernetes API server listening");
        Ok(SimCluster {
            addr,
            store,
            faults,
            authz,
            shutdown,
            server: Some(server),
            csm,
            etcd,
            s3,
            ctx,
            snapshots,
        })
    }

    /// Builder form of [`SimCluster::start_with`].
    pub fn with_extra_routes(extra: axum::Router) -> SimClusterBuilder {
        SimClusterBuilder { extra }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs config for this cluster: plain HTTP, no auth, default namespace `services`.
    pub fn kube_config(&self) -> ::kube::Config {
        let uri: axum::http::Uri = self
            .url()
            .parse()
            .unwrap_or_else(|_| axum::http::Uri::from_static("http://127.0.0.1"));
        let mut config = ::kube::Config::new(uri);
        config.default_namespace = seed::NAMESPACE.to_string();
        config
    }

    /// A client that acts as the service account `name` of the services' namespace, bound to a
    /// Role with `rules` there: every request is authorized as the real server would, and
    /// recorded in [`SimCluster::access_log`].
    pub fn service_account_client(&self, name: &str, rules: Vec<PolicyRule>) -> ::kube::Client {
        let mut config = self.kube_config();
        config.auth_info.token = Some(self.service_account_token(name, rules).into());
        // A plain-http config with a static token cannot fail to build a client.
        ::kube::Client::try_from(config).expect("kube client for a plain-http config")
    }

    /// A new bearer token of the service account `name`, bound to `rules` (see
    /// [`SimCluster::service_account_client`]).
    pub fn service_account_token(&self, name: &str, rules: Vec<PolicyRule>) -> String {
        let token = format!("sim-{name}-{}", uuid::Uuid::now_v7().simple());
        self.authz.grant(&token, seed::NAMESPACE, name, rules);
        token
    }

    /// Every resource request the service accounts made, and whether it was allowed.
    pub fn access_log(&self) -> Vec<authz::AccessRecord> {
        self.authz.access_log()
    }

    pub fn kube_client(&self) -> ::kube::Client {
        // A plain-http config with no TLS or auth cannot fail to build a client.
        ::kube::Client::try_from(self.kube_config()).expect("kube client for a plain-http config")
    }

    /// A kubeconfig for kubectl (`--kubeconfig`) as the cluster admin; JSON, which is valid YAML.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_with_user(json!({}))
    }

    /// A kubeconfig that authenticates with `token` (e.g. a service account's).
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        self.kubeconfig_with_user(json!({ "token": token }))
    }

    fn kubeconfig_with_user(&self, user: serde_json::Value) -> String {
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "sim", "cluster": { "server": self.url() } }],
            "users": [{ "name": "sim", "user": user }],
            "contexts": [{
                "name": "sim",
                "context": { "cluster": "sim", "user": "sim", "namespace": seed::NAMESPACE },
            }],
            "current-context": "sim",
        });
        serde_json::to_string_pretty(&cfg).unwrap_or_else(|_| cfg.to_string())
    }

    /// Creates the CSM-like `services` namespace (see `seed.rs`) and returns at once; use
    /// [`SimCluster::wait_settled`] to wait for pods Ready, Jobs finished, etcd Running.
    pub async fn seed_csm(&self) -> anyhow::Result<()> {
        self.seed_csm_release("1.0").await
    }

    /// Seeds the services' namespace as CSM `release` (`1.0`, `1.2` ... `1.7`) lays it out.
    pub async fn seed_csm_release(&self, release: &str) -> anyhow::Result<()> {
        seed::seed_release(&self.store, release, self.ctx.opts.etcd_quota_backend_bytes)
            .map_err(|e| anyhow::anyhow!("seeding the simulated cluster as CSM {release}: {e}"))?;
        if let Some(s3) = &self.s3 {
            let secret = s3.secret(seed::NAMESPACE);
            match self
                .store
                .create(&resources::SECRETS, seed::NAMESPACE, secret, false)
            {
                Ok(_) | Err(error::ApiError::AlreadyExists { .. }) => {}
                Err(e) => anyhow::bail!("seeding the Secret {}: {e}", crate::s3::SECRET),
            }
        }
        Ok(())
    }

    /// The S3 server with CSM's bucket `etcd-backup` ([`SimOptions::s3`]).
    pub fn s3(&self) -> Option<&crate::s3::SimS3> {
        self.s3.as_ref()
    }

    /// Waits (on store events, not sleeps) until every Deployment and StatefulSet has its ready
    /// replicas, every Job has finished, every EtcdCluster not annotated never-ready is
    /// Running and (with [`SimOptions::real_etcd`]) every etcd cluster with running members
    /// has its etcd healthy.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.store.subscribe();
        let mut etcd_rx = self.etcd.as_ref().map(|e| e.subscribe());
        let wait = async {
            loop {
                if seed::settled(&self.store)
                    && self.etcd.as_ref().is_none_or(|e| e.settled(&self.ctx))
                {
                    return;
                }
                // Any change (or a lag) is a reason to look again.
                match etcd_rx.as_mut() {
                    Some(etcd_rx) => {
                        tokio::select! {
                            _ = rx.recv() => {}
                            _ = etcd_rx.changed() => {}
                        }
                    }
                    None => {
                        let _ = rx.recv().await;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow::anyhow!("simulated cluster did not settle within {timeout:?}"))
    }

    /// The fake CSM services served under `/csm` (see [`crate::csm::service_url`]).
    pub fn csm(&self) -> &FakeCsm {
        &self.csm
    }

    /// Whether this cluster runs real etcd processes for its etcd clusters
    /// ([`SimOptions::real_etcd`]).
    pub fn runs_real_etcd(&self) -> bool {
        self.etcd.is_some()
    }

    /// `http://<client Service's cluster IP>:2379` of the real etcd of the etcd cluster `name`
    /// (`cray-bss-etcd`, `cray-bss-bitnami-etcd`) in the services' namespace, while it runs.
    pub fn etcd_url(&self, name: &str) -> Option<String> {
        self.etcd.as_ref()?.url(&self.ctx, seed::NAMESPACE, name)
    }

    /// The members of the etcd cluster `name` (`cray-bss-bitnami-etcd`, `cray-bss-etcd`) in
    /// the services' namespace that run for real, by pod name: a Bitnami member's own
    /// address (its pod IP) and volume; an etcd-operator cluster's one process.
    pub fn etcd_members(&self, name: &str) -> Vec<controllers::etcd_member::RealMember> {
        self.etcd
            .as_ref()
            .map(|e| e.members(&self.ctx, seed::NAMESPACE, name))
            .unwrap_or_default()
    }

    fn real_etcd(&self) -> anyhow::Result<&Arc<controllers::etcd_member::RealEtcd>> {
        self.etcd.as_ref().ok_or_else(|| {
            anyhow::anyhow!("the simulated cluster runs no real etcd (SimOptions::real_etcd)")
        })
    }

    /// Stops the etcd container of the Bitnami member pod `pod` (killed, not restarted, the pod
    /// not Ready), as a member whose node went down.
    pub async fn stop_etcd_member(&self, pod: &str) -> anyhow::Result<()> {
        self.real_etcd()?
            .stop_member(&self.ctx, seed::NAMESPACE, pod)
            .await
            .map_err(anyhow::Error::from)
    }

    /// Starts the etcd container of `pod` again after [`SimCluster::stop_etcd_member`].
    pub fn start_etcd_member(&self, pod: &str) -> anyhow::Result<()> {
        self.real_etcd()?
            .start_member(&self.ctx, seed::NAMESPACE, pod)
            .map_err(anyhow::Error::from)
    }

    /// Does `damage` to the data directory of the Bitnami member pod `pod` (its etcd killed
    /// first; it meets the damage when its container starts again).
    pub async fn damage_etcd_member(
        &self,
        pod: &str,
        damage: controllers::etcd_member::faults::Damage,
    ) -> anyhow::Result<()> {
        self.real_etcd()?
            .damage_member(&self.ctx, seed::NAMESPACE, pod, damage)
            .await
            .map_err(anyhow::Error::from)
    }

    /// Writes keys to the Bitnami cluster `name` until it refuses with `NOSPACE` (its
    /// `ETCD_QUOTA_BACKEND_BYTES` must be small, see [`SimOptions::etcd_quota_backend_bytes`]).
    pub async fn fill_etcd_quota(
        &self,
        name: &str,
    ) -> anyhow::Result<controllers::etcd_member::faults::Filled> {
        self.real_etcd()?
            .fill_quota(&self.ctx, seed::NAMESPACE, name)
            .await
            .map_err(anyhow::Error::from)
    }

    /// The directory behind the snapshotter PVC `bitnami-etcd-snapshotter` (mounted at
    /// `/snapshots` in the Bitnami etcd pods: `<dir>/<sts>/db-YYYY-MM-DD_HH-MM` is
    /// `/snapshots/<sts>/db-...` in a pod), while that PVC exists (the CSM 1.5+ layouts).
    pub fn snapshots_dir(&self) -> Option<&std::path::Path> {
        self.store
            .get(
                &resources::PERSISTENTVOLUMECLAIMS,
                seed::NAMESPACE,
                controllers::etcd_member::SNAPSHOTTER_PVC,
            )
            .ok()
            .map(|_| self.snapshots.path())
    }

    /// Runs CSM's CronJob `etcd-backup-pvc-snapshots-to-s3` now (see
    /// [`crate::s3::sync_snapshots_to_s3`]; the simulated cluster also runs it every
    /// [`crate::s3::SYNC_INTERVAL`]): the keys uploaded.
    pub async fn sync_snapshots_to_s3(&self) -> anyhow::Result<Vec<String>> {
        let s3 = self
            .s3
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the simulated cluster runs no S3 (SimOptions::s3)"))?;
        crate::s3::sync_snapshots_to_s3(self.snapshots.path(), s3.client()?.as_ref()).await
    }

    /// How many keys BSS keeps in its real etcd (see [`FakeCsm::bss_key_count`]).
    pub async fn bss_key_count(&self) -> anyhow::Result<usize> {
        self.csm.bss_key_count().await.map_err(anyhow::Error::msg)
    }

    /// Handle for latency, failures and dropped watches.
    pub fn faults(&self) -> FaultInjector {
        self.faults.clone()
    }

    /// Stops the listener, the open watch streams and the controllers.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(etcd) = &self.etcd {
            etcd.stop_all();
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(etcd) = &self.etcd {
            etcd.stop_all();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
