//! In front of the database, bounded in bytes: the documents of finished runs read recently
//! (dropped by a resume), and the pages of the list read recently, under the generation of the
//! history they were read at (every write that changes what the list shows starts a new one).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quick_cache::{Weighter, sync::Cache};
use uuid::Uuid;

use crate::model::{Service, State};

/// Memory for the documents of finished runs read recently.
const DOCUMENT_CACHE_BYTES: u64 = 4 << 20;
/// Memory for the pages of the list read recently.
const PAGE_CACHE_BYTES: u64 = 2 << 20;
/// Pages of the list built from the database at the same time.
const PAGE_BUILDS: usize = 2;

/// Weighs cached JSON by its size.
#[derive(Clone)]
pub(super) struct ByteSize;

impl<K> Weighter<K, Bytes> for ByteSize {
    fn weight(&self, _key: &K, value: &Bytes) -> u64 {
        value.len() as u64
    }
}

/// A page of the list: the history's generation and the query.
pub(super) type PageKey = (u64, Option<State>, Option<Service>, Option<Uuid>, u32);

pub(super) struct HistoryCache {
    pub(super) documents: Cache<Uuid, Bytes, ByteSize>,
    pub(super) pages: Cache<PageKey, Bytes, ByteSize>,
    /// Incremented after every committed write that changes what the list shows (a new run, a
    /// run's or a service's state).
    pub(super) generation: AtomicU64,
    /// Incremented after every resume (the only change to a finished run).
    pub(super) resumes: AtomicU64,
    pub(super) page_builds: tokio::sync::Semaphore,
}

impl HistoryCache {
    pub(super) fn new() -> Self {
        HistoryCache {
            documents: Cache::with_weighter(4096, DOCUMENT_CACHE_BYTES, ByteSize),
            pages: Cache::with_weighter(64, PAGE_CACHE_BYTES, ByteSize),
            generation: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            page_builds: tokio::sync::Semaphore::new(PAGE_BUILDS),
        }
    }

    /// After a committed write that changes what the list shows.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// After a committed resume of run `id`.
    pub(super) fn resumed(&self, id: Uuid) {
        self.resumes.fetch_add(1, Ordering::AcqRel);
        self.documents.remove(&id);
        self.changed();
    }
}
