//! `[drills]`: restore drills (see `crate::drills`), on a schedule and on demand: how often,
//! how long one may take, which `etcd` serves the restored backup and where it keeps its data.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// The shortest `[drills] interval` accepted: a drill restores a whole backup.
const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// `[drills]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillsConfig {
    /// Drill every etcd cluster's newest backup on a schedule (`serve` runs it). Drills on
    /// demand (`POST /etcd-clusters/{name}/drills`) work either way.
    pub enabled: bool,
    /// How often each cluster is drilled: a cluster whose newest drill started longer ago
    /// than this is drilled at the next pass (one cluster at a time).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Upper bound of one drill (reading the backup, restoring it, serving it, counting both
    /// sides); a drill that takes longer ends `error` and leaves nothing behind.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The `etcd` that serves a restored backup: a path, or a name looked up on `PATH`. The
    /// image carries the etcd of the release CSM runs.
    pub etcd: String,
    /// Where drills keep their scratch data (one directory per drill, `drill-<id>`, removed
    /// when it ends; a directory a crashed drill left is removed at the next start). It needs
    /// room for a copy of the largest backup downloaded from S3 and its restored database:
    /// about twice the clusters' backend quota, plus 100 MiB.
    pub scratch_dir: PathBuf,
}

impl Default for DrillsConfig {
    fn default() -> Self {
        DrillsConfig {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(30 * 60),
            etcd: "etcd".to_owned(),
            scratch_dir: std::env::temp_dir().join("etcd-repopulator-drills"),
        }
    }
}

impl DrillsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < MIN_INTERVAL {
            return Err(ConfigError::invalid(
                "drills.interval",
                "must be at least 1m",
            ));
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(ConfigError::invalid(
                "drills.timeout",
                "must be greater than zero and at most drills.interval",
            ));
        }
        if self.etcd.trim().is_empty() {
            return Err(ConfigError::invalid(
                "drills.etcd",
                "must name the etcd binary (a path or a name on PATH)",
            ));
        }
        if !self.scratch_dir.is_absolute() {
            return Err(ConfigError::invalid(
                "drills.scratch_dir",
                "must be an absolute path",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_and_bad_values_name_their_key() {
        let drills = Config::default().drills;
        assert!(drills.enabled);
        assert_eq!(drills.interval, Duration::from_secs(86_400));
        assert_eq!(drills.timeout, Duration::from_secs(1800));
        assert_eq!(drills.etcd, "etcd");
        let config = Config::from_toml(
            "[drills]\nenabled = false\ninterval = \"12h\"\ntimeout = \"10m\"\n\
             etcd = \"/usr/local/bin/etcd\"\nscratch_dir = \"/drills\"\n",
        )
        .unwrap();
        assert!(!config.drills.enabled);
        assert_eq!(config.drills.interval, Duration::from_secs(43_200));
        assert_eq!(config.drills.scratch_dir, PathBuf::from("/drills"));
        for (text, key) in [
            ("interval = \"30s\"", "drills.interval"),
            ("timeout = \"0s\"", "drills.timeout"),
            ("timeout = \"2d\"", "drills.timeout"),
            ("etcd = \" \"", "drills.etcd"),
            ("scratch_dir = \"drills\"", "drills.scratch_dir"),
        ] {
            match Config::from_toml(&format!("[drills]\n{text}\n")) {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
