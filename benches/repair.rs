//! Repair instead of restore, measured (`cargo bench --bench repair`) on a simulated CSM 1.6
//! whose BSS cluster (`cray-bss-bitnami-etcd`) runs three real etcd members: for each failure,
//! ours (`POST /repopulations`, the least destructive way that works) against CSM's way, in the
//! same run, on the same cluster:
//!
//! * `replace`: one member's volume lost (its PVC and pod deleted: it comes back empty and
//!   crash-loops). A writer puts a key through the client Service every 20 ms during the whole
//!   recovery. Ours: `auto` replaces the member. CSM's way: restore the newest backup (what
//!   `etcd_restore_rebuild.sh` does for an unhealthy cluster; run through our `restore`, which
//!   does the same sequence as CSM's `restore_from_backup`, as `benches/recovery.rs` measures).
//! * `quorum-loss`: keys written after the newest backup (2 s of the writer), then two
//!   members' databases corrupted: the cluster serves nothing. Ours: `auto` restores every
//!   member from the member left. CSM's way: restore the newest backup.
//! * `nospace` (a second cluster with a 2 MiB quota): the database filled with history until
//!   etcd raises `NOSPACE`. Ours: `repair` (compaction, defragmentation, disarm). CSM's way:
//!   "Check for and Clear etcd Cluster Alarms" (`etcd-util.sh clear_alarms`: the alarm
//!   disarmed, the space left to the hourly auto-compaction and the defrag cron job).
//!
//! Per scenario and side: the time from the start to the cluster healthy (`replace`,
//! `quorum-loss`) or writable (`nospace`), the acknowledged writes lost (absent afterwards;
//! ours must lose none, which is asserted), the puts that failed meanwhile, and for `nospace`
//! the 32 KiB puts the cluster takes afterwards before it is full again (headroom, at most 200).
//! `BENCH_RECOVERY_POD_DELAY` sets the simulated pods' start and termination delays (default:
//! `serve --simulate`'s); `scripts/test` runs it with 200 ms pods so that a bench that no longer
//! works fails CI.

use std::time::{Duration, Instant};

use etcd_repopulator::{
    app::App,
    config::Config,
    etcd::{EtcdClient, EtcdConfig},
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use serde_json::{Value, json};
use sim::kube::controllers::etcd_member::faults::Damage;
use sim::testing::{EtcdWriter, Written, writes_lost};
use sim::{SimCluster, SimOptions};

const STS: &str = "cray-bss-bitnami-etcd";
const NAMESPACE: &str = "services";
const QUOTA: u64 = 2 << 20;
/// Bound of every wait.
const DEADLINE: Duration = Duration::from_secs(600);
const WRITE_EVERY: Duration = Duration::from_millis(20);

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Polls `check` every 50 ms until it holds (bounded by [`DEADLINE`]).
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The service on `sim`, serving HTTP; its base URL.
struct Service {
    app: App,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn start(sim: &SimCluster) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        let app = App::on_simulation(db.to_str().unwrap(), Config::default(), sim)
            .await
            .expect("the service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Service {
            app,
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn report(&self) -> Value {
        self.http
            .get(format!("{}/etcd-clusters/{STS}", self.base))
            .send()
            .await
            .expect("GET /etcd-clusters")
            .json()
            .await
            .expect("report")
    }

    /// Runs `body` to its end; the run.
    async fn run(&self, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/repopulations", self.base))
            .json(&body)
            .send()
            .await
            .expect("POST /repopulations");
        let status = resp.status();
        let run: Value = resp.json().await.expect("run");
        assert!(status.is_success(), "{status}: {run:#}");
        self.app.runner.idle().await;
        let id = run["id"].as_str().expect("run id");
        self.http
            .get(format!("{}/repopulations/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn until_healthy(&self) {
        until("the cluster healthy", async || {
            self.report().await["healthy"] == true
        })
        .await;
    }
}

/// Each step of the run's task with how long it took, and the recovery's journalled phases.
fn steps(run: &Value) -> String {
    let at = |v: &Value| -> Option<chrono::DateTime<chrono::Utc>> {
        serde_json::from_value(v.clone()).ok()
    };
    let mut out = Vec::new();
    for step in run["services"][0]["steps"].as_array().into_iter().flatten() {
        if let (Some(from), Some(to)) = (at(&step["started_at"]), at(&step["finished_at"])) {
            out.push(format!(
                "{}={:.2}s",
                step["name"].as_str().unwrap_or("?"),
                (to - from).num_milliseconds() as f64 / 1000.0
            ));
        }
        for phase in step["data"]["phases"].as_array().into_iter().flatten() {
            if let (Some(from), Some(to)) = (at(&step["started_at"]), at(&phase["at"])) {
                out.push(format!(
                    "{}+{:.2}s",
                    phase["phase"].as_str().unwrap_or("?"),
                    (to - from).num_milliseconds() as f64 / 1000.0
                ));
            }
        }
    }
    out.join(" ")
}

fn decision(run: &Value) -> String {
    run["services"][0]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "etcd-assess")
        .map(|s| s["data"]["decision"]["action"].to_string())
        .unwrap_or_default()
}

/// Waits until every pod of `pods` has its etcd container in CrashLoopBackOff.
async fn crash_looping(sim: &SimCluster, pods: &[String]) {
    let api: Api<Pod> = Api::namespaced(sim.kube_client(), NAMESPACE);
    until("the broken members crash-looping", async || {
        let mut all = true;
        for pod in pods {
            let looping = api.get_opt(pod).await.ok().flatten().is_some_and(|p| {
                p.status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| {
                        c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some("CrashLoopBackOff")
                    })
            });
            all &= looping;
        }
        all
    })
    .await;
}

async fn lose_volume(sim: &SimCluster, pod: &str) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sim.kube_client(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(sim.kube_client(), NAMESPACE);
    pvcs.delete(&format!("data-{pod}"), &Default::default())
        .await
        .expect("delete the PVC");
    pods.delete(pod, &Default::default())
        .await
        .expect("delete the pod");
}

/// One side of a scenario, measured.
struct Side {
    took: Duration,
    lost: usize,
    failed: usize,
    acked: usize,
}

impl Side {
    fn of(took: Duration, written: &Written, lost: usize) -> Side {
        Side {
            took,
            lost,
            failed: written.failed,
            acked: written.acked.len(),
        }
    }
}

fn report(scenario: &str, ours: &Side, csm: &Side, extra: &str) {
    println!(
        "repair scenario={scenario} ours={}s csm={}s ratio={:.2} ours_lost={} csm_lost={} \
         ours_failed={} csm_failed={} ours_acked={} csm_acked={}{extra}",
        secs(ours.took),
        secs(csm.took),
        ours.took.as_secs_f64() / csm.took.as_secs_f64(),
        ours.lost,
        csm.lost,
        ours.failed,
        csm.failed,
        ours.acked,
        csm.acked,
    );
}

/// CSM's way: a restore of the newest backup CSM's snapshotter took (`db-*`; not one of the
/// safety snapshots our earlier runs took, which are newer), discarding what is newer.
fn restore_newest(sim: &SimCluster) -> Value {
    let newest = sim::testing::newest_snapshotter_backup(sim, STS);
    json!({ "services": ["bss"], "etcd": "restore", "backup": newest, "confirm": [STS],
            "discard_newer": true, "reason": "bench: CSM's way" })
}

/// A member's volume lost, a writer all along: `auto` (ours) or a restore (CSM's way).
async fn replace(sim: &SimCluster, service: &Service, url: &str, body: Value) -> Side {
    service.until_healthy().await;
    let pod = format!("{STS}-2");
    lose_volume(sim, &pod).await;
    crash_looping(sim, std::slice::from_ref(&pod)).await;
    let writer = EtcdWriter::start(url, WRITE_EVERY);
    let start = Instant::now();
    let run = service.run(body).await;
    service.until_healthy().await;
    let took = start.elapsed();
    let written = writer.stop().await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let lost = writes_lost(url, &written).await.len();
    println!(
        "repair-run scenario=replace decision={} took={}s steps: {}",
        decision(&run),
        secs(took),
        steps(&run)
    );
    Side::of(took, &written, lost)
}

/// Writes after the newest backup, then two members' databases corrupt: `auto` (ours, asked
/// again while a crash-looping container is between two back-offs) or a restore (CSM's way).
async fn quorum_loss(sim: &SimCluster, service: &Service, url: &str, ours: bool) -> Side {
    service.until_healthy().await;
    let writer = EtcdWriter::start(url, WRITE_EVERY);
    tokio::time::sleep(Duration::from_secs(2)).await; // the writer's 2 s of writes
    let written = writer.stop().await;
    let broken = [format!("{STS}-1"), format!("{STS}-2")];
    for pod in &broken {
        sim.damage_etcd_member(pod, Damage::CorruptDb)
            .await
            .expect("damage a member");
    }
    crash_looping(sim, &broken).await;
    until("the quorum lost", async || {
        service.report().await["serving"] == false
    })
    .await;
    let start = Instant::now();
    let mut run = Value::Null;
    for _ in 0..10 {
        let body = if ours {
            json!({ "services": ["bss"], "etcd": "auto", "confirm": [STS], "reason": "bench" })
        } else {
            restore_newest(sim)
        };
        run = service.run(body).await;
        if !ours || decision(&run).contains("restore-from-member") {
            break;
        }
        crash_looping(sim, &broken).await;
    }
    service.until_healthy().await;
    let took = start.elapsed();
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let lost = writes_lost(url, &written).await.len();
    println!(
        "repair-run scenario=quorum-loss decision={} took={}s steps: {}",
        decision(&run),
        secs(took),
        steps(&run)
    );
    Side::of(took, &written, lost)
}

/// Versions of four keys, 32 KiB each, until etcd refuses with NOSPACE (at most `max` puts);
/// the puts it took.
async fn fill(url: &str, max: usize) -> usize {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let http = reqwest::Client::new();
    let value = STANDARD.encode("h".repeat(32 * 1024));
    for i in 0..max {
        let key = STANDARD.encode(format!("/history/{}", i % 4));
        let answer = http
            .post(format!("{url}/v3/kv/put"))
            .json(&json!({ "key": key, "value": value }))
            .send()
            .await;
        let Ok(answer) = answer else {
            return i;
        };
        if answer
            .text()
            .await
            .unwrap_or_default()
            .contains("space exceeded")
        {
            return i;
        }
    }
    max
}

async fn writable(url: &str) -> bool {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let put = json!({ "key": STANDARD.encode("/writable"), "value": STANDARD.encode("1") });
    reqwest::Client::new()
        .post(format!("{url}/v3/kv/put"))
        .json(&put)
        .send()
        .await
        .ok()
        .is_some_and(|r| r.status().is_success())
        && EtcdClient::new(url, &EtcdConfig::default())
            .unwrap()
            .alarms()
            .await
            .is_ok_and(|a| a.is_empty())
}

/// How long CSM's way is given to make the cluster writable (its defrag cron job and hourly
/// compaction are not simulated: after that, it is reported as not writable).
const CSM_WRITABLE_WITHIN: Duration = Duration::from_secs(30);

/// NOSPACE: `repair` (ours) or the alarm cleared (CSM's way), on a database full of history;
/// (time to writable, or `None` when it was not within the bound; keys lost; headroom).
/// `member`: a member's own address (a full cluster's members are not Ready, so its client
/// Service refuses connections); `url`: the client Service, writable again is judged there.
async fn nospace(
    service: &Service,
    member: &str,
    url: &str,
    ours: bool,
) -> (Option<Duration>, i64, usize) {
    fill(member, 2_000).await;
    let client = EtcdClient::new(member, &EtcdConfig::default()).unwrap();
    let (keys, _) = client.key_count(true).await.expect("keys");
    let start = Instant::now();
    let within = if ours {
        let run = service
            .run(json!({ "services": ["bss"], "etcd": "repair", "reason": "bench" }))
            .await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        DEADLINE
    } else {
        client
            .disarm_all()
            .await
            .expect("etcd-util.sh clear_alarms");
        CSM_WRITABLE_WITHIN
    };
    let mut took = None;
    while start.elapsed() < within {
        if writable(url).await {
            took = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ours <= took.is_some(),
        "the repair left the cluster not writable"
    );
    let (after, _) = client.key_count(true).await.expect("keys");
    // Keys fewer after than before. (The probe's /writable may be a key more, or may exist
    // already from a side before whose probe got a put through: not counted either way.)
    let lost = keys as i64 - after as i64;
    let headroom = if took.is_some() {
        fill(member, 200).await
    } else {
        0
    };
    (took, lost.max(0), headroom)
}

fn options(pod_delay: Option<Duration>) -> SimOptions {
    let interactive = SimOptions::interactive();
    SimOptions {
        kubelet_ready_delay: pod_delay.unwrap_or(interactive.kubelet_ready_delay),
        pod_termination_delay: pod_delay.unwrap_or(interactive.pod_termination_delay),
        real_etcd: true,
        real_etcd_clusters: Some(vec![STS.to_owned()]),
        ..interactive
    }
}

async fn simulated(options: SimOptions) -> SimCluster {
    let sim = SimCluster::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("simulated cluster");
    sim.seed_csm_release("1.6").await.expect("seeding CSM 1.6");
    sim.wait_settled(DEADLINE).await.expect("settled");
    sim
}

#[tokio::main]
async fn main() {
    assert!(
        sim::kube::etcd_installed(),
        "etcd is not installed (Debian: etcd-server); the bench needs real etcd members"
    );
    let pod_delay = std::env::var("BENCH_RECOVERY_POD_DELAY").ok().map(|d| {
        humantime::parse_duration(&d).unwrap_or_else(|e| panic!("BENCH_RECOVERY_POD_DELAY: {e}"))
    });
    let sim = simulated(options(pod_delay)).await;
    let url = sim.etcd_url(STS).expect("BSS's client Service");
    let service = Service::start(&sim).await;

    let auto = json!({ "services": ["bss"], "etcd": "auto", "confirm": [STS], "reason": "bench" });
    let ours = replace(&sim, &service, &url, auto).await;
    assert_eq!(
        ours.lost, 0,
        "a member replacement lost acknowledged writes"
    );
    let csm = replace(&sim, &service, &url, restore_newest(&sim)).await;
    report("replace", &ours, &csm, "");

    let ours = quorum_loss(&sim, &service, &url, true).await;
    assert_eq!(
        ours.lost, 0,
        "a quorum-loss recovery lost writes the member held"
    );
    let csm = quorum_loss(&sim, &service, &url, false).await;
    report("quorum-loss", &ours, &csm, "");
    drop(service);
    drop(sim);

    let full = simulated(SimOptions {
        etcd_quota_backend_bytes: Some(QUOTA),
        ..options(pod_delay)
    })
    .await;
    let url = full.etcd_url(STS).expect("BSS's client Service");
    let service = Service::start(&full).await;
    service.until_healthy().await;
    // CSM's way first: what it leaves (the alarm raised again by the next write) is what ours
    // then repairs.
    let member = full.etcd_members(STS).remove(0).client_url;
    let (csm_took, csm_lost, csm_room) = nospace(&service, &member, &url, false).await;
    let (ours_took, ours_lost, ours_room) = nospace(&service, &member, &url, true).await;
    assert_eq!(ours_lost, 0, "a repair lost keys");
    let ours_took = ours_took.expect("writable after the repair");
    println!(
        "repair scenario=nospace ours={}s csm={} ours_lost={ours_lost} csm_lost={csm_lost} \
         ours_headroom_puts={ours_room} csm_headroom_puts={csm_room} quota={QUOTA}",
        secs(ours_took),
        match csm_took {
            Some(took) => format!("{}s", secs(took)),
            None => format!("not-writable-within-{}s", CSM_WRITABLE_WITHIN.as_secs()),
        },
    );
}
