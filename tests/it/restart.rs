//! A crash of the service (a real process, aborted at a failpoint) loses nothing: the next
//! process on the same database marks the run interrupted, and resume finishes it.

use crate::common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sim::{SimCluster, SimOptions};

pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `dir/kubeconfig`: the simulated cluster, as the service account with the chart's
/// Role (what a service process acts as).
pub(crate) fn write_kubeconfig(sim: &SimCluster, dir: &std::path::Path) {
    let token = sim.service_account_token(
        etcd_repopulator::app::SERVICE_ACCOUNT,
        etcd_repopulator::cluster::rbac::policy_rules(),
    );
    std::fs::write(dir.join("kubeconfig"), sim.kubeconfig_with_token(&token)).unwrap();
}

/// A service process's config file: the CSM APIs of the simulated cluster, as a deployment's
/// config file would name them, its etcd clusters and backups, and the drills'.
#[derive(serde::Serialize)]
pub(crate) struct ConfigFile {
    csm: etcd_repopulator::csm::CsmConfig,
    etcd: etcd_repopulator::etcd::EtcdConfig,
    recovery: etcd_repopulator::config::RecoveryConfig,
    drills: etcd_repopulator::config::DrillsConfig,
}

impl ConfigFile {
    /// `config` pointed at `sim` (`Config::use_simulation`).
    /// As `dir/config.toml`, which [`spawn_service`] reads.
    pub(crate) fn write(&self, dir: &std::path::Path) {
        std::fs::write(dir.join("config.toml"), toml::to_string(self).unwrap()).unwrap();
    }

    pub(crate) fn simulated(
        sim: &SimCluster,
        mut config: etcd_repopulator::config::Config,
    ) -> Self {
        config.use_simulation(sim);
        ConfigFile {
            csm: config.csm,
            etcd: config.etcd,
            recovery: config.recovery,
            drills: config.drills,
        }
    }
}

/// Where the service processes of a test directory log (stderr, appended).
const SERVICE_LOG: &str = "service.log";

/// The last lines the service processes of `dir` logged.
fn service_log(dir: &std::path::Path) -> String {
    let log = std::fs::read_to_string(dir.join(SERVICE_LOG)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Starts `serve` against the simulated cluster's kubeconfig and waits until it answers.
pub(crate) async fn spawn_service(dir: &std::path::Path, failpoint: Option<&str>) -> Service {
    let port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--database")
        .arg(dir.join("runs.db"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env_remove("ETCD_REPOPULATOR_FAILPOINT")
        .stdout(Stdio::null())
        // Its log, for a failing test to show (`service_log`).
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(SERVICE_LOG))
                .expect("the service's log file"),
        );
    if let Some(point) = failpoint {
        cmd.env("ETCD_REPOPULATOR_FAILPOINT", point);
    }
    let service = Service {
        child: cmd.spawn().expect("service starts"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if http
            .get(format!("{}/healthz", service.base))
            .send()
            .await
            .is_ok()
        {
            return service;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs the run `body` asks for to the service at `base`; returns its id (asserting 202).
async fn start_run(base: &str, body: &Value) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{base}/repopulations"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn get_run(base: &str, id: &str) -> Value {
    reqwest::get(format!("{base}/repopulations/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the run until `done` holds (bounded): the only way to observe another process.
async fn wait_run(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let run = get_run(base, id).await;
        if done(&run) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run never reached the state: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn seeded_sim() -> SimCluster {
    let sim = SimCluster::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    sim.seed_csm().await.unwrap();
    sim.wait_settled(common::WAIT).await.unwrap();
    sim
}

/// Sets `dir` up for service processes on `sim`: their kubeconfig (the service account, with
/// the chart's Role) and their config file, which is returned for changes.
fn prepare(sim: &SimCluster, dir: &std::path::Path) -> ConfigFile {
    write_kubeconfig(sim, dir);
    let config = ConfigFile::simulated(sim, etcd_repopulator::config::Config::default());
    config.write(dir);
    config
}

/// Runs `service` in a service process that aborts at `failpoint`, starts a second process on
/// the same database, checks the run is interrupted at `step`, resumes it and returns the run.
async fn crash_and_resume(sim: &SimCluster, service: &str, failpoint: &str, step: &str) -> Value {
    let body = json!({"services": [service], "reason": "crash test"});
    crash_and_resume_run(sim, body, failpoint, step).await.1
}

/// Like [`crash_and_resume`] for the run `body` asks for (one service); returns the base URL
/// of the service process that resumed it (still running) and the run.
async fn crash_and_resume_run(
    sim: &SimCluster,
    body: Value,
    failpoint: &str,
    step: &str,
) -> (Service, Value) {
    crash_and_resume_run_with(sim, body, failpoint, step, None, |_| async {}).await
}

/// Like [`crash_and_resume_run`], the first process with `[recovery] timeout` set to
/// `timeout` (when given); `between` sees the interrupted run before the resume.
async fn crash_and_resume_run_with<F: std::future::Future<Output = ()>>(
    sim: &SimCluster,
    body: Value,
    failpoint: &str,
    step: &str,
    timeout: Option<Duration>,
    between: impl FnOnce(Value) -> F,
) -> (Service, Value) {
    let Crashed {
        _dir: dir,
        second,
        id,
        run,
    } = crash_at(sim, body, failpoint, step, timeout).await;
    between(run).await;

    let (status, resumed) =
        post_json(&second.base, &format!("/repopulations/{id}/resume"), None).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{resumed:#}\nthe service's log:\n{}",
        service_log(dir.path())
    );
    let run = wait_run(&second.base, &id, |r| {
        r["state"] != "pending" && r["state"] != "running"
    })
    .await;
    assert_eq!(run["attempt"], 2);
    let log = sim.access_log();
    assert!(
        !log.is_empty() && log.iter().all(|record| record.allowed),
        "both processes used the service account, within its Role: {log:#?}"
    );
    (second, run)
}

/// A run a service process started and was killed in at a failpoint, as the second process
/// on the same database shows it.
struct Crashed {
    /// Holds the database and configuration of both processes.
    _dir: tempfile::TempDir,
    second: Service,
    id: String,
    /// The run, `interrupted` at the step named.
    run: Value,
}

/// Starts the run `body` asks for (one service) in a service process that aborts at
/// `failpoint` (with `[recovery] timeout` set to `timeout` when given), then a second process
/// on the same database, and checks the run is interrupted at `step`.
async fn crash_at(
    sim: &SimCluster,
    body: Value,
    failpoint: &str,
    step: &str,
    timeout: Option<Duration>,
) -> Crashed {
    let service = body["services"][0].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut config = prepare(sim, dir.path());
    let default_timeout = config.recovery.timeout;
    if let Some(timeout) = timeout {
        config.recovery.timeout = timeout;
    }
    config.write(dir.path());

    // The run is started until it reaches the failpoint: a run that ends without (what it
    // found of a real cluster led it elsewhere, e.g. an election under load made the cluster
    // look as if it did not serve) is started again, at most three times; the test never
    // waits for an abort that will not come.
    let mut id = None;
    for _ in 0..3 {
        let mut first = spawn_service(dir.path(), Some(failpoint)).await;
        let started = start_run(&first.base, &body).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let aborted = loop {
            if let Some(status) = first.child.try_wait().unwrap() {
                assert!(!status.success(), "the failpoint aborted the service");
                break true;
            }
            let ended =
                match reqwest::get(format!("{}/repopulations/{started}", first.base)).await {
                    Ok(resp) => resp.json::<Value>().await.is_ok_and(|run| {
                        !matches!(run["state"].as_str(), Some("pending" | "running"))
                    }),
                    Err(_) => false,
                };
            // Ended, and still alive a moment later: the failpoint was not on its way.
            if ended && first.child.try_wait().unwrap().is_none() {
                break false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{failpoint}: the service neither aborted nor ended the run; its log:\n{}",
                service_log(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(first); // killed and waited for, when it still runs
        if aborted {
            id = Some(started);
            break;
        }
    }
    let id = id.unwrap_or_else(|| {
        panic!(
            "{failpoint}: three runs ended without reaching it; the service's log:\n{}",
            service_log(dir.path())
        )
    });
    config.recovery.timeout = default_timeout;
    config.write(dir.path());

    let second = spawn_service(dir.path(), None).await;
    let run = get_run(&second.base, &id).await;
    assert_eq!(run["state"], "interrupted", "{run:#}");
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{service}/{step}")),
        "{run:#}"
    );
    let interrupted: Vec<&str> = run["services"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "interrupted")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(interrupted.first(), Some(&step), "{run:#}");
    Crashed {
        _dir: dir,
        second,
        id,
        run,
    }
}

#[tokio::test]
async fn crash_mid_run_is_interrupted_and_resume_finishes_it() {
    let sim = seeded_sim().await;
    let run = crash_and_resume(
        &sim,
        "reds",
        "restart-pods:after-delete",
        "restart-reds-pods",
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
}

#[tokio::test]
async fn job_deleted_before_a_crash_is_created_again_from_the_stored_manifest() {
    use k8s_openapi::api::batch::v1::Job;
    let sim = seeded_sim().await;
    let jobs: kube::Api<Job> = kube::Api::namespaced(sim.kube_client(), "services");
    let original = jobs.get("cray-reds-init").await.unwrap();
    let run = crash_and_resume(&sim, "bss", "recreate:after-delete", "rerun-reds-init-job").await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let job = jobs.get("cray-reds-init").await.unwrap();
    assert_ne!(job.metadata.uid, original.metadata.uid);
    assert_eq!(
        job.spec.unwrap().template.spec,
        original.spec.unwrap().template.spec
    );
}

#[tokio::test]
async fn etcd_cluster_deleted_before_a_crash_is_created_again_from_the_stored_manifest() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let sim = seeded_sim().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", "EtcdCluster"),
        "etcdclusters",
    );
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(sim.kube_client(), "services", &ar);
    let original = api.get("cray-externaldns-etcd").await.unwrap();
    let run = crash_and_resume(
        &sim,
        "externaldns",
        "recreate:after-delete",
        "recreate-externaldns-etcd",
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let cluster = api.get("cray-externaldns-etcd").await.unwrap();
    assert_ne!(cluster.metadata.uid, original.metadata.uid);
    assert_eq!(cluster.data["spec"], original.data["spec"]);
    assert_eq!(cluster.data["status"]["phase"], "Running");
}

/// A kill -9 of the service at each point of an etcd-operator rebuild (CSM 1.3, real etcd)
/// where something was changed: the Deployment scaled to 0, and the EtcdCluster deleted but
/// not created again. The resumed run creates the cluster from the manifest the first process
/// stored, and puts the Deployment back at the replica count it stored.
#[tokio::test]
async fn a_crash_during_an_etcd_operator_rebuild_resumes_from_what_was_stored() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let sim = common::release_sim(
        "1.3",
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: Some(vec!["cray-bss-etcd".to_owned()]),
            s3: true,
            ..SimOptions::default()
        },
    )
    .await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", "EtcdCluster"),
        "etcdclusters",
    );
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(sim.kube_client(), "services", &ar);
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(sim.kube_client(), "services");
    for failpoint in ["operator-rebuild:after-scale-down", "recreate:after-delete"] {
        let original = api.get("cray-bss-etcd").await.unwrap();
        let body = json!({
            "services": ["bss"], "etcd": "rebuild", "confirm": ["cray-bss-etcd"], "discard_newer": true, "reason": failpoint,
        });
        let (_service, run) = crash_and_resume_run(&sim, body, failpoint, "etcd-recover").await;
        let recover = run["services"][0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "etcd-recover")
            .unwrap();
        assert_eq!(recover["state"], "succeeded", "{failpoint}: {run:#}");
        assert_eq!(
            recover["attempts"][0]["state"], "interrupted",
            "{failpoint}: {recover:#}"
        );
        assert_eq!(
            recover["data"]["deployment"]["replicas"], 1,
            "{failpoint}: {recover:#}"
        );
        assert_eq!(run["state"], "succeeded", "{failpoint}: {run:#}");
        let cluster = api.get("cray-bss-etcd").await.unwrap();
        assert_ne!(cluster.metadata.uid, original.metadata.uid, "{failpoint}");
        assert_eq!(cluster.data["spec"], original.data["spec"], "{failpoint}");
        assert_eq!(cluster.data["status"]["phase"], "Running", "{failpoint}");
        let deployment = deployments.get("cray-bss").await.unwrap();
        assert_eq!(deployment.spec.unwrap().replicas, Some(1), "{failpoint}");
    }
}

/// A kill -9 of the service at every phase boundary of a Bitnami rebuild (CSM 1.6, real etcd):
/// the resumed run continues from the journal and ends with the cluster healthy, at its replica
/// count, with `ETCD_INITIAL_CLUSTER_STATE=existing`.
#[tokio::test]
async fn a_crash_at_every_phase_of_a_bitnami_rebuild_resumes_to_a_healthy_cluster() {
    use crate::recovery::{FAS_STS, PHASES, etcd_env, phases, real_etcd_sim, replicas};
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    for phase in PHASES {
        let failpoint = format!("etcd-recover:{phase}");
        let body = json!({"services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS], "reason": failpoint});
        let (service, run) = crash_and_resume_run(&sim, body, &failpoint, "etcd-recover").await;
        let steps = run["services"][0]["steps"].as_array().unwrap();
        let recover = steps.iter().find(|s| s["name"] == "etcd-recover").unwrap();
        assert_eq!(recover["state"], "succeeded", "{failpoint}: {run:#}");
        let journalled = phases(recover);
        assert_eq!(
            journalled, PHASES,
            "{failpoint}: each phase once: {recover:#}"
        );
        assert_eq!(
            recover["attempts"][0]["state"], "interrupted",
            "{failpoint}: {recover:#}"
        );
        assert_eq!(run["state"], "action_required", "{failpoint}: {run:#}");
        assert_eq!(replicas(&client, FAS_STS).await, 3, "{failpoint}");
        let env = etcd_env(&client, FAS_STS).await;
        assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing", "{failpoint}");
        let report: Value = reqwest::get(format!("{}/etcd-clusters/{FAS_STS}", service.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["healthy"], true, "{failpoint}: {report:#}");
        assert_eq!(report["ready"], 3, "{failpoint}: {report:#}");
    }
}

/// The same for a restore (BSS from its newest backup): the resumed run ends with BSS's keys
/// back, BSS's repopulation skipped, and the environment back to `existing`.
#[tokio::test]
async fn a_crash_at_every_phase_of_a_bitnami_restore_resumes_with_the_data_back() {
    use crate::recovery::{BSS_STS, PHASES, etcd_env, phases, real_etcd_sim, replicas};
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    let keys = sim.bss_key_count().await.unwrap();
    for phase in PHASES {
        let failpoint = format!("etcd-recover:{phase}");
        let body = json!({"services": ["bss"], "etcd": "restore", "confirm": [BSS_STS], "reason": failpoint});
        let (_service, run) = crash_and_resume_run(&sim, body, &failpoint, "etcd-recover").await;
        assert_eq!(run["state"], "succeeded", "{failpoint}: {run:#}");
        let steps = run["services"][0]["steps"].as_array().unwrap();
        let named = |name: &str| steps.iter().find(|s| s["name"] == name).unwrap();
        assert_eq!(phases(named("etcd-recover")), PHASES, "{failpoint}");
        assert_eq!(
            named("restore-bss-from-backup")["state"],
            "skipped",
            "{failpoint}"
        );
        assert_eq!(sim.bss_key_count().await.unwrap(), keys, "{failpoint}");
        assert_eq!(replicas(&client, BSS_STS).await, 3, "{failpoint}");
        let env = etcd_env(&client, BSS_STS).await;
        assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing", "{failpoint}");
        assert_eq!(env["ETCD_START_FROM_SNAPSHOT"], "no", "{failpoint}");
    }
}

/// A kill -9 while a failed Bitnami rebuild puts the StatefulSet back (its environment back to
/// `existing`, still at 0 replicas): the resume starts over from the scale to 0, as after a
/// completed put-back, and does not carry on after the last journalled phase (which would
/// delete the data PVCs and scale up without `ETCD_INITIAL_CLUSTER_STATE=new`).
#[tokio::test]
async fn a_crash_while_putting_the_statefulset_back_resumes_by_starting_over() {
    use crate::recovery::{FAS_STS, PHASES, etcd_env, phases, real_etcd_sim, replicas};
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::{Patch, PatchParams};
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    // A finalizer holds a PVC: the first attempt's [recovery] timeout runs out deleting it.
    let pvc_api: kube::Api<PersistentVolumeClaim> =
        kube::Api::namespaced(client.clone(), "services");
    let held = "data-cray-fas-bitnami-etcd-2";
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
    let failpoint = "etcd-recover:putting-back";
    let body = json!({"services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS]});
    let (service, run) = crash_and_resume_run_with(
        &sim,
        body,
        failpoint,
        "etcd-recover",
        Some(Duration::from_secs(3)),
        |run| {
            let (client, pvc_api, hold) = (client.clone(), pvc_api.clone(), hold);
            async move {
                // Killed half way through the put-back: the environment is back, the replicas
                // are not; the journal says to start over.
                assert_eq!(replicas(&client, FAS_STS).await, 0);
                assert_eq!(
                    etcd_env(&client, FAS_STS).await["ETCD_INITIAL_CLUSTER_STATE"],
                    "existing"
                );
                let steps = run["services"][0]["steps"].as_array().unwrap();
                let recover = steps.iter().find(|s| s["name"] == "etcd-recover").unwrap();
                assert_eq!(recover["data"]["start_over"], true, "{recover:#}");
                pvc_api
                    .patch(held, &PatchParams::default(), &hold(Value::Null))
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    let steps = run["services"][0]["steps"].as_array().unwrap();
    let recover = steps.iter().find(|s| s["name"] == "etcd-recover").unwrap();
    assert_eq!(recover["state"], "succeeded", "{run:#}");
    // The first attempt up to env-set, the second all over again from the scale to 0.
    let journalled = phases(recover);
    assert_eq!(&journalled[..3], &PHASES[..3], "{journalled:?}");
    assert_eq!(&journalled[3..], &PHASES[1..], "{journalled:?}");
    assert_eq!(replicas(&client, FAS_STS).await, 3);
    let env = etcd_env(&client, FAS_STS).await;
    assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing");
    let report: Value = reqwest::get(format!("{}/etcd-clusters/{FAS_STS}", service.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["healthy"], true, "{report:#}");
    assert_eq!(report["ready"], 3, "{report:#}");
}

/// A second service on the same database (a second replica by mistake) refuses to start,
/// naming the first, before it touches any run: the first one's live run stays `running`.
#[tokio::test]
async fn a_second_service_on_the_same_database_refuses_to_start_and_leaves_its_runs_alone() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};

    let sim = seeded_sim().await;
    // REDS pods that never become Ready: the run waits for them, running.
    let deployments: Api<Deployment> = Api::namespaced(sim.kube_client(), "services");
    deployments
        .patch(
            "cray-reds",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "sim.etcd-repopulator.io/never-ready": "true"}}}}})),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    prepare(&sim, dir.path());
    let first = spawn_service(dir.path(), None).await;
    let id = start_run(&first.base, &json!({"services": ["reds"]})).await;
    // Waiting for the pods, which never become Ready.
    let running = |run: &Value| {
        run["state"] == "running" && run["services"][0]["steps"][0]["state"] == "running"
    };
    wait_run(&first.base, &id, running).await;

    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .arg("--database")
        .arg(dir.path().join("runs.db"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env_remove("ETCD_REPOPULATOR_FAILPOINT")
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(common::WAIT, second)
        .await
        .expect("the second service exits at once")
        .unwrap();
    assert!(!second.status.success(), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let holder = format!("pid {} on host ", first.child.id());
    assert!(
        stderr.contains("is in use by another etcd-repopulator") && stderr.contains(&holder),
        "{stderr}"
    );
    let run = get_run(&first.base, &id).await;
    assert!(running(&run), "{run:#}");
}

/// A POST from a test to the service process at `base`: status and JSON body.
async fn post_json(base: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A restore killed after it set the recovery environment (0 replicas, `new`, the snapshot)
/// holds its cluster: a new recovery run of it is refused, naming the run. Once someone else
/// changed the StatefulSet (here: put it back by hand), resuming the old run would act on a
/// cluster it no longer knows and is refused, naming what changed. Abandoned, it can never be
/// resumed, and a new run weighs the cluster as it is.
#[tokio::test]
async fn a_stale_resume_is_refused_and_an_interrupted_recovery_holds_its_cluster() {
    use crate::recovery::{BSS_STS, etcd_env, real_etcd_sim, replicas};
    use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::EnvVar};
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    let keys = sim.bss_key_count().await.unwrap();
    let body = json!({"services": ["bss"], "etcd": "restore", "confirm": [BSS_STS]});
    let Crashed {
        _dir, second, id, ..
    } = crash_at(&sim, body, "etcd-recover:env-set", "etcd-recover", None).await;
    let base = second.base.as_str();
    assert_eq!(replicas(&client, BSS_STS).await, 0);
    assert_eq!(
        etcd_env(&client, BSS_STS).await["ETCD_START_FROM_SNAPSHOT"],
        "yes"
    );

    let auto = json!({"services": ["bss"], "etcd": "auto", "confirm": [BSS_STS]});
    let (status, problem) = post_json(base, "/repopulations", Some(auto.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem:#}");
    assert_eq!(
        problem["type"],
        "urn:etcd-repopulator:problem:recovery-interrupted"
    );
    assert_eq!(problem["interrupted_run"], id.as_str(), "{problem:#}");
    assert!(
        problem["detail"].as_str().unwrap().contains("/abandon"),
        "{problem:#}"
    );

    // Put back by hand, as an admin would: three replicas, `existing`, no snapshot, and disaster
    // recovery off (with it on, members that all start with their data at once find no quorum,
    // look for a snapshot at /snapshots/db-* and exit, for ever).
    let sets: kube::Api<StatefulSet> = kube::Api::namespaced(client.clone(), "services");
    let mut set = sets.get(BSS_STS).await.unwrap();
    let spec = set.spec.as_mut().unwrap();
    spec.replicas = Some(3);
    let container = &mut spec.template.spec.as_mut().unwrap().containers[0];
    let env = container.env.as_mut().unwrap();
    env.retain(|v| !v.name.starts_with("ETCD_INIT_SNAPSHOT"));
    for v in env.iter_mut() {
        let value = match v.name.as_str() {
            "ETCD_INITIAL_CLUSTER_STATE" => "existing",
            "ETCD_START_FROM_SNAPSHOT" | "ETCD_DISASTER_RECOVERY" => "no",
            _ => continue,
        };
        *v = EnvVar {
            name: v.name.clone(),
            value: Some(value.to_owned()),
            value_from: None,
        };
    }
    sets.replace(BSS_STS, &Default::default(), &set)
        .await
        .unwrap();
    let healthy = wait_cluster(base, BSS_STS, |c| c["healthy"] == true).await;
    assert_eq!(healthy["keys"].as_u64(), Some(keys as u64), "{healthy:#}");

    let (status, problem) = post_json(base, &format!("/repopulations/{id}/resume"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem:#}");
    assert_eq!(problem["type"], "urn:etcd-repopulator:problem:resume-stale");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("it has 3 replica(s), this run left 0")
            && detail.contains("its environment is ")
            && detail.contains("ETCD_INITIAL_CLUSTER_STATE=existing, this run left"),
        "{detail}"
    );
    assert_eq!(replicas(&client, BSS_STS).await, 3, "nothing was changed");

    let (status, run) = post_json(base, &format!("/repopulations/{id}/abandon"), None).await;
    assert_eq!(status, StatusCode::OK, "{run:#}");
    assert_eq!(run["state"], "abandoned", "{run:#}");
    let message = run["message"].as_str().unwrap();
    assert!(
        message.starts_with("abandoned by ")
            && message.contains("cray-bss-bitnami-etcd is healthy"),
        "{message}"
    );
    let (status, problem) = post_json(base, &format!("/repopulations/{id}/resume"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem:#}");
    assert_eq!(
        problem["type"],
        "urn:etcd-repopulator:problem:invalid-state"
    );

    // A new run weighs the cluster as it is: healthy, left alone, its data kept.
    let (status, created) = post_json(base, "/repopulations", Some(auto)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created:#}");
    let new = created["id"].as_str().unwrap();
    let run = wait_run(base, new, |r| {
        r["state"] != "pending" && r["state"] != "running"
    })
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(sim.bss_key_count().await.unwrap(), keys);
}

/// Polls `GET /etcd-clusters/{name}` of the service process at `base` until `done` holds.
async fn wait_cluster(base: &str, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let report: Value = reqwest::get(format!("{base}/etcd-clusters/{name}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster never got there: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A kill -9 after each journalled phase of a member replacement (BSS's member 1 corrupt,
/// `repair` confirmed): the resumed run ends with three healthy members, a new member in place
/// of the broken one, and every key.
#[tokio::test]
async fn a_crash_at_every_phase_of_a_member_replacement_resumes_to_three_healthy_members() {
    use crate::recovery::BSS_STS;
    use sim::kube::controllers::etcd_member::faults::Damage;
    let sim = common::real_etcd_sim_of("1.6", Some(&[BSS_STS])).await;
    let url = sim.etcd_url(BSS_STS).unwrap();
    let etcd = etcd_repopulator::etcd::EtcdClient::new(&url, &Default::default()).unwrap();
    let broken = format!("{BSS_STS}-1");
    for phase in ["checked", "removed", "deleted"] {
        common::etcd_put(&url, &format!("/before/{phase}"), "v").await;
        let (keys, _) = etcd.key_count(false).await.unwrap();
        sim.damage_etcd_member(&broken, Damage::CorruptDb)
            .await
            .unwrap();
        crate::replace::pod_crash_looping(&sim, &broken).await;
        let failpoint = format!("replace-member:{phase}");
        let body = json!({"services": ["bss"], "etcd": "repair", "confirm": [BSS_STS], "reason": failpoint});
        let (service, run) = crash_and_resume_run(&sim, body, &failpoint, "etcd-recover").await;
        assert_eq!(run["state"], "succeeded", "{failpoint}: {run:#}");
        let steps = run["services"][0]["steps"].as_array().unwrap();
        let recover = steps.iter().find(|s| s["name"] == "etcd-recover").unwrap();
        assert_eq!(
            recover["data"]["members"][0]["phase"], "rejoined",
            "{failpoint}: {recover:#}"
        );
        assert_eq!(
            recover["attempts"][0]["state"], "interrupted",
            "{failpoint}: {recover:#}"
        );
        let report: Value = reqwest::get(format!("{}/etcd-clusters/{BSS_STS}", service.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["healthy"], true, "{failpoint}: {report:#}");
        let members = report["member_health"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{failpoint}: {report:#}");
        assert_eq!(etcd.key_count(false).await.unwrap().0, keys, "{failpoint}");
    }
}

/// A kill -9 after each journalled phase of starting crash-looping members with their data
/// (the whole cluster restarted: scaled to 0 and back): the resumed run ends with the cluster
/// healthy, every key, and ETCD_DISASTER_RECOVERY back as it was.
#[tokio::test]
async fn a_crash_while_starting_members_with_their_data_resumes_to_a_healthy_cluster() {
    use crate::recovery::{BSS_STS, etcd_env, real_etcd_sim};
    let sim = real_etcd_sim().await;
    let client = sim.kube_client();
    let keys = sim.bss_key_count().await.unwrap();
    for phase in ["env-set", "restarted"] {
        common::restart_whole_cluster(&sim, BSS_STS, crate::recovery::BSS_SELECTOR).await;
        let failpoint = format!("start-with-data:{phase}");
        let body = json!({"services": ["bss"], "etcd": "repair", "reason": failpoint});
        let (service, run) = crash_and_resume_run(&sim, body, &failpoint, "etcd-recover").await;
        assert_eq!(run["state"], "succeeded", "{failpoint}: {run:#}");
        let report: Value = reqwest::get(format!("{}/etcd-clusters/{BSS_STS}", service.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["healthy"], true, "{failpoint}: {report:#}");
        assert_eq!(sim.bss_key_count().await.unwrap(), keys, "{failpoint}");
        assert_eq!(
            etcd_env(&client, BSS_STS).await["ETCD_DISASTER_RECOVERY"],
            "yes",
            "{failpoint}"
        );
    }
}

/// A kill -9 during a quorum-loss recovery (two members' databases corrupt, writes newer than
/// the backup on the member left) once the data PVCs are being deleted, past the point of no
/// return: the resumed run restores every member from the member's snapshot the first attempt
/// took and proved, and no key the member held is lost.
#[tokio::test]
async fn a_crash_during_a_restore_from_the_member_left_resumes_with_every_key() {
    use crate::recovery::{BSS_STS, phases};
    use sim::kube::controllers::etcd_member::faults::Damage;
    let sim = common::real_etcd_sim_of("1.6", Some(&[BSS_STS])).await;
    let url = sim.etcd_url(BSS_STS).unwrap();
    {
        let phase = "pvcs-deleted";
        for i in 0..5 {
            common::etcd_put(&url, &format!("/newer/{phase}/{i}"), "v").await;
        }
        let keys = sim.bss_key_count().await.unwrap();
        let broken = [format!("{BSS_STS}-1"), format!("{BSS_STS}-2")];
        for pod in &broken {
            sim.damage_etcd_member(pod, Damage::CorruptDb)
                .await
                .unwrap();
        }
        // Restarted three times: crash-looping whatever the moment the assessment looks (a
        // container between two back-offs runs for a moment), so that the run decides the
        // restore from the member left and reaches the failpoint.
        sim::testing::until_within(
            Duration::from_secs(240),
            "both damaged members restarted three times",
            async || {
                sim.etcd_members(BSS_STS)
                    .iter()
                    .filter(|m| broken.contains(&m.pod))
                    .all(|m| m.restarts >= 3)
                    .then_some(())
            },
        )
        .await;
        let failpoint = format!("etcd-recover:{phase}");
        let body =
            json!({"services": ["bss"], "etcd": "auto", "confirm": [BSS_STS], "reason": failpoint});
        let (_service, run) = crash_and_resume_run(&sim, body, &failpoint, "etcd-recover").await;
        assert_eq!(run["state"], "succeeded", "{failpoint}: {run:#}");
        let steps = run["services"][0]["steps"].as_array().unwrap();
        let named = |name: &str| steps.iter().find(|s| s["name"] == name).unwrap();
        assert_eq!(
            named("etcd-assess")["data"]["decision"]["action"],
            "restore-from-member",
            "{failpoint}"
        );
        assert!(
            phases(named("etcd-recover")).contains(&"settled".to_owned()),
            "{failpoint}"
        );
        assert_eq!(sim.bss_key_count().await.unwrap(), keys, "{failpoint}");
    }
}
