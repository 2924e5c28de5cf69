//! Shared test setup: a fresh simulated cluster and a fresh SQLite file per test, the real
//! router on a real listener, and helpers that wait on conditions (never fixed sleeps).

pub mod etcd;
pub mod sshd;

use std::{path::PathBuf, time::Duration};

use etcd_repopulator::{
    app::App,
    config::Config,
    drills::Drills,
    model::Service,
    run::{Run, Step},
    runner::Runner,
};
use k8s_openapi::api::{
    core::v1::{Event, Pod},
    rbac::v1::PolicyRule,
};
use kube::{Api, ResourceExt, api::ListParams};
use reqwest::StatusCode;
use serde_json::Value;
use sim::{SimCluster, SimOptions};

pub use sim::testing::{WAIT, until};

/// A loopback port free at the time of the call (whoever binds it next may race for it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free port")
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub sim: SimCluster,
    pub runner: Runner,
    pub drills: Drills,
    pub db: PathBuf,
    /// Holds the database directory until the test ends.
    pub _dir: tempfile::TempDir,
}

pub async fn start() -> TestApp {
    start_with(SimOptions::default(), Config::default()).await
}

pub async fn start_with(options: SimOptions, config: Config) -> TestApp {
    start_on(seeded_sim(options).await, config).await
}

/// A simulated cluster with the CSM services deployed and settled.
pub async fn seeded_sim(options: SimOptions) -> SimCluster {
    release_sim("1.0", options).await
}

pub use sim::testing::release_sim;

/// A simulated cluster laid out as CSM `release` with real etcd processes behind its etcd
/// clusters, settled.
pub async fn real_etcd_sim(release: &str) -> SimCluster {
    sim::testing::real_etcd_sim(release, None).await
}

/// Like [`real_etcd_sim`], with real etcd only for the etcd clusters `only` names (CSM 1.6's
/// four Bitnami clusters are twelve processes, a lot for tests that use one or two).
pub use sim::testing::real_etcd_sim as real_etcd_sim_of;

/// Puts `key` = `value` into the etcd at `url` through its JSON gateway.
pub async fn etcd_put(url: &str, key: &str, value: &str) {
    etcd::put_at(&reqwest::Client::new(), url, key, value).await;
}

/// `GET /etcd-clusters/{name}` until `done` says so (bounded).
pub async fn cluster_until(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/etcd-clusters/{name}");
    let mut last = Value::Null;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let (status, report) = app.get(&path).await;
            assert_eq!(status, 200, "{report:#}");
            if done(&report) {
                return report;
            }
            last = report;
            // Polling a condition with a deadline.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{name} never reached the condition: {last:#}"))
}

/// Starts the service on an existing simulated cluster with a fresh database. The service runs
/// as its service account, with exactly the chart's Role: a Kubernetes call the Role does not
/// allow fails the test's run, as it would in a cluster.
pub async fn start_on(sim: SimCluster, config: Config) -> TestApp {
    start_as(sim, config, etcd_repopulator::cluster::rbac::policy_rules()).await
}

/// Like [`start_on`], with the service account bound to `rules` instead of the chart's Role.
pub async fn start_as(sim: SimCluster, mut config: Config, rules: Vec<PolicyRule>) -> TestApp {
    // Tests of the etcd checks point `config.etcd.endpoint` at a real etcd (tests/it/etcd.rs).
    config.use_simulation(&sim);
    let client = sim.service_account_client(etcd_repopulator::app::SERVICE_ACCOUNT, rules);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let (base, runner, drills) = serve(&db, config, client).await;
    TestApp {
        base,
        http: reqwest::Client::new(),
        sim,
        runner,
        drills,
        db,
        _dir: dir,
    }
}

/// The service on the database `db`, serving on a loopback port: its base URL, runner and
/// drills.
async fn serve(
    db: &std::path::Path,
    config: Config,
    client: kube::Client,
) -> (String, Runner, Drills) {
    let app = App::new(db.to_str().unwrap(), config, client)
        .await
        .expect("app starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.router).await });
    (base, app.runner, app.drills)
}

/// Restarts the whole Bitnami cluster `sts` as a power-on does: its StatefulSet scaled to 0
/// and back to 3 (its pods, found by `selector`, gone and back), then waits (bounded) until
/// every member crash-loops, as CSM's disaster recovery makes them when it finds no snapshot.
pub async fn restart_whole_cluster(sim: &SimCluster, sts: &str, selector: &str) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use kube::api::{Patch, PatchParams};
    let sets: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    let pods: Api<Pod> = Api::namespaced(sim.kube_client(), "services");
    for replicas in [0, 3] {
        sets.patch_scale(
            sts,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .unwrap();
        until(&format!("{sts} scaled to {replicas}"), async || {
            let listed = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            (listed.items.len() == replicas).then_some(())
        })
        .await;
    }
    sim::testing::until_within(
        Duration::from_secs(120),
        &format!("every member of {sts} crash-looping"),
        async || {
            let members = sim.etcd_members(sts);
            (members.len() == 3 && members.iter().all(|m| m.restarts >= 2)).then_some(())
        },
    )
    .await;
}

/// The step `name` of `service` in a run.
pub fn step_of<'a>(run: &'a Run, service: Service, name: &str) -> &'a Step {
    run.services
        .iter()
        .find(|t| t.service == service)
        .and_then(|t| t.steps.iter().find(|s| s.name == name))
        .unwrap_or_else(|| panic!("no step {service:?}/{name} in {run:#?}"))
}

/// The step `name` of `service` in `run` (a run as `GET /repopulations/{id}` shows it).
pub fn step<'a>(run: &'a Value, service: &str, name: &str) -> &'a Value {
    run["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["service"] == service)
        .and_then(|t| {
            t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
        })
        .unwrap_or_else(|| panic!("no step {service}/{name} in {run:#}"))
}

impl TestApp {
    /// The service stopped and started again on the same database and simulated cluster, with
    /// `config` (a restart with a changed configuration), as its service account with the
    /// chart's Role.
    pub async fn restart_with(self, mut config: Config) -> TestApp {
        self.drills.shutdown(WAIT).await;
        self.runner.shutdown(WAIT).await;
        config.use_simulation(&self.sim);
        let client = self.sim.service_account_client(
            etcd_repopulator::app::SERVICE_ACCOUNT,
            etcd_repopulator::cluster::rbac::policy_rules(),
        );
        let (base, runner, drills) = serve(&self.db, config, client).await;
        TestApp {
            base,
            runner,
            drills,
            ..self
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        json(resp).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        json(resp).await
    }

    /// POSTs a run and returns its id (asserting 202).
    pub async fn start_run(&self, body: Value) -> String {
        let (status, run) = self.post("/repopulations", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{run}");
        run["id"].as_str().unwrap().to_owned()
    }

    /// POSTs `/repopulations/{id}/{action}` (`cancel`, `resume`, `abandon`) and asserts that
    /// the service accepted it (202).
    pub async fn ask(&self, id: &str, action: &str) {
        let url = self.url(&format!("/repopulations/{id}/{action}"));
        let (status, body) = json(self.http.post(url).send().await.unwrap()).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{action} of run {id}: {body:#}"
        );
    }

    /// Waits (bounded) until run `id` shows what `reached` looks for, or has ended; then asks
    /// to cancel it (one that ended first answers 409: nothing to cancel) and returns it once
    /// it ended.
    pub async fn cancel_when(
        &self,
        id: &str,
        what: &str,
        reached: impl Fn(&Value) -> bool,
    ) -> Value {
        until(what, async || {
            let (_, run) = self.get(&format!("/repopulations/{id}")).await;
            let ended = !matches!(run["state"].as_str(), Some("pending" | "running"));
            (ended || reached(&run)).then_some(())
        })
        .await;
        let url = self.url(&format!("/repopulations/{id}/cancel"));
        self.http.post(url).send().await.unwrap();
        self.finished_run(id).await
    }

    /// Cancels run `id` (asserting 202).
    pub async fn cancel(&self, id: &str) {
        self.ask(id, "cancel").await;
    }

    /// Resumes run `id` (asserting 202) and returns it once it ended.
    pub async fn resume_to_end(&self, id: &str) -> Run {
        self.ask(id, "resume").await;
        self.finished(id).await
    }

    /// POSTs a run of `services` and returns it once it ended.
    pub async fn run_services(&self, services: Value) -> Value {
        let id = self
            .start_run(serde_json::json!({ "services": services }))
            .await;
        self.finished_run(&id).await
    }

    /// Waits (bounded) until no run executes, then returns run `id` as the API's own type.
    pub async fn finished(&self, id: &str) -> Run {
        serde_json::from_value(self.finished_run(id).await).expect("a run as the API shows it")
    }

    /// Waits (bounded) until no run executes, then returns run `id`.
    pub async fn finished_run(&self, id: &str) -> Value {
        tokio::time::timeout(WAIT, self.runner.idle())
            .await
            .expect("runs finish in time");
        let (status, run) = self.get(&format!("/repopulations/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        run
    }

    /// The Events about the object with `uid`, as `kubectl describe` finds them (core/v1, by
    /// `involvedObject.uid`), oldest first.
    pub async fn events_about(&self, uid: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.sim.kube_client(), "services");
        let mut events = api
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
            .await
            .unwrap()
            .items;
        events.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        events
    }

    /// `GET /metrics`, checked to be OpenMetrics text.
    pub async fn metrics(&self) -> String {
        let resp = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        resp.text().await.unwrap()
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.sim.kube_client(), "services")
    }

    /// (name, uid, ready) of the pods matching `selector`.
    pub async fn pods_matching(&self, selector: &str) -> Vec<(String, String, bool)> {
        self.pods()
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let ready = p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                (p.name_any(), p.uid().unwrap_or_default(), ready)
            })
            .collect()
    }
}

/// An unencrypted ed25519 identity made by `ssh-keygen` (Debian's openssh-client) in `dir`,
/// and an empty known_hosts file beside it: `[ssh]` as a dry run finds nothing missing in it.
pub fn ssh_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let identity = dir.join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&identity)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("run ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    (identity, known_hosts)
}

pub async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Asserts a problem+json response with `status` and returns its body.
pub async fn problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:etcd-repopulator:problem:")
    );
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}
