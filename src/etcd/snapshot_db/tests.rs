//! The reader on databases built here byte by byte (real snapshots made by etcd are in
//! `tests/it/backups.rs`), with the corruptions a damaged or hostile file has, and a property
//! test: no input panics.

use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use super::*;

const PAGE: usize = 4096;

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn header(id: u64, flags: u16, count: u16, overflow: u32) -> Vec<u8> {
    let mut page = Vec::new();
    page.extend_from_slice(&id.to_le_bytes());
    page.extend_from_slice(&flags.to_le_bytes());
    page.extend_from_slice(&count.to_le_bytes());
    page.extend_from_slice(&overflow.to_le_bytes());
    page
}

/// A leaf page's bytes: (is a bucket, key, value) in order.
fn leaf(id: u64, elements: &[(bool, &[u8], &[u8])]) -> Vec<u8> {
    let mut page = header(id, 0x02, elements.len() as u16, 0);
    let mut data = Vec::new();
    let first_data = 16 + 16 * elements.len();
    for (i, (bucket, key, value)) in elements.iter().enumerate() {
        let element = 16 + 16 * i;
        let pos = (first_data + data.len() - element) as u32;
        page.extend_from_slice(&u32::from(*bucket).to_le_bytes());
        page.extend_from_slice(&pos.to_le_bytes());
        page.extend_from_slice(&(key.len() as u32).to_le_bytes());
        page.extend_from_slice(&(value.len() as u32).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
    }
    page.extend_from_slice(&data);
    page
}

fn branch(id: u64, children: &[(&[u8], u64)]) -> Vec<u8> {
    let mut page = header(id, 0x01, children.len() as u16, 0);
    let mut data = Vec::new();
    let first_data = 16 + 16 * children.len();
    for (i, (key, child)) in children.iter().enumerate() {
        let pos = (first_data + data.len() - (16 + 16 * i)) as u32;
        page.extend_from_slice(&pos.to_le_bytes());
        page.extend_from_slice(&(key.len() as u32).to_le_bytes());
        page.extend_from_slice(&child.to_le_bytes());
        data.extend_from_slice(key);
    }
    page.extend_from_slice(&data);
    page
}

/// A bucket's value: its root page, or (root 0) the inline leaf that follows.
fn bucket_at(root: u64) -> Vec<u8> {
    let mut value = root.to_le_bytes().to_vec();
    value.extend_from_slice(&0u64.to_le_bytes());
    value
}

fn inline_bucket(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut value = bucket_at(0);
    let elements: Vec<(bool, &[u8], &[u8])> =
        entries.iter().map(|(k, v)| (false, *k, *v)).collect();
    value.extend_from_slice(&leaf(0, &elements));
    value
}

fn meta(id: u64, root: u64, freelist: u64, pages: u64, txid: u64) -> Vec<u8> {
    let mut page = header(id, 0x04, 0, 0);
    let mut m = Vec::new();
    m.extend_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&(PAGE as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&root.to_le_bytes());
    m.extend_from_slice(&0u64.to_le_bytes());
    m.extend_from_slice(&freelist.to_le_bytes());
    m.extend_from_slice(&pages.to_le_bytes());
    m.extend_from_slice(&txid.to_le_bytes());
    let sum = fnv1a64(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    page.extend_from_slice(&m);
    page
}

/// The pages, each padded to the page size.
fn file(pages: Vec<Vec<u8>>) -> Vec<u8> {
    pages
        .into_iter()
        .flat_map(|mut page| {
            assert!(page.len() <= PAGE);
            page.resize(PAGE, 0);
            page
        })
        .collect()
}

fn revision(main: u64, sub: u64, tombstone: bool) -> Vec<u8> {
    let mut key = main.to_be_bytes().to_vec();
    key.push(b'_');
    key.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        key.push(b't');
    }
    key
}

/// An `mvccpb.KeyValue` with `key`, revisions and `value`.
fn key_value(key: &[u8], value: &[u8], revision: u64) -> Vec<u8> {
    let mut m = vec![0x0a, key.len() as u8];
    m.extend_from_slice(key);
    m.extend_from_slice(&[0x10, revision as u8, 0x18, revision as u8, 0x20, 1]);
    if !value.is_empty() {
        m.push(0x2a);
        m.push(value.len() as u8);
        m.extend_from_slice(value);
    }
    m
}

/// A small etcd database: `/bss/a` put at 2, `/bss/b` at 3 and deleted at 4, `/fas/x` at 5,
/// `top` at 6; the `key` bucket on page 3, `meta` inline, `members` on page 4 (empty),
/// no freelist kept (as etcd writes them).
fn etcd_db() -> Vec<u8> {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (revision(2, 0, false), key_value(b"/bss/a", b"1", 2)),
        (revision(3, 0, false), key_value(b"/bss/b", b"2", 3)),
        (revision(4, 0, true), key_value(b"/bss/b", b"", 4)),
        (revision(5, 0, false), key_value(b"/fas/x", b"3", 5)),
        (revision(6, 0, false), key_value(b"top", b"4", 6)),
    ];
    let elements: Vec<(bool, &[u8], &[u8])> = entries
        .iter()
        .map(|(k, v)| (false, k.as_slice(), v.as_slice()))
        .collect();
    let meta_bucket = inline_bucket(&[(b"consistent_index", &9u64.to_be_bytes())]);
    let key_bucket = bucket_at(3);
    let members = bucket_at(4);
    file(vec![
        meta(0, 2, u64::MAX, 5, 7),
        meta(1, 2, u64::MAX, 5, 6),
        leaf(
            2,
            &[
                (true, b"key", &key_bucket),
                (true, b"members", &members),
                (true, b"meta", &meta_bucket),
            ],
        ),
        leaf(3, &elements),
        leaf(4, &[]),
    ])
}

fn read(bytes: &[u8]) -> Result<SnapshotFacts, DbError> {
    read_etcd_db(bytes, &AtomicBool::new(false))
}

fn refusal(bytes: &[u8]) -> String {
    match read(bytes) {
        Ok(facts) => panic!("read: {facts:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_small_etcd_database_reads_as_etcdutl_reports_it() {
    let facts = read(&etcd_db()).unwrap();
    assert_eq!(facts.revision, 6);
    // 5 revisions, 1 meta entry; `members` is empty.
    assert_eq!(facts.total_key, 6);
    assert_eq!(facts.live_keys, 3);
    assert_eq!(facts.total_size, 5 * PAGE as u64);
    assert_eq!(facts.page_size, PAGE as u32);
    assert_eq!(facts.txid, 7);
    assert_eq!(facts.consistent_index, Some(9));
    let names: Vec<&str> = facts.buckets.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["key", "members", "meta"]);
    assert_eq!(facts.buckets[0].entries, 5);
    assert_eq!(
        facts.live_keys_by_prefix,
        BTreeMap::from([
            ("/bss/".to_owned(), 1),
            ("/fas/".to_owned(), 1),
            ("top".to_owned(), 1)
        ])
    );
    assert!(facts.warnings.is_empty(), "{:?}", facts.warnings);
    // The hash: bucket names, then each key and value, in order.
    let db = etcd_db();
    let mut expected = crc32c::crc32c_append(0, b"key");
    let key_page = &db[3 * PAGE..4 * PAGE];
    for i in 0..5 {
        let at = 16 + 16 * i;
        let u = |o: usize| {
            u32::from_le_bytes(key_page[at + o..at + o + 4].try_into().unwrap()) as usize
        };
        let (pos, ksize, vsize) = (u(4), u(8), u(12));
        expected = crc32c::crc32c_append(expected, &key_page[at + pos..at + pos + ksize + vsize]);
    }
    expected = crc32c::crc32c_append(expected, b"members");
    expected = crc32c::crc32c_append(expected, b"meta");
    expected = crc32c::crc32c_append(expected, b"consistent_index");
    expected = crc32c::crc32c_append(expected, &9u64.to_be_bytes());
    assert_eq!(facts.hash, expected);
}

#[test]
fn a_damaged_meta_page_0_falls_back_to_page_1_and_says_so() {
    let mut db = etcd_db();
    db[16 + 40] ^= 1;
    let facts = read(&db).unwrap();
    assert_eq!(facts.txid, 6);
    assert!(
        facts.warnings[0].contains("meta page 0's checksum")
            && facts.warnings[0].contains("meta page 1 is in force"),
        "{:?}",
        facts.warnings
    );
}

#[test]
fn what_is_not_bbolt_is_named() {
    let err = refusal(&[0u8; 20 * 1024]);
    assert!(
        err.starts_with("not a bbolt database: bad magic at meta page 0"),
        "{err}"
    );
    assert!(err.contains("no valid meta page 1"), "{err}");
    assert_eq!(
        refusal(&[1, 2, 3]),
        "not a bbolt database: 3 bytes, too short for a meta page"
    );
    let mut db = etcd_db();
    db[20] = 1;
    db[PAGE + 20] = 1;
    let err = refusal(&db);
    assert!(err.contains("meta page 0 is of version 1, not 2"), "{err}");
}

#[test]
fn a_truncated_database_says_how_much_is_missing() {
    let db = etcd_db();
    let err = refusal(&db[..4 * PAGE]);
    assert_eq!(
        err,
        "truncated: 16384 bytes, the meta page says 5 pages of 4096 (20480 bytes)"
    );
}

#[test]
fn page_ids_out_of_the_file_loops_and_overlaps_are_corruption() {
    // The `key` bucket's root beyond the end.
    let mut db = etcd_db();
    let root = &mut db[2 * PAGE..3 * PAGE];
    let at = root.windows(3).position(|w| w == b"key").unwrap() + 3;
    root[at..at + 8].copy_from_slice(&37u64.to_le_bytes());
    assert_eq!(refusal(&db), "page 37 is out of the file (5 pages)");

    // The `members` bucket's root is the root bucket's own page: a loop.
    let mut db = etcd_db();
    let root = &mut db[2 * PAGE..3 * PAGE];
    let at = root.windows(7).position(|w| w == b"members").unwrap() + 7;
    root[at..at + 8].copy_from_slice(&2u64.to_le_bytes());
    assert_eq!(
        refusal(&db),
        "page 2 is reached twice (a loop, or two parents)"
    );

    // A meta page as a bucket's root.
    let mut db = etcd_db();
    let root = &mut db[2 * PAGE..3 * PAGE];
    let at = root.windows(7).position(|w| w == b"members").unwrap() + 7;
    root[at..at + 8].copy_from_slice(&1u64.to_le_bytes());
    assert_eq!(
        refusal(&db),
        "page 1, a meta page, is reached as part of a tree"
    );

    // A page that says it is another.
    let mut db = etcd_db();
    db[4 * PAGE] = 9;
    assert_eq!(refusal(&db), "page 4 says it is page 9");

    // Overflow past the end.
    let mut db = etcd_db();
    db[4 * PAGE + 12] = 200;
    assert!(refusal(&db).starts_with("page 4 continues on 200 overflow pages"));

    // An element count larger than the page.
    let mut db = etcd_db();
    db[3 * PAGE + 10..3 * PAGE + 12].copy_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        refusal(&db),
        "page 3 says it holds 65535 elements, more than fit in it"
    );

    // A key whose offset points past the page.
    let mut db = etcd_db();
    db[3 * PAGE + 16 + 4..3 * PAGE + 16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        refusal(&db).contains("end past the page"),
        "{}",
        refusal(&db)
    );
}

#[test]
fn keys_out_of_order_and_deep_trees_are_refused() {
    let mut db = etcd_db();
    // Swap the first two revisions' main revision bytes: 3 then 2.
    let page = &mut db[3 * PAGE..4 * PAGE];
    let first = page
        .windows(9)
        .position(|w| *w == revision(2, 0, false)[..9])
        .unwrap();
    page[first + 7] = 4;
    assert_eq!(refusal(&db), "page 3: keys out of order at element 1");

    // A branch whose child's keys are below the branch's key.
    let entries = [(revision(2, 0, false), key_value(b"/a", b"1", 2))];
    let elements: Vec<(bool, &[u8], &[u8])> = entries
        .iter()
        .map(|(k, v)| (false, k.as_slice(), v.as_slice()))
        .collect();
    let key_bucket = bucket_at(3);
    let meta_bucket = inline_bucket(&[]);
    let high = revision(5, 0, false);
    let db = file(vec![
        meta(0, 2, u64::MAX, 5, 3),
        meta(1, 2, u64::MAX, 5, 2),
        leaf(
            2,
            &[(true, b"key", &key_bucket), (true, b"meta", &meta_bucket)],
        ),
        branch(3, &[(&high, 4)]),
        leaf(4, &elements),
    ]);
    assert_eq!(refusal(&db), "page 4: keys out of order at element 0");
}

#[test]
fn a_tree_deeper_than_any_real_one_is_refused_without_recursing_further() {
    // 70 branch pages, each the only parent of the next.
    let low = revision(1, 0, false);
    let key_bucket = bucket_at(3);
    let meta_bucket = inline_bucket(&[]);
    let mut pages = vec![
        meta(0, 2, u64::MAX, 74, 3),
        meta(1, 2, u64::MAX, 74, 2),
        leaf(
            2,
            &[(true, b"key", &key_bucket), (true, b"meta", &meta_bucket)],
        ),
    ];
    for id in 3..73 {
        pages.push(branch(id, &[(&low, id + 1)]));
    }
    pages.push(leaf(73, &[]));
    let err = refusal(&file(pages));
    assert!(err.starts_with("too large to check: page "), "{err}");
    assert!(err.contains("more than 64 levels"), "{err}");
}

#[test]
fn pages_neither_reachable_nor_free_are_lost_when_the_freelist_is_kept() {
    // A freelist on page 5 listing nothing, and page 6 unused.
    let mut pages = vec![meta(0, 2, 5, 7, 7), meta(1, 2, 5, 7, 6)];
    let db = etcd_db();
    for id in 2..5 {
        pages.push(db[id * PAGE..(id + 1) * PAGE].to_vec());
    }
    pages.push(header(5, 0x10, 0, 0));
    pages.push(leaf(6, &[]));
    let err = refusal(&file(pages.clone()));
    assert_eq!(err, "page 6 is neither reachable nor free: pages were lost");
    // Listed as free: fine.
    let mut freelist = header(5, 0x10, 1, 0);
    freelist.extend_from_slice(&6u64.to_le_bytes());
    pages[5] = freelist;
    read(&file(pages.clone())).unwrap();
    // Listed as free and in use.
    let mut freelist = header(5, 0x10, 1, 0);
    freelist.extend_from_slice(&3u64.to_le_bytes());
    pages[5] = freelist;
    assert_eq!(refusal(&file(pages)), "page 3 is both free and in use");
}

#[test]
fn what_is_bbolt_but_not_etcd_is_named() {
    let meta_bucket = inline_bucket(&[]);
    let db = file(vec![
        meta(0, 2, u64::MAX, 3, 3),
        meta(1, 2, u64::MAX, 3, 2),
        leaf(2, &[(true, b"meta", &meta_bucket)]),
    ]);
    assert_eq!(refusal(&db), "no `key` bucket: not an etcd database");

    let key_bucket = inline_bucket(&[(b"not-a-revision", b"x")]);
    let db = file(vec![
        meta(0, 2, u64::MAX, 3, 3),
        meta(1, 2, u64::MAX, 3, 2),
        leaf(
            2,
            &[(true, b"key", &key_bucket), (true, b"meta", &meta_bucket)],
        ),
    ]);
    assert!(
        refusal(&db).contains("the `key` bucket holds the key"),
        "{}",
        refusal(&db)
    );

    let rev = revision(2, 0, false);
    let key_bucket = inline_bucket(&[(&rev, &[0x0a, 0x40, b'x'])]);
    let db = file(vec![
        meta(0, 2, u64::MAX, 3, 3),
        meta(1, 2, u64::MAX, 3, 2),
        leaf(
            2,
            &[(true, b"key", &key_bucket), (true, b"meta", &meta_bucket)],
        ),
    ]);
    assert_eq!(
        refusal(&db),
        "the `key` bucket's entry at revision 2 is not an etcd key-value (a field runs past the end)"
    );
}

#[test]
fn prefixes_are_first_path_segments_and_bounded() {
    assert_eq!(prefix_of(b"/bss/boot/x"), b"/bss/");
    assert_eq!(prefix_of(b"hmnfd/subs"), b"hmnfd/");
    assert_eq!(prefix_of(b"plain"), b"plain");
    assert_eq!(prefix_of(b"/"), b"/");
    assert_eq!(prefix_of(&[b'a'; 300]).len(), MAX_PREFIX_BYTES);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    /// Random bytes: refused, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3 * PAGE)) {
        let _ = read(&bytes);
    }

    /// The small database with bytes changed anywhere, meta pages re-summed so that the
    /// damage gets past them: facts or a refusal, never a panic or a hang.
    #[test]
    fn mutated_databases_never_panic(
        changes in proptest::collection::vec((0..5 * PAGE, any::<u8>()), 1..12),
        resum in any::<bool>(),
        cut in proptest::option::of(0..5 * PAGE),
    ) {
        let mut db = etcd_db();
        for (at, byte) in changes {
            db[at] = byte;
        }
        if resum {
            for page in 0..2 {
                let m = page * PAGE + 16;
                let sum = fnv1a64(&db[m..m + 56]);
                db[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
            }
        }
        if let Some(cut) = cut {
            db.truncate(cut);
        }
        let _ = read(&db);
    }

    /// Page ids, counts and offsets rewritten in the element area of every page.
    #[test]
    fn mutated_element_fields_never_panic(
        changes in proptest::collection::vec((2usize..5, 0usize..6, 0usize..4, any::<u32>()), 1..8),
    ) {
        let mut db = etcd_db();
        for (page, element, field, value) in changes {
            let at = page * PAGE + 16 + element * 16 + field * 4;
            db[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        let _ = read(&db);
    }
}
