//! The real programs a member's container runs: `etcd` (Debian's etcd-server), `etcdctl`
//! (etcd-client) for what the Bitnami scripts do with it (`member add`, `member remove`,
//! `snapshot restore`, `snapshot save`), and the reads the scripts' checks make (`member
//! list`, `endpoint status`, `endpoint health`), asked of etcd's v3 JSON gateway directly:
//! the same questions, without a process per question on a busy machine, and without
//! etcdctl's 2 s dial timeout on an address where nothing listens.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::kube::options::ETCD_BINARY;
use crate::kube::options::on_path;

/// The etcdctl command (Debian: etcd-client).
pub const ETCDCTL_BINARY: &str = "etcdctl";

/// The client port of etcd in both layouts.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port.
pub const PEER_PORT: u16 = 2380;

/// `etcd`, started so that the kernel kills it when the thread that started it ends, even if
/// this process is killed without running its destructors (util-linux's setpriv execs etcd in
/// its place); `kill_on_drop` covers an orderly end. Its environment is only `env` (and
/// PATH): etcd reads every `ETCD_*` variable as a flag and refuses one that a flag shadows,
/// so nothing of the test process may leak in.
pub fn etcd_command(env: &BTreeMap<String, String>) -> tokio::process::Command {
    let mut command = if on_path("setpriv") {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", ETCD_BINARY]);
        c
    } else {
        tokio::process::Command::new(ETCD_BINARY)
    };
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env).stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// `etcdctl <args>` (API v3) with `endpoints` (`host:port`, comma-separated; none: the
/// arguments name what they need): its standard output, or why it failed.
pub async fn etcdctl(endpoints: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new(ETCDCTL_BINARY);
    command.env_clear().env("ETCDCTL_API", "3");
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    if let Some(endpoints) = endpoints {
        command.arg(format!("--endpoints={endpoints}"));
    }
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .map_err(|_| format!("etcdctl {} timed out", args.join(" ")))?
        .map_err(|e| format!("running {ETCDCTL_BINARY} (Debian: etcd-client): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "etcdctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `etcdctl snapshot save <dir>/db-YYYY-MM-DD_HH-MM` against `url`, as the chart's
/// snapshotter (snapshot.sh) names the file.
pub async fn save_snapshot(url: &str, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!(
        "db-{}",
        chrono::Utc::now().format("%Y-%m-%d_%H-%M")
    ));
    let endpoint = url.trim_start_matches("http://");
    let path = file.to_string_lossy().into_owned();
    etcdctl(Some(endpoint), &["snapshot", "save", &path])
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(file)
}

/// `GET /health` at `addr` says `"health":"true"`: the member answers a linearizable read
/// (it is in a cluster with a leader) and no alarm is raised, which is what the chart's
/// probe (`healthcheck.sh`: `etcdctl endpoint health` of etcd 3.5) checks. HTTP/1.0 by hand,
/// bounded by a short timeout.
pub async fn health(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body.contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The part of etcd's log file written since a process started.
pub struct LogSince {
    pub path: PathBuf,
    pub offset: u64,
}

impl LogSince {
    pub fn at_end(path: &Path) -> LogSince {
        LogSince {
            path: path.to_owned(),
            offset: std::fs::metadata(path).map_or(0, |m| m.len()),
        }
    }

    /// Everything written since (bounded to the last 1 MiB).
    pub fn read_new(&self) -> String {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let from = self.offset.max(len.saturating_sub(1 << 20));
        let mut text = String::new();
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The line that says why etcd ended: its last fatal, panic or error entry, else its
    /// last line.
    pub fn last_words(&self) -> Option<String> {
        let text = self.read_new();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let severe = lines.iter().rev().find(|l| {
            [
                "\"level\":\"fatal\"",
                "\"level\":\"panic\"",
                "\"level\":\"error\"",
                " C | ",
                "panic:",
            ]
            .iter()
            .any(|m| l.contains(m))
        });
        let line = severe.or(lines.last())?;
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            return Some((*line).to_owned());
        };
        let msg = entry["msg"].as_str().unwrap_or_default();
        Some(match entry["error"].as_str() {
            Some(error) => format!("{msg}: {error}"),
            None => msg.to_owned(),
        })
    }
}

/// A member as `member list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedMember {
    /// In hex, as etcdctl prints it and `member remove` takes it.
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    pub client_urls: Vec<String>,
}

/// A client for etcd's v3 JSON gateway with short timeouts (the scripts' checks must not
/// hang on a member that does not answer).
#[derive(Clone, Debug)]
pub struct Gateway {
    http: reqwest::Client,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap_or_default(),
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `host:port` or a URL -> a URL.
fn url_of(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.trim_end_matches('/').to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

impl Gateway {
    async fn call(&self, endpoint: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", url_of(endpoint));
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let value: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() || value.get("error").is_some() {
            let message = value["error"]
                .as_str()
                .or(value["message"].as_str())
                .map_or_else(|| value.to_string(), str::to_owned);
            return Err(format!("{url}: {status}: {message}"));
        }
        Ok(value)
    }

    /// `member list` through the first of `endpoints` that answers.
    pub async fn member_list(&self, endpoints: &[String]) -> Result<Vec<ListedMember>, String> {
        let mut last = "no endpoints".to_owned();
        for endpoint in endpoints {
            match self
                .call(endpoint, "/v3/cluster/member/list", json!({}))
                .await
            {
                Ok(list) => {
                    return Ok(list["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| ListedMember {
                            id: m["ID"]
                                .as_str()
                                .and_then(|id| id.parse::<u64>().ok())
                                .or_else(|| m["ID"].as_u64())
                                .map(|id| format!("{id:x}"))
                                .unwrap_or_default(),
                            name: m["name"].as_str().unwrap_or_default().to_owned(),
                            peer_urls: strings(&m["peerURLs"]),
                            client_urls: strings(&m["clientURLs"]),
                        })
                        .collect());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `endpoint status` of one endpoint (the member's maintenance status; answers without a
    /// leader).
    pub async fn status(&self, endpoint: &str) -> Result<Value, String> {
        self.call(endpoint, "/v3/maintenance/status", json!({}))
            .await
    }

    /// `endpoint health` of one endpoint.
    pub async fn healthy(&self, endpoint: &str) -> bool {
        let url = url_of(endpoint);
        let Some(addr) = url.trim_start_matches("http://").parse::<SocketAddr>().ok() else {
            return false;
        };
        health(addr).await
    }

    /// `put` through `endpoint`.
    pub async fn put(&self, endpoint: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        self.call(
            endpoint,
            "/v3/kv/put",
            json!({ "key": b64.encode(key), "value": b64.encode(value) }),
        )
        .await
        .map(drop)
    }
}

/// `http://<ip>:<port>`.
pub fn url(ip: Ipv4Addr, port: u16) -> String {
    format!("http://{ip}:{port}")
}
