//! The etcd clusters' backups (`etcd::backups`, `GET /etcd-clusters/{name}/backups`, the CLI's
//! `etcd-clusters backups`) against a real S3 server (the simulated cluster's s3s-fs, with
//! CSM's bucket and Secret), a snapshotter directory, and a real etcd for the safety snapshots;
//! their checks (`etcd::snapshot_db`, `etcd::backups::check`, `POST
//! /etcd-clusters/{name}/backups/{backup}/check`) on snapshots made by the real `etcdctl`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use etcd_repopulator::{
    config::{Config, RecoveryConfig},
    etcd::{
        EtcdClient, EtcdConfig,
        backups::{Backup, BackupError, Backups, check::check_backup_file, verify_snapshot},
        restore_tool::Proof,
        snapshot_db,
    },
};
use object_store::{ObjectStoreExt as _, path::Path as S3Path};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use sim::{SimCluster, SimOptions};

use crate::common::{self, etcd::Etcd};

const SERVICE: &str = "cray-bss";
const STS: &str = "cray-bss-bitnami-etcd";
const HOUR: u64 = 3600;

/// A well-formed etcd snapshot: `pages` of 512 bytes of `fill`, then their SHA-256.
fn snapshot_bytes(pages: usize, fill: u8) -> Vec<u8> {
    let mut data = vec![fill; pages * 512];
    let sha = Sha256::digest(&data);
    data.extend_from_slice(&sha);
    data
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// A simulated CSM 1.6 (Bitnami etcd clusters) with its S3.
async fn sim_with_s3() -> SimCluster {
    common::release_sim(
        "1.6",
        SimOptions {
            s3: true,
            ..SimOptions::default()
        },
    )
    .await
}

/// Puts `data` at `etcd-backup/<key>` through the S3 API, aged `age`.
async fn put_s3(sim: &SimCluster, key: &str, data: Vec<u8>, age: Duration) {
    let s3 = sim.s3().unwrap();
    s3.client()
        .unwrap()
        .put(&S3Path::from(key), data.into())
        .await
        .unwrap();
    set_age(&s3.object_path(key), age);
}

/// Writes `data` at `<dir>/<sts>/<name>`, aged `age`.
fn put_dir(dir: &Path, name: &str, data: &[u8], age: Duration) -> PathBuf {
    let path = dir.join(STS).join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    set_age(&path, age);
    path
}

fn recovery(sim: &SimCluster, snapshots: &Path) -> RecoveryConfig {
    RecoveryConfig {
        snapshots_dir: snapshots.to_owned(),
        s3_credentials_dir: sim.s3().unwrap().credentials_dir().to_owned(),
        ..RecoveryConfig::default()
    }
}

fn names(backups: &[Backup]) -> Vec<&str> {
    backups.iter().map(|b| b.name.as_str()).collect()
}

/// Three backups: one only in S3 (2 days old), one in both places (5 hours), one only in the
/// snapshotter directory (1 hour); and objects of other services and folders that are not
/// backups of cray-bss.
async fn seed_backups(sim: &SimCluster, snapshots: &Path) {
    put_s3(
        sim,
        "cray-bss/db-old",
        snapshot_bytes(4, 1),
        Duration::from_secs(48 * HOUR),
    )
    .await;
    put_s3(
        sim,
        "cray-bss/db-both",
        snapshot_bytes(2, 2),
        Duration::from_secs(4 * HOUR),
    )
    .await;
    put_dir(
        snapshots,
        "db-both",
        &snapshot_bytes(2, 2),
        Duration::from_secs(5 * HOUR),
    );
    put_dir(
        snapshots,
        "db-new",
        &snapshot_bytes(1, 3),
        Duration::from_secs(HOUR),
    );
    put_s3(
        sim,
        "cray-bos/db-other",
        snapshot_bytes(1, 4),
        Duration::ZERO,
    )
    .await;
    put_s3(
        sim,
        "cray-bss-x/db-other",
        snapshot_bytes(1, 4),
        Duration::ZERO,
    )
    .await;
    put_s3(
        sim,
        "cray-bss/nested/db-deeper",
        snapshot_bytes(1, 4),
        Duration::ZERO,
    )
    .await;
    put_dir(snapshots, ".hidden", b"partial", Duration::ZERO);
}

#[tokio::test]
async fn s3_and_the_snapshotter_dir_are_merged_newest_first_with_their_ages() {
    let sim = sim_with_s3().await;
    let snapshots = tempfile::tempdir().unwrap();
    seed_backups(&sim, snapshots.path()).await;
    let backups = Backups::new(&recovery(&sim, snapshots.path()));
    let listed = backups.list(SERVICE, STS).await.unwrap();
    assert_eq!(names(&listed), ["db-new", "db-both", "db-old"]);

    let [new, both, old] = &listed[..] else {
        unreachable!()
    };
    assert_eq!(new.s3, None);
    assert_eq!(
        new.snapshotter.as_ref().unwrap().location,
        snapshots
            .path()
            .join(STS)
            .join("db-new")
            .display()
            .to_string()
    );
    assert_eq!(new.size, 512 + 32);
    // In both places: the earlier time (the snapshotter's file; S3's is its upload).
    assert_eq!(
        both.s3.as_ref().unwrap().location,
        "s3://etcd-backup/cray-bss/db-both"
    );
    assert!(both.snapshotter.is_some());
    assert_eq!(both.age().as_secs() / HOUR, 5, "{both:?}");
    assert_eq!(old.snapshotter, None);
    assert_eq!(old.age().as_secs() / HOUR, 48, "{old:?}");
    assert_eq!(old.size, 4 * 512 + 32);
    assert!(listed.iter().all(|b| b.safety.is_none()));

    // Either place alone.
    let s3_only = Backups::new(&RecoveryConfig {
        snapshots_dir: PathBuf::new(),
        ..recovery(&sim, snapshots.path())
    });
    let listed = s3_only.list(SERVICE, STS).await.unwrap();
    assert_eq!(names(&listed), ["db-both", "db-old"]);
    let dir_only = Backups::new(&RecoveryConfig {
        s3_credentials_dir: PathBuf::new(),
        ..recovery(&sim, snapshots.path())
    });
    let listed = dir_only.list(SERVICE, STS).await.unwrap();
    assert_eq!(names(&listed), ["db-new", "db-both"]);

    // The endpoint says the same, in the same order.
    let config = Config {
        recovery: recovery(&sim, snapshots.path()),
        ..Config::default()
    };
    let app = common::start_on(sim, config).await;
    let (status, body) = app.get(&format!("/etcd-clusters/{STS}/backups")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"], SERVICE);
    let items = body["items"].as_array().unwrap();
    let listed: Vec<&str> = items.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["db-new", "db-both", "db-old"]);
    assert_eq!(items[2]["size"], 4 * 512 + 32);
    assert_eq!(
        items[2]["s3"]["location"],
        "s3://etcd-backup/cray-bss/db-old"
    );
    assert!(items[2]["snapshotter"].is_null());
    assert_eq!(items[2]["age_seconds"].as_u64().unwrap() / HOUR, 48);

    // And the CLI: a table on a terminal (asked for here), TOML when piped.
    let table = cli(
        &app.base,
        &["etcd-clusters", "backups", STS, "--format", "table"],
    )
    .await;
    assert!(table.contains("NAME"), "{table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.contains("db-")).collect();
    assert!(
        rows[0].contains("db-new") && rows[0].contains("1h0m"),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("2d0h") && r.contains("2.0 KiB")),
        "{table}"
    );
    assert!(
        table.contains("s3://etcd-backup/cray-bss/db-old"),
        "{table}"
    );
    let piped = cli(&app.base, &["etcd-clusters", "backups", STS]).await;
    let parsed: toml::Table = toml::from_str(&piped).expect("TOML");
    let items = parsed["items"].as_array().unwrap();
    assert_eq!(items[0]["name"].as_str(), Some("db-new"));
}

/// Runs the binary's client command against `base`; its standard output.
pub(crate) async fn cli(base: &str, args: &[&str]) -> String {
    let config_home = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
        .args(args)
        .args(["--url", base])
        .env_remove("ETCD_REPOPULATOR_URL")
        .env_remove("ETCD_REPOPULATOR_TOKEN")
        .env_remove("ETCD_REPOPULATOR_CLIENT_CONFIG")
        .env("XDG_CONFIG_HOME", config_home.path())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `etcdctl snapshot save` of the etcd at `url`: the snapshot's bytes.
fn etcdctl_snapshot(url: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.db");
    let output = etcdctl(&["--endpoints", url, "snapshot", "save"], Some(&path));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(&path).unwrap()
}

/// Runs etcdctl (API 3) with `args`, then `path` when given.
fn etcdctl(args: &[&str], path: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").args(args);
    if let Some(path) = path {
        command.arg(path);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("etcdctl (Debian: etcd-client) must be installed: {e}"))
}

fn etcdctl_json(args: &[&str], path: Option<&Path>) -> serde_json::Value {
    let output = etcdctl(args, path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A snapshot of a real etcd holding a few keys.
async fn real_snapshot() -> Vec<u8> {
    let etcd = Etcd::start().await;
    for i in 0..5 {
        etcd.put(&format!("/bss/boot-params/x{i}"), "{}").await;
    }
    etcdctl_snapshot(&etcd.url)
}

/// `data` with its SHA-256 trailer replaced by that of what precedes it (as a damaged backup
/// whose trailer was computed after the damage).
fn resealed(mut data: Vec<u8>) -> Vec<u8> {
    data.truncate(data.len() - 32);
    let sha = Sha256::digest(&data);
    data.extend_from_slice(&sha);
    data
}

async fn delete(etcd: &Etcd, key: &str) {
    use base64::Engine as _;
    let resp = etcd
        .http
        .post(format!("{}/v3/kv/deleterange", etcd.url))
        .json(&serde_json::json!({ "key": base64::engine::general_purpose::STANDARD.encode(key) }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "delete {key}: {}",
        resp.status()
    );
}

/// What etcdctl says of the live keys under `prefix` ("" for all): the range's `count` (etcd
/// 3.4's etcdctl has no `--count-only`).
fn live_count(url: &str, prefix: &str) -> u64 {
    let body = etcdctl_json(
        &[
            "--endpoints",
            url,
            "get",
            prefix,
            "--prefix",
            "--keys-only",
            "--limit",
            "1",
            "-w",
            "json",
        ],
        None,
    );
    body["count"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn real_snapshots_read_as_etcdctl_reports_them_and_restore() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let facts =
            snapshot_db::read_snapshot_file(&path, &std::sync::atomic::AtomicBool::new(false))
                .unwrap();
        let status = etcdctl_json(&["snapshot", "status", "-w", "json"], Some(&path));
        assert_eq!(
            facts.hash,
            status["hash"].as_u64().unwrap() as u32,
            "{name}"
        );
        assert_eq!(
            facts.revision,
            status["revision"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            facts.total_key,
            status["totalKey"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            facts.total_size,
            status["totalSize"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(facts.total_size + 32, data.len() as u64, "{name}");
        (path, facts)
    };

    // An empty cluster's: etcd's own buckets, no key.
    let (_, empty) = check("empty", &etcdctl_snapshot(&etcd.url));
    assert_eq!(empty.live_keys, 0);
    let buckets: Vec<&str> = empty.buckets.iter().map(|b| b.name.as_str()).collect();
    assert!(
        buckets.contains(&"key") && buckets.contains(&"meta"),
        "{buckets:?}"
    );

    // Keys put, overwritten and deleted, under several prefixes; enough to span pages.
    for i in 0..300 {
        etcd.put(&format!("/bss/boot-params/x{i}"), &"v".repeat(200))
            .await;
    }
    for i in 0..20 {
        etcd.put(&format!("/bss/boot-params/x{i}"), "again").await;
        etcd.put(&format!("fas/images/{i}"), "image").await;
    }
    for i in 0..7 {
        delete(&etcd, &format!("/bss/boot-params/x{}", i * 10)).await;
    }
    delete(&etcd, "fas/images/3").await;
    etcd.put("top", "level").await;
    let (path, facts) = check("keys", &etcdctl_snapshot(&etcd.url));
    assert_eq!(facts.live_keys, live_count(&etcd.url, ""));
    assert_eq!(facts.live_keys, 293 + 19 + 1);
    for (prefix, under) in [("/bss/", "/bss/"), ("fas/", "fas/"), ("top", "top")] {
        assert_eq!(
            facts.live_keys_by_prefix.get(prefix).copied(),
            Some(live_count(&etcd.url, under)),
            "{prefix}: {:?}",
            facts.live_keys_by_prefix
        );
    }
    assert!(facts.total_size > 64 * 1024, "{facts:?}");
    assert!(facts.warnings.is_empty(), "{:?}", facts.warnings);
    assert!(facts.consistent_index.unwrap() > 0, "{facts:?}");

    // The whole check: trailer, database, and etcdctl's restore into a scratch directory
    // under the snapshotter directory's hidden directory, removed after.
    let snapshots = tempfile::tempdir().unwrap();
    let config = RecoveryConfig {
        snapshots_dir: snapshots.path().to_owned(),
        ..RecoveryConfig::default()
    };
    let checked = check_backup_file(&path, &config).await.unwrap();
    assert_eq!(checked.snapshot, facts);
    match &checked.proof {
        Proof::Restore { tool, version } => {
            assert_eq!(tool, "etcdctl");
            assert!(version.starts_with("3."), "{version}");
        }
        other => panic!("not restored: {other:?}"),
    }
    assert_eq!(walk(snapshots.path()), Vec::<String>::new());
    // Without the tool: the structure alone, and why.
    let config = RecoveryConfig {
        etcdutl: "none".to_owned(),
        ..config
    };
    let checked = check_backup_file(&path, &config).await.unwrap();
    assert_eq!(
        checked.proof,
        Proof::Structure {
            restore_not_tried: "[recovery] etcdutl is \"none\"".to_owned()
        }
    );
}

#[tokio::test]
async fn damaged_snapshots_are_refused_naming_what_is_wrong() {
    let good = real_snapshot().await;
    let dir = tempfile::tempdir().unwrap();
    let config = RecoveryConfig {
        snapshots_dir: dir.path().to_owned(),
        ..RecoveryConfig::default()
    };
    let refusal = async |name: &str, data: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        match check_backup_file(&path, &config).await {
            Err(BackupError::Corrupt {
                path: named,
                detail,
            }) => {
                assert_eq!(named, path);
                detail
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    let page_size = 4096;

    // 20 KiB of random bytes and their SHA-256: the trailer matches, nothing else does.
    let mut random = vec![0u8; 20 * 1024 + 32];
    rand::Rng::fill(&mut rand::rng(), &mut random[..]);
    let detail = refusal("random", &resealed(random)).await;
    assert!(
        detail.starts_with("not a bbolt database: bad magic at meta page 0"),
        "{detail}"
    );

    // Truncated: cut, with and without a trailer made for what is left.
    let cut = good[..good.len() / page_size / 2 * page_size].to_vec();
    let pages = (good.len() - 32) / page_size;
    let expected = format!(
        "truncated: {} bytes, the meta page says {pages} pages of 4096",
        cut.len()
    );
    let detail = refusal("cut", &cut).await;
    assert!(detail.starts_with(&expected), "{detail}");
    let mut resealed_cut = cut.clone();
    resealed_cut.extend_from_slice(&[0; 32]);
    let detail = refusal("cut-resealed", &resealed(resealed_cut)).await;
    assert!(
        detail.starts_with(&format!(
            "truncated: {} bytes, the meta page says {pages} pages of 4096",
            cut.len()
        )),
        "{detail}"
    );

    // A flipped byte in the header of the root bucket's page, the trailer recomputed: the
    // SHA-256 passes.
    let root = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let mut flipped = good.clone();
    flipped[root * page_size] ^= 0x40;
    let detail = refusal("flipped", &resealed(flipped)).await;
    assert_eq!(
        detail,
        format!("page {root} says it is page {}", root ^ 0x40),
        "{detail}"
    );

    // A flipped byte in an element of that page (the offset of the first bucket's name).
    let mut flipped = good.clone();
    flipped[root * page_size + 16 + 4 + 1] ^= 0x7f;
    let detail = refusal("element", &resealed(flipped)).await;
    assert!(
        detail.starts_with(&format!("page {root}, element 0:")),
        "{detail}"
    );

    // The SHA-256 alone, as before.
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    let detail = refusal("sha", &flipped).await;
    assert!(detail.contains("its SHA-256 is"), "{detail}");

    // Nothing left in the scratch directory.
    let scratch = dir.path().join(".etcd-repopulator");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_garbage_backup_is_flagged_unusable_once_checked_and_a_replaced_one_is_unchecked() {
    let sim = common::release_sim("1.6", SimOptions::default()).await;
    let snapshots = tempfile::tempdir().unwrap();
    let mut random = vec![0u8; 20 * 1024 + 32];
    rand::Rng::fill(&mut rand::rng(), &mut random[..]);
    put_dir(
        snapshots.path(),
        "db-garbage",
        &resealed(random),
        Duration::from_secs(HOUR),
    );
    put_dir(
        snapshots.path(),
        "db-real",
        &real_snapshot().await,
        Duration::from_secs(2 * HOUR),
    );
    let config = Config {
        recovery: RecoveryConfig {
            snapshots_dir: snapshots.path().to_owned(),
            ..RecoveryConfig::default()
        },
        ..Config::default()
    };
    let app = common::start_on(sim, config).await;
    let listing = async || {
        let (status, body) = app.get(&format!("/etcd-clusters/{STS}/backups")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    };
    let items = listing().await;
    assert_eq!(items[0]["name"], "db-garbage");
    assert!(
        items
            .iter()
            .all(|b| b["check"].is_null() && b["usable"] == true),
        "{items:#?}"
    );

    let check = |name: &str| format!("/etcd-clusters/{STS}/backups/{name}/check");
    let (status, body) = app.post(&check("db-garbage"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("not a bbolt database: bad magic at meta page 0"),
        "{detail}"
    );
    let (status, body) = app.post(&check("db-real"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["check"]["snapshot"]["live_keys"], 5, "{body}");
    assert_eq!(
        body["check"]["snapshot"]["live_keys_by_prefix"]["/bss/"], 5,
        "{body}"
    );
    assert_eq!(body["check"]["proof"]["by"], "restore", "{body}");
    let revision = body["check"]["snapshot"]["revision"].clone();

    let items = listing().await;
    let garbage = &items[0];
    assert_eq!(garbage["usable"], false, "{garbage:#}");
    assert_eq!(garbage["check"]["ok"], false);
    assert!(
        garbage["check"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not a bbolt database"),
        "{garbage:#}"
    );
    assert!(garbage["check"]["at"].is_string());
    let real = &items[1];
    assert_eq!(real["usable"], true, "{real:#}");
    assert_eq!(real["check"]["ok"], true);
    assert_eq!(real["check"]["revision"], revision);
    assert_eq!(real["check"]["keys"], 5);
    assert!(
        real["check"]["how"]
            .as_str()
            .unwrap()
            .contains("restored by etcdctl"),
        "{real:#}"
    );

    // Replaced under the same name: another copy, not known to be unusable.
    put_dir(
        snapshots.path(),
        "db-garbage",
        &real_snapshot().await,
        Duration::from_secs(HOUR),
    );
    let items = listing().await;
    assert!(
        items[0]["check"].is_null() && items[0]["usable"] == true,
        "{:#}",
        items[0]
    );

    // Unknown backups and clusters.
    let (status, _) = app.post(&check("db-nope"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fetch_downloads_from_s3_verifies_and_refuses_a_corrupt_snapshot_by_name() {
    let sim = sim_with_s3().await;
    let snapshots = tempfile::tempdir().unwrap();
    let good = real_snapshot().await;
    put_s3(
        &sim,
        "cray-bss/db-good",
        good.clone(),
        Duration::from_secs(HOUR),
    )
    .await;
    let mut flipped = good.clone();
    flipped[700] ^= 0x10;
    put_s3(
        &sim,
        "cray-bss/db-flipped",
        flipped.clone(),
        Duration::from_secs(HOUR),
    )
    .await;
    let backups = Backups::new(&recovery(&sim, snapshots.path()));

    // Only in S3: downloaded to the snapshotter directory, where a restoring pod reads it.
    let backup = backups.find(SERVICE, STS, "db-good").await.unwrap();
    assert!(backup.snapshotter.is_none());
    let fetched = backups.fetch(&backup, STS).await.unwrap();
    let path = fetched.path;
    assert_eq!(path, snapshots.path().join(STS).join("db-good"));
    assert_eq!(fetched.check.path, path);
    assert_eq!(fetched.check.snapshot.live_keys, 5);
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let verified = verify_snapshot(&path).unwrap();
    assert_eq!(verified.sha256, hex::encode(&good[good.len() - 32..]));
    let again = backups.find(SERVICE, STS, "db-good").await.unwrap();
    assert_eq!(again.locations().len(), 2, "{again:?}");
    // Already there: checked and used as is.
    assert_eq!(backups.fetch(&again, STS).await.unwrap().path, path);

    // A flipped byte in S3: refused, naming it; nothing is left in the directory.
    let backup = backups.find(SERVICE, STS, "db-flipped").await.unwrap();
    let err = backups.fetch(&backup, STS).await.unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("s3://etcd-backup/cray-bss/db-flipped"),
        "{err}"
    );
    let left: Vec<String> = walk(snapshots.path());
    assert_eq!(left, [format!("{STS}/db-good")], "{left:?}");

    // A flipped byte in the snapshotter directory: refused by verify and by fetch, named.
    let local = put_dir(snapshots.path(), "db-local", &flipped, Duration::ZERO);
    let err = verify_snapshot(&local).unwrap_err();
    assert!(
        err.to_string().contains(&local.display().to_string()),
        "{err}"
    );
    let backup = backups.find(SERVICE, STS, "db-local").await.unwrap();
    let err = backups.fetch(&backup, STS).await.unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&local.display().to_string()),
        "{err}"
    );

    // Unknown names.
    let err = backups.find(SERVICE, STS, "db-nope").await.unwrap_err();
    assert!(matches!(err, BackupError::NotFound { .. }), "{err}");
}

/// Every file under `root`, relative, sorted (hidden directories included).
fn walk(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_safety_snapshot_of_a_real_etcd_lands_in_both_places_marked_and_verifies() {
    let sim = sim_with_s3().await;
    let snapshots = tempfile::tempdir().unwrap();
    let backups = Backups::new(&recovery(&sim, snapshots.path()));
    let etcd = Etcd::start().await;
    let client = EtcdClient::new(&etcd.url, &EtcdConfig::default()).unwrap();

    // An empty cluster: marked so.
    let run = uuid::Uuid::now_v7().to_string();
    let empty = backups
        .take_safety_snapshot(&client, SERVICE, STS, &run)
        .await
        .unwrap();
    assert!(empty.name.starts_with("repopulator-"), "{}", empty.name);
    assert!(
        empty.name.ends_with(&format!("{run}-empty")),
        "{}",
        empty.name
    );
    assert!(empty.safety.as_ref().unwrap().empty);

    for i in 0..20 {
        etcd.put(&format!("/bss/key-{i}"), &"x".repeat(100)).await;
    }
    let run = uuid::Uuid::now_v7().to_string();
    let taken = backups
        .take_safety_snapshot(&client, SERVICE, STS, &run)
        .await
        .unwrap();
    let safety = taken.safety.clone().unwrap();
    assert_eq!(safety.run_id, run);
    assert!(!safety.empty);
    assert!(!taken.name.ends_with("-empty"), "{}", taken.name);

    // In the snapshotter directory and in S3, byte for byte, with etcd's SHA-256 trailer.
    let path = snapshots.path().join(STS).join(&taken.name);
    let verified = verify_snapshot(&path).unwrap();
    let s3_object = sim
        .s3()
        .unwrap()
        .object_path(&format!("{SERVICE}/{}", taken.name));
    assert_eq!(
        std::fs::read(&s3_object).unwrap(),
        std::fs::read(&path).unwrap()
    );
    assert_eq!(verified.size, taken.size);
    assert_eq!(
        taken.s3.as_ref().unwrap().location,
        format!("s3://etcd-backup/{SERVICE}/{}", taken.name)
    );
    // etcdctl restores it (it checks the same trailer), with the keys.
    let restored = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&path)
        .arg("--data-dir")
        .arg(restored.path().join("data"))
        .output();
    match status {
        Ok(output) => assert!(
            output.status.success(),
            "etcdctl snapshot restore: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("etcdctl (Debian: etcd-client) must be installed: {e}"),
    }

    // Listed, newest first, marked as ours; no partial file left behind.
    let listed = backups.list(SERVICE, STS).await.unwrap();
    assert_eq!(names(&listed), [taken.name.as_str(), empty.name.as_str()]);
    assert_eq!(listed[0].safety.as_ref().unwrap().run_id, run);
    assert!(listed[1].safety.as_ref().unwrap().empty);
    assert_eq!(listed[0].locations().len(), 2);
    let files = walk(snapshots.path());
    assert_eq!(files.len(), 2, "{files:?}");
}

#[tokio::test]
async fn the_endpoint_says_what_is_wrong_unknown_cluster_nothing_configured_wrong_s3_secret() {
    let sim = sim_with_s3().await;
    let s3 = sim.s3().unwrap();
    let secret = s3.secret_key().to_owned();
    // The Secret's keys as files, but a wrong secret key.
    let wrong = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("access_key", s3.access_key()),
        ("secret_key", "not-the-secret-key"),
        ("http_s3_endpoint", s3.endpoint()),
    ] {
        std::fs::write(wrong.path().join(key), value).unwrap();
    }
    let config = Config {
        recovery: RecoveryConfig {
            snapshots_dir: PathBuf::new(),
            s3_credentials_dir: wrong.path().to_owned(),
            ..RecoveryConfig::default()
        },
        ..Config::default()
    };
    let app = common::start_on(sim, config).await;

    let resp = app
        .http
        .get(app.url(&format!("/etcd-clusters/{STS}/backups")))
        .send()
        .await
        .unwrap();
    let problem = common::problem(resp, StatusCode::BAD_GATEWAY).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("S3 at http://127.0.0.1"), "{detail}");
    assert!(detail.contains("refused"), "{detail}");
    assert!(
        !detail.contains("not-the-secret-key") && !detail.contains(&secret),
        "{detail}"
    );
    assert_eq!(problem["type"], "urn:etcd-repopulator:problem:s3-refused");

    let resp = app
        .http
        .get(app.url("/etcd-clusters/cray-nope-bitnami-etcd/backups"))
        .send()
        .await
        .unwrap();
    let problem = common::problem(resp, StatusCode::NOT_FOUND).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("cray-nope-bitnami-etcd"),
        "{problem}"
    );

    // A name that is no Kubernetes object name (a path, upper case) is no cluster either: 404
    // naming it, never a path sent to the API server.
    for (name, encoded) in [
        ("../../x-bitnami-etcd", "..%2F..%2Fx-bitnami-etcd"),
        ("a/b-bitnami-etcd", "a%2Fb-bitnami-etcd"),
        ("../cray-bss-etcd", "..%2Fcray-bss-etcd"),
        ("Cray-Bss-bitnami-etcd", "Cray-Bss-bitnami-etcd"),
    ] {
        for path in ["", "/backups"] {
            let resp = app
                .http
                .get(app.url(&format!("/etcd-clusters/{encoded}{path}")))
                .send()
                .await
                .unwrap();
            let problem = common::problem(resp, StatusCode::NOT_FOUND).await;
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("{name:?}")) && detail.contains("DNS-1123"),
                "{name}{path}: {problem}"
            );
        }
    }

    // Neither S3 nor the snapshotter directory.
    let sim = common::release_sim("1.6", SimOptions::default()).await;
    let config = Config {
        recovery: RecoveryConfig {
            snapshots_dir: PathBuf::new(),
            ..RecoveryConfig::default()
        },
        ..Config::default()
    };
    let app = common::start_on(sim, config).await;
    let resp = app
        .http
        .get(app.url(&format!("/etcd-clusters/{STS}/backups")))
        .send()
        .await
        .unwrap();
    let problem = common::problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("snapshots_dir") && detail.contains("s3_credentials_dir"),
        "{detail}"
    );

    // The snapshotter directory configured but not mounted.
    let sim = common::release_sim("1.6", SimOptions::default()).await;
    let config = Config {
        recovery: RecoveryConfig {
            snapshots_dir: PathBuf::from("/nonexistent-snapshots"),
            ..RecoveryConfig::default()
        },
        ..Config::default()
    };
    let app = common::start_on(sim, config).await;
    let resp = app
        .http
        .get(app.url(&format!("/etcd-clusters/{STS}/backups")))
        .send()
        .await
        .unwrap();
    let problem = common::problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("/nonexistent-snapshots") && detail.contains("bitnami-etcd-snapshotter"),
        "{detail}"
    );
}

#[tokio::test]
async fn the_simulation_points_recovery_at_its_s3_and_the_secret_is_seeded() {
    let sim = sim_with_s3().await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(sim.kube_client(), "services");
    let secret = secrets.get("etcd-backup-s3-credentials").await.unwrap();
    let data = secret.data.unwrap();
    let s3 = sim.s3().unwrap();
    assert_eq!(data["access_key"].0, s3.access_key().as_bytes());
    assert_eq!(data["secret_key"].0, s3.secret_key().as_bytes());
    assert_eq!(data["http_s3_endpoint"].0, s3.endpoint().as_bytes());

    let mut config = Config::default();
    config.use_simulation(&sim);
    assert_eq!(
        config.recovery.s3_credentials_dir,
        s3.credentials_dir().to_owned()
    );
    let snapshots = sim
        .snapshots_dir()
        .expect("CSM 1.6 has the snapshotter PVC");
    assert_eq!(config.recovery.snapshots_dir, snapshots);
    put_s3(&sim, "cray-bss/db-1", snapshot_bytes(1, 1), Duration::ZERO).await;
    let local = put_dir(snapshots, "db-2", &snapshot_bytes(1, 2), Duration::ZERO);
    let backups = Backups::new(&config.recovery);
    let listed = backups.list(SERVICE, STS).await.unwrap();
    let db2 = listed.iter().find(|b| b.name == "db-2").unwrap();
    assert_eq!(db2.locations(), [local.display().to_string().as_str()]);

    // CSM's CronJob copies the snapshotter PVC to S3, under the service's short name.
    let uploaded = sim.sync_snapshots_to_s3().await.unwrap();
    assert!(
        uploaded.contains(&"cray-bss/db-2".to_owned()),
        "{uploaded:?}"
    );
    let listed = backups.list(SERVICE, STS).await.unwrap();
    let db2 = listed.iter().find(|b| b.name == "db-2").unwrap();
    assert_eq!(
        db2.locations(),
        [
            "s3://etcd-backup/cray-bss/db-2",
            local.display().to_string().as_str()
        ]
    );
    assert!(listed.iter().any(|b| b.name == "db-1"));
}

/// A stand-in for etcdctl that starts a restore (its data directory, its pid in `pid_file`)
/// and never ends.
fn endless_tool(dir: &Path, pid_file: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let tool = dir.join("etcdctl");
    std::fs::write(
        &tool,
        format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then echo 'etcdctl version: 9.9.9'; exit 0; fi\n\
             mkdir -p \"$5/member\" && echo partial > \"$5/member/db\"\n\
             echo $$ > {}\nexec sleep 60\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    tool
}

/// Whether the process `pid` (written in `pid_file`) still exists.
fn alive(pid_file: &Path) -> bool {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    Path::new(&format!("/proc/{}", pid.trim())).exists()
}

#[tokio::test]
async fn a_restore_check_cut_short_leaves_no_scratch_directory_and_no_process() {
    let good = real_snapshot().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let path = dir.path().join("db-1");
    std::fs::write(&path, &good).unwrap();
    let pid_file = dir.path().join("tool.pid");
    let tool = endless_tool(dir.path(), &pid_file);
    let config = RecoveryConfig {
        snapshots_dir: snapshots.clone(),
        etcdutl: tool.display().to_string(),
        timeout: Duration::from_secs(3),
        ..RecoveryConfig::default()
    };

    // The timeout: refused as such (not as a corrupt backup), nothing left.
    let err = check_backup_file(&path, &config).await.unwrap_err();
    assert!(matches!(err, BackupError::Timeout { .. }), "{err}");
    assert_eq!(walk(&snapshots), Vec::<String>::new());
    assert!(!alive(&pid_file));

    // The caller giving up (a cancelled run): the same.
    std::fs::remove_file(&pid_file).unwrap();
    let config = RecoveryConfig {
        timeout: Duration::from_secs(600),
        ..config
    };
    let mut check = Box::pin(check_backup_file(&path, &config));
    common::until("the tool to start restoring", async || {
        tokio::select! {
            ended = &mut check => panic!("the check ended: {ended:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        pid_file.exists().then_some(())
    })
    .await;
    assert_eq!(walk(&snapshots).len(), 1, "{:?}", walk(&snapshots));
    drop(check);
    assert_eq!(walk(&snapshots), Vec::<String>::new());
    assert!(!alive(&pid_file));
}
