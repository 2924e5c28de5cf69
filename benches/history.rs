//! The run history under load, against the service as `serve --simulate` runs it, in its own
//! process: `cargo bench --bench history`.
//!
//! 1. Writes a history of finished runs straight into a fresh database (batched inserts in one
//!    transaction); the service stores their documents when it opens the database.
//! 2. Starts `etcd-repopulator serve --simulate` on that database, waits for `/healthz`.
//! 3. Latency, one request at a time, in one run: `GET /healthz` (the baseline),
//!    `GET /repopulations/{id}` (random runs), `GET /repopulations?limit=50` (the first page, and
//!    pages at random depths).
//! 4. Load: `BENCH_READERS` concurrent readers of `GET /repopulations?limit=500` while
//!    `/healthz` and `/readyz` are probed; the service's peak RSS (its `VmHWM`, reset after
//!    start) against the Helm chart's memory request.
//!
//! Sizes (environment): `BENCH_RUNS` (history, default 100 000), `BENCH_SAMPLES` (requests per
//! latency measurement, default 2000), `BENCH_READERS` (default 200), `BENCH_LOAD_REQUESTS`
//! (list requests per reader, default 20). `BENCH_STRICT=1` exits non-zero when a goal is missed.
//! `scripts/test` runs a short mode.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use etcd_repopulator::{model::new_run_id, store::Store};
use futures::future::join_all;
use rand::seq::IndexedRandom;
use serde_json::json;
use sqlx::{Connection, QueryBuilder, SqliteConnection};
use tokio::sync::Mutex;
use uuid::Uuid;

const LIST_LIMIT: u32 = 50;
const LOAD_LIMIT: u32 = 500;
/// How often `/healthz` and `/readyz` are probed during the load.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Rows per INSERT statement while seeding.
const SEED_CHUNK: usize = 200;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// One finished run of the seeded history: `(service, pods)` shapes what a small real run of
/// reds or meds stores (the pods it planned and restarted).
struct Seed {
    id: Uuid,
    service: &'static str,
    state: &'static str,
    dry_run: bool,
}

fn seed_of(i: usize) -> Seed {
    let service = if i.is_multiple_of(2) { "reds" } else { "meds" };
    Seed {
        id: new_run_id(),
        service,
        state: match i % 10 {
            0 => "failed",
            1 => "action_required",
            _ => "succeeded",
        },
        dry_run: i.is_multiple_of(3),
    }
}

/// Writes `runs` finished runs in one transaction; returns their ids, oldest first.
async fn seed_history(db: &Path, runs: usize) -> Vec<Uuid> {
    // Creates the database and its schema as the service does.
    drop(Store::open(db.to_str().unwrap()).await.expect("open store"));
    let mut conn = SqliteConnection::connect(&format!("sqlite:{}", db.display()))
        .await
        .expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    let now = Utc::now();
    let mut ids = Vec::with_capacity(runs);
    let seeds: Vec<Seed> = (0..runs).map(seed_of).collect();
    for chunk in seeds.chunks(SEED_CHUNK) {
        let mut insert = QueryBuilder::new(
            "INSERT INTO runs (id, state, reason, dry_run, requested_by, attempt, message, \
             created_at, started_at, finished_at) ",
        );
        insert.push_values(chunk, |mut row, seed| {
            let message = match seed.state {
                "failed" => format!("1 failed: {}", seed.service),
                "action_required" => format!("1 needs action: {}", seed.service),
                _ => "1 succeeded".to_owned(),
            };
            row.push_bind(seed.id.to_string())
                .push_bind(seed.state)
                .push_bind(format!("cray-{}-etcd rebuilt", seed.service))
                .push_bind(seed.dry_run)
                .push_bind("bench")
                .push_bind(1)
                .push_bind(message)
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        insert.build().execute(&mut *tx).await.expect("insert runs");
        let mut insert = QueryBuilder::new(
            "INSERT INTO tasks (run_id, service, state, message, attempt, started_at, finished_at) ",
        );
        insert.push_values(chunk, |mut row, seed| {
            row.push_bind(seed.id.to_string())
                .push_bind(seed.service)
                .push_bind(seed.state)
                .push_bind(format!("{}: pods restarted", seed.state))
                .push_bind(1)
                .push_bind(now)
                .push_bind(now);
        });
        insert
            .build()
            .execute(&mut *tx)
            .await
            .expect("insert tasks");
        let mut insert = QueryBuilder::new(
            "INSERT INTO steps (run_id, service, ordinal, name, spec, state, message, data, \
             started_at, finished_at) ",
        );
        insert.push_values(chunk, |mut row, seed| {
            let selector = format!("app.kubernetes.io/name=cray-{}", seed.service);
            let pods: Vec<String> = (0..3)
                .map(|n| format!("cray-{}-7d9f8c6b5-{n}x2kq", seed.service))
                .collect();
            let step = format!("restart-{}-pods", seed.service);
            row.push_bind(seed.id.to_string())
                .push_bind(seed.service)
                .push_bind(0)
                .push_bind(step.clone())
                .push_bind(
                    json!({"action": "restart_pods", "selector": selector, "namespace": "services"})
                        .to_string(),
                )
                .push_bind(seed.state)
                .push_bind(format!(
                    "restarted {} pod(s) matching {selector}",
                    pods.len()
                ))
                .push_bind(
                    json!({
                        "plan": {"namespace": "services", "selector": selector, "pods": pods},
                        "new_pods": pods.iter().map(|p| format!("{p}-new")).collect::<Vec<_>>(),
                        "ready": pods.len(),
                    })
                    .to_string(),
                )
                .push_bind(now)
                .push_bind(now);
        });
        insert
            .build()
            .execute(&mut *tx)
            .await
            .expect("insert steps");
        ids.extend(chunk.iter().map(|s| s.id));
    }
    tx.commit().await.expect("commit");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    ids
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db: &Path, log: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
            .args(["serve", "--simulate", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database")
            .arg(db)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd-repopulator serve --simulate");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `VmHWM` (peak resident set) or `VmRSS` of the service, in bytes.
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// Starts counting the peak resident set again from now (`clear_refs` 5, Linux 4.0+).
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("reset the peak RSS");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Duration {
    let start = Instant::now();
    let resp = http.get(url).send().await.expect("request");
    let status = resp.status();
    resp.bytes().await.expect("body");
    assert!(status.is_success(), "{url}: {status}");
    start.elapsed()
}

/// `n` rounds of one request to each of `kinds` in turn (so that the machine's own noise falls
/// on all of them alike), cycling through each kind's URLs; percentiles per kind.
async fn measure(http: &reqwest::Client, kinds: &[&[String]], n: usize) -> Vec<Percentiles> {
    let mut samples = vec![Vec::with_capacity(n); kinds.len()];
    for i in 0..n {
        for (urls, samples) in kinds.iter().zip(&mut samples) {
            samples.push(get(http, &urls[i % urls.len()]).await);
        }
    }
    samples.into_iter().map(percentiles).collect()
}

/// The `next_cursor` at the end of a page, found without parsing the whole page (the readers
/// must not take the processor time the service needs).
fn next_cursor(page: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(page).expect("UTF-8");
    let (_, tail) = text.rsplit_once("\"next_cursor\":")?;
    let tail = tail.strip_prefix('"')?;
    Some(tail.split_once('"')?.0.to_owned())
}

/// The chart's memory request (`resources.requests.memory` in values.yaml), in bytes.
fn chart_memory_request() -> u64 {
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/etcd-repopulator/values.yaml"
    ))
    .expect("read the chart's values.yaml");
    let mut section = Vec::<(usize, String)>::new();
    for line in values.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        section.retain(|(i, _)| *i < indent);
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let path: Vec<&str> = section.iter().map(|(_, k)| k.as_str()).collect();
        if path == ["resources", "requests"] && key == "memory" {
            let value = value.trim().trim_matches('"');
            let (number, unit) = value.split_at(
                value
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(value.len()),
            );
            let number: u64 = number.parse().expect("a memory quantity");
            return number
                * match unit {
                    "Ki" => 1 << 10,
                    "Mi" => 1 << 20,
                    "Gi" => 1 << 30,
                    "" => 1,
                    other => panic!("unexpected unit {other:?} in resources.requests.memory"),
                };
        }
        section.push((indent, key.to_owned()));
    }
    panic!("no resources.requests.memory in the chart's values.yaml")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn goal(ok: bool, what: String, missed: &mut Vec<String>) {
    println!("goal {}: {what}", if ok { "met" } else { "MISSED" });
    if !ok {
        missed.push(what);
    }
}

#[tokio::main]
async fn main() {
    let runs = env_usize("BENCH_RUNS", 100_000);
    let samples = env_usize("BENCH_SAMPLES", 2000);
    let readers = env_usize("BENCH_READERS", 200);
    let load_requests = env_usize("BENCH_LOAD_REQUESTS", 20);
    let strict = std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1");

    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("history.db");
    let seeded = Instant::now();
    let ids = seed_history(&db, runs).await;
    println!(
        "history: {runs} runs written in {:.1}s ({:.0} MiB database)",
        seeded.elapsed().as_secs_f64(),
        mib(std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0))
    );

    let started = Instant::now();
    let log = dir.path().join("serve.log");
    let server = Server::start(&db, &log);
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.base);
    while http.get(&health).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the service did not answer: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "serve --simulate answering after {:.1}s (stores the documents of the history it finds); \
         peak RSS at start {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(server.memory("VmHWM"))
    );

    // Latency, one request at a time, all in this one run, the kinds interleaved.
    let mut rng = rand::rng();
    let base = &server.base;
    let run_url = |rng: &mut rand::rngs::ThreadRng| -> String {
        format!("{base}/repopulations/{}", ids.choose(rng).expect("runs"))
    };
    let health_urls = [health.clone()];
    // Runs read again (the recent ones people look at), and runs read for the first time.
    let again: Vec<String> = (0..100).map(|_| run_url(&mut rng)).collect();
    let first_time: Vec<String> = (0..samples).map(|_| run_url(&mut rng)).collect();
    let first_page = [format!("{base}/repopulations?limit={LIST_LIMIT}")];
    let deep_pages: Vec<String> = (0..samples)
        .map(|_| {
            let id = ids.choose(&mut rng).expect("runs");
            format!("{base}/repopulations?limit={LIST_LIMIT}&cursor={id}")
        })
        .collect();
    measure(
        &http,
        &[&health_urls, &again, &first_page],
        samples / 10 + 1,
    )
    .await; // warm up
    let [healthz, get_again, get_first, list_first, list_deep] = measure(
        &http,
        &[&health_urls, &again, &first_time, &first_page, &deep_pages],
        samples,
    )
    .await[..] else {
        unreachable!("five kinds measured")
    };
    let line = |what: &str, p: Percentiles| {
        println!(
            "{what:<52} p50={:.3}ms p99={:.3}ms ratio_p99={:.1}",
            ms(p.p50),
            ms(p.p99),
            ms(p.p99) / ms(healthz.p99)
        );
    };
    line("GET /healthz (baseline)", healthz);
    line("GET /repopulations/{id} (100 runs, read again)", get_again);
    line(
        "GET /repopulations/{id} (random runs, first read)",
        get_first,
    );
    line(
        &format!("GET /repopulations?limit={LIST_LIMIT} (first page)"),
        list_first,
    );
    line(
        &format!("GET /repopulations?limit={LIST_LIMIT} (random depth, first read)"),
        list_deep,
    );

    // Load: concurrent readers of the largest pages, with /healthz and /readyz probed meanwhile.
    // Half of them read the first page again and again (a dashboard); the other half each page
    // through the history from a random point (an export), every page a first read.
    server.reset_peak();
    let rss_before = server.memory("VmRSS");
    let load_http = reqwest::Client::builder()
        .pool_max_idle_per_host(readers)
        .build()
        .expect("client");
    let list_url = format!("{base}/repopulations?limit={LOAD_LIMIT}");
    let done = Arc::new(tokio::sync::Notify::new());
    let probes = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let prober = {
        let (http, probes, done) = (http.clone(), probes.clone(), done.clone());
        let (healthz, readyz) = (health.clone(), format!("{base}/readyz"));
        tokio::spawn(async move {
            let stop = done.notified();
            tokio::pin!(stop);
            loop {
                let h = get(&http, &healthz).await;
                let r = get(&http, &readyz).await;
                {
                    let mut probes = probes.lock().await;
                    probes.0.push(h);
                    probes.1.push(r);
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                }
            }
        })
    };
    let load_started = Instant::now();
    let starts: Vec<Uuid> = (0..readers)
        .map(|_| *ids.choose(&mut rng).expect("runs"))
        .collect();
    let load = join_all(starts.into_iter().enumerate().map(|(reader, start)| {
        let (http, first_page) = (load_http.clone(), list_url.clone());
        let pages_through = reader % 2 == 1;
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(load_requests);
            let mut cursor = Some(start.to_string());
            for _ in 0..load_requests {
                let url = match (&cursor, pages_through) {
                    (Some(cursor), true) => format!("{first_page}&cursor={cursor}"),
                    _ => first_page.clone(),
                };
                let started = Instant::now();
                let page = http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .expect("list")
                    .bytes()
                    .await
                    .expect("a page");
                latencies.push((pages_through, started.elapsed()));
                cursor = next_cursor(&page);
            }
            latencies
        })
    }))
    .await;
    let load_time = load_started.elapsed();
    done.notify_one();
    prober.await.expect("prober");
    let peak = server.memory("VmHWM");
    let latencies: Vec<(bool, Duration)> =
        load.into_iter().flat_map(|r| r.expect("reader")).collect();
    let of = |paging: bool| -> Percentiles {
        percentiles(
            latencies
                .iter()
                .filter(|(p, _)| *p == paging)
                .map(|(_, d)| *d)
                .collect(),
        )
    };
    let (list_load, paging_load) = (of(false), of(true));
    let (health_probes, ready_probes) = std::mem::take(&mut *probes.lock().await);
    let probes_n = health_probes.len();
    let healthz_load = percentiles(health_probes);
    let readyz_load = percentiles(ready_probes);
    println!(
        "load: {readers} readers x {load_requests} GET /repopulations?limit={LOAD_LIMIT} in {:.1}s \
         ({:.0} req/s)",
        load_time.as_secs_f64(),
        (readers * load_requests) as f64 / load_time.as_secs_f64(),
    );
    for (what, p) in [
        ("the first page, again", list_load),
        ("paging through, first reads", paging_load),
    ] {
        println!(
            "during the load, {what:<28} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            ms(p.p50),
            ms(p.p99),
            ms(p.max)
        );
    }
    for (what, p) in [
        (format!("/healthz ({probes_n} probes)"), healthz_load),
        (format!("/readyz ({probes_n} probes)"), readyz_load),
    ] {
        println!(
            "during the load, {what:<28} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            ms(p.p50),
            ms(p.p99),
            ms(p.max)
        );
    }
    let request = chart_memory_request();
    println!(
        "service RSS before the load {:.1} MiB, peak during it {:.1} MiB; chart memory request {:.0} MiB",
        mib(rss_before),
        mib(peak),
        mib(request)
    );

    let mut missed = Vec::new();
    goal(
        ms(list_first.p99) <= 5.0 * ms(healthz.p99),
        format!(
            "list p99 {:.3}ms <= 5 x /healthz p99 {:.3}ms",
            ms(list_first.p99),
            ms(healthz.p99)
        ),
        &mut missed,
    );
    for (which, p) in [("read again", get_again), ("first read", get_first)] {
        goal(
            ms(p.p99) <= 2.0 * ms(healthz.p99),
            format!(
                "GET /repopulations/{{id}} ({which}) p99 {:.3}ms <= 2 x /healthz p99 {:.3}ms",
                ms(p.p99),
                ms(healthz.p99)
            ),
            &mut missed,
        );
    }
    goal(
        peak < request,
        format!(
            "peak RSS under {readers} list readers {:.1} MiB < chart request {:.0} MiB",
            mib(peak),
            mib(request)
        ),
        &mut missed,
    );
    if strict && !missed.is_empty() {
        eprintln!("BENCH_STRICT=1 and {} goal(s) missed", missed.len());
        std::process::exit(1);
    }
}
