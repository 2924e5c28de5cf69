//! The keys of the restored backup against the live cluster's: both listed in key order, a
//! page at a time (keys only, each side at one revision), and walked side by side, so that
//! memory does not grow with the number of keys. Only ranges are sent: the live cluster is
//! read, never written.

use std::{cmp::Ordering, collections::VecDeque};

use super::data::{DataCount, LocatedCluster, Tally};
use crate::etcd::{EtcdClient, EtcdError, KeyEntry};

/// Keys asked for per range request.
const PAGE: u64 = 2000;

/// One side's keys, in order, fetched a page at a time at the revision of its first page.
struct Keys<'a> {
    client: &'a EtcdClient,
    revision: Option<u64>,
    page: VecDeque<KeyEntry>,
    /// Where the next page starts; `None` once the last page was read.
    next: Option<Vec<u8>>,
}

impl<'a> Keys<'a> {
    fn new(client: &'a EtcdClient) -> Keys<'a> {
        Keys {
            client,
            revision: None,
            page: VecDeque::new(),
            next: Some(Vec::new()),
        }
    }

    /// The next key, without taking it.
    async fn peek(&mut self) -> Result<Option<&KeyEntry>, EtcdError> {
        while self.page.is_empty() {
            let Some(from) = self.next.take() else {
                return Ok(None);
            };
            let page = self.client.key_page(&from, self.revision, PAGE).await?;
            self.revision.get_or_insert(page.revision);
            if page.more
                && let Some(last) = page.keys.last()
            {
                // The key right after the last one.
                let mut after = last.key.clone();
                after.push(0);
                self.next = Some(after);
            }
            self.page = page.keys.into();
        }
        Ok(self.page.front())
    }

    fn take(&mut self) -> Option<KeyEntry> {
        self.page.pop_front()
    }
}

/// Which side a listing failed on.
#[derive(Debug)]
pub enum Side {
    Backup(EtcdError),
    Live(EtcdError),
}

/// The counts by data of the restored backup (served by `backup`, at `backup_revision`), and
/// of the live cluster when `live` is given, compared key by key.
pub async fn compare(
    csm: &str,
    backup: &EtcdClient,
    backup_revision: u64,
    live: Option<&EtcdClient>,
) -> Result<Vec<DataCount>, Side> {
    let mut tally = Tally::new(csm, live.is_some());
    let mut ours = Keys::new(backup);
    let Some(live) = live else {
        while ours.peek().await.map_err(Side::Backup)?.is_some() {
            if let Some(entry) = ours.take() {
                tally.add(&entry.key, LocatedCluster::OnlyBackup);
            }
        }
        return Ok(tally.finish());
    };
    let mut theirs = Keys::new(live);
    loop {
        let a = ours
            .peek()
            .await
            .map_err(Side::Backup)?
            .map(|e| e.key.clone());
        let b = theirs.peek().await.map_err(Side::Live)?;
        let order = match (&a, b) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.as_slice().cmp(&b.key),
        };
        match order {
            Ordering::Less => {
                if let Some(entry) = ours.take() {
                    tally.add(&entry.key, LocatedCluster::OnlyBackup);
                }
            }
            Ordering::Greater => {
                if let Some(entry) = theirs.take() {
                    tally.add(&entry.key, LocatedCluster::OnlyLive);
                }
            }
            Ordering::Equal => {
                ours.take();
                if let Some(entry) = theirs.take() {
                    let modified_since = entry.mod_revision > backup_revision;
                    tally.add(&entry.key, LocatedCluster::Both { modified_since });
                }
            }
        }
    }
    Ok(tally.finish())
}
