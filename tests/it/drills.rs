//! Restore drills (`crate::drills`, `POST/GET /etcd-clusters/{name}/drills`, the CLI's
//! `etcd-clusters drill`) on the simulated CSM 1.6 with real etcd behind its clusters and real
//! backups in its snapshotter directory: the seeded backups restored by the real `etcdctl`,
//! served by a real `etcd`, compared with the live clusters; bad backups failing; every ending
//! (passed, failed, cancelled by a shutdown, timed out, a crash of the service) leaving no
//! directory and no process behind.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use etcd_repopulator::config::Config;

use crate::common::{self, TestApp};

const BSS: &str = "cray-bss-bitnami-etcd";
const CLUSTERS: [&str; 4] = [
    "cray-bos-bitnami-etcd",
    BSS,
    "cray-fas-bitnami-etcd",
    "cray-hmnfd-bitnami-etcd",
];
/// How long a test waits for drills: each restores and serves a backup with real etcd on a
/// shared machine.
const DRILL_WAIT: Duration = Duration::from_secs(120);

/// The service's configuration with its drills' scratch directory in `scratch`.
fn config(scratch: &Path) -> Config {
    let mut config = Config::default();
    config.drills.scratch_dir = scratch.to_owned();
    config
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Polls `check` until it finds something, up to [`DRILL_WAIT`]; panics naming `what`.
async fn until_drilled<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    tokio::time::timeout(DRILL_WAIT, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            // Polling a condition with a deadline.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// POSTs a drill of `cluster` (with `body`, if any); the started drill.
pub(crate) async fn start_drill(app: &TestApp, cluster: &str, body: Option<Value>) -> Value {
    let mut request = app
        .http
        .post(app.url(&format!("/etcd-clusters/{cluster}/drills")));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let (status, drill) = common::json(resp).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{drill:#}");
    assert_eq!(drill["state"], "running", "{drill:#}");
    assert_eq!(
        location.as_deref(),
        Some(
            format!(
                "/etcd-clusters/{cluster}/drills/{}",
                drill["id"].as_str().unwrap()
            )
            .as_str()
        )
    );
    drill
}

/// `method` on `path` (with `body`, if any), refused with `status`: the problem.
async fn refused(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: StatusCode,
) -> Value {
    let mut request = app.http.request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    common::problem(request.send().await.unwrap(), status).await
}

/// The drill `id` of `cluster` once it has ended.
pub(crate) async fn ended(app: &TestApp, cluster: &str, id: &str) -> Value {
    let path = format!("/etcd-clusters/{cluster}/drills/{id}");
    until_drilled(&format!("drill {id} to end"), async || {
        let (status, drill) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{drill:#}");
        (drill["state"] != "running").then_some(drill)
    })
    .await
}

/// The row of `data` in a drill's report.
fn data<'a>(drill: &'a Value, data: &str, prefix: &str) -> &'a Value {
    drill["report"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["data"] == data && d["prefix"] == prefix)
        .unwrap_or_else(|| panic!("no {data} {prefix} in {drill:#}"))
}

/// The processes whose command line names `dir` (a scratch etcd, a restore tool).
fn processes_on(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
                && running(*pid)
        })
        .collect()
}

/// The process `pid` runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        )
    })
}

/// Nothing of any drill is left in `scratch`: no directory, no process.
fn nothing_left(scratch: &Path) {
    let left: Vec<PathBuf> = std::fs::read_dir(scratch)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        processes_on(scratch),
        Vec::<u32>::new(),
        "processes left behind"
    );
}

/// The pid of the scratch etcd of the one drill running in `scratch`, once it serves.
async fn serving_etcd(scratch: &Path) -> u32 {
    until_drilled("the scratch etcd to run", async || {
        let dir = std::fs::read_dir(scratch).ok()?.flatten().next()?.path();
        let pid = std::fs::read_to_string(dir.join("etcd.pid")).ok()?;
        pid.trim().parse().ok().filter(|&pid| running(pid))
    })
    .await
}

/// The `/metrics` line of `metric` for `cluster`.
fn metric_line(metrics: &str, metric: &str, cluster: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("etcd_repopulator_{metric}{{cluster=\"{cluster}\"")))
        .map(str::to_owned)
}

/// The seeded backup of `cluster` in the simulated snapshotter directory: its name and path.
fn seeded_backup(sim: &sim::SimCluster, cluster: &str) -> (String, PathBuf) {
    let dir = sim.snapshots_dir().unwrap().join(cluster);
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a seeded backup");
    (path.file_name().unwrap().to_str().unwrap().to_owned(), path)
}

#[tokio::test]
async fn the_schedule_drills_every_cluster_one_at_a_time_and_each_passes_leaving_nothing() {
    let sim = common::real_etcd_sim("1.6").await;
    let bss_keys = sim.bss_key_count().await.unwrap() as u64;
    assert!(bss_keys > 1);
    let (bss_backup, _) = seeded_backup(&sim, BSS);
    let scratch = tempfile::tempdir().unwrap();
    let app = common::start_on(sim, config(scratch.path())).await;

    let schedule = app.drills.schedule();
    let drills = until_drilled("a scheduled drill of every cluster", async || {
        let mut all = Vec::new();
        for cluster in CLUSTERS {
            let (_, list) = app.get(&format!("/etcd-clusters/{cluster}/drills")).await;
            let newest = list["items"].get(0)?.clone();
            if newest["state"] == "running" {
                return None;
            }
            all.push(newest);
        }
        Some(all)
    })
    .await;
    drop(schedule);
    for drill in &drills {
        assert_eq!(drill["state"], "passed", "{drill:#}");
        assert_eq!(drill["trigger"], "schedule");
        let report = &drill["report"];
        assert_eq!(report["problems"], json!([]), "{drill:#}");
        // Proven by the real tool and served by a real etcd, exactly what the file holds.
        assert_eq!(report["integrity"]["proof"]["by"], "restore", "{drill:#}");
        assert_eq!(report["restore"]["tool"], "etcdctl");
        assert_eq!(
            report["scratch_etcd"]["keys"],
            report["integrity"]["snapshot"]["live_keys"]
        );
        assert!(
            report["scratch_etcd"]["url"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:")
        );
        assert!(drill["restore_seconds"].as_f64().unwrap() > 0.0);
        assert!(drill["backup_age_seconds"].as_u64().unwrap() < 3600);
        assert!(report["live"]["error"].is_null(), "{drill:#}");
    }
    // One at a time.
    let mut spans: Vec<(&str, &str)> = drills
        .iter()
        .map(|d| {
            (
                d["started_at"].as_str().unwrap(),
                d["finished_at"].as_str().unwrap(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let (earlier, later) = (
            chrono::DateTime::parse_from_rfc3339(pair[0].1).unwrap(),
            chrono::DateTime::parse_from_rfc3339(pair[1].0).unwrap(),
        );
        assert!(earlier <= later, "drills overlapped: {spans:?}");
    }
    // BSS's boot parameters: all of them in the backup, as many live, none written or deleted
    // since.
    let bss = &drills[1];
    assert_eq!(bss["backup"], bss_backup.as_str());
    let params = data(bss, "boot parameters", "/params/");
    assert_eq!(params["known"], true);
    assert_eq!(params["backup_keys"], bss_keys, "{bss:#}");
    assert_eq!(params["live_keys"], bss_keys);
    assert_eq!(
        (&params["only_live"], &params["only_backup"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(
        bss["backup_revision"],
        bss["report"]["scratch_etcd"]["revision"]
    );
    assert!(
        bss["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("boot parameters {bss_keys} (the same keys live)")),
        "{bss:#}"
    );
    nothing_left(scratch.path());

    // The listing of backups shows the last drill of each.
    let (status, backups) = app.get(&format!("/etcd-clusters/{BSS}/backups")).await;
    assert_eq!(status, StatusCode::OK, "{backups:#}");
    let listed = &backups["items"][0];
    assert_eq!(listed["name"], bss_backup.as_str());
    assert_eq!(listed["drill"]["id"], bss["id"]);
    assert_eq!(listed["drill"]["passed"], true);
    assert_eq!(
        listed["check"]["ok"], true,
        "the drill's check is remembered: {listed:#}"
    );

    // /metrics has each cluster's drill, and keeps it across a restart (from the store).
    let metrics = app.metrics().await;
    for cluster in CLUSTERS {
        let line = metric_line(&metrics, "drill_last_success", cluster)
            .unwrap_or_else(|| panic!("no drill_last_success of {cluster}:\n{metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    let app = app.restart_with(config(scratch.path())).await;
    let metrics = app.metrics().await;
    let line = metric_line(&metrics, "drill_last_success", BSS).expect("kept across a restart");
    assert!(line.ends_with(" 1"), "{line}");
    let at = metric_line(&metrics, "drill_last_timestamp_seconds", BSS).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(bss["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        at.ends_with(&format!(" {finished}")),
        "{at} (finished {finished})"
    );
}

#[tokio::test]
async fn keys_written_and_deleted_after_the_backup_show_as_only_live_and_only_in_the_backup() {
    let sim = common::real_etcd_sim("1.6").await;
    let keys = sim.bss_key_count().await.unwrap() as u64;
    let (backup, _) = seeded_backup(&sim, BSS);
    let url = sim.etcd_url(BSS).unwrap();
    // Since the backup: three nodes' boot parameters written, one deleted, and a key of no
    // known prefix.
    for node in ["x9000c0s1b0n0", "x9000c0s2b0n0", "x9000c0s3b0n0"] {
        common::etcd_put(&url, &format!("/params/{node}"), "{}").await;
    }
    common::etcd_put(&url, "/extra/one", "1").await;
    let listed = common::etcd::gateway(
        &url,
        "/v3/kv/range",
        json!({ "key": b64("/params/"), "range_end": b64("/params0"), "keys_only": true, "limit": 1 }),
    )
    .await;
    let deleted = listed["kvs"][0]["key"].as_str().unwrap().to_owned();
    common::etcd::gateway(&url, "/v3/kv/deleterange", json!({ "key": deleted })).await;
    let scratch = tempfile::tempdir().unwrap();
    let app = common::start_on(sim, config(scratch.path())).await;

    // Through the CLI, which waits for the drill's end (and exits 0: it passed).
    let printed = crate::backups::cli(
        &app.base,
        &[
            "etcd-clusters",
            "drill",
            BSS,
            "--backup",
            &backup,
            "--format",
            "json",
        ],
    )
    .await;
    let drill: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(drill["state"], "passed", "{drill:#}");
    assert_eq!(drill["trigger"], "api");
    assert_eq!(drill["backup"], backup.as_str());
    let params = data(&drill, "boot parameters", "/params/");
    assert_eq!(params["backup_keys"], keys);
    assert_eq!(params["live_keys"], keys + 3 - 1);
    assert_eq!(params["only_live"], 3, "written since: {drill:#}");
    assert_eq!(params["only_backup"], 1, "deleted since: {drill:#}");
    assert_eq!(params["modified_since"], 0);
    let extra = data(&drill, "first path segment", "/extra/");
    assert_eq!(extra["known"], false);
    assert_eq!(
        (&extra["backup_keys"], &extra["only_live"]),
        (&json!(0), &json!(1))
    );
    assert!(drill["live_revision"].as_u64().unwrap() > drill["backup_revision"].as_u64().unwrap());
    nothing_left(scratch.path());

    // The table: the counts by data, backup against live.
    let table = crate::backups::cli(
        &app.base,
        &["etcd-clusters", "drills", BSS, "--format", "table"],
    )
    .await;
    assert!(
        table.contains("passed") && table.contains(&backup),
        "{table}"
    );
}

#[tokio::test]
async fn a_corrupted_an_empty_and_a_truncated_backup_each_fail_saying_what_is_wrong() {
    let sim = common::real_etcd_sim("1.6").await;
    let (_, good) = seeded_backup(&sim, BSS);
    let bytes = std::fs::read(&good).unwrap();
    let dir = good.parent().unwrap();
    let mut corrupted = bytes.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    std::fs::write(dir.join("db-corrupted"), &corrupted).unwrap();
    std::fs::write(dir.join("db-empty"), b"").unwrap();
    std::fs::write(dir.join("db-truncated"), &bytes[..bytes.len() / 2 + 100]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let app = common::start_on(sim, config(scratch.path())).await;

    for (backup, reason) in [
        ("db-corrupted", "SHA-256"),
        ("db-empty", "empty (0 bytes)"),
        ("db-truncated", "truncated"),
    ] {
        let started = start_drill(&app, BSS, Some(json!({ "backup": backup }))).await;
        let drill = ended(&app, BSS, started["id"].as_str().unwrap()).await;
        assert_eq!(drill["state"], "failed", "{drill:#}");
        let detail = drill["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{backup}: ")) && detail.contains(reason),
            "{backup}: {detail}"
        );
        assert!(
            drill["report"]["scratch_etcd"].is_null(),
            "never served: {drill:#}"
        );
        nothing_left(scratch.path());
    }
    // The listing: each unusable (its check failed), each with its failed drill.
    let (_, backups) = app.get(&format!("/etcd-clusters/{BSS}/backups")).await;
    for backup in ["db-corrupted", "db-empty", "db-truncated"] {
        let listed = backups["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == backup)
            .unwrap();
        assert_eq!(listed["usable"], false, "{listed:#}");
        assert_eq!(listed["drill"]["passed"], false, "{listed:#}");
    }
    // Newest first, at most `limit`.
    let (status, list) = app
        .get(&format!("/etcd-clusters/{BSS}/drills?limit=2"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["backup"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-truncated", "db-empty"]);
    let metrics = app.metrics().await;
    let line = metric_line(&metrics, "drill_last_success", BSS).unwrap();
    assert!(line.ends_with(" 0"), "{line}");

    // What the caller gets wrong.
    let drills = format!("/etcd-clusters/{BSS}/drills");
    let unknown = json!({ "backup": "db-nonexistent" });
    let problem = refused(
        &app,
        Method::POST,
        &drills,
        Some(unknown),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("db-nonexistent")
    );
    let typo = json!({ "backups": "x" });
    refused(
        &app,
        Method::POST,
        &drills,
        Some(typo),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let nothing = "/etcd-clusters/cray-nothing-bitnami-etcd/drills";
    refused(&app, Method::POST, nothing, None, StatusCode::NOT_FOUND).await;
    let malformed = format!("{drills}/not-a-uuid");
    refused(&app, Method::GET, &malformed, None, StatusCode::BAD_REQUEST).await;
    let unknown = format!("{drills}/{}", uuid::Uuid::now_v7());
    refused(&app, Method::GET, &unknown, None, StatusCode::NOT_FOUND).await;
}

/// A live cluster that accepts connections and never answers: a drill waits on it (up to
/// `[etcd] timeout`) with its scratch etcd running.
async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_drill_cut_short_by_a_shutdown_or_its_timeout_leaves_nothing_and_one_runs_at_a_time() {
    let sim = common::real_etcd_sim("1.6").await;
    let (silent, _listener) = silent_endpoint().await;
    let scratch = tempfile::tempdir().unwrap();
    let hung = |timeout: Duration| {
        let mut config = config(scratch.path());
        config.etcd.endpoint = silent.clone();
        config.etcd.timeout = Duration::from_secs(120);
        config.drills.timeout = timeout;
        config
    };
    let app = common::start_on(sim, hung(Duration::from_secs(600))).await;

    let first = start_drill(&app, BSS, None).await;
    let id = first["id"].as_str().unwrap();
    let etcd = serving_etcd(scratch.path()).await;
    // One drill of a cluster at a time: the second names the first.
    let drills = format!("/etcd-clusters/{BSS}/drills");
    let problem = refused(&app, Method::POST, &drills, None, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains(id),
        "{problem:#}"
    );
    // The service stops: the drill is cancelled, its etcd killed, its directory removed.
    app.drills.shutdown(common::WAIT).await;
    assert!(!running(etcd), "etcd {etcd} still runs");
    nothing_left(scratch.path());
    let (_, drill) = app.get(&format!("/etcd-clusters/{BSS}/drills/{id}")).await;
    assert_eq!(drill["state"], "cancelled", "{drill:#}");
    // Stopped, it starts no more.
    refused(
        &app,
        Method::POST,
        &drills,
        None,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;

    // A drill longer than [drills] timeout ends `error`, leaving nothing either.
    let app = app.restart_with(hung(Duration::from_secs(15))).await;
    let started = start_drill(&app, BSS, None).await;
    let etcd = serving_etcd(scratch.path()).await;
    let drill = ended(&app, BSS, started["id"].as_str().unwrap()).await;
    assert_eq!(drill["state"], "error", "{drill:#}");
    assert!(
        drill["detail"]
            .as_str()
            .unwrap()
            .contains("did not finish within 15s ([drills] timeout)"),
        "{drill:#}"
    );
    assert!(!running(etcd), "etcd {etcd} still runs");
    nothing_left(scratch.path());
    let metrics = app.metrics().await;
    let line = metric_line(&metrics, "drill_last_success", BSS).unwrap();
    assert!(line.ends_with(" 0"), "an error proves nothing: {line}");
}

/// A crash of the service (a real process, aborted while its drill's etcd serves): the next
/// process marks the drill interrupted, kills the etcd the crash left running and removes its
/// directory.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_crashed_drills_etcd_and_directory_are_removed_at_the_next_start() {
    use crate::restart::{ConfigFile, spawn_service, write_kubeconfig};

    let sim = common::real_etcd_sim("1.6").await;
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    write_kubeconfig(&sim, dir.path());
    ConfigFile::simulated(&sim, config(&scratch)).write(dir.path());

    let mut first = spawn_service(dir.path(), Some("drill:etcd-serving")).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/etcd-clusters/{BSS}/drills", first.base))
        .send()
        .await
        .unwrap();
    let (status, drill) = common::json(resp).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{drill:#}");
    let id = drill["id"].as_str().unwrap().to_owned();
    let status = tokio::task::spawn_blocking(move || first.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the failpoint aborted the service");
    let left = scratch.join(format!("drill-{id}"));
    let etcd: u32 = std::fs::read_to_string(left.join("etcd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(running(etcd), "the crash left its etcd running");

    let second = spawn_service(dir.path(), None).await;
    assert!(!left.exists(), "the next start removed {}", left.display());
    assert!(!running(etcd), "the next start killed etcd {etcd}");
    assert_eq!(processes_on(&scratch), Vec::<u32>::new());
    let drill: Value = reqwest::get(format!("{}/etcd-clusters/{BSS}/drills/{id}", second.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drill["state"], "interrupted", "{drill:#}");
}
