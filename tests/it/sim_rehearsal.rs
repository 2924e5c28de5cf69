//! What makes a rehearsal on the simulated cluster look and behave like the real thing:
//! `kubectl get` tables with the real server's columns, and Jobs that retry failed pods with
//! the Job controller's backoff until `backoffLimit`.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{Condition, conditions};
use serde_json::{Value, json};
use sim::testing::{DEADLINE, NS, wait_for};
use sim::{KubeVersion, SimCluster, SimOptions};

/// What kubectl sends for `kubectl get`.
const KUBECTL_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,\
                              application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// A settled CSM-like cluster behaving as the Kubernetes CSM runs (1.26).
async fn seeded() -> SimCluster {
    seeded_as(KubeVersion::CSM).await
}

async fn seeded_as(version: KubeVersion) -> SimCluster {
    let options = SimOptions {
        kubernetes_version: version,
        ..SimOptions::default()
    };
    let sim = SimCluster::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    sim.seed_csm().await.unwrap();
    sim.wait_settled(DEADLINE).await.unwrap();
    sim
}

async fn get_table(sim: &SimCluster, path: &str, accept: &str) -> (reqwest::StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", sim.url()))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn column_names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// The row whose `Name` cell is `name`, as `column -> cell`.
fn row<'a>(table: &'a Value, name: &str) -> std::collections::BTreeMap<&'a str, &'a Value> {
    let columns = column_names(table);
    let name_column = columns.iter().position(|c| *c == "Name").unwrap();
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][name_column] == name)
        .unwrap_or_else(|| panic!("no row {name} in {table:#}"));
    columns
        .into_iter()
        .zip(row["cells"].as_array().unwrap())
        .collect()
}

#[tokio::test]
async fn kubectl_get_gets_the_real_servers_columns() {
    let sim = seeded().await;

    let (status, pods) = get_table(&sim, "/api/v1/namespaces/services/pods", KUBECTL_ACCEPT).await;
    assert_eq!(status, 200);
    assert_eq!(pods["kind"], "Table");
    assert_eq!(pods["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        column_names(&pods),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let client = sim.kube_client();
    let bss_pod = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app.kubernetes.io/name=cray-bss"))
        .await
        .unwrap()
        .items
        .remove(0);
    let cells = row(&pods, &bss_pod.name_any());
    assert_eq!(cells["Ready"], "1/1");
    assert_eq!(cells["Status"], "Running");
    assert_eq!(cells["Restarts"], "0");
    assert!(cells["Age"].as_str().unwrap().ends_with('s'), "{cells:?}");
    // Rows carry the object's metadata unless asked otherwise.
    let first = &pods["rows"][0]["object"];
    assert_eq!(first["kind"], "PartialObjectMetadata");
    assert!(first["metadata"]["uid"].is_string());

    let (_, jobs) = get_table(
        &sim,
        "/apis/batch/v1/namespaces/services/jobs",
        KUBECTL_ACCEPT,
    )
    .await;
    // Before 1.30 a Job has no Status column, and 1.26 selects its pods by `controller-uid`.
    assert_eq!(
        column_names(&jobs),
        [
            "Name",
            "Completions",
            "Duration",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let cells = row(&jobs, "cray-reds-init");
    assert_eq!(cells["Completions"], "1/1");
    assert!(
        cells["Selector"]
            .as_str()
            .unwrap()
            .starts_with("controller-uid="),
        "{cells:?}"
    );
    let newer = seeded_as(KubeVersion::new(1, 33)).await;
    let (_, jobs) = get_table(
        &newer,
        "/apis/batch/v1/namespaces/services/jobs",
        KUBECTL_ACCEPT,
    )
    .await;
    assert_eq!(
        column_names(&jobs),
        [
            "Name",
            "Status",
            "Completions",
            "Duration",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let cells = row(&jobs, "cray-reds-init");
    assert_eq!(cells["Status"], "Complete");
    assert!(
        cells["Selector"]
            .as_str()
            .unwrap()
            .starts_with("batch.kubernetes.io/controller-uid="),
        "{cells:?}"
    );

    let (_, deployments) = get_table(
        &sim,
        "/apis/apps/v1/namespaces/services/deployments",
        KUBECTL_ACCEPT,
    )
    .await;
    let cells = row(&deployments, "cray-cps-cm-pm");
    assert_eq!(cells["Ready"], "3/3");
    assert_eq!(cells["Up-to-date"], 3);
    assert_eq!(cells["Available"], 3);
    assert_eq!(cells["Selector"], "app.kubernetes.io/name=cray-cps-cm-pm");

    let (_, services) =
        get_table(&sim, "/api/v1/namespaces/services/services", KUBECTL_ACCEPT).await;
    assert_eq!(
        column_names(&services),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    let cells = row(&services, "cray-bss-etcd-client");
    assert_eq!(cells["Type"], "ClusterIP");
    assert_eq!(cells["External-IP"], "<none>");
    assert_eq!(cells["Port(s)"], "2379/TCP");
    let (_, maps) = get_table(
        &sim,
        "/api/v1/namespaces/services/configmaps",
        KUBECTL_ACCEPT,
    )
    .await;
    assert_eq!(column_names(&maps), ["Name", "Data", "Age"]);
    assert_eq!(row(&maps, "cray-product-catalog")["Data"], 1);
    let (_, claims) = get_table(
        &sim,
        "/api/v1/namespaces/services/persistentvolumeclaims",
        KUBECTL_ACCEPT,
    )
    .await;
    // 1.26: no VolumeAttributesClass column yet (1.29).
    assert_eq!(
        column_names(&claims),
        [
            "Name",
            "Status",
            "Volume",
            "Capacity",
            "Access Modes",
            "StorageClass",
            "Age",
            "VolumeMode"
        ]
    );

    // The etcd operator's CRD has no printer columns: a CRD's default, Name and Age.
    let (_, clusters) = get_table(
        &sim,
        "/apis/etcd.database.coreos.com/v1beta2/namespaces/services/etcdclusters",
        KUBECTL_ACCEPT,
    )
    .await;
    assert_eq!(column_names(&clusters), ["Name", "Age"]);
    assert_eq!(clusters["columnDefinitions"][1]["type"], "date");
    row(&clusters, "cray-bss-etcd");

    // One object is a one-row Table; v1beta1 is served too; includeObject=Object embeds it.
    let (_, one) = get_table(
        &sim,
        "/apis/batch/v1/namespaces/services/jobs/cray-reds-init?includeObject=Object",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
    )
    .await;
    assert_eq!(one["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0]["object"]["kind"], "Job");

    // Plain JSON is unchanged, and a Table of an unknown version is refused like the real server.
    let (_, list) = get_table(&sim, "/api/v1/namespaces/services/pods", "application/json").await;
    assert_eq!(list["kind"], "PodList");
    let (status, refused) = get_table(
        &sim,
        "/api/v1/namespaces/services/pods",
        "application/json;as=Table;v=v7;g=meta.k8s.io",
    )
    .await;
    assert_eq!(status, 406);
    assert_eq!(refused["reason"], "NotAcceptable");
}

#[tokio::test]
async fn events_are_printed_with_object_and_message() {
    let sim = seeded().await;
    let client = sim.kube_client();
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": { "name": "cray-bss.1" },
        "involvedObject": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "cray-bss", "namespace": NS },
        "reason": "ScalingReplicaSet",
        "message": "Scaled up replica set cray-bss-abc to 1 ",
        "type": "Normal",
        "count": 2,
        "firstTimestamp": "2025-01-01T00:00:00Z",
        "lastTimestamp": "2025-01-01T00:01:00Z",
        "source": { "component": "deployment-controller" },
    }))
    .unwrap();
    Api::<CoreEvent>::namespaced(client, NS)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    for path in [
        "/api/v1/namespaces/services/events",
        "/apis/events.k8s.io/v1/namespaces/services/events",
    ] {
        let (_, events) = get_table(&sim, path, KUBECTL_ACCEPT).await;
        assert_eq!(
            column_names(&events),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ],
            "{path}"
        );
        let cells = row(&events, "cray-bss.1");
        assert_eq!(cells["Object"], "deployment/cray-bss", "{path}");
        assert_eq!(cells["Message"], "Scaled up replica set cray-bss-abc to 1");
        assert_eq!(cells["Source"], "deployment-controller");
        assert_eq!(cells["Count"], 2);
        assert!(
            cells["Last Seen"].as_str().unwrap().ends_with('d'),
            "{cells:?}"
        );
    }
}

/// `kubectl get pods,jobs,events` against the simulated cluster prints the real columns.
#[tokio::test]
async fn kubectl_prints_the_columns() {
    let kubectl = std::path::Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        eprintln!("kubectl not installed; skipping (the HTTP test above covers the tables)");
        return;
    }
    let sim = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, sim.kubeconfig_yaml()).unwrap();
    let output = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&config)
        .args(["get", "pods,jobs,deployments,etcdclusters", "-n", NS])
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let headers: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("NAME"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        headers,
        [
            vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            vec!["NAME", "COMPLETIONS", "DURATION", "AGE"],
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            vec!["NAME", "AGE"],
        ],
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("job.batch/cray-reds-init") && l.contains("1/1")),
        "{stdout}"
    );
}

/// A cluster with an empty `services` namespace whose Job back-off starts at `backoff`.
async fn cluster_with_backoff(backoff: Duration) -> (SimCluster, kube::Client) {
    let options = SimOptions {
        job_backoff: backoff,
        ..SimOptions::default()
    };
    let sim = SimCluster::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let client = sim.kube_client();
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": NS } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    (sim, client)
}

fn failing_job(name: &str, restart_policy: &str, backoff_limit: i32) -> Job {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": { "annotations": {
                    "sim.etcd-repopulator.io/fail": "true",
                    "sim.etcd-repopulator.io/log": "Error: boom",
                } },
                "spec": {
                    "restartPolicy": restart_policy,
                    "containers": [{ "name": name, "image": "busybox" }],
                },
            },
        },
    }))
    .unwrap()
}

fn is_job_failed() -> impl Condition<Job> {
    |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    }
}

fn failed_condition_reason(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed")?
        .reason
        .clone()
}

/// `restartPolicy: Never`: every failure is a new pod, after 1, 2, 4, ... back-offs, until
/// `status.failed` exceeds `backoffLimit`.
#[tokio::test]
async fn a_failing_job_gets_a_new_pod_per_retry_until_the_backoff_limit() {
    let base = Duration::from_millis(100);
    let (_sim, client) = cluster_with_backoff(base).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    jobs.create(&PostParams::default(), &failing_job("retried", "Never", 3))
        .await
        .unwrap();
    let failed = wait_for(&jobs, "retried", is_job_failed()).await.unwrap();
    // Three retries after back-offs of 1, 2 and 4 times the base.
    assert!(started.elapsed() >= base * 7, "{:?}", started.elapsed());
    assert_eq!(
        failed_condition_reason(&failed).as_deref(),
        Some("BackoffLimitExceeded")
    );
    let status = failed.status.unwrap();
    assert_eq!(status.failed, Some(4));
    assert_eq!(status.active.unwrap_or(0), 0);
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    let pods = Api::<Pod>::namespaced(client, NS)
        .list(&ListParams::default().labels("job-name=retried"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 4, "a new pod per try");
    assert!(
        pods.iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
    );
}

/// `restartPolicy: OnFailure`: the container restarts in its pod until the restarts reach
/// `backoffLimit`; then the Job fails and its pod is deleted.
#[tokio::test]
async fn a_failing_on_failure_job_restarts_its_container_until_the_backoff_limit() {
    let (_sim, client) = cluster_with_backoff(Duration::from_millis(50)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    jobs.create(
        &PostParams::default(),
        &failing_job("crashing", "OnFailure", 2),
    )
    .await
    .unwrap();
    let job = wait_for(&jobs, "crashing", |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.start_time.is_some())
    })
    .await
    .unwrap();
    // The controller creates the pod before it records the start.
    let pod = pods
        .list(&ListParams::default().labels("job-name=crashing"))
        .await
        .unwrap()
        .items
        .remove(0);
    let restarted = wait_for(&pods, &pod.name_any(), |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.restart_count >= 1))
    })
    .await
    .unwrap();
    let container = &restarted.status.unwrap().container_statuses.unwrap()[0];
    let last = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1));

    let failed = wait_for(&jobs, "crashing", is_job_failed()).await.unwrap();
    assert_eq!(
        failed_condition_reason(&failed).as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(failed.uid(), job.uid());
    assert_eq!(failed.status.unwrap().failed, Some(1));
    wait_for(
        &pods,
        &pod.name_any(),
        conditions::is_deleted(&pod.uid().unwrap()),
    )
    .await;
    let left = pods
        .list(&ListParams::default().labels("job-name=crashing"))
        .await
        .unwrap()
        .items;
    assert!(left.is_empty(), "one pod, restarted in place: {left:?}");
}

/// `serve --simulate` as a process, its logs read as they come.
struct Serve {
    child: tokio::process::Child,
    base: String,
    sim: String,
    /// What it logged until it served.
    startup: Vec<String>,
    logs: tokio::sync::mpsc::UnboundedReceiver<String>,
    dir: tempfile::TempDir,
}

impl Serve {
    /// Starts it with `extra` arguments and waits (bounded) until it serves.
    async fn start(extra: &[&str]) -> Serve {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, sim_port) = (free_port(), free_port());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
            .args(["serve", "--simulate"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--sim-listen", &format!("127.0.0.1:{sim_port}")])
            .arg("--database")
            .arg(dir.path().join("runs.db"))
            .args(extra)
            .env_remove("ETCD_REPOPULATOR_CONFIG")
            .env("RUST_LOG", "info")
            // The simulated cluster's directories (its etcd data, snapshotter PVC, S3) go
            // into the test's own, removed with it whatever way the service ends.
            .env("TMPDIR", dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        // Drained to the end, so that a full pipe never blocks the service.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = logs.recv().await {
                let serving = line.contains("\"message\":\"serving\"");
                seen.push(line);
                if serving {
                    return;
                }
            }
            panic!("serve exited: {seen:#?}");
        })
        .await
        .unwrap_or_else(|_| panic!("serve did not start: {seen:#?}"));
        Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            sim: format!("http://127.0.0.1:{sim_port}"),
            startup: seen,
            logs,
            dir,
        }
    }

    /// The log lines so far.
    fn drain_logs(&mut self) -> Vec<String> {
        let mut lines = self.startup.clone();
        while let Ok(line) = self.logs.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// `repopulations create --services <services> --wait --format json`: exit status and run.
    async fn run(&self, services: &str) -> (std::process::ExitStatus, Value) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
            .args(["--url", &self.base, "--format", "json"])
            .args(["repopulations", "create", "--services", services, "--wait"])
            .env_remove("ETCD_REPOPULATOR_URL")
            .env_remove("ETCD_REPOPULATOR_TOKEN")
            .env("XDG_CONFIG_HOME", self.dir.path())
            .output()
            .await
            .unwrap();
        let run = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status, run)
    }

    /// Stops it as an operator would (SIGTERM), so that it stops its sshd too, and waits.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exited = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("serve stops on SIGTERM")
            .unwrap();
        assert!(exited.success(), "{exited}");
    }

    /// Waits (bounded) until the service finds the etcd cluster healthy: a run's first step
    /// checks it, and the simulated cluster starts its etcd members a moment after serving.
    async fn wait_etcd_healthy(&self, cluster: &str) {
        // Without etcd installed the simulated clusters have none, and the checks are off.
        if self
            .startup
            .iter()
            .any(|l| l.contains("the etcd checks (check-etcd-cluster, recount-etcd-keys) are off"))
        {
            return;
        }
        let url = format!("{}/etcd-clusters/{cluster}", self.base);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let report: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if report["healthy"] == true {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{cluster} never became healthy: {report:#}"
            );
            // Another process's etcd gives no other signal than answering.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wipe(&self, cluster: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/sim/etcd/{cluster}/wipe", self.sim))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn hmnfd_subscribers(&self) -> Vec<String> {
        let list: Value = reqwest::get(format!("{}/csm/hmnfd/hmi/v2/subscriptions", self.sim))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["SubscriptionList"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["SubscriberComponent"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Serve {
    /// Whatever still runs (a test that failed before `stop`): SIGKILL; its sshd's guard then
    /// stops the sshd.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Gone (bounded: SIGKILL takes milliseconds) before `dir`, which holds the simulated
        // cluster's directories, is removed.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["services"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {run:#}"))
}

/// A rehearsal of `hmnfd` on `serve --simulate`: its sshd answers for every node, the nodes'
/// `systemctl restart cray-dvs-orca` subscribes them to the simulated HMNFD again.
#[tokio::test]
async fn serve_simulate_gives_the_nodes_an_ssh_server_so_hmnfd_succeeds() {
    assert!(
        sim::nodes::find_sshd(None).is_some(),
        "sshd not found: install Debian's openssh-server"
    );
    let mut serve = Serve::start(&[]).await;
    let started: Value = serve
        .drain_logs()
        .iter()
        .find(|l| l.contains("simulated nodes answer SSH"))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("the sshd started");
    let ssh_port = started["port"].as_u64().unwrap();
    let ssh_dir = std::path::PathBuf::from(started["dir"].as_str().unwrap());
    assert!(ssh_dir.join("known_hosts").is_file());
    serve.wait_etcd_healthy("cray-hmnfd-etcd").await;
    serve.wipe("cray-hmnfd-etcd").await;
    assert!(serve.hmnfd_subscribers().await.is_empty());

    let (status, run) = serve.run("hmnfd").await;
    assert!(status.success(), "{run:#}");
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let results = step(&run, "restart-orca")["data"]["results"]
        .as_array()
        .unwrap();
    assert_eq!(results.len(), 14, "6 Ready compute nodes, 8 hostlist NCNs");
    assert!(
        results
            .iter()
            .all(|r| r["outcome"] == json!({"status": "exited", "detail": 0})),
        "{results:#?}"
    );
    // ORCA subscribed again on every Ready compute node and on the NCNs HSM knows.
    let subscribers = serve.hmnfd_subscribers().await;
    for xname in [
        "x1000c0s0b0n0",
        "x1000c0s0b0n1",
        "x1000c0s0b1n0",
        "x1000c0s1b0n0",
        "x1000c0s1b0n1",
        "x1000c0s1b1n1",
        "x3000c0s4b0n0",
        "x3000c0s10b0n0",
    ] {
        assert!(
            subscribers.iter().any(|s| s == xname),
            "{xname}: {subscribers:?}"
        );
    }
    assert_eq!(step(&run, "verify-subscriptions")["state"], "succeeded");

    // Even a service killed outright takes its sshd with it.
    let node = format!("127.78.0.1:{ssh_port}");
    assert!(std::net::TcpStream::connect(&node).is_ok());
    drop(serve);
    tokio::time::timeout(DEADLINE, async {
        while std::net::TcpStream::connect(&node).is_ok() {
            // Another process's exit gives no other signal than its closed port.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the nodes' sshd stops when the service is killed");
    tokio::time::timeout(DEADLINE, async {
        while ssh_dir.exists() {
            // The guard removes it right after stopping sshd.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sshd's keys and configuration are removed");
}

/// Without sshd the `hmnfd` step fails at once, saying in one line what to install.
#[tokio::test]
async fn without_sshd_the_hmnfd_step_says_what_to_install() {
    let mut serve = Serve::start(&["--sim-sshd", "/nonexistent/sbin/sshd"]).await;
    assert!(
        serve
            .drain_logs()
            .iter()
            .any(|l| l.contains("no SSH server for the simulated nodes")),
        "a warning at start"
    );
    serve.wait_etcd_healthy("cray-hmnfd-etcd").await;
    let (status, run) = serve.run("hmnfd").await;
    assert!(!status.success());
    assert_eq!(run["state"], "failed", "{run:#}");
    let message = step(&run, "restart-orca")["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.contains("install OpenSSH's server")
            && message.contains("apt-get install openssh-server"),
        "{message}"
    );
    serve.stop().await;
}

/// `sim --serve-config` writes what a `serve` in another process needs: that service, with the
/// kubeconfig `sim` wrote, runs the runbook against the simulated cluster.
#[tokio::test]
async fn a_serve_in_another_process_runs_against_sim_with_its_config() {
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, config) = (
        dir.path().join("sim.kubeconfig"),
        dir.path().join("sim.toml"),
    );
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
            .args(args)
            .env_remove("ETCD_REPOPULATOR_FAILPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let _sim = Killed(spawn(&[
        "sim",
        "--csm-release",
        "1.0",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--serve-config",
        config.to_str().unwrap(),
    ]));
    crate::common::until("sim's kubeconfig and configuration", async || {
        (kubeconfig.exists() && config.exists()).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[csm]") && text.contains("bss_url"), "{text}");

    let port = crate::common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"));
    serve
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&config)
        .arg("--database")
        .arg(dir.path().join("runs.db"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("ETCD_REPOPULATOR_FAILPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _serve = Killed(serve.spawn().unwrap());
    let http = reqwest::Client::new();
    crate::common::until("serve answers", async || {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let run: Value = http
        .post(format!("{base}/repopulations"))
        .json(&json!({"services": ["reds"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"))
        .to_owned();
    let ended = crate::common::until("the run ends", async || {
        let run: Value = http
            .get(format!("{base}/repopulations/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (run["state"] != "pending" && run["state"] != "running").then_some(run)
    })
    .await;
    assert_eq!(ended["state"], "succeeded", "{ended:#}");
}
