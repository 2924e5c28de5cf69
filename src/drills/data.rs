//! What each service keeps in its etcd cluster, by key prefix, and the counts of a drill: the
//! keys of the restored backup and of the live cluster, grouped by the data they are.
//!
//! The prefixes come from the services' sources (CSM's repositories on GitHub, read
//! 2026-12): hms-bss `cmd/boot-script-service/boot_data.go` (`paramsPfx`, the image keys by
//! type); bos before CASMCMS-7329 ("Remove BOSv1", 2024: BOS v2 keeps its data in Redis,
//! `cray-bos-db`, so only BOS v1's templates and sessions are ever in the etcd cluster);
//! hms-firmware-action `internal/storage/etcd_impl.go` (`keyPrefix` `/fas/`); hms-hmnfd
//! `cmd/hmi-nfd/api.go` (`SUBSCRIBER_KEY_PREFIX`, `HSM_SUBS_KEY`, `KV_PARAM_KEY`). Keys of no
//! known prefix (and every key of the other clusters) are grouped by their first path segment,
//! as the snapshot reader groups them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::etcd::snapshot_db::prefix_of;

/// Groups of keys of no known prefix beyond this many are counted together.
const MAX_GROUPS: usize = 64;
/// The group of the keys beyond [`MAX_GROUPS`].
const OTHER: &str = "(other keys)";

/// One kind of data a service keeps, under one key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataKind {
    /// What the runbook calls it (`boot parameters`).
    pub data: &'static str,
    pub prefix: &'static str,
}

const fn kind(data: &'static str, prefix: &'static str) -> DataKind {
    DataKind { data, prefix }
}

const BSS: &[DataKind] = &[
    kind("boot parameters", "/params/"),
    kind("kernel images", "/kernel/"),
    kind("initrd images", "/initrd/"),
];
const BOS: &[DataKind] = &[
    kind("session templates (BOS v1)", "/sessionTemplate/"),
    kind("sessions (BOS v1)", "/session/"),
];
const FAS: &[DataKind] = &[
    kind("images", "/fas/images/"),
    kind("snapshots", "/fas/snapshots/"),
    kind("actions", "/fas/actions/"),
    kind("operations", "/fas/operations/"),
];
const HMNFD: &[DataKind] = &[
    kind("subscriptions", "sub#"),
    kind("HSM subscription", "hsmsubs"),
    kind("parameters", "hmnfd_params"),
];

/// What the CSM service `csm` (`cray-bss`) keeps in its etcd cluster, as far as known.
pub fn known_data(csm: &str) -> &'static [DataKind] {
    match csm {
        "cray-bss" => BSS,
        "cray-bos" => BOS,
        "cray-fas" => FAS,
        "cray-hmnfd" => HMNFD,
        _ => &[],
    }
}

/// The keys of one kind of data in the backup and in the live cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataCount {
    /// What the data is (`boot parameters`), or `first path segment` for keys of no known
    /// prefix.
    pub data: String,
    /// The key prefix (a known one, or the keys' first path segment).
    pub prefix: String,
    /// The prefix is one the service is known to use (see the README); false: grouped by
    /// first path segment.
    pub known: bool,
    /// Keys in the restored backup, as its etcd serves them.
    pub backup_keys: u64,
    /// Keys in the live cluster (absent when it could not be read).
    pub live_keys: Option<u64>,
    /// Keys only in the live cluster: written since the backup.
    pub only_live: Option<u64>,
    /// Keys only in the backup: deleted since.
    pub only_backup: Option<u64>,
    /// Keys in both whose live value changed after the backup's revision.
    pub modified_since: Option<u64>,
}

impl DataCount {
    fn new(data: &str, prefix: &str, known: bool, live: bool) -> DataCount {
        let zero = live.then_some(0);
        DataCount {
            data: data.to_owned(),
            prefix: prefix.to_owned(),
            known,
            backup_keys: 0,
            live_keys: zero,
            only_live: zero,
            only_backup: zero,
            modified_since: zero,
        }
    }
}

/// Where a key was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocatedCluster {
    OnlyBackup,
    OnlyLive,
    /// In both; the live key changed after the backup.
    Both {
        modified_since: bool,
    },
}

/// The counts by data, as keys come.
pub struct Tally {
    kinds: &'static [DataKind],
    counts: Vec<DataCount>,
    /// Index in `counts` of each first path segment seen.
    segments: HashMap<Vec<u8>, usize>,
    other: Option<usize>,
    live: bool,
}

impl Tally {
    /// The counts of a cluster of the CSM service `csm`; `live`: the live cluster is compared.
    pub fn new(csm: &str, live: bool) -> Tally {
        let kinds = known_data(csm);
        Tally {
            kinds,
            counts: kinds
                .iter()
                .map(|k| DataCount::new(k.data, k.prefix, true, live))
                .collect(),
            segments: HashMap::new(),
            other: None,
            live,
        }
    }

    fn group(&mut self, key: &[u8]) -> usize {
        // The longest known prefix (`/session/` and `/sessionTemplate/` both are BOS's).
        if let Some((i, _)) = self
            .kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| key.starts_with(k.prefix.as_bytes()))
            .max_by_key(|(_, k)| k.prefix.len())
        {
            return i;
        }
        let segment = prefix_of(key);
        if let Some(&i) = self.segments.get(segment) {
            return i;
        }
        if self.segments.len() >= MAX_GROUPS {
            let live = self.live;
            let counts = &mut self.counts;
            return *self.other.get_or_insert_with(|| {
                counts.push(DataCount::new(OTHER, "", false, live));
                counts.len() - 1
            });
        }
        let prefix = String::from_utf8_lossy(segment).into_owned();
        self.counts.push(DataCount::new(
            "first path segment",
            &prefix,
            false,
            self.live,
        ));
        self.segments
            .insert(segment.to_vec(), self.counts.len() - 1);
        self.counts.len() - 1
    }

    /// Counts `key`, found as `found`.
    pub fn add(&mut self, key: &[u8], found: LocatedCluster) {
        let i = self.group(key);
        let count = &mut self.counts[i];
        let bump = |n: &mut Option<u64>| *n = Some(n.unwrap_or(0) + 1);
        match found {
            LocatedCluster::OnlyBackup => {
                count.backup_keys += 1;
                bump(&mut count.only_backup);
            }
            LocatedCluster::OnlyLive => {
                bump(&mut count.live_keys);
                bump(&mut count.only_live);
            }
            LocatedCluster::Both { modified_since } => {
                count.backup_keys += 1;
                bump(&mut count.live_keys);
                if modified_since {
                    bump(&mut count.modified_since);
                }
            }
        }
    }

    /// The counts: the known data first, in the table's order, then the first path segments
    /// in key order.
    pub fn finish(self) -> Vec<DataCount> {
        let known = self.kinds.len();
        let mut counts = self.counts;
        counts[known..]
            .sort_by(|a, b| (a.data == OTHER, &a.prefix).cmp(&(b.data == OTHER, &b.prefix)));
        counts
    }
}

/// What is wrong with a backup whose counts are `counts` (from [`Tally::finish`]) when the
/// live cluster was compared: it has none of a kind of data the live cluster has (a restore
/// would lose all of it), or no key at all.
pub fn missing_data(csm: &str, counts: &[DataCount]) -> Vec<String> {
    let mut problems: Vec<String> = counts
        .iter()
        .filter(|c| c.known && c.backup_keys == 0)
        .filter_map(|c| {
            let live = c.live_keys.filter(|&n| n > 0)?;
            Some(format!(
                "the backup has none of {csm}'s {} (keys {}), the live cluster has {live}",
                c.data, c.prefix
            ))
        })
        .collect();
    let backup: u64 = counts.iter().map(|c| c.backup_keys).sum();
    let live: u64 = counts.iter().filter_map(|c| c.live_keys).sum();
    if backup == 0 && live > 0 {
        problems.push(format!(
            "the backup holds no key at all, the live cluster has {live}"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_counted_by_known_prefix_then_first_segment() {
        let mut tally = Tally::new("cray-bos", true);
        tally.add(
            b"/sessionTemplate/t1",
            LocatedCluster::Both {
                modified_since: false,
            },
        );
        tally.add(b"/sessionTemplate/t2", LocatedCluster::OnlyLive);
        tally.add(b"/session/s1/job", LocatedCluster::OnlyBackup);
        tally.add(
            b"/zeta/a",
            LocatedCluster::Both {
                modified_since: true,
            },
        );
        tally.add(b"/alpha/b", LocatedCluster::OnlyLive);
        let counts = tally.finish();
        let rows: Vec<(&str, &str, u64, Option<u64>)> = counts
            .iter()
            .map(|c| {
                (
                    c.data.as_str(),
                    c.prefix.as_str(),
                    c.backup_keys,
                    c.live_keys,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "session templates (BOS v1)",
                    "/sessionTemplate/",
                    1,
                    Some(2)
                ),
                ("sessions (BOS v1)", "/session/", 1, Some(0)),
                ("first path segment", "/alpha/", 0, Some(1)),
                ("first path segment", "/zeta/", 1, Some(1)),
            ]
        );
        assert_eq!(counts[0].only_live, Some(1));
        assert_eq!(counts[1].only_backup, Some(1));
        assert_eq!(counts[3].modified_since, Some(1));
        assert_eq!(missing_data("cray-bos", &counts), Vec::<String>::new());
    }

    #[test]
    fn a_backup_without_a_known_kind_the_live_cluster_has_is_missing_it() {
        let mut tally = Tally::new("cray-bss", true);
        tally.add(b"/params/x1", LocatedCluster::OnlyLive);
        tally.add(
            b"/kernel/abc",
            LocatedCluster::Both {
                modified_since: false,
            },
        );
        let problems = missing_data("cray-bss", &tally.finish());
        assert_eq!(
            problems,
            [
                "the backup has none of cray-bss's boot parameters (keys /params/), the live cluster has 1"
            ]
        );
        let mut empty = Tally::new("cray-uas-mgr", true);
        empty.add(b"/uas/x", LocatedCluster::OnlyLive);
        let problems = missing_data("cray-uas-mgr", &empty.finish());
        assert_eq!(
            problems,
            ["the backup holds no key at all, the live cluster has 1"]
        );
        // Without the live cluster, nothing to compare with.
        let mut alone = Tally::new("cray-bss", false);
        alone.add(b"/other/x", LocatedCluster::OnlyBackup);
        let counts = alone.finish();
        assert_eq!(counts[0].live_keys, None);
        assert!(missing_data("cray-bss", &counts).is_empty());
    }

    #[test]
    fn beyond_the_group_limit_keys_count_together() {
        let mut tally = Tally::new("cray-hmnfd", false);
        for i in 0..(MAX_GROUPS + 10) {
            tally.add(format!("key{i}").as_bytes(), LocatedCluster::OnlyBackup);
        }
        tally.add(b"sub#x1#hs.ready", LocatedCluster::OnlyBackup);
        let counts = tally.finish();
        assert_eq!(counts[0].data, "subscriptions");
        assert_eq!(counts[0].backup_keys, 1);
        let other = counts.last().unwrap();
        assert_eq!(other.data, OTHER);
        assert_eq!(other.backup_keys, 10);
        assert_eq!(counts.len(), HMNFD.len() + MAX_GROUPS + 1);
    }
}
