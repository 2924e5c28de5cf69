//! The SHA-256 trailer etcd appends to every snapshot, checked.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

use super::error::BackupError;

/// A snapshot whose SHA-256 trailer matches its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSnapshot {
    pub path: PathBuf,
    /// Bytes, with the trailer.
    pub size: u64,
    /// The SHA-256 of the database (the trailer), hex.
    pub sha256: String,
}

/// Checks a snapshot as `etcdctl snapshot restore` does (etcd 3.4 `clientv3/snapshot`,
/// `saveDB`): a snapshot is the bbolt database, whose size is a multiple of 512, followed by
/// the 32-byte SHA-256 of it, which etcd's maintenance `Snapshot` RPC appends; the file's size
/// must be 32 more than a multiple of 512 and the trailer must be the SHA-256 of what comes
/// before it. A file without the trailer is refused too (`snapshot restore` refuses it unless
/// `--skip-hash-check`, which is for a member's raw `db` file, not a backup). Blocking: call it
/// from `spawn_blocking` in async code.
pub fn verify_snapshot(path: &Path) -> Result<VerifiedSnapshot, BackupError> {
    let mut file = std::fs::File::open(path).map_err(BackupError::io("opening", path))?;
    let mut check = SnapshotCheck::default();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(BackupError::io("reading", path))?;
        if read == 0 {
            break;
        }
        check.update(&buffer[..read]);
    }
    check.finish(path)
}

/// The check of [`verify_snapshot`] over a snapshot that arrives in pieces (a file, or an S3
/// object as it is downloaded): everything but the last 32 bytes is hashed as it comes.
#[derive(Default)]
struct SnapshotCheck {
    hasher: Sha256,
    /// The last (up to) 32 bytes seen: the trailer, once everything has come.
    tail: Vec<u8>,
    size: u64,
}

const TRAILER: usize = 32;

impl SnapshotCheck {
    fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > TRAILER {
            let hashed = self.tail.len() - TRAILER;
            self.hasher.update(&self.tail[..hashed]);
            self.tail.drain(..hashed);
        }
    }

    /// The verdict for the snapshot called `path` (in messages).
    fn finish(self, path: &Path) -> Result<VerifiedSnapshot, BackupError> {
        let corrupt = |detail: String| BackupError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let size = self.size;
        if size < TRAILER as u64 || size % 512 != TRAILER as u64 {
            return Err(corrupt(format!(
                "{size} bytes is not a database (a multiple of 512 bytes) followed by its SHA-256 \
                 (32 bytes): truncated, or not an etcd snapshot"
            )));
        }
        let actual = self.hasher.finalize();
        if actual.as_slice() != self.tail.as_slice() {
            return Err(corrupt(format!(
                "its SHA-256 is {}, its trailer says {}",
                hex::encode(actual),
                hex::encode(&self.tail)
            )));
        }
        Ok(VerifiedSnapshot {
            path: path.to_owned(),
            size,
            sha256: hex::encode(&self.tail),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::snapshot_bytes;
    use super::*;

    #[test]
    fn a_snapshot_with_its_sha256_verifies_and_a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-2025-01-01_00-00");
        let data = snapshot_bytes(8, 7);
        std::fs::write(&path, &data).unwrap();
        let verified = verify_snapshot(&path).unwrap();
        assert_eq!(verified.size, 8 * 512 + 32);
        assert_eq!(verified.sha256, hex::encode(&data[8 * 512..]));

        let mut flipped = data.clone();
        flipped[100] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = verify_snapshot(&path).unwrap_err();
        assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("db-2025-01-01_00-00"), "{err}");

        // Truncated, or without the trailer.
        std::fs::write(&path, &data[..8 * 512]).unwrap();
        let err = verify_snapshot(&path).unwrap_err().to_string();
        assert!(err.contains("not a database"), "{err}");
        // Shorter than the trailer itself, or empty.
        for short in [&data[..5], &[][..]] {
            std::fs::write(&path, short).unwrap();
            let err = verify_snapshot(&path).unwrap_err();
            assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(&format!("{} bytes is not a database", short.len())),
                "{err}"
            );
        }
    }
}
