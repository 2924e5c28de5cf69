//! The scratch etcd: a real `etcd` ([drills] etcd), a child of this process, serving a restored
//! backup's data directory on loopback (ports chosen free at start), with a backend quota the
//! database fits in; killed and reaped when dropped (kill_on_drop covers the rest), its pid
//! recorded in the scratch directory for the start after a crash.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::time::Instant;

use super::scratch::ScratchDir;
use crate::etcd::{
    EtcdClient, EtcdConfig,
    restore_tool::{Reaped, RestoredMember, is_executable, on_path},
};

/// The member a drill restores the backup as.
const MEMBER: &str = "drill";
/// The smallest backend quota the scratch etcd gets (etcd's default, and CSM's).
const MIN_QUOTA: u64 = 2 << 30;
/// Room in the quota beyond the database's size.
const QUOTA_HEADROOM: u64 = 256 << 20;
/// Attempts with other ports when etcd exits at once (a port taken between the probe and
/// etcd's bind).
const ATTEMPTS: usize = 3;
/// Lines of etcd's log kept for a failure's message.
const LOG_TAIL: usize = 5;

/// Why the scratch etcd does not serve the backup.
#[derive(Debug)]
pub enum ServeError {
    /// etcd could not be run (the binary, the ports, the directory): no verdict on the backup.
    Setup(String),
    /// etcd ran and stopped, or never became healthy, on this data.
    Refused(String),
}

/// The restored data's member and the ports it is served on.
#[derive(Clone, Debug)]
pub struct Ports {
    client: u16,
    peer: u16,
}

impl Ports {
    /// Two loopback ports free now (whoever binds them next may race for them).
    pub fn free() -> std::io::Result<Ports> {
        let probe = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr().map(|a| a.port()))
        };
        // Both held while the second is chosen, so that they differ.
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = first.local_addr()?.port();
        let peer = probe()?;
        drop(first);
        Ok(Ports { client, peer })
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    /// The member a restore for these ports makes.
    pub fn member(&self) -> RestoredMember {
        RestoredMember {
            name: MEMBER.to_owned(),
            peer_url: self.peer_url(),
        }
    }
}

/// The etcd binary `[drills] etcd` names: a path, or a name on `PATH`.
pub fn find_etcd(wanted: &str) -> Result<PathBuf, String> {
    let wanted = wanted.trim();
    if wanted.contains('/') {
        let path = PathBuf::from(wanted);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "[drills] etcd {wanted:?} is not an executable file"
            ))
        };
    }
    on_path(wanted).ok_or_else(|| {
        format!(
            "[drills] etcd {wanted:?} is not on PATH (the image carries etcd; elsewhere install \
             it, e.g. Debian's etcd-server)"
        )
    })
}

/// A running scratch etcd.
pub struct ScratchEtcd {
    _process: Reaped,
    pub client: EtcdClient,
    pub url: String,
    pub quota: u64,
    /// How long it took to answer healthy.
    pub start_seconds: f64,
}

/// The quota that serves a database of `db_size` bytes without raising NOSPACE.
pub fn quota_for(db_size: u64) -> u64 {
    db_size.saturating_add(QUOTA_HEADROOM).max(MIN_QUOTA)
}

/// Starts `etcd` on the data restored into `data_dir` (as [`Ports::member`] of `ports`), and
/// waits until it answers healthy, by `deadline`.
pub async fn serve(
    etcd: &Path,
    scratch: &ScratchDir,
    data_dir: &Path,
    ports: Ports,
    db_size: u64,
    deadline: Instant,
) -> Result<ScratchEtcd, ServeError> {
    let started = Instant::now();
    let quota = quota_for(db_size);
    let mut ports = ports;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            ports = Ports::free().map_err(|e| ServeError::Setup(format!("choosing ports: {e}")))?;
        }
        let log = scratch.path().join(format!("etcd-{attempt}.log"));
        let mut process = spawn(etcd, data_dir, &ports, quota, &log)?;
        if let Some(pid) = process.0.id()
            && let Err(e) = scratch.record_etcd(pid)
        {
            return Err(ServeError::Setup(format!("recording etcd's pid: {e}")));
        }
        let url = ports.client_url();
        let client = EtcdClient::new(
            &url,
            &EtcdConfig {
                timeout: Duration::from_secs(30),
                ..EtcdConfig::default()
            },
        )
        .map_err(|e| ServeError::Setup(e.to_string()))?;
        let healthy = async {
            loop {
                if client.check_health().await.is_ok() {
                    return;
                }
                // Polling etcd's /health, which has no way to wait for it, until the deadline.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            () = healthy => {
                return Ok(ScratchEtcd {
                    _process: process,
                    client,
                    url,
                    quota,
                    start_seconds: started.elapsed().as_secs_f64(),
                });
            }
            status = process.0.wait() => {
                let tail = log_tail(&log);
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                last = format!("etcd exited ({status}): {tail}");
                if !tail.contains("address already in use") {
                    return Err(ServeError::Refused(last));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(ServeError::Refused(format!(
                    "etcd did not answer healthy on {url} in time: {}",
                    log_tail(&log)
                )));
            }
        }
    }
    Err(ServeError::Setup(last))
}

fn spawn(
    etcd: &Path,
    data_dir: &Path,
    ports: &Ports,
    quota: u64,
    log: &Path,
) -> Result<Reaped, ServeError> {
    let stderr = std::fs::File::create(log)
        .map_err(|e| ServeError::Setup(format!("creating {}: {e}", log.display())))?;
    let (client, peer) = (ports.client_url(), ports.peer_url());
    let mut command = tokio::process::Command::new(etcd);
    command
        // Nothing of the service's environment (etcd reads ETCD_* variables as flags).
        .env_clear()
        .arg(format!("--name={MEMBER}"))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster={MEMBER}={peer}"))
        .arg(format!("--quota-backend-bytes={quota}"))
        .arg("--logger=zap")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    command
        .spawn()
        .map(Reaped)
        .map_err(|e| ServeError::Setup(format!("cannot run {}: {e}", etcd.display())))
}

/// The last lines of etcd's log, joined (its zap JSON lines' messages when it has them).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| {
                    let msg = v["msg"].as_str()?.to_owned();
                    Some(match v["error"].as_str() {
                        Some(error) => format!("{msg}: {error}"),
                        None => msg,
                    })
                })
                .unwrap_or_else(|| line.to_owned())
        })
        .collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
    if tail.is_empty() {
        "no output".to_owned()
    } else {
        tail.join("; ").chars().take(1000).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_fits_the_database() {
        assert_eq!(quota_for(0), MIN_QUOTA);
        assert_eq!(quota_for(3 << 30), (3 << 30) + QUOTA_HEADROOM);
    }

    #[test]
    fn the_log_tail_is_etcds_messages() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("etcd.log");
        std::fs::write(
            &log,
            "{\"level\":\"warn\",\"msg\":\"a\"}\nplain line\n\
             {\"level\":\"fatal\",\"msg\":\"listen failed\",\"error\":\"address already in use\"}\n",
        )
        .unwrap();
        assert_eq!(
            log_tail(&log),
            "a; plain line; listen failed: address already in use"
        );
        assert_eq!(log_tail(&dir.path().join("none")), "no output");
    }

    #[test]
    fn etcd_is_found_as_configured() {
        assert!(
            find_etcd("/nonexistent/etcd")
                .unwrap_err()
                .contains("not an executable file")
        );
        assert!(
            find_etcd("etcd-that-is-not-there")
                .unwrap_err()
                .contains("not on PATH")
        );
    }
}
