//! A real etcd (Debian: etcd-server) on loopback for tests: one member, fresh data directory,
//! free ports; stopped when dropped.

#![allow(dead_code)] // each test binary uses a different part of the fixture

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use tempfile::TempDir;

pub const ETCD: &str = "etcd";

pub struct Etcd {
    pub dir: TempDir,
    /// `http://127.0.0.1:PORT`, the client URL.
    pub url: String,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free port")
}

impl Etcd {
    /// Starts a single-member cluster and returns once `/health` says it is healthy.
    pub async fn start() -> Etcd {
        let mut failures = Vec::new();
        // A probed free port can be taken before etcd binds it; retry with others.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (client, peer) = (free_port(), free_port());
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd.log");
            let child = Command::new(ETCD)
                .arg("--name=test")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={url}"))
                .arg(format!("--advertise-client-urls={url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| {
                    panic!("cannot run {ETCD} ({err}): install Debian's etcd-server")
                });
            let mut etcd = Etcd { dir, url, child };
            match etcd.wait_healthy(Duration::from_secs(20)).await {
                Ok(()) => return etcd,
                Err(failure) => failures.push(format!("{failure}; log: {}", etcd.log())),
            }
        }
        panic!("etcd did not start: {}", failures.join(" | "));
    }

    /// Polls `/health` (with a deadline) until the member reports itself healthy.
    async fn wait_healthy(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}"));
            }
            if let Ok(resp) = http.get(format!("{}/health", self.url)).send().await
                && let Ok(body) = resp.json::<serde_json::Value>().await
                && body["health"] == "true"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} not healthy in time", self.url));
            }
            // Polling interval while waiting for a condition, not a synchronising sleep.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts `key` = `value` through the JSON gateway.
    pub async fn put(&self, key: &str, value: &str) {
        let resp = reqwest::Client::new()
            .post(format!("{}/v3/kv/put", self.url))
            .json(&serde_json::json!({
                "key": STANDARD.encode(key),
                "value": STANDARD.encode(value),
            }))
            .send()
            .await
            .expect("put");
        assert!(resp.status().is_success(), "put {key}: {}", resp.status());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
