//! The second proof that a backup restores: etcd's own tool restores it into a scratch
//! directory (`etcdutl snapshot restore`, or etcd 3.4's `etcdctl snapshot restore`), which is
//! removed however the check ends (success, failure, timeout, or the caller dropping the
//! future: the process is killed first).
//!
//! Which tool is `[recovery] etcdutl`: a path or a name on `PATH`; by default `etcdutl`, else
//! `etcdctl`; `none` for none. The image carries the `etcdutl` of the etcd release CSM runs.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use utoipa::ToSchema;

use super::recovery_config::RecoveryConfig;

/// `[recovery] etcdutl` meaning "no tool".
const NONE: &str = "none";
/// What a restore writes beyond a copy of the database: a WAL segment (etcd preallocates
/// 64 MiB) and a raft snapshot, with some room.
const RESTORE_OVERHEAD: u64 = 96 << 20;
/// How much of the tool's output is kept for the message.
const OUTPUT_CAP: u64 = 64 << 10;
/// `<tool> version` answers at once.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How a backup was proven to restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Proof {
    /// Its database was read and found whole (see `etcd::snapshot_db`); the real tool was not
    /// run, for the reason given.
    Structure { restore_not_tried: String },
    /// Its database was read and found whole, and the real tool restored it into a scratch
    /// directory.
    Restore { tool: String, version: String },
}

impl Proof {
    /// One line: what proved it.
    pub fn describe(&self) -> String {
        match self {
            Proof::Structure { restore_not_tried } => {
                format!("database read and checked; not restored: {restore_not_tried}")
            }
            Proof::Restore { tool, version } => {
                format!("database read and checked; restored by {tool} {version}")
            }
        }
    }
}

/// Why the tool found the backup does not restore.
#[derive(Debug)]
pub struct RestoreRefused(pub String);

/// The tool, found.
#[derive(Clone, Debug)]
pub struct RestoreTool {
    path: PathBuf,
    /// etcdutl (etcd 3.5+); otherwise etcdctl's restore (etcd 3.4).
    etcdutl: bool,
}

impl RestoreTool {
    /// The tool `[recovery] etcdutl` names, or why there is none.
    pub fn find(config: &RecoveryConfig) -> Result<RestoreTool, String> {
        let wanted = config.etcdutl.trim();
        if wanted == NONE {
            return Err("[recovery] etcdutl is \"none\"".to_owned());
        }
        let path = if wanted.is_empty() {
            on_path("etcdutl")
                .or_else(|| on_path("etcdctl"))
                .ok_or("neither etcdutl nor etcdctl is on PATH ([recovery] etcdutl)")?
        } else if wanted.contains('/') {
            Some(PathBuf::from(wanted))
                .filter(|path| is_executable(path))
                .ok_or_else(|| format!("[recovery] etcdutl {wanted:?} is not an executable file"))?
        } else {
            on_path(wanted)
                .ok_or_else(|| format!("[recovery] etcdutl {wanted:?} is not on PATH"))?
        };
        let etcdutl = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("etcdutl"));
        Ok(RestoreTool { path, etcdutl })
    }

    /// `etcdutl` or `etcdctl`, for messages.
    pub fn name(&self) -> &'static str {
        if self.etcdutl { "etcdutl" } else { "etcdctl" }
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.path);
        if !self.etcdutl {
            command.env("ETCDCTL_API", "3");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// The tool's version (`etcdutl version: 3.5.21`), or `unknown`.
    pub async fn version(&self) -> String {
        let output = tokio::time::timeout(VERSION_TIMEOUT, self.command().arg("version").output());
        let Ok(Ok(output)) = output.await else {
            return "(version unknown)".to_owned();
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                line.split_once("version:")
                    .map(|(_, v)| v.trim().to_owned())
            })
            .filter(|v| !v.is_empty() && v.len() < 40)
            .unwrap_or_else(|| "(version unknown)".to_owned())
    }

    /// Restores `snapshot` (of a database of `db_size` bytes) into a scratch directory under
    /// `parent`. `Ok(Err(why))` when it could not be tried (no room, the tool does not run);
    /// `Err` when the tool refused the snapshot.
    pub async fn restore(
        &self,
        snapshot: &Path,
        db_size: u64,
        parent: &Path,
    ) -> Result<Result<(), String>, RestoreRefused> {
        if let Err(why) = room_for_restore(parent, db_size) {
            return Ok(Err(why));
        }
        let scratch = match tempfile::Builder::new()
            .prefix("restore-check-")
            .tempdir_in(parent)
        {
            Ok(dir) => dir,
            Err(e) => {
                return Ok(Err(format!(
                    "cannot create a scratch directory in {}: {e}",
                    parent.display()
                )));
            }
        };
        let restored = self
            .restore_into(snapshot, &scratch.path().join("data"), None)
            .await;
        // Removed after the tool has ended (restore_into waits for it, or kills it).
        if let Err(e) = scratch.close() {
            tracing::warn!(error = %e, "removing a restore check's scratch directory");
        }
        restored
    }

    /// Restores `snapshot` into `data_dir` (which must not exist yet; the caller removes it),
    /// as the member `member` says when given (`--name`, `--initial-cluster`,
    /// `--initial-advertise-peer-urls`: for an etcd that will serve it), else with the tool's
    /// defaults. `Ok(Err(why))` when the tool could not be run; `Err` when it refused the
    /// snapshot. The tool is killed (and reaped) if the future is dropped.
    pub async fn restore_into(
        &self,
        snapshot: &Path,
        data_dir: &Path,
        member: Option<&RestoredMember>,
    ) -> Result<Result<(), String>, RestoreRefused> {
        let mut command = self.command();
        command
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(data_dir);
        if let Some(member) = member {
            command
                .arg(format!("--name={}", member.name))
                .arg(format!(
                    "--initial-cluster={}={}",
                    member.name, member.peer_url
                ))
                .arg(format!("--initial-advertise-peer-urls={}", member.peer_url));
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Ok(Err(format!("cannot run {}: {e}", self.path.display()))),
        };
        let mut run = Reaped(child);
        let stdout = run.0.stdout.take();
        let stderr = run.0.stderr.take();
        let (status, _, stderr) = tokio::join!(run.0.wait(), capped(stdout), capped(stderr));
        let status = match status {
            Ok(status) => status,
            Err(e) => return Ok(Err(format!("waiting for {}: {e}", self.name()))),
        };
        if status.success() {
            return Ok(Ok(()));
        }
        Err(RestoreRefused(format!(
            "{} snapshot restore refused it ({status}): {}",
            self.name(),
            complaint(&String::from_utf8_lossy(&stderr))
        )))
    }
}

/// The member a restore makes of the snapshot's data, for an etcd that serves it.
#[derive(Clone, Debug)]
pub struct RestoredMember {
    pub name: String,
    pub peer_url: String,
}

/// Whether `dir` has room to restore a database of `db_size` bytes (a copy of it, a WAL
/// segment and a raft snapshot); why not otherwise.
pub fn room_for_restore(dir: &Path, db_size: u64) -> Result<(), String> {
    let needed = db_size.saturating_add(RESTORE_OVERHEAD);
    match available_bytes(dir) {
        Ok(free) if free < needed => Err(format!(
            "{} has {} MiB free, a restore needs about {} MiB",
            dir.display(),
            free >> 20,
            needed >> 20
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// A child process that is killed and reaped (briefly waited for) however its owner ends.
pub struct Reaped(pub tokio::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// Kills `child` if it still runs and waits (at most 2 s) until it is gone, so that what it
/// wrote can be removed after.
pub fn kill_and_reap(child: &mut tokio::process::Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.start_kill();
        // A killed process is gone within milliseconds.
        for _ in 0..200 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What `reader` gives, up to [`OUTPUT_CAP`] bytes; the rest is read and dropped, so that the
/// tool never blocks on a full pipe.
async fn capped(reader: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    if let Some(mut reader) = reader {
        let _ = (&mut reader).take(OUTPUT_CAP).read_to_end(&mut kept).await;
        let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
    }
    kept
}

/// The line of the tool's output that says what is wrong: etcdctl's `Error: …`, a Go panic's
/// `panic: …`, or the last line.
fn complaint(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .find(|l| l.starts_with("Error:") || l.starts_with("panic:"))
        .or(lines.last())
        .copied()
        .unwrap_or("no message");
    line.chars().take(500).collect()
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` on `PATH`, as a shell finds it.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| is_executable(path))
    })
}

fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_complaint_is_the_error_line() {
        assert_eq!(
            complaint("{\"level\":\"info\"}\nError: expected sha256 [1], got [2]\n"),
            "Error: expected sha256 [1], got [2]"
        );
        assert_eq!(
            complaint("panic: assertion failed: Page expected to be: 23\n\ngoroutine 1\n"),
            "panic: assertion failed: Page expected to be: 23"
        );
        assert_eq!(complaint("a\nlast words\n\n"), "last words");
        assert_eq!(complaint(""), "no message");
    }

    #[test]
    fn the_tool_is_found_as_configured() {
        let none = RecoveryConfig {
            etcdutl: "none".to_owned(),
            ..RecoveryConfig::default()
        };
        assert_eq!(
            RestoreTool::find(&none).unwrap_err(),
            "[recovery] etcdutl is \"none\""
        );
        let missing = RecoveryConfig {
            etcdutl: "/nonexistent/etcdutl".to_owned(),
            ..RecoveryConfig::default()
        };
        assert!(
            RestoreTool::find(&missing)
                .unwrap_err()
                .contains("is not an executable file")
        );
        let absent = RecoveryConfig {
            etcdutl: "etcdutl-that-is-not-there".to_owned(),
            ..RecoveryConfig::default()
        };
        assert!(
            RestoreTool::find(&absent)
                .unwrap_err()
                .contains("not on PATH")
        );
    }
}
