//! Time from "recover this etcd cluster" to a healthy cluster, for a rebuild and a restore of
//! BSS's 3-member Bitnami etcd cluster (`cray-bss-bitnami-etcd`) on a simulated CSM 1.6 with
//! real etcd behind its pods (`cargo bench --bench recovery`): ours (`POST /repopulations`
//! with `"etcd": "rebuild" | "restore"`, the service configured as `serve --simulate`
//! configures it) against the same sequence done the way CSM does it.
//!
//! The baseline is the exact sequence of CSM's `rebuild_cluster` and `restore_from_backup`
//! (cray-etcd-backup's scripts, which `etcd_restore_rebuild.sh` calls on CSM 1.5+), each
//! command through the real `kubectl` (`scripts/tools` puts it into `target/tools/bin`), then
//! the endpoint health check of `etcd_restore_rebuild.sh`, measured twice:
//!
//! * `baseline`: the two waits poll as the etcd-operator era `etcd_restore_rebuild.sh`'s
//!   `wait_for_pods_terminate` and `wait_for_pods_start` do: look, and if not done, `sleep 10`
//!   and look again (`BENCH_RECOVERY_POLL`, default `10s`). After the scale to 0 the wait is
//!   for the pods to be gone; after the scale to 3 for what `kubectl rollout status` waits for
//!   (every replica Ready and at the update revision).
//! * `baseline_watch`: the waits are the scripts' own `kubectl rollout status` (a watch);
//!   after the scale to 0 it returns at once and `kubectl delete pvc` is what waits for the
//!   pods to go (the PVCs' `pvc-protection` finalizer).
//!
//! The simulated cluster serves neither Endpoints nor `kubectl exec`, so the health check
//! lists the Ready pods (what the Endpoints object lists) and runs the `etcdctl endpoint health
//! -w json` the script execs in a pod against the cluster's client endpoint from here; it looks
//! again after a poll interval if that fails.
//!
//! Every sequence is watched by the same observer (every 50 ms): the cluster counts as healthy
//! again the first time, after its pods were all gone, that etcd says so: its client endpoint
//! answers `/health` (a quorum commits) and its member list has its 3 members, all started.
//! Not the pods' readiness: ours puts the environment back as soon as the cluster is healthy,
//! and the rolling update that follows takes a member pod out of Ready within milliseconds, so
//! a look at the pods would miss the moment (and see "healthy" only after the rollout), while
//! etcd serves throughout. Per sequence: `healthy` (start -> the observer saw it healthy),
//! `noticed` (start -> the sequence knew: ours, its recovery step's journalled `healthy` phase;
//! the baseline, its health check passed) and `done` (ours: the recovery step ended, after the
//! environment was put back and rolled out; the baseline: its health check, the scripts do not
//! wait for that rollout). The summary's `ours` is ours' `healthy`, `baseline` the polled
//! baseline's `done` (when the admin learns the cluster is back), medians of
//! `BENCH_RECOVERY_ROUNDS` (default 3) rounds of rebuild then restore, each sequence on a
//! settled cluster. `BENCH_RECOVERY_POD_DELAY` sets the simulated pods' start and termination
//! delays (default: `serve --simulate`'s, 1 s and 2 s). `scripts/test` runs it once in a short
//! mode (1 s polls, 200 ms pods, one round: about 20 s) so a bench that no longer works fails
//! CI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_repopulator::{app::App, config::Config};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use sim::{SimCluster, SimOptions};

/// BSS's etcd cluster: the StatefulSet, its namespace and its pods.
const STS: &str = "cray-bss-bitnami-etcd";
const NAMESPACE: &str = "services";
const SELECTOR: &str = "app.kubernetes.io/instance=cray-bss,app.kubernetes.io/name=etcd";
const MEMBERS: usize = 3;
/// How often the observer looks.
const OBSERVE: Duration = Duration::from_millis(50);
/// Bound of every wait (a recovery that never ends fails the bench).
const DEADLINE: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Rebuild,
    Restore,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Rebuild => "rebuild",
            Op::Restore => "restore",
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn env_duration(name: &str, default: &str) -> Duration {
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    humantime::parse_duration(&value)
        .unwrap_or_else(|e| panic!("{name}={value:?} is not a duration (e.g. 10s): {e}"))
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// `kubectl` on the PATH, else the one `scripts/tools` fetched.
fn find_kubectl() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
    });
    let fetched = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/kubectl");
    on_path
        .or_else(|| fetched.is_file().then_some(fetched))
        .unwrap_or_else(|| {
            panic!(
                "kubectl is neither on the PATH nor in target/tools/bin: run scripts/tools \
                 (it fetches kubectl into target/tools/bin)"
            )
        })
}

/// The real `kubectl`, pointed at the simulated cluster by a kubeconfig file.
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl args`, which must succeed; its stdout.
    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        assert!(
            out.status.success(),
            "kubectl {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    async fn json(&self, args: &[&str]) -> Value {
        let text = self.run(args).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {text}"))
    }
}

/// What `kubectl rollout status statefulset` waits for (its StatefulSetStatusViewer): the
/// controller has seen the latest spec, every replica is Ready, and the pods are all at the
/// update revision.
fn rolled_out(set: &Value) -> bool {
    let generation = set["metadata"]["generation"].as_i64().unwrap_or(0);
    let status = &set["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = status["readyReplicas"].as_i64().unwrap_or(0);
    observed != 0
        && observed >= generation
        && ready >= replicas
        && status["updateRevision"] == status["currentRevision"]
}

/// How the baseline waits for the StatefulSet.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Look, and if not done, sleep this long (the etcd-operator era
    /// `etcd_restore_rebuild.sh`'s `wait_for_pods_*`: `sleep 10`).
    Poll(Duration),
    /// `kubectl rollout status` (a watch), as CSM 1.5+'s `rebuild_cluster` and
    /// `restore_from_backup` wait.
    RolloutStatus,
}

impl Wait {
    fn who(self) -> &'static str {
        match self {
            Wait::Poll(_) => "baseline",
            Wait::RolloutStatus => "baseline_watch",
        }
    }
}

/// One timed part of a sequence.
struct Phase {
    name: String,
    took: Duration,
    /// How many times a wait looked (0: not a wait).
    polls: usize,
}

/// A timed sequence: its phases, and when it started.
struct Timeline {
    start: Instant,
    last: Instant,
    phases: Vec<Phase>,
}

impl Timeline {
    fn new() -> Self {
        let now = Instant::now();
        Timeline {
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends the current phase as `name`.
    fn mark(&mut self, name: &str, polls: usize) {
        let now = Instant::now();
        self.phases.push(Phase {
            name: name.to_owned(),
            took: now - self.last,
            polls,
        });
        self.last = now;
    }

    fn print(&self, op: Op, round: usize, who: &str) {
        for p in &self.phases {
            let polls = if p.polls > 0 {
                format!(" polls={}", p.polls)
            } else {
                String::new()
            };
            println!(
                "recovery-phase op={} round={round} who={who} phase={} took={}s{polls}",
                op.name(),
                p.name,
                secs(p.took)
            );
        }
    }
}

/// Looks with `check` until it says done, sleeping `poll` between looks (first look at
/// once); how many looks it took.
async fn poll_until(what: &str, poll: Duration, mut check: impl AsyncFnMut() -> bool) -> usize {
    let deadline = Instant::now() + DEADLINE;
    let mut looks = 0;
    loop {
        looks += 1;
        if check().await {
            return looks;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not done in {DEADLINE:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// Whether the cluster's etcd answers `/health` with `"health": "true"` at `url`.
async fn etcd_healthy(http: &reqwest::Client, url: &str) -> bool {
    let Ok(resp) = http.get(format!("{url}/health")).send().await else {
        return false;
    };
    let Ok(body) = resp.json::<Value>().await else {
        return false;
    };
    body["health"] == "true"
}

/// How many members etcd's member list at `url` has that have started (a name and client
/// URLs: a member added but not yet started has neither).
async fn started_members(http: &reqwest::Client, url: &str) -> usize {
    let list = async {
        let resp = http
            .post(format!("{url}/v3/cluster/member/list"))
            .json(&json!({}))
            .send()
            .await
            .ok()?;
        resp.json::<Value>().await.ok()
    };
    list.await
        .and_then(|body| body["members"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m["name"].as_str().is_some_and(|n| !n.is_empty())
                && m["clientURLs"].as_array().is_some_and(|u| !u.is_empty())
        })
        .count()
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Watches the cluster from now on, for [`Observer::healthy`].
struct Observer {
    task: tokio::task::JoinHandle<Instant>,
    /// What it saw last (for the message when the cluster does not come back).
    seen: Arc<std::sync::Mutex<String>>,
}

impl Observer {
    async fn start(sim: &Arc<SimCluster>) -> Self {
        let sim = sim.clone();
        let seen = Arc::new(std::sync::Mutex::new("nothing yet".to_owned()));
        let saw = seen.clone();
        let pods: Api<Pod> = Api::namespaced(sim.kube_client(), NAMESPACE);
        let params = ListParams::default().labels(SELECTOR);
        // The members before the sequence: "gone" is when none of them is left. Not only when
        // a look finds no pod at all: with watches the set scales back up within a few
        // milliseconds of its pods being gone, quicker than one look.
        let before: std::collections::HashSet<String> = pods
            .list(&params)
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let mut gone = false;
            loop {
                let members = pods.list(&params).await.expect("pods").items;
                let ready_members = members.iter().filter(|p| ready(p)).count();
                let mut healthy = None;
                if !gone {
                    gone = members.iter().all(|p| {
                        p.metadata
                            .uid
                            .as_ref()
                            .is_none_or(|uid| !before.contains(uid))
                    });
                } else {
                    let now = Instant::now();
                    let answer = match sim.etcd_url(STS) {
                        Some(url) => {
                            etcd_healthy(&http, &url).await
                                && started_members(&http, &url).await == MEMBERS
                        }
                        None => false,
                    };
                    if answer {
                        return now;
                    }
                    healthy = Some(answer);
                }
                *saw.lock().unwrap() = format!(
                    "pods all gone once: {gone}; {} pods, {ready_members} Ready; etcd healthy: \
                     {healthy:?}",
                    members.len()
                );
                tokio::time::sleep(OBSERVE).await;
            }
        });
        Observer { task, seen }
    }

    /// The first moment, after its pods were all gone, that the cluster's members were all
    /// Ready and its client endpoint healthy.
    async fn healthy(mut self) -> Instant {
        let started = Instant::now();
        match tokio::time::timeout(DEADLINE, &mut self.task).await {
            Ok(at) => at.expect("the observer"),
            Err(_) => {
                self.task.abort();
                panic!(
                    "the cluster did not come back within {DEADLINE:?} (waited {:?}); last seen: {}",
                    started.elapsed(),
                    self.seen.lock().unwrap()
                )
            }
        }
    }
}

/// Waits (untimed, between measurements) until the StatefulSet is rolled out, every member
/// Ready and the etcd healthy.
async fn settle(sim: &SimCluster, http: &reqwest::Client) {
    let sets: Api<StatefulSet> = Api::namespaced(sim.kube_client(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(sim.kube_client(), NAMESPACE);
    poll_until(
        "the cluster to settle",
        Duration::from_millis(100),
        async || {
            let set = serde_json::to_value(sets.get(STS).await.expect("statefulset")).unwrap();
            let members = pods
                .list(&ListParams::default().labels(SELECTOR))
                .await
                .expect("pods")
                .items;
            rolled_out(&set)
                && set["status"]["updatedReplicas"] == MEMBERS
                && members.len() == MEMBERS
                && members.iter().all(ready)
                && match sim.etcd_url(STS) {
                    Some(url) => etcd_healthy(http, &url).await,
                    None => false,
                }
        },
    )
    .await;
    sim.wait_settled(DEADLINE)
        .await
        .expect("the cluster settles");
}

struct Measured {
    /// Start -> the observer saw the cluster healthy.
    healthy: Duration,
    /// Start -> the sequence (baseline: its health check; ours: the recovery step) ended.
    done: Duration,
    /// Start -> the sequence knew the cluster was healthy (baseline: its health check
    /// passed; ours: the recovery step's `healthy` phase).
    noticed: Duration,
}

/// CSM's way: `rebuild_cluster` / `restore_from_backup`, then `check_endpoint_health`, every
/// command through kubectl, every wait a poll every `poll`.
async fn baseline(
    op: Op,
    kubectl: &Kubectl,
    sim: &Arc<SimCluster>,
    snapshot: &str,
    wait: Wait,
    round: usize,
) -> Measured {
    // The health check retries, when the first look fails, at the poll interval (`check_endpoint_health`
    // of the 1.5+ script does not retry: it reports the cluster unhealthy).
    let poll = match wait {
        Wait::Poll(poll) => poll,
        Wait::RolloutStatus => Duration::from_secs(1),
    };
    let observer = Observer::start(sim).await;
    let mut t = Timeline::new();
    // `ns=$(kubectl get statefulsets.apps -A | grep ${ss_name} | awk '{print $1}')`
    let listing = kubectl.run(&["get", "statefulsets.apps", "-A"]).await;
    let ns = listing
        .lines()
        .find(|l| l.contains(STS))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {STS} in\n{listing}"))
        .to_owned();
    let ns = ns.as_str();
    if op == Op::Restore {
        // `[ ! -f /snapshots/${cluster}-bitnami-etcd/${snapshot} ]`: no download needed.
        let file = sim.snapshots_dir().unwrap().join(STS).join(snapshot);
        assert!(file.is_file(), "{} is not there", file.display());
    }
    t.mark("namespace", 0);
    kubectl
        .run(&["scale", "statefulset", "-n", ns, STS, "--replicas=0"])
        .await;
    t.mark("scale-to-0", 0);
    match wait {
        Wait::Poll(poll) => {
            let looks = poll_until("the members to go", poll, async || {
                kubectl
                    .run(&["get", "pods", "-n", ns, "-l", SELECTOR, "-o", "name"])
                    .await
                    .trim()
                    .is_empty()
            })
            .await;
            t.mark("wait-pods-gone", looks);
        }
        Wait::RolloutStatus => {
            let mut status = vec!["rollout", "status", "statefulset", "-n", ns, STS];
            if op == Op::Restore {
                status.extend(["--timeout", "90s"]);
            }
            kubectl.run(&status).await;
            t.mark("rollout-status", 0);
        }
    }
    let pvcs: Vec<String> = (0..MEMBERS).map(|i| format!("data-{STS}-{i}")).collect();
    let mut delete = vec!["delete", "pvc", "-n", ns];
    delete.extend(pvcs.iter().map(String::as_str));
    let snapshots_dir = format!("ETCD_INIT_SNAPSHOTS_DIR=/snapshots/{STS}");
    let snapshot_file = format!("ETCD_INIT_SNAPSHOT_FILENAME={snapshot}");
    match op {
        Op::Rebuild => {
            kubectl.run(&delete).await;
            t.mark("delete-pvcs", 0);
            kubectl
                .run(&[
                    "set",
                    "env",
                    "statefulset",
                    "-n",
                    ns,
                    STS,
                    "ETCD_INITIAL_CLUSTER_STATE=new",
                ])
                .await;
            t.mark("set-env-new", 0);
        }
        Op::Restore => {
            kubectl
                .run(&[
                    "set",
                    "env",
                    "statefulset",
                    "-n",
                    ns,
                    STS,
                    "ETCD_START_FROM_SNAPSHOT=yes",
                    &snapshot_file,
                    &snapshots_dir,
                    "ETCD_INITIAL_CLUSTER_STATE=new",
                ])
                .await;
            t.mark("set-env-snapshot", 0);
            kubectl.run(&delete).await;
            t.mark("delete-pvcs", 0);
        }
    }
    kubectl
        .run(&["scale", "statefulset", "-n", ns, STS, "--replicas=3"])
        .await;
    t.mark("scale-to-3", 0);
    match wait {
        Wait::Poll(poll) => {
            let looks = poll_until("the rollout", poll, async || {
                rolled_out(
                    &kubectl
                        .json(&["get", "statefulset", "-n", ns, STS, "-o", "json"])
                        .await,
                )
            })
            .await;
            t.mark("wait-rollout", looks);
        }
        Wait::RolloutStatus => {
            let mut status = vec!["rollout", "status", "statefulset", "-n", ns, STS];
            if op == Op::Restore {
                status.extend(["--timeout", "3m"]);
            }
            kubectl.run(&status).await;
            t.mark("rollout-status", 0);
        }
    }
    let back: &[&str] = match op {
        Op::Rebuild => &["ETCD_INITIAL_CLUSTER_STATE=existing"],
        Op::Restore => &[
            "ETCD_START_FROM_SNAPSHOT=no",
            "ETCD_INITIAL_CLUSTER_STATE=existing",
        ],
    };
    let mut set_back = vec!["set", "env", "statefulset", "-n", ns, STS];
    set_back.extend(back);
    kubectl.run(&set_back).await;
    t.mark("set-env-existing", 0);
    // `check_endpoint_health`: the pods behind the client Service (the Endpoints object lists
    // the Ready ones), then `etcdctl endpoint health -w json` until one answers.
    let looks = poll_until("the endpoint health", poll, async || {
        let pods = kubectl
            .json(&["get", "pods", "-n", ns, "-l", SELECTOR, "-o", "json"])
            .await;
        let ready_pods = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count();
        let Some(url) = sim.etcd_url(STS) else {
            return false;
        };
        for _ in 0..ready_pods {
            let out = tokio::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["endpoint", "health", "-w", "json", "--endpoints", &url])
                .output()
                .await
                .expect("etcdctl (Debian: etcd-client)");
            if out.status.success() {
                return true;
            }
        }
        false
    })
    .await;
    t.mark("endpoint-health", looks);
    let done = t.last - t.start;
    let healthy_at = observer.healthy().await;
    t.print(op, round, wait.who());
    Measured {
        healthy: healthy_at - t.start,
        done,
        noticed: done,
    }
}

/// Ours: `POST /repopulations` with `"etcd": op`, from the POST to the cluster healthy and to
/// the end of the run's recovery step.
async fn ours(
    op: Op,
    app: &App,
    base: &str,
    sim: &Arc<SimCluster>,
    snapshot: &str,
    round: usize,
) -> Measured {
    let http = reqwest::Client::new();
    let observer = Observer::start(sim).await;
    let mut body = json!({
        "services": ["bss"],
        "etcd": op.name(),
        "confirm": [STS],
        // What CSM's scripts do too: the cluster's data is replaced, whatever it holds.
        "discard_newer": true,
        "reason": format!("bench recovery {} round {round}", op.name()),
    });
    if op == Op::Restore {
        body["backup"] = json!(snapshot);
    }
    let posted_wall = chrono::Utc::now();
    let start = Instant::now();
    let resp = http
        .post(format!("{base}/repopulations"))
        .json(&body)
        .send()
        .await
        .expect("POST /repopulations");
    let status = resp.status();
    let run: Value = resp.json().await.expect("run");
    assert!(
        status.is_success(),
        "POST /repopulations: {status}: {run:#}"
    );
    let id = run["id"].as_str().expect("run id").to_owned();
    let healthy_at = observer.healthy().await;
    app.runner.idle().await;
    let run_done = start.elapsed();
    let run: Value = http
        .get(format!("{base}/repopulations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["service"] == "bss")
        .unwrap_or_else(|| panic!("no bss in {run:#}"));
    let steps = task["steps"].as_array().unwrap();
    let recover = steps
        .iter()
        .find(|s| s["name"] == "etcd-recover")
        .unwrap_or_else(|| panic!("no step etcd-recover in {task:#}"));
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    let since_post = |at: &Value| -> Duration {
        let at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(at.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
        (at - posted_wall).to_std().unwrap_or_default()
    };
    for step in steps {
        if !step["started_at"].is_null() && !step["finished_at"].is_null() {
            println!(
                "recovery-phase op={} round={round} who=ours step={} state={} from={}s to={}s",
                op.name(),
                step["name"].as_str().unwrap_or("?"),
                step["state"].as_str().unwrap_or("?"),
                secs(since_post(&step["started_at"])),
                secs(since_post(&step["finished_at"])),
            );
        }
    }
    // The recovery step's journal: when each of its phases was done.
    for phase in recover["data"]["phases"].as_array().into_iter().flatten() {
        println!(
            "recovery-phase op={} round={round} who=ours step=etcd-recover phase={} at={}s",
            op.name(),
            phase["phase"].as_str().unwrap_or("?"),
            secs(since_post(&phase["at"])),
        );
    }
    println!(
        "recovery-phase op={} round={round} who=ours run={} took={}s",
        op.name(),
        run["state"].as_str().unwrap_or("?"),
        secs(run_done)
    );
    let noticed = recover["data"]["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["phase"] == "healthy")
        .map(|p| since_post(&p["at"]))
        .unwrap_or_else(|| panic!("no phase healthy journalled in {recover:#}"));
    Measured {
        healthy: healthy_at - start,
        done: since_post(&recover["finished_at"]),
        noticed,
    }
}

#[tokio::main]
async fn main() {
    let poll = env_duration("BENCH_RECOVERY_POLL", "10s");
    let rounds = env_usize("BENCH_RECOVERY_ROUNDS", 3).max(1);
    // The simulated pods' start and termination delays: `serve --simulate`'s unless set.
    let interactive = SimOptions::interactive();
    let pod_delay = std::env::var("BENCH_RECOVERY_POD_DELAY")
        .is_ok()
        .then(|| env_duration("BENCH_RECOVERY_POD_DELAY", "0s"));
    let kubectl_bin = find_kubectl();
    assert!(
        sim::kube::etcd_installed(),
        "etcd is not installed (Debian: etcd-server); the bench needs real etcd behind the pods"
    );
    let began = Instant::now();
    let sim = SimCluster::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            kubelet_ready_delay: pod_delay.unwrap_or(interactive.kubelet_ready_delay),
            pod_termination_delay: pod_delay.unwrap_or(interactive.pod_termination_delay),
            real_etcd: true,
            // Only the cluster the bench recovers runs for real (the others would be nine
            // more processes for nothing).
            real_etcd_clusters: Some(vec![STS.to_owned()]),
            ..interactive
        },
    )
    .await
    .expect("simulated cluster");
    sim.seed_csm_release("1.6").await.expect("seeding CSM 1.6");
    sim.wait_settled(DEADLINE)
        .await
        .expect("the cluster settles");
    let sim = Arc::new(sim);
    let http = reqwest::Client::new();
    let snapshot = sim::testing::newest_snapshotter_backup(&sim, STS);
    let seeded_keys = sim.bss_key_count().await.expect("BSS's keys");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig_yaml()).unwrap();
    let kubectl = Kubectl {
        bin: kubectl_bin,
        kubeconfig,
    };
    let db = dir.path().join("bench.db");
    let app = App::on_simulation(db.to_str().unwrap(), Config::default(), &sim)
        .await
        .expect("the service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    eprintln!(
        "CSM 1.6 simulated with real etcd in {}s (pods start in {:?}, terminate in {:?}); BSS has \
         {seeded_keys} keys, its backup {snapshot}",
        secs(began.elapsed()),
        pod_delay.unwrap_or(interactive.kubelet_ready_delay),
        pod_delay.unwrap_or(interactive.pod_termination_delay),
    );

    let mut results: Vec<Round> = Vec::new();
    for round in 1..=rounds {
        for op in [Op::Rebuild, Op::Restore] {
            let mut sides = Vec::new();
            for wait in [Wait::Poll(poll), Wait::RolloutStatus] {
                settle(&sim, &http).await;
                sides.push(baseline(op, &kubectl, &sim, &snapshot, wait, round).await);
                check_data(op, &sim, seeded_keys).await;
            }
            settle(&sim, &http).await;
            let ours = ours(op, &app, &base, &sim, &snapshot, round).await;
            settle(&sim, &http).await;
            if op == Op::Restore {
                check_data(op, &sim, seeded_keys).await;
            }
            let watch = sides.pop().unwrap();
            let baseline = sides.pop().unwrap();
            let r = Round {
                op,
                ours,
                baseline,
                watch,
            };
            for (who, m) in [
                ("ours", &r.ours),
                (Wait::Poll(poll).who(), &r.baseline),
                (Wait::RolloutStatus.who(), &r.watch),
            ] {
                // healthy: the cluster was; noticed: the sequence knew; done: it ended.
                println!(
                    "recovery-round op={} round={round} who={who} healthy={}s noticed={}s \
                     done={}s",
                    op.name(),
                    secs(m.healthy),
                    secs(m.noticed),
                    secs(m.done),
                );
            }
            results.push(r);
        }
    }
    for op in [Op::Rebuild, Op::Restore] {
        let of = |pick: &dyn Fn(&Round) -> Duration| {
            median(results.iter().filter(|r| r.op == op).map(pick).collect())
        };
        let ours = of(&|r| r.ours.healthy);
        let baseline = of(&|r| r.baseline.done);
        println!(
            "recovery op={} members={MEMBERS} ours={}s baseline={}s ratio={:.2} poll={} \
             ours_step={}s baseline_watch={}s rounds={rounds}",
            op.name(),
            secs(ours),
            secs(baseline),
            ours.as_secs_f64() / baseline.as_secs_f64(),
            humantime::format_duration(poll),
            secs(of(&|r| r.ours.done)),
            secs(of(&|r| r.watch.done)),
        );
    }
}

/// One operation of one round, measured three ways.
struct Round {
    op: Op,
    ours: Measured,
    /// CSM's sequence, its waits polled.
    baseline: Measured,
    /// CSM's sequence, its waits `kubectl rollout status`.
    watch: Measured,
}

/// The data is what the operation leaves: a rebuild empties BSS's etcd, a restore from the
/// seeded backup brings its keys back.
async fn check_data(op: Op, sim: &SimCluster, seeded_keys: usize) {
    let keys = sim.bss_key_count().await.expect("BSS's keys");
    match op {
        Op::Rebuild => assert_eq!(keys, 0, "a rebuild leaves BSS's etcd empty"),
        Op::Restore => assert_eq!(keys, seeded_keys, "a restore brings BSS's keys back"),
    }
}
