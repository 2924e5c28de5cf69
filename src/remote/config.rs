//! SSH settings for the fan-out, with defaults that match how the service is deployed (key and
//! known_hosts mounted from a Secret) and how the runbook's `pdsh` behaves (root, port 22).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Remote user; the runbook runs `systemctl restart` as root.
    pub user: String,
    pub port: u16,
    /// Private key (OpenSSH or PKCS#8 format, unencrypted: the service has nobody to type a
    /// passphrase). Only the path is kept here, so this struct is safe to log.
    pub identity_file: PathBuf,
    /// OpenSSH known_hosts file; plain and hashed (`|1|salt|hash`) host patterns, `[host]:port`
    /// for non-22 ports, `*`/`?` wildcards, `!` negation and `@revoked` are understood.
    pub known_hosts_file: PathBuf,
    /// Accept hosts that have no entry in known_hosts. A host whose key differs from a recorded
    /// one, or whose key is `@revoked`, is refused regardless.
    pub accept_unknown_host_keys: bool,
    /// How many hosts are worked on at once (pdsh `-f`).
    pub fanout: usize,
    /// Bound on TCP connect plus SSH handshake and authentication.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on running the command, from opening the session until the channel closes.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Static name -> address map, consulted before DNS (like /etc/hosts). Known_hosts entries
    /// may name either the host or the address.
    pub hosts: BTreeMap<String, String>,
    /// Why no node can be reached at all (set by `serve --simulate` when it could not start an
    /// SSH server for the simulated nodes): every fan-out fails at once with this one line.
    #[serde(skip)]
    pub unavailable: Option<String>,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            user: "root".into(),
            port: 22,
            identity_file: "/etc/etcd-repopulator/ssh/id_ed25519".into(),
            known_hosts_file: "/etc/etcd-repopulator/ssh/known_hosts".into(),
            accept_unknown_host_keys: false,
            fanout: 64,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            hosts: BTreeMap::new(),
            unavailable: None,
        }
    }
}

impl SshConfig {
    /// The address to dial for `host`: its `hosts` entry, or the name itself for DNS.
    pub fn address_of<'a>(&'a self, host: &'a str) -> &'a str {
        self.hosts.get(host).map_or(host, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_runbook_defaults() {
        let cfg: SshConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(cfg, SshConfig::default());
        assert_eq!(cfg.user, "root");
        assert_eq!(cfg.fanout, 64);
    }

    #[test]
    fn durations_are_humantime_and_unknown_keys_rejected() {
        let cfg: SshConfig = serde_json::from_str(
            r#"{"connect_timeout":"3s","hosts":{"nid000001-nmn":"127.0.0.2"}}"#,
        )
        .expect("parse");
        assert_eq!(cfg.connect_timeout, Duration::from_secs(3));
        assert_eq!(cfg.address_of("nid000001-nmn"), "127.0.0.2");
        assert_eq!(cfg.address_of("other"), "other");
        let err = serde_json::from_str::<SshConfig>(r#"{"fan_out":3}"#)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("fan_out"), "{err}");
    }
}
