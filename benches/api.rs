//! API latency with a large history, and the runner's own overhead, each as a ratio to a
//! baseline measured in the same run (`cargo bench --bench api`). `BENCH_RUNS` sets the history
//! size (default 100 000), `BENCH_SAMPLES` the requests per endpoint (default 2000; the list
//! gets a quarter). The service is configured as `serve --simulate` configures it
//! ([`App::on_simulation`], less the simulated nodes' sshd, which reds and meds do not use),
//! so the bench runs what a user runs; the simulated cluster runs no
//! real etcd behind its etcd clusters (as `serve --simulate` where etcd is not installed), so
//! the etcd checks are off and the run's figure is the runner's own overhead. `scripts/test`
//! runs it once with small numbers so a bench that no longer works fails CI.

use std::time::{Duration, Instant};

use etcd_repopulator::{
    app::App,
    config::Config,
    model::{Service, new_run_id},
    store::{NewRun, NewStep, NewTask, Store},
};
use serde_json::json;
use sim::{SimCluster, SimOptions};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(http: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let resp = http.get(url).send().await.expect("request");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().await.expect("body");
        samples.push(start.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn fill_history(store: &Store, runs: usize) -> uuid::Uuid {
    let mut last = new_run_id();
    for i in 0..runs {
        last = new_run_id();
        let service = if i % 2 == 0 {
            Service::Reds
        } else {
            Service::Meds
        };
        store
            .create_run(
                NewRun {
                    id: last,
                    reason: Some(format!("bench {i}")),
                    dry_run: true,
                    requested_by: "bench".to_owned(),
                    idempotency: None,
                    csm_release: None,
                    etcd: Default::default(),
                    backup: None,
                    confirm: Vec::new(),
                    discard_newer: false,
                    tasks: vec![NewTask {
                        service,
                        steps: vec![NewStep {
                            name: "restart".to_owned(),
                            spec: json!({"action": "restart_pods"}),
                        }],
                    }],
                },
                chrono::Utc::now(),
            )
            .await
            .expect("insert");
    }
    last
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let runs = env_usize("BENCH_RUNS", 100_000).max(1);
    let n = env_usize("BENCH_SAMPLES", 2000).max(4);
    let delay = Duration::from_millis(300);
    let sim = SimCluster::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            kubelet_ready_delay: delay,
            pod_termination_delay: delay,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    sim.seed_csm().await.unwrap();
    sim.wait_settled(Duration::from_secs(60)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let app = App::on_simulation(db.to_str().unwrap(), Config::default(), &sim)
        .await
        .unwrap();
    let filled = Instant::now();
    let id = fill_history(&app.store, runs).await;
    eprintln!(
        "history of {runs} runs written in {:.1}s",
        filled.elapsed().as_secs_f64()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();

    measure(&http, &format!("{base}/healthz"), n / 10).await; // warm up
    let (h50, h99) = measure(&http, &format!("{base}/healthz"), n).await;
    let (g50, g99) = measure(&http, &format!("{base}/repopulations/{id}"), n).await;
    let (l50, l99) = measure(&http, &format!("{base}/repopulations?limit=50"), n / 4).await;
    println!(
        "healthz            p50={:.3}ms p99={:.3}ms (baseline)",
        ms(h50),
        ms(h99)
    );
    println!(
        "get run            p50={:.3}ms p99={:.3}ms ratio_p50={:.1} ratio_p99={:.1} (history={runs})",
        ms(g50),
        ms(g99),
        ms(g50) / ms(h50),
        ms(g99) / ms(h99)
    );
    println!(
        "list limit=50      p50={:.3}ms p99={:.3}ms ratio_p50={:.1} ratio_p99={:.1} (history={runs})",
        ms(l50),
        ms(l99),
        ms(l50) / ms(h50),
        ms(l99) / ms(h99)
    );

    // Our own overhead on a real run: POST to succeeded, minus the simulated cluster's delays
    // (old pods terminate and new pods become Ready concurrently, so the floor is one delay).
    let mut overheads = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let run: serde_json::Value = http
            .post(format!("{base}/repopulations"))
            .json(&json!({"services": ["reds", "meds"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        app.runner.idle().await;
        let elapsed = start.elapsed();
        let done: serde_json::Value = http
            .get(format!(
                "{base}/repopulations/{}",
                run["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(done["state"], "succeeded", "{done:#}");
        overheads.push(elapsed.saturating_sub(delay));
    }
    overheads.sort();
    println!(
        "reds+meds run      total-minus-sim-delay p50={:.1}ms (sim delay {}ms)",
        ms(percentile(&overheads, 0.5)),
        delay.as_millis()
    );
}
