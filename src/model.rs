//! The vocabulary every layer shares: services, etcd modes, states, run ids (the run itself,
//! as the API shows it, is [`crate::run`]).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A CSM service whose data lives in a rebuilt etcd cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Bos,
    Bss,
    Cps,
    Crus,
    Externaldns,
    Fas,
    Hmnfd,
    Meds,
    Reds,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Bos,
        Service::Bss,
        Service::Cps,
        Service::Crus,
        Service::Externaldns,
        Service::Fas,
        Service::Hmnfd,
        Service::Meds,
        Service::Reds,
    ];

    /// The CSM service whose etcd cluster holds this service's data and that a rebuild
    /// empties (`cray-bss`: cluster `cray-bss-etcd` or `cray-bss-bitnami-etcd`, see
    /// `etcd::layout`); `None` for MEDS (no cluster of its own on a standard system) and
    /// External DNS (its cluster is what the run re-creates).
    pub fn etcd_service(self) -> Option<&'static str> {
        match self {
            Service::Bos => Some("cray-bos"),
            Service::Bss => Some("cray-bss"),
            Service::Cps => Some("cray-cps"),
            Service::Crus => Some("cray-crus"),
            Service::Fas => Some("cray-fas"),
            Service::Hmnfd => Some("cray-hmnfd"),
            Service::Reds => Some("cray-reds"),
            Service::Meds | Service::Externaldns => None,
        }
    }

    /// The service whose etcd cluster belongs to the CSM service `csm` (`cray-bss`), if any.
    pub fn of_etcd_service(csm: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|s| s.etcd_service() == Some(csm))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Bos => "bos",
            Service::Bss => "bss",
            Service::Cps => "cps",
            Service::Crus => "crus",
            Service::Externaldns => "externaldns",
            Service::Fas => "fas",
            Service::Hmnfd => "hmnfd",
            Service::Meds => "meds",
            Service::Reds => "reds",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown service {0:?}")]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.as_str() == s)
            .ok_or_else(|| UnknownService(s.to_owned()))
    }
}

/// What a run does with the etcd cluster of each service it repopulates, before repopulating.
/// Every mode but `check` may delete the cluster's data: a real run with one of them names the
/// clusters it may touch in `confirm` and needs the `recover` role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EtcdMode {
    /// Leave the cluster alone: stop if it is unhealthy (the runbook starts after a rebuild).
    #[default]
    Check,
    /// Restore the cluster from a backup (`backup`, else the newest), then run the repopulation
    /// steps the backup does not cover. Destructive: the cluster's current data is replaced.
    Restore,
    /// Rebuild the cluster empty, then repopulate every service on it. Destructive.
    Rebuild,
    /// Leave a healthy cluster alone; otherwise restore from the newest recent backup, else
    /// rebuild. Destructive when the cluster is unhealthy.
    Auto,
    /// Only what loses no data: a full database (`NOSPACE`) gets its space back (compaction,
    /// defragmentation one member at a time, alarm disarmed). Not destructive.
    Repair,
}

impl EtcdMode {
    pub const ALL: [EtcdMode; 5] = [
        EtcdMode::Check,
        EtcdMode::Restore,
        EtcdMode::Rebuild,
        EtcdMode::Auto,
        EtcdMode::Repair,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EtcdMode::Check => "check",
            EtcdMode::Restore => "restore",
            EtcdMode::Rebuild => "rebuild",
            EtcdMode::Auto => "auto",
            EtcdMode::Repair => "repair",
        }
    }

    /// Whether a run in this mode may delete or replace an etcd cluster's data.
    pub fn is_destructive(self) -> bool {
        !matches!(self, EtcdMode::Check | EtcdMode::Repair)
    }

    /// Whether a real run in this mode may delete etcd data: a destructive mode, or a
    /// `repair` whose request confirms clusters (it may replace broken members, deleting
    /// their PVCs).
    pub fn may_delete(self, confirms_any: bool) -> bool {
        self.is_destructive() || (self == EtcdMode::Repair && confirms_any)
    }
}

/// From its name only: any other JSON value (a number, `null`, a list) is a type error naming
/// the modes, where serde's derived enum would let serde_json call it a syntax error.
impl<'de> Deserialize<'de> for EtcdMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeName;
        impl serde::de::Visitor<'_> for ModeName {
            type Value = EtcdMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of `check`, `restore`, `rebuild`, `auto`, `repair`")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<EtcdMode, E> {
                const NAMES: &[&str] = &["check", "restore", "rebuild", "auto", "repair"];
                name.parse().map_err(|_| E::unknown_variant(name, NAMES))
            }
        }
        deserializer.deserialize_str(ModeName)
    }
}

impl fmt::Display for EtcdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown etcd mode {0:?} (expected check, restore, rebuild, auto or repair)")]
pub struct UnknownEtcdMode(pub String);

impl FromStr for EtcdMode {
    type Err = UnknownEtcdMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EtcdMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownEtcdMode(s.to_owned()))
    }
}

/// The state of a run, of one service's task in it, or of one step of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The process stopped while this was pending or running; `resume` continues it.
    Interrupted,
    /// Finished, but a person still has work to do (the message says what).
    ActionRequired,
    /// A step that did not run because an earlier step of its service did not succeed (the
    /// message names it).
    Skipped,
    /// An interrupted or failed run a person gave up on (`POST .../abandon`): it can never be
    /// resumed, and no longer holds back a new recovery of its etcd clusters.
    Abandoned,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Pending,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::Interrupted,
        State::ActionRequired,
        State::Skipped,
        State::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Interrupted => "interrupted",
            State::ActionRequired => "action_required",
            State::Skipped => "skipped",
            State::Abandoned => "abandoned",
        }
    }

    /// Whether nothing more will happen without a person (resume) asking for it.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Pending | State::Running)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A new, sortable run id (UUIDv7): the one place ids are made.
pub fn new_run_id() -> Uuid {
    Uuid::now_v7()
}

// Where each layout puts a cluster's objects (Services, pods, PVCs) is `etcd::layout`'s.
/// How a CSM release runs its etcd clusters.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum EtcdLayout {
    /// `EtcdCluster` objects of the etcd operator (CSM ≤ 1.4).
    #[serde(rename = "etcd-operator")]
    Operator,
    /// StatefulSets of the Bitnami chart (CSM ≥ 1.5).
    #[serde(rename = "bitnami")]
    Bitnami,
}

const BITNAMI_SUFFIX: &str = "-bitnami-etcd";
const OPERATOR_SUFFIX: &str = "-etcd";

impl EtcdLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdLayout::Operator => "etcd-operator",
            EtcdLayout::Bitnami => "bitnami",
        }
    }

    /// The cluster of the CSM service `csm` (`cray-bss`).
    pub fn cluster_name(self, csm: &str) -> String {
        match self {
            EtcdLayout::Operator => format!("{csm}{OPERATOR_SUFFIX}"),
            EtcdLayout::Bitnami => format!("{csm}{BITNAMI_SUFFIX}"),
        }
    }

    /// The layout and CSM service of a cluster name, if it is one.
    pub fn parse_name(name: &str) -> Option<(EtcdLayout, &str)> {
        if let Some(csm) = name.strip_suffix(BITNAMI_SUFFIX) {
            return Some((EtcdLayout::Bitnami, csm));
        }
        name.strip_suffix(OPERATOR_SUFFIX)
            .filter(|csm| !csm.is_empty())
            .map(|csm| (EtcdLayout::Operator, csm))
    }
}
