//! `[hmnfd]` and `[snapshots]`: the HMNFD resubscription targets and the snapshot capture.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which nodes get `cray-dvs-orca` restarted, and how. The SSH side (user, key, known_hosts,
/// fan-out, timeouts, a hosts map) is `[ssh]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmnfdConfig {
    /// Host name of a Ready compute node, from HSM's data: `{nid}`, `{nid:06}` (zero-padded
    /// to 6 digits) and `{xname}` are replaced. The runbook's `nid%06d-nmn`.
    pub compute_hostname: String,
    /// pdsh-style hostlist expressions of the NCNs that run ORCA (the runbook's workers and
    /// storage nodes). Ignored when `discover_ncns` is on.
    pub ncn_hostlists: Vec<String>,
    /// Find the NCNs in HSM instead (Ready nodes with role Management and one of
    /// `ncn_subroles`), so nobody has to guess the ranges on a larger system.
    pub discover_ncns: bool,
    /// HSM subroles of the NCNs that run ORCA, when discovering.
    pub ncn_subroles: Vec<String>,
    /// Host name of a discovered NCN; same placeholders as `compute_hostname`. HSM knows no
    /// host names (SLS does), so the default is the xname, which CSM's DNS resolves for
    /// management nodes; `[ssh] hosts` can map it to an address otherwise.
    pub ncn_hostname: String,
    /// What each node runs.
    pub command: String,
    /// How long to wait for every restarted compute node to appear in HMNFD's subscriptions
    /// (ORCA subscribes a moment after it starts).
    #[serde(with = "humantime_serde")]
    pub verify_wait: Duration,
}

impl Default for HmnfdConfig {
    fn default() -> Self {
        HmnfdConfig {
            compute_hostname: "nid{nid:06}-nmn".to_owned(),
            ncn_hostlists: vec![
                "ncn-w00[1-4]-can.local".to_owned(),
                "ncn-s00[1-4]-can.local".to_owned(),
            ],
            discover_ncns: false,
            ncn_subroles: vec!["Worker".to_owned(), "Storage".to_owned()],
            ncn_hostname: "{xname}".to_owned(),
            command: "systemctl restart cray-dvs-orca".to_owned(),
            verify_wait: Duration::from_secs(60),
        }
    }
}

/// Periodic capture of BOS session templates and HMNFD subscriptions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Capture periodically while `serve` runs (`POST /snapshots` works regardless).
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Snapshots kept per source; older ones are deleted after each capture (the newest
    /// non-empty one is always kept).
    pub retain: u32,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: true,
            interval: Duration::from_secs(15 * 60),
            // A week at the default interval.
            retain: 672,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn sections_parse_and_bad_values_name_their_key() {
        let config = Config::from_toml(
            "[hmnfd]\ndiscover_ncns = true\nverify_wait = \"2m\"\n\
             [ssh]\nfanout = 8\n[snapshots]\ninterval = \"5m\"\nenabled = false\n",
        )
        .unwrap();
        assert!(config.hmnfd.discover_ncns);
        assert_eq!(config.hmnfd.verify_wait, Duration::from_secs(120));
        assert_eq!(config.hmnfd.compute_hostname, "nid{nid:06}-nmn");
        assert_eq!(config.ssh.fanout, 8);
        assert_eq!(config.snapshots.interval, Duration::from_secs(300));
        assert!(!config.snapshots.enabled);

        for (text, key) in [
            (
                "[hmnfd]\ncompute_hostname = \"nid{nod}\"",
                "hmnfd.compute_hostname",
            ),
            (
                "[hmnfd]\nncn_hostlists = [\"ncn-w[3-1]\"]",
                "hmnfd.ncn_hostlists[0]",
            ),
            ("[ssh]\nfanout = 0", "ssh.fanout"),
            ("[snapshots]\ninterval = \"0s\"", "snapshots.interval"),
            ("[hmnfd]\ncomand = \"x\"", "comand"),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
