//! The pages a walk of a bbolt file has seen (or found free), one bit each.

/// A set of page ids below the database's page count.
pub(super) struct PageSet(Vec<u64>);

impl PageSet {
    pub(super) fn new(pages: u64) -> PageSet {
        // `pages` was checked against the file's size: at most one bit per 512 bytes of it.
        PageSet(vec![0; usize::try_from(pages.div_ceil(64)).unwrap_or(0)])
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        let word = usize::try_from(id / 64).ok();
        word.and_then(|w| self.0.get(w))
            .is_some_and(|bits| bits & (1 << (id % 64)) != 0)
    }

    /// Adds `id`; false when it was there already.
    pub(super) fn insert(&mut self, id: u64) -> bool {
        let Some(bits) = usize::try_from(id / 64)
            .ok()
            .and_then(|w| self.0.get_mut(w))
        else {
            return false;
        };
        let bit = 1 << (id % 64);
        let fresh = *bits & bit == 0;
        *bits |= bit;
        fresh
    }
}
