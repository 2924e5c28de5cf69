//! A drill's scratch directory, `<[drills] scratch_dir>/drill-<id>`: the backup downloaded from
//! S3 (when it is only there), the restored data directory, the scratch etcd's log and its pid
//! file. Removed when the drill ends however it ends (the guard's drop, after the etcd is
//! killed); and at start, whatever a crashed service left: a directory whose lock no process
//! holds, after killing the etcd its pid file names.
//!
//! The lock (`flock` on `<dir>/lock`, held for the drill's life) is what tells a crashed
//! drill's directory from a running one: the kernel releases it when its process dies, and it
//! is per open file, so another service sharing the directory (tests run many in one process)
//! never removes a running drill's.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rustix::fs::{FlockOperation, flock};
use uuid::Uuid;

/// The prefix of a drill's directory's name.
const DIR_PREFIX: &str = "drill-";
/// The file a running drill holds locked.
const LOCK_FILE: &str = "lock";
/// The file naming the scratch etcd's process.
const ETCD_PID_FILE: &str = "etcd.pid";
/// A directory without its lock file is being created, unless it is older than this.
const CREATION_GRACE: Duration = Duration::from_secs(60);

/// A drill's scratch directory, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    /// Held locked until the directory is removed.
    _lock: File,
}

impl ScratchDir {
    /// Creates `<parent>/drill-<id>` (and `parent`), locked.
    pub fn create(parent: &Path, id: Uuid) -> io::Result<ScratchDir> {
        std::fs::create_dir_all(parent)?;
        let path = parent.join(format!("{DIR_PREFIX}{id}"));
        std::fs::create_dir(&path)?;
        let lock = File::create(path.join(LOCK_FILE)).and_then(|file| {
            flock(&file, FlockOperation::NonBlockingLockExclusive)
                .map(|()| file)
                .map_err(io::Error::from)
        });
        match lock {
            Ok(lock) => Ok(ScratchDir { path, _lock: lock }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names the scratch etcd's process, for the start after a crash.
    pub fn record_etcd(&self, pid: u32) -> io::Result<()> {
        std::fs::write(self.path.join(ETCD_PID_FILE), pid.to_string())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Blocking, and the only way that runs when the drill's future is dropped; the etcd
        // that wrote here is killed first (its guard is dropped before this one).
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "removing a drill's scratch directory");
        }
    }
}

/// Removes what crashed drills left in `parent`: each `drill-*` directory whose lock no
/// process holds (or that never got one, after a grace period), once the etcd its pid file
/// names, if it still runs on that directory, is killed. Returns the directories removed.
pub fn remove_leftovers(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX))
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !ours || !abandoned(&path) {
            continue;
        }
        kill_recorded_etcd(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the scratch directory of a drill cut short by a crash");
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove the scratch directory of a drill cut short by a crash");
            }
        }
    }
    removed
}

/// No running drill holds `dir`.
fn abandoned(dir: &Path) -> bool {
    match File::open(dir.join(LOCK_FILE)) {
        // Taken at once: nobody holds it (it is released when this file is closed).
        Ok(lock) => flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
        Err(_) => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|at| {
                SystemTime::now()
                    .duration_since(at)
                    .is_ok_and(|age| age > CREATION_GRACE)
            }),
    }
}

/// Kills the etcd named by `dir`'s pid file, if that process still runs with `dir` on its
/// command line (a pid reused by another process is left alone), and waits briefly for it.
fn kill_recorded_etcd(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join(ETCD_PID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    if !cmdline.windows(needle.len()).any(|w| w == needle) || !running(pid) {
        return;
    }
    let Some(process) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    match rustix::process::kill_process(process, rustix::process::Signal::KILL) {
        Ok(()) => {
            tracing::info!(pid, dir = %dir.display(), "killed the etcd of a drill cut short by a crash");
            for _ in 0..200 {
                if !running(pid) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Err(e) => {
            tracing::warn!(pid, dir = %dir.display(), error = %e, "could not kill the etcd of a drill cut short by a crash");
        }
    }
}

/// The process `pid` exists and is not a zombie (dead, waiting for its parent to reap it).
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: the state follows the last `)` (comm may hold anything).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_stays_and_an_abandoned_one_goes() {
        let parent = tempfile::tempdir().unwrap();
        let running = ScratchDir::create(parent.path(), Uuid::now_v7()).unwrap();
        // A crashed drill's: its lock file is there, nobody holds it.
        let crashed = parent
            .path()
            .join(format!("{DIR_PREFIX}{}", Uuid::now_v7()));
        std::fs::create_dir_all(crashed.join("data/member")).unwrap();
        std::fs::write(crashed.join(LOCK_FILE), "").unwrap();
        // A pid file naming a process that is not an etcd of this directory: left alone.
        std::fs::write(crashed.join(ETCD_PID_FILE), std::process::id().to_string()).unwrap();
        // Being created (no lock file yet, new): left alone; not ours: left alone.
        let creating = parent
            .path()
            .join(format!("{DIR_PREFIX}{}", Uuid::now_v7()));
        std::fs::create_dir(&creating).unwrap();
        let other = parent.path().join("something-else");
        std::fs::create_dir(&other).unwrap();

        assert_eq!(
            remove_leftovers(parent.path()),
            std::slice::from_ref(&crashed)
        );
        assert!(running.path().is_dir() && creating.is_dir() && other.is_dir());
        assert!(!crashed.exists());

        let path = running.path().to_owned();
        drop(running);
        assert!(!path.exists());
        assert!(remove_leftovers(&parent.path().join("missing")).is_empty());
    }

    #[test]
    fn a_process_state_is_read_past_its_name() {
        assert!(running(i32::try_from(std::process::id()).unwrap()));
        assert!(!running(i32::MAX));
    }
}
