//! What an etcd snapshot holds, read from its database: proof that it is an etcd (bbolt)
//! database with the structure etcd gives it, and the figures `etcdutl snapshot status`
//! reports (hash, revision, total keys, total size), with the keys that are live at its
//! revision, counted by their first path segment.
//!
//! Why our own reader: the file checked is untrusted (whatever is in the snapshotter directory
//! or the S3 bucket), and a verifier of untrusted files must not be able to crash the service
//! that runs recoveries. The bbolt ports on crates.io map the file into memory and trust its
//! page ids and offsets (a damaged file is a segfault or a panic, and a file truncated while
//! mapped is a SIGBUS); bbolt itself panics on some corruptions that `Check` recovers from.
//! This one is safe Rust over positional reads, checks every id, offset and count against the
//! file before using it, visits each page at most once, and bounds its depth and memory (see
//! [`bbolt`]): any input gives facts or a refusal that says what is wrong, never a panic or a
//! hang.
//!
//! etcd's layout in the database (`server/storage/schema`): top-level buckets `key` (the MVCC
//! store: each key a revision, 8 bytes big-endian main revision, `_`, 8 bytes sub revision,
//! and a trailing `t` for a deletion (tombstone); each value an `mvccpb.KeyValue`), `meta`
//! (`consistent_index`, `term`, the compaction revisions), `lease`, `alarm`, `cluster`,
//! `members`, `members_removed`, `auth`, `authUsers`, `authRoles`. `key` and `meta` exist in
//! every etcd database, however empty.

mod bbolt;
mod bytes;
mod error;
mod page_set;
mod source;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::Path,
    sync::atomic::AtomicBool,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use bbolt::{Db, Entry, Visitor};
pub use error::DbError;
pub use source::{FileRegion, Source};

/// The SHA-256 etcd appends to a snapshot, after the database.
pub const TRAILER: u64 = 32;
/// Live keys are counted under at most this many prefixes; the others' keys together.
const MAX_PREFIXES: usize = 256;
/// A prefix longer than this is cut (a key without a `/` is its own prefix).
const MAX_PREFIX_BYTES: usize = 128;

/// A top-level bucket and how many entries it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BucketFacts {
    pub name: String,
    pub entries: u64,
}

/// What an etcd snapshot's database holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotFacts {
    /// The highest main revision in the `key` bucket (`etcdutl snapshot status`'s "revision";
    /// 0 when no key was ever written).
    pub revision: u64,
    /// Entries of every bucket, as etcdctl 3.4's and etcdutl 3.5's `snapshot status` count
    /// "total keys" (every revision of every key, and etcd's own entries).
    pub total_key: u64,
    /// Keys whose latest revision is not a deletion: what `etcdctl get "" --prefix
    /// --count-only` says of the cluster restored from it (and etcdutl 3.6's "total keys").
    pub live_keys: u64,
    /// The database's size (`snapshot status`'s "total size"): its pages times the page size.
    pub total_size: u64,
    /// `snapshot status`'s "hash": CRC-32C (Castagnoli) of the bucket names, keys and values.
    pub hash: u32,
    /// The top-level buckets, in order.
    pub buckets: Vec<BucketFacts>,
    /// Live keys by their first path segment (`/bss/`, `hmnfd/`; a key without `/` is its own
    /// prefix).
    pub live_keys_by_prefix: BTreeMap<String, u64>,
    /// Live keys under prefixes beyond the first 256 found (not in `live_keys_by_prefix`).
    pub live_keys_other_prefixes: u64,
    /// The raft index the database reflects (`meta` bucket, `consistent_index`).
    pub consistent_index: Option<u64>,
    /// The last finished compaction (`meta` bucket, `finishedCompactRev`).
    pub compact_revision: Option<u64>,
    pub page_size: u32,
    /// bbolt's transaction id of the meta page in force.
    pub txid: u64,
    /// What is odd but does not stop a restore (a damaged second meta page, bytes after the
    /// last page).
    pub warnings: Vec<String>,
}

/// Reads the database in the snapshot at `path` (everything before its 32-byte SHA-256
/// trailer, which the caller has checked). Blocking; `cancel` stops it between two pages.
pub fn read_snapshot_file(path: &Path, cancel: &AtomicBool) -> Result<SnapshotFacts, DbError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len().saturating_sub(TRAILER);
    read_etcd_db(&FileRegion { file: &file, len }, cancel)
}

/// Reads an etcd database (without a trailer) from `source`.
pub fn read_etcd_db<S: Source + ?Sized>(
    source: &S,
    cancel: &AtomicBool,
) -> Result<SnapshotFacts, DbError> {
    let db = Db::open(source)?;
    let mut reader = EtcdReader::default();
    db.walk(&mut reader, cancel)?;
    let meta = db.meta();
    let mut warnings = Vec::new();
    if let (page, Some(why)) = db.meta_in_force() {
        warnings.push(format!("{why}; meta page {page} is in force"));
    }
    let trailing = db.trailing_bytes();
    if trailing > 0 {
        warnings.push(format!(
            "{trailing} bytes after the database's {} pages (a copy of a member's db file, not \
             a snapshot?)",
            meta.pages
        ));
    }
    reader.finish(meta, warnings)
}

/// Only the meta pages: whether `source` starts as a bbolt database and holds as many pages
/// as its meta page says (a truncated snapshot does not).
pub fn check_meta<S: Source + ?Sized>(source: &S) -> Result<(), DbError> {
    Db::open(source).map(|_| ())
}

/// What a key of the `key` bucket is: a revision, and whether it deletes its key.
struct Revision {
    main: u64,
    tombstone: bool,
}

/// `<main, 8 bytes BE>_<sub, 8 bytes BE>[t]`.
fn parse_revision(key: &[u8]) -> Option<Revision> {
    let tombstone = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let mut main = [0u8; 8];
    main.copy_from_slice(&key[..8]);
    let main = u64::from_be_bytes(main);
    // etcd's revisions are int64.
    (i64::try_from(main).is_ok()).then_some(Revision { main, tombstone })
}

/// Reads a protobuf varint at `*at`, advancing it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `key` field (1) of an `mvccpb.KeyValue`, walking every field so that a damaged message
/// is noticed; why not, when it cannot be read.
fn kv_key(message: &[u8]) -> Result<&[u8], &'static str> {
    let mut at = 0;
    let mut key: Option<&[u8]> = None;
    while at < message.len() {
        let tag = varint(message, &mut at).ok_or("a field's tag is cut short")?;
        let skip = match tag & 7 {
            0 => {
                varint(message, &mut at).ok_or("a varint is cut short")?;
                0
            }
            1 => 8,
            2 => {
                let len = varint(message, &mut at).ok_or("a length is cut short")?;
                usize::try_from(len).map_err(|_| "a length is out of range")?
            }
            5 => 4,
            _ => return Err("a field has an unknown wire type"),
        };
        let end = at
            .checked_add(skip)
            .filter(|end| *end <= message.len())
            .ok_or("a field runs past the end")?;
        if tag >> 3 == 1 && tag & 7 == 2 {
            key = Some(&message[at..end]);
        }
        at = end;
    }
    key.filter(|key| !key.is_empty()).ok_or("it has no key")
}

/// A key's first path segment: up to and including the first `/` after its first byte (so
/// `/bss/boot-params/x` is under `/bss/`), or the whole key when it has none.
pub(crate) fn prefix_of(key: &[u8]) -> &[u8] {
    let end = key
        .iter()
        .skip(1)
        .position(|&b| b == b'/')
        .map_or(key.len(), |i| i + 2);
    &key[..end.min(MAX_PREFIX_BYTES)]
}

/// What is known of one key while the `key` bucket is read, in revision order.
struct KeyState {
    live: bool,
    /// Index in `EtcdReader::prefixes`; `None` for a prefix beyond the limit.
    prefix: Option<usize>,
}

#[derive(Default)]
struct EtcdReader {
    hash: u32,
    total_key: u64,
    buckets: Vec<BucketFacts>,
    /// The top-level bucket whose entries come.
    current: Vec<u8>,
    saw_key: bool,
    saw_meta: bool,
    revision: u64,
    /// Keys by a digest of them (16 bytes of SHA-256: memory per key does not grow with the
    /// key's length).
    keys: HashMap<[u8; 16], KeyState>,
    prefixes: Vec<Vec<u8>>,
    prefix_index: HashMap<Vec<u8>, usize>,
    consistent_index: Option<u64>,
    compact_revision: Option<u64>,
}

impl Visitor for EtcdReader {
    fn entry(&mut self, entry: Entry<'_>) -> Result<(), DbError> {
        match entry {
            Entry::Bucket { depth: 0, name } => {
                self.hash = crc32c::crc32c_append(self.hash, name);
                self.current = name.to_vec();
                self.saw_key |= name == b"key";
                self.saw_meta |= name == b"meta";
                self.buckets.push(BucketFacts {
                    name: String::from_utf8_lossy(name).into_owned(),
                    entries: 0,
                });
            }
            Entry::Value { depth: 0, key, .. } => {
                return Err(DbError::NotEtcd(format!(
                    "the root holds the value {:?}, not a bucket",
                    String::from_utf8_lossy(key)
                )));
            }
            // A bucket in an etcd bucket: etcd makes none; `snapshot status` counts and hashes
            // its name as an entry with no value.
            Entry::Bucket { depth: 1, name } => {
                if self.current == b"key" {
                    return Err(DbError::NotEtcd(
                        "the `key` bucket holds a nested bucket".to_owned(),
                    ));
                }
                self.count(name, b"");
            }
            Entry::Value {
                depth: 1,
                key,
                value,
            } => {
                self.count(key, value);
                match self.current.as_slice() {
                    b"key" => self.key_entry(key, value)?,
                    b"meta" => self.meta_entry(key, value),
                    _ => {}
                }
            }
            // Deeper buckets' entries: their structure is checked, etcd has none.
            Entry::Bucket { .. } | Entry::Value { .. } => {}
        }
        Ok(())
    }
}

impl EtcdReader {
    fn count(&mut self, key: &[u8], value: &[u8]) {
        self.hash = crc32c::crc32c_append(self.hash, key);
        self.hash = crc32c::crc32c_append(self.hash, value);
        self.total_key += 1;
        if let Some(bucket) = self.buckets.last_mut() {
            bucket.entries += 1;
        }
    }

    fn key_entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let revision = parse_revision(key).ok_or_else(|| {
            DbError::NotEtcd(format!(
                "the `key` bucket holds the key {}, not a revision (8 bytes, '_', 8 bytes, \
                 and 't' for a deletion)",
                hex::encode(&key[..key.len().min(32)])
            ))
        })?;
        let user_key = kv_key(value).map_err(|why| {
            DbError::Corrupt(format!(
                "the `key` bucket's entry at revision {} is not an etcd key-value ({why})",
                revision.main
            ))
        })?;
        self.revision = self.revision.max(revision.main);
        let digest: [u8; 16] = Sha256::digest(user_key)[..16]
            .try_into()
            .unwrap_or_default();
        let state = match self.keys.get_mut(&digest) {
            Some(state) => state,
            None => {
                let prefix = self.prefix_id(prefix_of(user_key));
                self.keys.entry(digest).or_insert(KeyState {
                    live: false,
                    prefix,
                })
            }
        };
        state.live = !revision.tombstone;
        Ok(())
    }

    fn prefix_id(&mut self, prefix: &[u8]) -> Option<usize> {
        if let Some(&id) = self.prefix_index.get(prefix) {
            return Some(id);
        }
        if self.prefixes.len() >= MAX_PREFIXES {
            return None;
        }
        self.prefixes.push(prefix.to_vec());
        self.prefix_index
            .insert(prefix.to_vec(), self.prefixes.len() - 1);
        Some(self.prefixes.len() - 1)
    }

    fn meta_entry(&mut self, key: &[u8], value: &[u8]) {
        match key {
            b"consistent_index" if value.len() == 8 => {
                let mut index = [0u8; 8];
                index.copy_from_slice(value);
                self.consistent_index = Some(u64::from_be_bytes(index));
            }
            b"finishedCompactRev" => {
                self.compact_revision = parse_revision(value).map(|r| r.main);
            }
            _ => {}
        }
    }

    fn finish(self, meta: bbolt::Meta, warnings: Vec<String>) -> Result<SnapshotFacts, DbError> {
        for (saw, name) in [(self.saw_key, "key"), (self.saw_meta, "meta")] {
            if !saw {
                return Err(DbError::NotEtcd(format!("no `{name}` bucket")));
            }
        }
        let mut by_prefix = vec![0u64; self.prefixes.len()];
        let (mut live, mut other) = (0, 0);
        for state in self.keys.values().filter(|state| state.live) {
            live += 1;
            match state.prefix.and_then(|id| by_prefix.get_mut(id)) {
                Some(count) => *count += 1,
                None => other += 1,
            }
        }
        // Two prefixes that are not UTF-8 may read the same: their counts add up.
        let mut live_keys_by_prefix = BTreeMap::new();
        for (prefix, count) in self.prefixes.iter().zip(by_prefix) {
            if count > 0 {
                *live_keys_by_prefix
                    .entry(String::from_utf8_lossy(prefix).into_owned())
                    .or_default() += count;
            }
        }
        Ok(SnapshotFacts {
            revision: self.revision,
            total_key: self.total_key,
            live_keys: live,
            total_size: meta.pages * u64::from(meta.page_size),
            hash: self.hash,
            buckets: self.buckets,
            live_keys_by_prefix,
            live_keys_other_prefixes: other,
            consistent_index: self.consistent_index,
            compact_revision: self.compact_revision,
            page_size: meta.page_size,
            txid: meta.txid,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests;
