//! The service's configuration: one typed struct, loaded once from an optional TOML file.
//! Every default matches the runbook, so no file is needed on a standard CSM system.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    cluster::ObjectRef, csm::CsmConfig, etcd::EtcdConfig, release::ReleaseSetting,
    remote::SshConfig,
};

mod auth;
mod drills;
mod error;
mod hmnfd;
mod hostname;
mod metrics;
mod webhooks;
/// `[recovery]`, owned by the etcd layer that reads it.
pub use crate::etcd::RecoveryConfig;
pub use auth::{AuthConfig, AuthMode, JwtConfig};
pub use drills::DrillsConfig;
pub use error::ConfigError;
pub use hmnfd::{HmnfdConfig, SnapshotConfig};
pub use hostname::HostnameTemplate;
pub use metrics::MetricsConfig;
pub use webhooks::{AlertmanagerConfig, WebhooksConfig};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Namespace of the services and their etcd clusters.
    pub namespace: String,
    /// The CSM release whose runbook runs follow: `"auto"` (detect it from the cluster) or a
    /// release (`"1.0"`, `"1.2"` ... `"1.7"`), see `release`.
    pub csm_release: ReleaseSetting,
    /// Upper bound for any one step, unless the service sets its own.
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
    pub reds: PodRestart,
    pub meds: PodRestart,
    pub crus: PodRestart,
    /// CPS components: restarted only if not all Ready.
    pub cps: PodRestart,
    /// BSS is repopulated by re-running the REDS init Job.
    pub bss: JobRerun,
    pub fas: JobRerun,
    pub externaldns: ObjectRecreate,
    /// Base URLs (and token) of the CSM REST APIs.
    pub csm: CsmConfig,
    /// The services' etcd clusters, checked before and after a service is repopulated.
    pub etcd: EtcdConfig,
    /// HMNFD: which nodes get `cray-dvs-orca` restarted.
    pub hmnfd: HmnfdConfig,
    /// SSH fan-out to the nodes (HMNFD).
    pub ssh: SshConfig,
    /// Periodic capture of BOS session templates and HMNFD subscriptions.
    pub snapshots: SnapshotConfig,
    /// Who may call the API.
    pub auth: AuthConfig,
    /// Webhooks that start runs (Alertmanager, generic HMAC-signed).
    pub webhooks: WebhooksConfig,
    /// The etcd clusters' backups (S3, the snapshotter PVC) and restores.
    pub recovery: RecoveryConfig,
    /// How often `/metrics` measures the etcd clusters and their backups.
    pub metrics: MetricsConfig,
    /// Restore drills of the etcd clusters' backups, on a schedule and on demand.
    pub drills: DrillsConfig,
}

/// A service repopulated by re-running a Kubernetes Job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRerun {
    pub job: String,
    /// How long to wait for the deleted Job to go, and for the new one to finish.
    #[serde(with = "humantime_serde", default = "default_job_timeout")]
    pub timeout: Duration,
}

fn default_job_timeout() -> Duration {
    Duration::from_secs(900)
}

/// An object deleted and created again from its own sanitized manifest (External DNS's
/// EtcdCluster; newer CSM releases may run the cluster as a StatefulSet instead).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRecreate {
    pub api_version: String,
    pub kind: String,
    /// The resource's plural name, as in the API path (`etcdclusters`, `statefulsets`).
    pub plural: String,
    pub name: String,
    #[serde(with = "humantime_serde", default = "default_job_timeout")]
    pub timeout: Duration,
}

impl ObjectRecreate {
    pub fn object(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
            name: self.name.clone(),
        }
    }
}

/// A service repopulated by restarting its pods (they re-read their data at start).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRestart {
    /// Label selector of the pods to restart.
    pub selector: String,
    /// How long to wait for the replacement pods to be Ready.
    #[serde(with = "humantime_serde", default = "default_restart_timeout")]
    pub timeout: Duration,
}

fn default_restart_timeout() -> Duration {
    Duration::from_secs(300)
}

impl PodRestart {
    fn named(app: &str) -> Self {
        PodRestart {
            selector: format!("app.kubernetes.io/name={app}"),
            timeout: default_restart_timeout(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: "services".to_owned(),
            csm_release: ReleaseSetting::Auto,
            step_timeout: Duration::from_secs(600),
            reds: PodRestart::named("cray-reds"),
            meds: PodRestart::named("cray-meds"),
            crus: PodRestart::named("cray-crus"),
            cps: PodRestart::named("cray-cps"),
            bss: JobRerun {
                job: "cray-reds-init".to_owned(),
                timeout: default_job_timeout(),
            },
            fas: JobRerun {
                job: "cray-fas-loader".to_owned(),
                timeout: default_job_timeout(),
            },
            externaldns: ObjectRecreate {
                api_version: "etcd.database.coreos.com/v1beta2".to_owned(),
                kind: "EtcdCluster".to_owned(),
                plural: "etcdclusters".to_owned(),
                name: "cray-externaldns-etcd".to_owned(),
                timeout: default_job_timeout(),
            },
            csm: CsmConfig::default(),
            etcd: EtcdConfig::default(),
            hmnfd: HmnfdConfig::default(),
            ssh: SshConfig::default(),
            snapshots: SnapshotConfig::default(),
            auth: AuthConfig::default(),
            webhooks: WebhooksConfig::default(),
            recovery: RecoveryConfig::default(),
            metrics: MetricsConfig::default(),
            drills: DrillsConfig::default(),
        }
    }
}

impl Config {
    /// Loads the file at `path`, or the defaults when there is none, and validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|e| match e {
                    ConfigError::Parse { source, .. } => ConfigError::Parse {
                        path: path.display().to_string(),
                        source,
                    },
                    other => other,
                })?
            }
        };
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<inline>".to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        labels::dns1123_label(&self.namespace)
            .map_err(|problem| ConfigError::invalid("namespace", problem))?;
        if self.step_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "step_timeout",
                "must be greater than zero",
            ));
        }
        for (key, restart) in [
            ("reds", &self.reds),
            ("meds", &self.meds),
            ("crus", &self.crus),
            ("cps", &self.cps),
        ] {
            let key = format!("{key}.selector");
            // The empty selector would select every pod of the namespace.
            if restart.selector.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
            labels::label_selector(&restart.selector)
                .map_err(|problem| ConfigError::invalid(key, problem))?;
        }
        for (key, rerun) in [("bss", &self.bss), ("fas", &self.fas)] {
            labels::dns1123_subdomain(&rerun.job)
                .map_err(|problem| ConfigError::invalid(format!("{key}.job"), problem))?;
        }
        let dns = &self.externaldns;
        for (key, value) in [
            ("externaldns.api_version", &dns.api_version),
            ("externaldns.kind", &dns.kind),
            ("externaldns.plural", &dns.plural),
            ("externaldns.name", &dns.name),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        labels::dns1123_subdomain(&dns.name)
            .map_err(|problem| ConfigError::invalid("externaldns.name", problem))?;
        self.auth.validate()?;
        self.webhooks.validate()?;
        self.recovery
            .validate()
            .map_err(|e| ConfigError::invalid(e.key, e.problem))?;
        self.metrics.validate()?;
        self.drills.validate()?;
        self.validate_hmnfd()?;
        Ok(())
    }

    fn validate_hmnfd(&self) -> Result<(), ConfigError> {
        let hmnfd = &self.hmnfd;
        for (key, template) in [
            ("hmnfd.compute_hostname", &hmnfd.compute_hostname),
            ("hmnfd.ncn_hostname", &hmnfd.ncn_hostname),
        ] {
            HostnameTemplate::parse(template)
                .map_err(|problem| ConfigError::invalid(key, problem))?;
        }
        for (i, expr) in hmnfd.ncn_hostlists.iter().enumerate() {
            crate::remote::hostlist::expand(expr).map_err(|e| {
                ConfigError::invalid(format!("hmnfd.ncn_hostlists[{i}]"), e.to_string())
            })?;
        }
        if hmnfd.command.trim().is_empty() {
            return Err(ConfigError::invalid("hmnfd.command", "must not be empty"));
        }
        if self.ssh.fanout == 0 {
            return Err(ConfigError::invalid("ssh.fanout", "must be at least 1"));
        }
        if self.snapshots.interval.is_zero() {
            return Err(ConfigError::invalid(
                "snapshots.interval",
                "must be greater than zero",
            ));
        }
        if self.snapshots.retain == 0 {
            return Err(ConfigError::invalid(
                "snapshots.retain",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_runbook() {
        let config = Config::default();
        assert_eq!(config.namespace, "services");
        assert_eq!(config.reds.selector, "app.kubernetes.io/name=cray-reds");
        assert_eq!(config.meds.selector, "app.kubernetes.io/name=cray-meds");
    }

    #[test]
    fn file_overrides_and_names_bad_keys() {
        let config = Config::from_toml(
            "namespace = \"other\"\n[reds]\nselector = \"app=r\"\ntimeout = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(config.namespace, "other");
        assert_eq!(config.reds.timeout, Duration::from_secs(120));
        assert_eq!(config.meds.selector, "app.kubernetes.io/name=cray-meds");

        let err = Config::from_toml("namspace = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("namspace"), "{err}");
        let err = Config::from_toml("step_timeout = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("step_timeout"), "{err}");
    }

    #[test]
    fn kubernetes_names_and_selectors_are_checked_at_start() {
        for (text, key) in [
            ("namespace = \"Services\"", "namespace"),
            ("namespace = \"services-\"", "namespace"),
            ("namespace = \"a.b\"", "namespace"),
            ("[reds]\nselector = \"app in (cray-reds\"", "reds.selector"),
            ("[meds]\nselector = \"app=cray meds\"", "meds.selector"),
            ("[crus]\nselector = \"app=cray-crus,\"", "crus.selector"),
            ("[cps]\nselector = \"-app=cray-cps\"", "cps.selector"),
            ("[cps]\nselector = \"app=cray-cps!\"", "cps.selector"),
            ("[cps]\nselector = \"app in ()\"", "cps.selector"),
            ("[cps]\nselector = \"app > x\"", "cps.selector"),
            ("[reds]\nselector = \"=cray-reds\"", "reds.selector"),
            ("[bss]\njob = \"Cray_Reds_Init\"", "bss.job"),
        ] {
            match Config::from_toml(text) {
                Err(ConfigError::Invalid {
                    key: named,
                    problem,
                }) => {
                    assert_eq!(named, key, "{text}: {problem}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for selector in [
            "app.kubernetes.io/name=cray-reds",
            "app = cray-reds",
            "app==cray-reds,tier!=db",
            "app in (cray-reds, cray-meds),!legacy",
            "app notin (x),version",
            "app=",
            "replicas>1",
        ] {
            let text = format!("[reds]\nselector = {selector:?}");
            Config::from_toml(&text).unwrap_or_else(|e| panic!("{selector}: {e}"));
        }
    }

    #[test]
    fn recovery_defaults_are_csm_s() {
        let recovery = Config::default().recovery;
        assert_eq!(recovery.restore_max_age, Duration::from_secs(604_800));
        assert_eq!(
            recovery.snapshots_dir(),
            Some(std::path::Path::new("/snapshots"))
        );
        assert_eq!(recovery.s3_credentials_dir(), None);
        assert_eq!(recovery.s3_bucket, "etcd-backup");
        assert_eq!(recovery.timeout, Duration::from_secs(600));
        let config = Config::from_toml(
            "[recovery]\nrestore_max_age = \"2days\"\nsnapshots_dir = \"\"\n\
             s3_credentials_dir = \"/etc/s3\"\ntimeout = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(
            config.recovery.restore_max_age,
            Duration::from_secs(172_800)
        );
        assert_eq!(config.recovery.snapshots_dir(), None);
        assert_eq!(
            config.recovery.s3_credentials_dir(),
            Some(std::path::Path::new("/etc/s3"))
        );
    }

    #[test]
    fn bad_recovery_values_name_their_key() {
        for (text, key) in [
            ("restore_max_age = \"0s\"", "recovery.restore_max_age"),
            ("timeout = \"0s\"", "recovery.timeout"),
            ("timeout = \"1000years\"", "recovery.timeout"),
            ("snapshots_dir = \"snapshots\"", "recovery.snapshots_dir"),
            (
                "s3_credentials_dir = \"creds\"",
                "recovery.s3_credentials_dir",
            ),
            ("s3_bucket = \"Etcd_Backup\"", "recovery.s3_bucket"),
            ("s3_bucket = \"-etcd\"", "recovery.s3_bucket"),
            ("s3_bucket = \"ab\"", "recovery.s3_bucket"),
        ] {
            match Config::from_toml(&format!("[recovery]\n{text}\n")) {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = Config::from_toml("[recovery]\nbucket = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
    }
}
