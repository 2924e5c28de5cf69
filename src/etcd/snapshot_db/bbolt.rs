//! bbolt's on-disk format, read page by page with every offset, length and page id checked
//! against the file before it is used.
//!
//! A bbolt file is an array of pages of one size. Pages 0 and 1 are meta pages (the newer valid
//! one is in force: magic `0xED0CDAED`, version 2, the page size, the root bucket's page, the
//! freelist's page, the number of pages in use, the transaction id, and an FNV-1a 64 checksum
//! of all that); the others are branch and leaf pages of B+trees (one per bucket), freelist
//! pages, and the overflow pages that continue a page too large for one. A page starts with a
//! 16-byte header (its id, its type, its element count, its overflow count); a branch page's
//! elements are (key, child page), a leaf page's are (flags, key, value), each element holding
//! the offset of its key from the element itself. A leaf element flagged as a bucket has as
//! value the bucket's header (its root page and sequence), followed, when the root is 0, by the
//! bucket's only page itself (an inline bucket). bbolt writes the host's byte order: little
//! endian on every platform etcd runs on.
//!
//! The walk is bbolt's `Tx.Check` and a cursor in one pass: every page is read once, a page
//! reached twice is corruption (which is also what stops a loop), keys must be in order within
//! a page and within the bounds their parent gives them, and, when the freelist is kept in the
//! file, every page is either reachable or free. Depth, the bytes of one page with its overflow
//! and the bytes held at once are bounded by the constants below, so that no input can make it
//! recurse, allocate or read without bound.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
};

use super::bytes::{fnv1a64, u16_at, u32_at, u64_at};
use super::error::DbError;
use super::page_set::PageSet;
use super::source::Source;

/// bbolt's marker, at the start of each meta (after the page header).
pub const MAGIC: u32 = 0xED0C_DAED;
/// The format version bbolt writes (and reads).
pub const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
/// Both element kinds are 16 bytes: a branch element is (pos u32, ksize u32, pgid u64), a leaf
/// element (flags u32, pos u32, ksize u32, vsize u32).
const ELEMENT: usize = 16;
/// The meta: magic, version, page size, flags (u32 each), root bucket (root u64, sequence
/// u64), freelist, pages in use, txid, checksum (u64 each).
const META: usize = 64;
/// The checksum covers the meta up to the checksum itself.
const META_SUMMED: usize = 56;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
/// A leaf element that is a nested bucket.
const BUCKET_ELEMENT: u32 = 0x01;
/// The freelist field of a database that does not keep its freelist in the file (etcd opens
/// bbolt with `NoFreelistSync`).
const NO_FREELIST: u64 = u64::MAX;
/// A bucket's value starts with its root page and sequence.
const BUCKET_HEADER: usize = 16;
/// bbolt refuses longer keys (`MaxKeySize`).
const MAX_KEY: usize = 32_768;
/// The page sizes accepted: bbolt uses the OS page size (4 KiB; 16 or 64 KiB on some ARM
/// systems) unless told otherwise.
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 1 << 20;
/// Levels of B+tree and nested buckets together. A real tree of a 2 GiB etcd database is about
/// five levels deep.
const MAX_DEPTH: usize = 64;
/// The most one page with its overflow may take: larger than any value etcd accepts (its
/// `--max-request-bytes` defaults to 1.5 MiB).
const MAX_SPAN: u64 = 64 << 20;
/// The most the pages on the path from a root to the page being read may hold together.
const MAX_HELD: u64 = 256 << 20;

/// A meta page's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    /// The root bucket's root page.
    pub root: u64,
    pub freelist: u64,
    /// Pages in use (bbolt's high water mark): the database is this many pages.
    pub pages: u64,
    pub txid: u64,
}

/// An entry of a bucket, in key order; `depth` is how deep the bucket holding it is nested
/// (0: the root bucket, whose entries are the top-level buckets).
pub enum Entry<'a> {
    Bucket {
        depth: usize,
        name: &'a [u8],
    },
    Value {
        depth: usize,
        key: &'a [u8],
        value: &'a [u8],
    },
}

/// What the walk tells its entries to.
pub trait Visitor {
    fn entry(&mut self, entry: Entry<'_>) -> Result<(), DbError>;
}

/// The meta in `page` (a meta page's first bytes, at least header and meta), or why it is not
/// one.
fn parse_meta(page: &[u8], which: u64) -> Result<Meta, String> {
    let meta = &page[PAGE_HEADER..PAGE_HEADER + META];
    let magic = u32_at(meta, 0);
    if magic != MAGIC {
        return Err(format!(
            "bad magic at meta page {which} (0x{magic:08X}, not 0x{MAGIC:08X})"
        ));
    }
    let version = u32_at(meta, 4);
    if version != VERSION {
        return Err(format!(
            "meta page {which} is of version {version}, not {VERSION}"
        ));
    }
    let (stored, summed) = (u64_at(meta, META_SUMMED), fnv1a64(&meta[..META_SUMMED]));
    if stored != summed {
        return Err(format!(
            "meta page {which}'s checksum is {stored:016x}, its content sums to {summed:016x}"
        ));
    }
    Ok(Meta {
        page_size: u32_at(meta, 8),
        root: u64_at(meta, 16),
        freelist: u64_at(meta, 32),
        pages: u64_at(meta, 40),
        txid: u64_at(meta, 48),
    })
}

/// Where a page is in the walk: how deep in trees and buckets, and the bounds its keys must be
/// within (`low` included, `high` excluded), from its parent.
#[derive(Clone, Copy)]
struct Frame<'k> {
    /// Levels of trees and nested buckets above.
    level: usize,
    /// How deep the bucket whose entries these are is nested.
    bucket: usize,
    low: Option<&'k [u8]>,
    high: Option<&'k [u8]>,
}

impl Frame<'_> {
    /// The root of a bucket nested in the one of this frame.
    fn nested(&self) -> Frame<'static> {
        Frame {
            level: self.level + 1,
            bucket: self.bucket + 1,
            low: None,
            high: None,
        }
    }
}

/// Where a leaf's elements are, for messages.
#[derive(Clone, Copy)]
enum Place {
    Page(u64),
    /// An inline bucket, stored in a leaf element of this page.
    Inline(u64),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Page(id) => write!(f, "page {id}"),
            Place::Inline(id) => write!(f, "an inline bucket in page {id}"),
        }
    }
}

fn corrupt(detail: String) -> DbError {
    DbError::Corrupt(detail)
}

/// An open database: its meta in force, checked against the file.
pub struct Db<'s, S: Source + ?Sized> {
    source: &'s S,
    meta: Meta,
    /// Which meta page is in force.
    meta_page: u64,
    /// Why the other meta page is not, when it is invalid.
    other_meta: Option<String>,
}

impl<'s, S: Source + ?Sized> Db<'s, S> {
    /// Reads and checks the meta pages, as bbolt's `Open` does: the page size from meta page 0,
    /// or from meta page 1 looked for at each possible page size when page 0 is damaged; then
    /// the valid meta with the higher transaction id.
    pub fn open(source: &'s S) -> Result<Self, DbError> {
        let len = source.size();
        let meta_bytes = (PAGE_HEADER + META) as u64;
        if len < meta_bytes {
            return Err(DbError::NotBbolt(format!(
                "{len} bytes, too short for a meta page"
            )));
        }
        let read_meta = |offset: u64, which: u64| -> Result<Result<Meta, String>, DbError> {
            let mut page = [0u8; PAGE_HEADER + META];
            source.read_exact_at(&mut page, offset)?;
            Ok(parse_meta(&page, which))
        };
        let first = read_meta(0, 0)?;
        let page_size = match &first {
            Ok(meta) => meta.page_size,
            Err(why) => {
                // bbolt's own search: meta page 1 at 1 KiB, 2 KiB, … 16 MiB.
                let mut found = None;
                for offset in (0..=14).map(|shift| 1024u64 << shift) {
                    if offset + meta_bytes > len {
                        break;
                    }
                    if let Ok(meta) = read_meta(offset, 1)?
                        && u64::from(meta.page_size) == offset
                    {
                        found = Some(meta.page_size);
                        break;
                    }
                }
                found.ok_or_else(|| {
                    DbError::NotBbolt(format!("{why}, and no valid meta page 1 either"))
                })?
            }
        };
        if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(DbError::NotBbolt(format!(
                "the meta page says the page size is {page_size} bytes (a power of two from \
                 {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE} expected)"
            )));
        }
        let second = if u64::from(page_size) + meta_bytes <= len {
            read_meta(u64::from(page_size), 1)?
        } else {
            Err(format!(
                "meta page 1 is out of the file ({len} bytes, pages of {page_size})"
            ))
        };
        let (meta, meta_page, other_meta) = match (first, second) {
            (Ok(a), Ok(b)) if b.txid > a.txid => (b, 1, None),
            (Ok(a), Ok(_)) => (a, 0, None),
            (Ok(a), Err(why)) => (a, 0, Some(why)),
            (Err(why), Ok(b)) => (b, 1, Some(why)),
            (Err(a), Err(b)) => return Err(DbError::NotBbolt(format!("{a}; {b}"))),
        };
        if meta.page_size != page_size {
            return Err(corrupt(format!(
                "meta page {meta_page} says the page size is {} bytes, meta page 0 {page_size}",
                meta.page_size
            )));
        }
        let pages = meta.pages;
        let size = pages.checked_mul(u64::from(page_size));
        if size.is_none_or(|size| size > len) {
            return Err(DbError::Truncated {
                len,
                pages,
                page_size,
            });
        }
        if pages < 3 {
            return Err(corrupt(format!(
                "meta page {meta_page} says the database has {pages} pages: two meta pages and \
                 a root are at least 3"
            )));
        }
        if !(2..pages).contains(&meta.root) {
            return Err(corrupt(format!(
                "the root bucket's page {} is out of the file ({pages} pages)",
                meta.root
            )));
        }
        if meta.freelist != NO_FREELIST && !(2..pages).contains(&meta.freelist) {
            return Err(corrupt(format!(
                "the freelist's page {} is out of the file ({pages} pages)",
                meta.freelist
            )));
        }
        Ok(Db {
            source,
            meta,
            meta_page,
            other_meta,
        })
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Which meta page is in force, and why the other is invalid when it is.
    pub fn meta_in_force(&self) -> (u64, Option<&str>) {
        (self.meta_page, self.other_meta.as_deref())
    }

    /// Bytes after the database's pages: a snapshot has none; a member's `db` file copied
    /// as is may (bbolt grows its file ahead of use).
    pub fn trailing_bytes(&self) -> u64 {
        self.source.size() - self.meta.pages * u64::from(self.meta.page_size)
    }

    /// Walks every bucket in key order, telling `visitor` each entry, and checks the
    /// structure on the way (see the module's doc). `cancel` stops it between two pages.
    pub fn walk(&self, visitor: &mut dyn Visitor, cancel: &AtomicBool) -> Result<(), DbError> {
        let mut walk = Walk {
            db: self,
            reached: PageSet::new(self.meta.pages),
            free: None,
            held: 0,
            cancel,
        };
        walk.reached.insert(0);
        walk.reached.insert(1);
        if self.meta.freelist != NO_FREELIST {
            walk.read_freelist(self.meta.freelist)?;
        }
        let top = Frame {
            level: 0,
            bucket: 0,
            low: None,
            high: None,
        };
        walk.tree(self.meta.root, top, visitor)?;
        if let Some(free) = &walk.free {
            let lost: Vec<u64> = (2..self.meta.pages)
                .filter(|&id| !walk.reached.contains(id) && !free.contains(id))
                .take(6)
                .collect();
            if let Some(first) = lost.first() {
                let more = if lost.len() > 5 { " (and more)" } else { "" };
                return Err(corrupt(format!(
                    "page {first} is neither reachable nor free{more}: pages were lost"
                )));
            }
        }
        Ok(())
    }
}

struct Walk<'w, 's, S: Source + ?Sized> {
    db: &'w Db<'s, S>,
    reached: PageSet,
    /// The freelist, when the file keeps one.
    free: Option<PageSet>,
    /// Bytes of the pages held by the frames above.
    held: u64,
    cancel: &'w AtomicBool,
}

impl<S: Source + ?Sized> Walk<'_, '_, S> {
    fn pages(&self) -> u64 {
        self.db.meta.pages
    }

    /// Page `id` with its overflow pages, checked to be in the file and to say it is `id`.
    fn read_page(&mut self, id: u64) -> Result<Vec<u8>, DbError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(DbError::Cancelled);
        }
        let pages = self.pages();
        if id >= pages {
            return Err(corrupt(format!(
                "page {id} is out of the file ({pages} pages)"
            )));
        }
        let page_size = u64::from(self.db.meta.page_size);
        let offset = id * page_size;
        let mut header = [0u8; PAGE_HEADER];
        self.db.source.read_exact_at(&mut header, offset)?;
        let said = u64_at(&header, 0);
        if said != id {
            return Err(corrupt(format!("page {id} says it is page {said}")));
        }
        let overflow = u64::from(u32_at(&header, 12));
        if id + overflow >= pages {
            return Err(corrupt(format!(
                "page {id} continues on {overflow} overflow pages, out of the file ({pages} \
                 pages)"
            )));
        }
        let span = (overflow + 1) * page_size;
        if span > MAX_SPAN {
            return Err(DbError::Limit(format!(
                "page {id} with its overflow is {span} bytes, more than the {MAX_SPAN} this \
                 check reads at once"
            )));
        }
        if self.held + span > MAX_HELD {
            return Err(DbError::Limit(format!(
                "reading page {id} would hold more than {MAX_HELD} bytes of pages at once"
            )));
        }
        let mut bytes = vec![0u8; usize::try_from(span).map_err(io::Error::other)?];
        self.db.source.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    /// Marks `id` and its overflow pages as reached from a tree (or the meta, for the
    /// freelist).
    fn reach(&mut self, id: u64, overflow: u64) -> Result<(), DbError> {
        for page in id..=id + overflow {
            if page < 2 {
                return Err(corrupt(format!(
                    "page {page}, a meta page, is reached as part of a tree"
                )));
            }
            if !self.reached.insert(page) {
                return Err(corrupt(format!(
                    "page {page} is reached twice (a loop, or two parents)"
                )));
            }
            if self.free.as_ref().is_some_and(|free| free.contains(page)) {
                return Err(corrupt(format!("page {page} is both free and in use")));
            }
        }
        Ok(())
    }

    fn read_freelist(&mut self, id: u64) -> Result<(), DbError> {
        let page = self.read_page(id)?;
        let flags = u16_at(&page, 8);
        if flags != FREELIST_PAGE {
            return Err(corrupt(format!(
                "the freelist's page {id} is a {} page",
                kind(flags)
            )));
        }
        self.reach(id, u64::from(u32_at(&page, 12)))?;
        let (first, count) = match u16_at(&page, 10) {
            // More than a u16 counts: the count is the first element.
            0xFFFF if page.len() >= PAGE_HEADER + 8 => (1, u64_at(&page, PAGE_HEADER)),
            0xFFFF => {
                return Err(corrupt(format!(
                    "the freelist's page {id} has no room for its count"
                )));
            }
            count => (0, u64::from(count)),
        };
        let room = (page.len() - PAGE_HEADER) as u64 / 8;
        if count > room - first {
            return Err(corrupt(format!(
                "the freelist's page {id} says it lists {count} pages, more than fit in it"
            )));
        }
        let mut free = PageSet::new(self.pages());
        for i in first..first + count {
            // Within the page: checked just above.
            let at = PAGE_HEADER + usize::try_from(i * 8).map_err(io::Error::other)?;
            let listed = u64_at(&page, at);
            if !(2..self.pages()).contains(&listed) {
                return Err(corrupt(format!(
                    "the freelist lists page {listed}, out of the file ({} pages)",
                    self.pages()
                )));
            }
            if self.reached.contains(listed) {
                return Err(corrupt(format!(
                    "the freelist lists page {listed}, which holds the freelist itself"
                )));
            }
            if !free.insert(listed) {
                return Err(corrupt(format!("the freelist lists page {listed} twice")));
            }
        }
        self.free = Some(free);
        Ok(())
    }

    /// The B+tree whose root is page `id`, at `frame`.
    fn tree(
        &mut self,
        id: u64,
        frame: Frame<'_>,
        visitor: &mut dyn Visitor,
    ) -> Result<(), DbError> {
        if frame.level > MAX_DEPTH {
            return Err(DbError::Limit(format!(
                "page {id} is more than {MAX_DEPTH} levels of trees and buckets deep"
            )));
        }
        let page = self.read_page(id)?;
        let overflow = u64::from(u32_at(&page, 12));
        self.reach(id, overflow)?;
        let span = page.len() as u64;
        self.held += span;
        let result = match u16_at(&page, 8) {
            BRANCH_PAGE => self.branch(&page, id, frame, visitor),
            LEAF_PAGE => self.leaf(&page, Place::Page(id), frame, visitor),
            flags => Err(corrupt(format!(
                "page {id} is a {} page where a branch or leaf page was expected",
                kind(flags)
            ))),
        };
        self.held -= span;
        result
    }

    fn branch(
        &mut self,
        page: &[u8],
        id: u64,
        frame: Frame<'_>,
        visitor: &mut dyn Visitor,
    ) -> Result<(), DbError> {
        let count = element_count(page, Place::Page(id))?;
        if count == 0 {
            return Err(corrupt(format!("branch page {id} has no elements")));
        }
        let mut children = Vec::with_capacity(count);
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let (pos, ksize) = (u32_at(page, at), u32_at(page, at + 4));
            let key = element_bytes(page, at, pos, ksize, 0, Place::Page(id), i)?.0;
            children.push((key, u64_at(page, at + 8)));
        }
        check_order(children.iter().map(|(key, _)| *key), frame, Place::Page(id))?;
        for (i, (key, child)) in children.iter().enumerate() {
            let below = Frame {
                level: frame.level + 1,
                bucket: frame.bucket,
                low: Some(key),
                high: children.get(i + 1).map(|(key, _)| *key).or(frame.high),
            };
            self.tree(*child, below, visitor)?;
        }
        Ok(())
    }

    fn leaf(
        &mut self,
        page: &[u8],
        place: Place,
        frame: Frame<'_>,
        visitor: &mut dyn Visitor,
    ) -> Result<(), DbError> {
        let count = element_count(page, place)?;
        let mut elements = Vec::with_capacity(count);
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let flags = u32_at(page, at);
            if flags & !BUCKET_ELEMENT != 0 {
                return Err(corrupt(format!(
                    "{place}, element {i}: unknown flags 0x{flags:x}"
                )));
            }
            let (pos, ksize, vsize) = (
                u32_at(page, at + 4),
                u32_at(page, at + 8),
                u32_at(page, at + 12),
            );
            let (key, value) = element_bytes(page, at, pos, ksize, vsize, place, i)?;
            elements.push((flags & BUCKET_ELEMENT != 0, key, value));
        }
        check_order(elements.iter().map(|(_, key, _)| *key), frame, place)?;
        let here = match place {
            Place::Page(id) | Place::Inline(id) => id,
        };
        for (i, (is_bucket, key, value)) in elements.into_iter().enumerate() {
            if !is_bucket {
                visitor.entry(Entry::Value {
                    depth: frame.bucket,
                    key,
                    value,
                })?;
                continue;
            }
            visitor.entry(Entry::Bucket {
                depth: frame.bucket,
                name: key,
            })?;
            if value.len() < BUCKET_HEADER {
                return Err(corrupt(format!(
                    "{place}, element {i}: a bucket whose value is {} bytes, shorter than a \
                     bucket's header",
                    value.len()
                )));
            }
            let root = u64_at(value, 0);
            if root != 0 {
                self.tree(root, frame.nested(), visitor)?;
                continue;
            }
            let inline = &value[BUCKET_HEADER..];
            if inline.len() < PAGE_HEADER || u16_at(inline, 8) != LEAF_PAGE {
                return Err(corrupt(format!(
                    "{place}, element {i}: an inline bucket that is not a leaf page"
                )));
            }
            if frame.level + 1 > MAX_DEPTH {
                return Err(DbError::Limit(format!(
                    "{place} is more than {MAX_DEPTH} levels of trees and buckets deep"
                )));
            }
            self.leaf(inline, Place::Inline(here), frame.nested(), visitor)?;
        }
        Ok(())
    }
}

/// The page's element count, checked to fit in it.
fn element_count(page: &[u8], place: Place) -> Result<usize, DbError> {
    let count = usize::from(u16_at(page, 10));
    if count > (page.len() - PAGE_HEADER) / ELEMENT {
        return Err(corrupt(format!(
            "{place} says it holds {count} elements, more than fit in it"
        )));
    }
    Ok(count)
}

/// The key (and the value that follows it) of the element at `at`, whose key starts `pos`
/// bytes after the element.
fn element_bytes(
    page: &[u8],
    at: usize,
    pos: u32,
    ksize: u32,
    vsize: u32,
    place: Place,
    index: usize,
) -> Result<(&[u8], &[u8]), DbError> {
    let ksize = ksize as usize;
    if ksize == 0 || ksize > MAX_KEY {
        return Err(corrupt(format!(
            "{place}, element {index}: a key of {ksize} bytes (bbolt's keys are 1 to {MAX_KEY})"
        )));
    }
    let start = at.checked_add(pos as usize);
    let middle = start.and_then(|s| s.checked_add(ksize));
    let end = middle.and_then(|m| m.checked_add(vsize as usize));
    match (start, middle, end) {
        (Some(start), Some(middle), Some(end)) if end <= page.len() => {
            Ok((&page[start..middle], &page[middle..end]))
        }
        _ => Err(corrupt(format!(
            "{place}, element {index}: its key and value (at {pos} + {ksize} + {vsize} bytes) \
             end past the page ({} bytes)",
            page.len()
        ))),
    }
}

/// Keys strictly increasing, none below `low`, all below `high`.
fn check_order<'k>(
    keys: impl Iterator<Item = &'k [u8]>,
    frame: Frame<'_>,
    place: Place,
) -> Result<(), DbError> {
    let Frame { low, high, .. } = frame;
    let mut previous: Option<&[u8]> = None;
    for (i, key) in keys.enumerate() {
        let bad = match previous {
            Some(previous) => key <= previous,
            None => low.is_some_and(|low| key < low),
        } || high.is_some_and(|high| key >= high);
        if bad {
            return Err(corrupt(format!(
                "{place}: keys out of order at element {i}"
            )));
        }
        previous = Some(key);
    }
    Ok(())
}

/// A page type's name, for messages.
fn kind(flags: u16) -> String {
    match flags {
        BRANCH_PAGE => "branch".to_owned(),
        LEAF_PAGE => "leaf".to_owned(),
        META_PAGE => "meta".to_owned(),
        FREELIST_PAGE => "freelist".to_owned(),
        other => format!("unknown (flags 0x{other:02x})"),
    }
}
