//! pdsh/Slurm hostlist expressions: `ncn-w00[1-4]-can.local`, `a,b[1-3]`, `x[1-2]c[0-1]`.
//!
//! Owned rather than borrowed from a crate because the runbook's exact syntax (zero padding
//! taken from the lower bound, several bracket groups, `pdsh -w` whitespace rules) is small,
//! and the errors need to point an administrator at the offending column.

use std::collections::HashSet;
use std::fmt::Write as _;

use thiserror::Error;

/// Upper bound on the number of names one expression may expand to. A typo such as
/// `nid[000001-999999999]` must fail fast instead of allocating gigabytes.
pub const MAX_HOSTS: usize = 1_000_000;

/// Why a hostlist expression was rejected. Columns are 1-based character positions in the
/// whole expression, so the message can be matched against what the admin typed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostlistError {
    #[error("empty hostlist")]
    Empty,
    #[error("'[' at column {column} is never closed")]
    UnclosedBracket { column: usize },
    #[error("']' at column {column} has no matching '['")]
    UnopenedBracket { column: usize },
    #[error("nested '[' at column {column}")]
    NestedBracket { column: usize },
    #[error("empty range element at column {column}")]
    EmptyRange { column: usize },
    #[error("range element {text:?} at column {column} is not a number or a number range")]
    NotNumeric { text: String, column: usize },
    #[error("number {text:?} at column {column} is too large")]
    NumberTooLarge { text: String, column: usize },
    #[error("range {text:?} at column {column} is reversed (lower bound above upper bound)")]
    ReversedRange { text: String, column: usize },
    #[error("hostlist expands to more than {max} hosts")]
    TooLarge { max: usize },
}

/// One numeric range inside brackets, e.g. `001-010` (width 3) or `7` (width 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumRange {
    lo: u64,
    hi: u64,
    /// Minimum digit count: the width of the lower bound as written, so `[001-010]` keeps its
    /// zero padding and `[8-12]` does not invent any.
    width: usize,
}

impl NumRange {
    fn len(&self) -> u64 {
        // Saturating: `[0-18446744073709551615]` has 2^64 elements; the cap rejects it anyway.
        (self.hi - self.lo).saturating_add(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Group(Vec<NumRange>),
}

impl Segment {
    fn cardinality(&self) -> u64 {
        match self {
            Segment::Literal(_) => 1,
            Segment::Group(ranges) => ranges
                .iter()
                .fold(0u64, |acc, r| acc.saturating_add(r.len())),
        }
    }
}

/// Expands a hostlist expression into host names, in order, without duplicates.
///
/// Top-level commas and whitespace separate patterns (pdsh and Slurm treat both as
/// delimiters, which also lets a `^file` of one host per line be passed straight through).
/// Inside brackets, elements are numbers or `lo-hi` ranges separated by commas; whitespace
/// around them is ignored. Several bracket groups in one pattern expand as a cartesian
/// product, leftmost group varying slowest.
pub fn expand(expr: &str) -> Result<Vec<String>, HostlistError> {
    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    for (column, pattern) in split_top_level(expr)? {
        let segments = parse_pattern(pattern, column)?;
        let count = segments
            .iter()
            .try_fold(1u64, |acc, s| acc.checked_mul(s.cardinality()));
        // Duplicates are removed after expansion, so the cap applies to the raw product: it
        // bounds the work done, not just the size of the result.
        match count {
            Some(n) if n <= (MAX_HOSTS - hosts.len().min(MAX_HOSTS)) as u64 => {}
            _ => return Err(HostlistError::TooLarge { max: MAX_HOSTS }),
        }
        expand_segments(&segments, &mut String::new(), &mut |name| {
            if seen.insert(name.to_owned()) {
                hosts.push(name.to_owned());
            }
        });
    }
    if hosts.is_empty() {
        return Err(HostlistError::Empty);
    }
    Ok(hosts)
}

/// Splits at commas and whitespace outside brackets; yields (1-based column, pattern).
fn split_top_level(expr: &str) -> Result<Vec<(usize, &str)>, HostlistError> {
    let mut patterns = Vec::new();
    let mut depth_open: Option<usize> = None;
    let mut start: Option<(usize, usize)> = None; // (byte offset, column)
    for (column, (offset, ch)) in expr.char_indices().enumerate().map(|(i, c)| (i + 1, c)) {
        match ch {
            '[' => {
                if depth_open.is_some() {
                    return Err(HostlistError::NestedBracket { column });
                }
                depth_open = Some(column);
                start.get_or_insert((offset, column));
            }
            ']' => {
                if depth_open.take().is_none() {
                    return Err(HostlistError::UnopenedBracket { column });
                }
            }
            c if depth_open.is_none() && (c == ',' || c.is_whitespace()) => {
                if let Some((from, col)) = start.take() {
                    patterns.push((col, &expr[from..offset]));
                }
            }
            _ => {
                start.get_or_insert((offset, column));
            }
        }
    }
    if let Some(column) = depth_open {
        return Err(HostlistError::UnclosedBracket { column });
    }
    if let Some((from, col)) = start {
        patterns.push((col, &expr[from..]));
    }
    Ok(patterns)
}

/// Parses one bracket-balanced pattern (no top-level separators) into segments.
fn parse_pattern(pattern: &str, first_column: usize) -> Result<Vec<Segment>, HostlistError> {
    let mut segments = Vec::new();
    let mut rest = pattern;
    let mut column = first_column;
    while !rest.is_empty() {
        match rest.find('[') {
            Some(open) => {
                if open > 0 {
                    segments.push(Segment::Literal(rest[..open].to_owned()));
                }
                column += rest[..open].chars().count();
                // split_top_level guarantees a matching ']' exists after every '['.
                let close = open + rest[open..].find(']').unwrap_or(rest.len() - open);
                let body = &rest[open + 1..close];
                segments.push(Segment::Group(parse_group(body, column + 1)?));
                column += body.chars().count() + 2;
                rest = rest.get(close + 1..).unwrap_or("");
            }
            None => {
                segments.push(Segment::Literal(rest.to_owned()));
                rest = "";
            }
        }
    }
    Ok(segments)
}

/// Parses the inside of `[...]`: `1-3,7, 10-12`.
fn parse_group(body: &str, first_column: usize) -> Result<Vec<NumRange>, HostlistError> {
    let mut ranges = Vec::new();
    let mut column = first_column;
    for element in body.split(',') {
        let leading = element.chars().take_while(|c| c.is_whitespace()).count();
        let trimmed = element.trim();
        let at = column + leading;
        column += element.chars().count() + 1;
        if trimmed.is_empty() {
            return Err(HostlistError::EmptyRange { column: at });
        }
        let (lo_text, hi_text) = match trimmed.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (trimmed, trimmed),
        };
        let lo = parse_number(lo_text, trimmed, at)?;
        let hi = parse_number(hi_text, trimmed, at)?;
        if lo > hi {
            return Err(HostlistError::ReversedRange {
                text: trimmed.to_owned(),
                column: at,
            });
        }
        ranges.push(NumRange {
            lo,
            hi,
            width: lo_text.len(),
        });
    }
    Ok(ranges)
}

fn parse_number(text: &str, element: &str, column: usize) -> Result<u64, HostlistError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostlistError::NotNumeric {
            text: element.to_owned(),
            column,
        });
    }
    text.parse().map_err(|_| HostlistError::NumberTooLarge {
        text: text.to_owned(),
        column,
    })
}

fn expand_segments(segments: &[Segment], prefix: &mut String, emit: &mut dyn FnMut(&str)) {
    let Some((first, rest)) = segments.split_first() else {
        emit(prefix);
        return;
    };
    let mark = prefix.len();
    match first {
        Segment::Literal(text) => {
            prefix.push_str(text);
            expand_segments(rest, prefix, emit);
        }
        Segment::Group(ranges) => {
            for range in ranges {
                for n in range.lo..=range.hi {
                    prefix.truncate(mark);
                    // Writing to a String cannot fail.
                    let _ = write!(prefix, "{n:0width$}", width = range.width);
                    expand_segments(rest, prefix, emit);
                }
            }
        }
    }
    prefix.truncate(mark);
}

/// Compresses host names into a hostlist expression, the inverse of [`expand`] as a set:
/// names that differ only in their last run of digits are folded into one bracket group
/// (`nid[000001-000003,000007]-nmn`). Groups appear in order of first appearance. Names that
/// contain hostlist syntax characters are passed through unchanged.
pub fn compress(hosts: &[String]) -> String {
    // Key: (prefix, suffix, padded width or 0 for unpadded numbers). Padded and unpadded
    // numbers are kept apart so `n01` and `n1` both survive a round trip.
    type Key<'a> = (&'a str, &'a str, usize);
    let mut order: Vec<Key> = Vec::new();
    let mut groups: std::collections::HashMap<Key, Vec<u64>> = Default::default();
    let mut literals: std::collections::HashMap<Key, &str> = Default::default();
    for host in hosts {
        let key_and_number = split_last_number(host);
        match key_and_number {
            Some((key, n)) => {
                let numbers = groups.entry(key).or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                });
                numbers.push(n);
            }
            None => {
                let key = (host.as_str(), "", usize::MAX);
                if literals.insert(key, host.as_str()).is_none() {
                    order.push(key);
                }
            }
        }
    }
    let mut parts = Vec::with_capacity(order.len());
    for key in order {
        if let Some(literal) = literals.get(&key) {
            parts.push((*literal).to_owned());
            continue;
        }
        let Some(numbers) = groups.get_mut(&key) else {
            continue;
        };
        numbers.sort_unstable();
        numbers.dedup();
        let (prefix, suffix, width) = key;
        let fmt = |n: u64| format!("{n:0width$}");
        if let [only] = numbers.as_slice() {
            parts.push(format!("{prefix}{}{suffix}", fmt(*only)));
            continue;
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < numbers.len() {
            let lo = numbers[i];
            let mut hi = lo;
            while i + 1 < numbers.len() && numbers[i + 1] == hi + 1 {
                hi += 1;
                i += 1;
            }
            ranges.push(if lo == hi {
                fmt(lo)
            } else {
                format!("{}-{}", fmt(lo), fmt(hi))
            });
            i += 1;
        }
        parts.push(format!("{prefix}[{}]{suffix}", ranges.join(",")));
    }
    parts.join(",")
}

/// Splits `nid000017-nmn` into ((`nid`, `-nmn`, 6), 17). None if the name has no digits, has
/// syntax characters, or its number does not fit in u64.
fn split_last_number(host: &str) -> Option<((&str, &str, usize), u64)> {
    if host.contains(['[', ']', ',']) || host.contains(char::is_whitespace) {
        return None;
    }
    let end = host.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = host[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &host[start..end];
    let n = digits.parse().ok()?;
    let width = if digits.len() > 1 && digits.starts_with('0') {
        digits.len()
    } else {
        0
    };
    Some(((&host[..start], &host[end..], width), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expr: &str) -> Vec<String> {
        match expand(expr) {
            Ok(hosts) => hosts,
            Err(e) => panic!("{expr:?} failed: {e}"),
        }
    }

    fn err(expr: &str) -> HostlistError {
        match expand(expr) {
            Ok(hosts) => panic!("{expr:?} unexpectedly expanded to {hosts:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn runbook_ncn_expressions() {
        assert_eq!(
            ok("ncn-w00[0-4]-can.local"),
            [
                "ncn-w000-can.local",
                "ncn-w001-can.local",
                "ncn-w002-can.local",
                "ncn-w003-can.local",
                "ncn-w004-can.local"
            ]
        );
        assert_eq!(ok("ncn-s00[0-4]-can.local").len(), 5);
    }

    #[test]
    fn plain_names_and_top_level_commas() {
        assert_eq!(ok("a"), ["a"]);
        assert_eq!(ok("a,b[1-3]"), ["a", "b1", "b2", "b3"]);
        assert_eq!(ok("a , b ,\tc\n"), ["a", "b", "c"]);
        assert_eq!(ok("a b\nc"), ["a", "b", "c"]);
        assert_eq!(ok(",a,,b,"), ["a", "b"]);
    }

    #[test]
    fn mixed_elements_in_one_group() {
        assert_eq!(
            ok("n[1-3,7,10-12]"),
            ["n1", "n2", "n3", "n7", "n10", "n11", "n12"]
        );
        assert_eq!(ok("n[ 1 - 2 , 5 ]"), ["n1", "n2", "n5"]);
    }

    #[test]
    fn zero_padding_comes_from_lower_bound() {
        let hosts = ok("nid[001-010]");
        assert_eq!(hosts.first().map(String::as_str), Some("nid001"));
        assert_eq!(hosts.last().map(String::as_str), Some("nid010"));
        assert_eq!(hosts.len(), 10);
        assert_eq!(ok("n[8-12]"), ["n8", "n9", "n10", "n11", "n12"]);
        assert_eq!(ok("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(ok("n[098-101]"), ["n098", "n099", "n100", "n101"]);
        assert_eq!(ok("n[07]"), ["n07"]);
    }

    #[test]
    fn several_groups_are_a_cartesian_product_in_order() {
        assert_eq!(ok("x[1-2]c[0-1]"), ["x1c0", "x1c1", "x2c0", "x2c1"]);
        assert_eq!(ok("x[1-2]c[0-1]s[0-1]").len(), 8, "three groups multiply");
    }

    #[test]
    fn group_without_prefix_or_suffix() {
        assert_eq!(ok("[1-3]"), ["1", "2", "3"]);
        assert_eq!(ok("[1-2]-nmn"), ["1-nmn", "2-nmn"]);
    }

    #[test]
    fn duplicates_removed_keeping_first_occurrence() {
        assert_eq!(ok("b,a,b,n[1-2],n[2-3]"), ["b", "a", "n1", "n2", "n3"]);
        assert_eq!(ok("n[1-3,2]"), ["n1", "n2", "n3"]);
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(err(""), HostlistError::Empty);
        assert_eq!(err(" , ,\n"), HostlistError::Empty);
    }

    #[test]
    fn bracket_errors_name_the_column() {
        assert_eq!(err("n[1-3"), HostlistError::UnclosedBracket { column: 2 });
        assert_eq!(err("n1-3]"), HostlistError::UnopenedBracket { column: 5 });
        assert_eq!(err("n[1[2]]"), HostlistError::NestedBracket { column: 4 });
        assert_eq!(err("a,n[]"), HostlistError::EmptyRange { column: 5 });
        assert_eq!(err("n[1,]"), HostlistError::EmptyRange { column: 5 });
    }

    #[test]
    fn range_errors() {
        assert_eq!(
            err("n[5-3]"),
            HostlistError::ReversedRange {
                text: "5-3".into(),
                column: 3
            }
        );
        assert_eq!(
            err("n[1-3,a]"),
            HostlistError::NotNumeric {
                text: "a".into(),
                column: 7
            }
        );
        assert!(matches!(err("n[1-]"), HostlistError::NotNumeric { .. }));
        assert!(matches!(err("n[-1]"), HostlistError::NotNumeric { .. }));
        assert!(matches!(err("n[1-2-3]"), HostlistError::NotNumeric { .. }));
        assert!(matches!(
            err("n[99999999999999999999]"),
            HostlistError::NumberTooLarge { .. }
        ));
    }

    #[test]
    fn expansion_is_capped() {
        assert_eq!(
            err("n[0-1000000]"),
            HostlistError::TooLarge { max: MAX_HOSTS }
        );
        // The product of two individually small groups is what counts.
        assert_eq!(
            err("x[1-2000]c[1-2000]"),
            HostlistError::TooLarge { max: MAX_HOSTS }
        );
        // Overflowing u64 in the product must be an error, not a wrap-around.
        assert_eq!(
            err("a[0-18446744073709551615]b[0-18446744073709551614]"),
            HostlistError::TooLarge { max: MAX_HOSTS }
        );
        // The cap is cumulative over comma-separated patterns.
        assert_eq!(
            err("a[1-600000],b[1-600000]"),
            HostlistError::TooLarge { max: MAX_HOSTS }
        );
        assert_eq!(ok("n[1-1000000]").len(), MAX_HOSTS);
    }

    #[test]
    fn non_ascii_columns_count_characters() {
        assert_eq!(err("é[1"), HostlistError::UnclosedBracket { column: 2 });
    }

    #[test]
    fn compress_folds_numeric_runs() {
        let hosts = ok("nid[000001-000003,000007]-nmn");
        assert_eq!(compress(&hosts), "nid[000001-000003,000007]-nmn");
        assert_eq!(compress(&ok("n8,n9,n10,n12")), "n[8-10,12]");
        assert_eq!(compress(&ok("a,b")), "a,b");
        assert_eq!(compress(&ok("n5")), "n5");
        assert_eq!(compress(&[]), "");
        assert_eq!(
            compress(&ok("ncn-w00[0-4]-can.local")),
            "ncn-w[000-004]-can.local"
        );
    }

    #[test]
    fn compress_round_trips_as_a_set() {
        for expr in [
            "x[1-2]c[0-1]",
            "n01,n1,n2,n02,n100",
            "nid[000001-001024]-nmn,ncn-w00[1-4]-can.local,ncn-s00[1-3]-can.local",
            "a,b,c1,c3,c2",
            "n0,n00,n000",
        ] {
            let hosts = ok(expr);
            let mut again = ok(&compress(&hosts));
            let mut sorted = hosts.clone();
            again.sort();
            sorted.sort();
            assert_eq!(again, sorted, "{expr} -> {}", compress(&hosts));
        }
    }
}
