//! OpenSSH known_hosts, parsed once per fan-out and shared by every host task.
//!
//! russh ships a checker, but it re-reads the file for every host, splits fields on single
//! spaces only and treats a key of another algorithm as "unknown"; with 1024 hosts and a
//! security decision at stake we parse once and decide exactly as documented in [`check`].

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KnownHostsError {
    #[error("cannot read known_hosts file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("known_hosts file {path} line {line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `|1|base64(salt)|base64(hmac-sha1(salt, name))`
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A glob (`*`, `?`), lower-cased; `negated` for a leading `!`.
    Glob { glob: String, negated: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    /// `@cert-authority` lines vouch for host certificates, which we do not accept; they never
    /// make a plain host key known.
    CertAuthority,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    marker: Marker,
    patterns: Vec<Pattern>,
    key: PublicKey,
}

/// The verdict on a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    Match,
    /// No entry names this host at all.
    Unknown,
    /// Entries name this host but none holds the presented key.
    Mismatch {
        fingerprint: String,
        lines: Vec<usize>,
    },
    Revoked {
        fingerprint: String,
        line: usize,
    },
}

#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Entries whose positive patterns are all plain names (no wildcard, not hashed), by a hash
    /// of each such name, sorted: a host's check looks at the entries that may name it, not at
    /// every entry, which on a site with one entry per node made the fan-out's key checks grow
    /// with the square of the node count.
    by_name: Vec<(u64, usize)>,
    /// The other entries (a wildcard or hashed pattern), tried for every host.
    always: Vec<usize>,
}

impl KnownHosts {
    pub fn load(path: &Path) -> Result<Self, KnownHostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KnownHostsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| KnownHostsError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses known_hosts text. A malformed line is an error rather than skipped: the file is
    /// deployed from a Secret, and a silently ignored line means hosts silently refused.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let marker = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => Marker::CertAuthority,
                m if m.starts_with('@') => return Err((line, format!("unknown marker {m}"))),
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next().unwrap_or_default();
            }
            let patterns = first
                .split(',')
                .filter(|p| !p.is_empty())
                .map(parse_pattern)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| (line, reason))?;
            if patterns.is_empty() {
                return Err((line, "no host pattern".into()));
            }
            let (Some(algorithm), Some(blob)) = (fields.next(), fields.next()) else {
                return Err((line, "expected: hosts key-type base64-key [comment]".into()));
            };
            let key = PublicKey::from_openssh(&format!("{algorithm} {blob}"))
                .map_err(|e| (line, format!("cannot parse {algorithm} key: {e}")))?;
            entries.push(Entry {
                line,
                marker,
                patterns,
                key,
            });
        }
        Ok(Self::indexed(entries))
    }

    fn indexed(entries: Vec<Entry>) -> Self {
        let mut by_name = Vec::new();
        let mut always = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let positives = entry
                .patterns
                .iter()
                .filter(|p| !matches!(p, Pattern::Glob { negated: true, .. }));
            // Negated patterns only ever exclude, so they never make an entry a candidate.
            if positives.clone().all(|p| plain_name(p).is_some()) {
                by_name.extend(
                    positives
                        .filter_map(plain_name)
                        .map(|name| (name_hash(name), index)),
                );
            } else {
                always.push(index);
            }
        }
        by_name.sort_unstable();
        Self {
            entries,
            by_name,
            always,
        }
    }

    /// The entries that may name any of `lookups`, in file order.
    fn candidates(&self, lookups: &[String]) -> impl Iterator<Item = &Entry> {
        let mut indexes = self.always.clone();
        for name in lookups {
            let hash = name_hash(name);
            let first = self.by_name.partition_point(|(h, _)| *h < hash);
            indexes.extend(
                self.by_name[first..]
                    .iter()
                    .take_while(|(h, _)| *h == hash)
                    .map(|(_, index)| *index),
            );
        }
        indexes.sort_unstable();
        indexes.dedup();
        indexes.into_iter().map(|index| &self.entries[index])
    }

    /// Checks `key` presented by a server reached as any of `names` on `port`. OpenSSH
    /// records non-22 ports as `[name]:port`. A key is accepted if any name has it on record;
    /// it is a mismatch if some name has other keys on record (of any algorithm: a server
    /// suddenly presenting a new key type is as suspicious as a changed key) and none match.
    /// A revoked key is refused even if also listed as valid.
    pub fn check(&self, names: &[&str], port: u16, key: &PublicKey) -> HostKeyStatus {
        let lookups: Vec<String> = names
            .iter()
            .map(|n| {
                let n = n.to_ascii_lowercase();
                if port == 22 {
                    n
                } else {
                    format!("[{n}]:{port}")
                }
            })
            .collect();
        let fingerprint = || key.fingerprint(HashAlg::Sha256).to_string();
        if let Some(revoked) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data())
        {
            return HostKeyStatus::Revoked {
                fingerprint: fingerprint(),
                line: revoked.line,
            };
        }
        let mut other_lines = Vec::new();
        for entry in self
            .candidates(&lookups)
            .filter(|e| e.marker == Marker::None)
        {
            if !lookups.iter().any(|name| entry.matches(name)) {
                continue;
            }
            if entry.key.key_data() == key.key_data() {
                return HostKeyStatus::Match;
            }
            other_lines.push(entry.line);
        }
        if other_lines.is_empty() {
            HostKeyStatus::Unknown
        } else {
            HostKeyStatus::Mismatch {
                fingerprint: fingerprint(),
                lines: other_lines,
            }
        }
    }
}

impl Entry {
    /// OpenSSH semantics: some positive pattern matches and no negated pattern does.
    fn matches(&self, name: &str) -> bool {
        let mut positive = false;
        for pattern in &self.patterns {
            match pattern {
                Pattern::Hashed { salt, hash } => {
                    if hashed_name_matches(salt, hash, name) {
                        positive = true;
                    }
                }
                Pattern::Glob { glob, negated } => {
                    if glob_matches(glob.as_bytes(), name.as_bytes()) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
            }
        }
        positive
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    if let Some(rest) = text.strip_prefix("|1|") {
        let (salt, hash) = rest
            .split_once('|')
            .ok_or_else(|| format!("malformed hashed host {text:?}"))?;
        let decode = |s: &str| {
            BASE64
                .decode(s)
                .map_err(|e| format!("malformed hashed host {text:?}: {e}"))
        };
        return Ok(Pattern::Hashed {
            salt: decode(salt)?,
            hash: decode(hash)?,
        });
    }
    let (negated, glob) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    Ok(Pattern::Glob {
        glob: glob.to_ascii_lowercase(),
        negated,
    })
}

/// The name a pattern stands for when it is one plain name (no wildcard, not negated or hashed).
fn plain_name(pattern: &Pattern) -> Option<&str> {
    match pattern {
        Pattern::Glob { glob, negated } => {
            (!negated && !glob.contains(['*', '?'])).then_some(glob.as_str())
        }
        Pattern::Hashed { .. } => None,
    }
}

fn name_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

fn hashed_name_matches(salt: &[u8], hash: &[u8], name: &str) -> bool {
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(salt) else {
        return false;
    };
    // verify_slice compares in constant time.
    mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok()
}

/// `*` matches any run, `?` any one byte (OpenSSH's match_pattern).
fn glob_matches(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some(b'*') => {
                backtrack = Some((g, n));
                g += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((bg, bn)) => {
                    g = bg + 1;
                    n = bn + 1;
                    backtrack = Some((bg, bn + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Public test vectors from russh's own known_hosts tests (public keys only).
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("test key")
    }

    fn parse(text: &str) -> KnownHosts {
        KnownHosts::parse(text).expect("known_hosts")
    }

    #[test]
    fn plain_and_bracketed_port_entries() {
        let kh = parse(&format!(
            "nid000001-nmn {KEY_A}\n[127.0.0.2]:2222 {KEY_A} comment\n"
        ));
        assert_eq!(
            kh.check(&["nid000001-nmn"], 22, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["NID000001-NMN"], 22, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["nid000001-nmn"], 2222, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            kh.check(&["x", "127.0.0.2"], 2222, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["127.0.0.2"], 22, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn different_key_is_a_mismatch_naming_lines() {
        let kh = parse(&format!("# c\n\nh1,h2 {KEY_A}\n"));
        match kh.check(&["h2"], 22, &key(KEY_B)) {
            HostKeyStatus::Mismatch { lines, fingerprint } => {
                assert_eq!(lines, [3]);
                assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hashed_entries() {
        // A hashed entry for the name "example.com" (russh's test vector).
        let kh = parse(&format!(
            "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= {KEY_B}\n"
        ));
        assert_eq!(
            kh.check(&["example.com"], 22, &key(KEY_B)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["otherhost"], 22, &key(KEY_B)),
            HostKeyStatus::Unknown
        );
        assert!(matches!(
            kh.check(&["example.com"], 22, &key(KEY_A)),
            HostKeyStatus::Mismatch { .. }
        ));
    }

    #[test]
    fn wildcards_and_negation() {
        let kh = parse(&format!("nid*-nmn,!nid000666-nmn {KEY_A}\n"));
        assert_eq!(
            kh.check(&["nid000001-nmn"], 22, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["nid000666-nmn"], 22, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
        assert!(glob_matches(b"a?c*", b"abcdef"));
        assert!(glob_matches(b"*", b""));
        assert!(!glob_matches(b"a*b", b"acbd"));
        assert!(glob_matches(b"*.local", b"ncn-w001-can.local"));
    }

    #[test]
    fn every_kind_of_entry_is_found_among_many() {
        let mut text: String = (0..500).map(|n| format!("node{n} {KEY_B}\n")).collect();
        text.push_str(&format!("node7,*.example.com {KEY_A}\n")); // line 501
        text.push_str(&format!("!node9,node9x {KEY_A}\n")); // line 502
        text.push_str(&format!(
            "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= {KEY_A}\n"
        ));
        let kh = parse(&text);
        assert_eq!(
            kh.check(&["NODE123"], 22, &key(KEY_B)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["a.example.com"], 22, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(kh.check(&["node9x"], 22, &key(KEY_A)), HostKeyStatus::Match);
        assert_eq!(
            kh.check(&["example.com"], 22, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check(&["node500"], 22, &key(KEY_B)),
            HostKeyStatus::Unknown
        );
        // node7 is on lines 8 and 501, with different keys: both found, in file order.
        assert_eq!(kh.check(&["node7"], 22, &key(KEY_A)), HostKeyStatus::Match);
        let other =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        match kh.check(&["node7", "x.example.com"], 22, &key(other)) {
            HostKeyStatus::Mismatch { lines, .. } => assert_eq!(lines, [8, 501]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn revoked_key_is_refused_even_if_listed() {
        let kh = parse(&format!("h1 {KEY_A}\n@revoked * {KEY_A}\n"));
        assert!(matches!(
            kh.check(&["h1"], 22, &key(KEY_A)),
            HostKeyStatus::Revoked { line: 2, .. }
        ));
    }

    #[test]
    fn cert_authority_lines_do_not_make_a_key_known() {
        let kh = parse(&format!("@cert-authority * {KEY_A}\n"));
        assert_eq!(kh.check(&["h1"], 22, &key(KEY_A)), HostKeyStatus::Unknown);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        assert_eq!(KnownHosts::parse("h1\n").map(|_| ()).unwrap_err().0, 1);
        assert_eq!(
            KnownHosts::parse(&format!("h {KEY_A}\nh ssh-ed25519 !!!\n"))
                .map(|_| ())
                .unwrap_err()
                .0,
            2
        );
        assert!(KnownHosts::parse(&format!("@bogus h {KEY_A}")).is_err());
        assert!(KnownHosts::parse(&format!("|1|x {KEY_A}")).is_err());
    }
}
