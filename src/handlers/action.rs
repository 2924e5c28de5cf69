//! What a run's plan is made of: a step's name and its action, the kind of step it is (each
//! kind owned by its file in `steps`), and the shorthands the services' lists use.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    kind::{Earlier, StepKind},
    steps::{
        bos::RestoreBosTemplates,
        bss::RestoreBssFromBackup,
        csm_checks::{CheckCpsClients, ListCrusSessions, VerifyBssBootParameters, VerifyFasImages},
        etcd::CheckEtcd,
        fas::ReloadFasFromNexus,
        orca::{ResolveOrcaTargets, RestartOrca, VerifyHmnfdSubscriptions},
        pods::{EnsurePodsReady, RestartPods},
        recovery::{AssessEtcd, RecoverBitnami, RecoverOperator, SafetySnapshot},
        recreate::Recreate,
    },
};
use crate::{
    cluster::ObjectRef,
    config::{Config, JobRerun, PodRestart},
};

/// Declares [`Action`], one variant per kind of step named after the kind's type, and
/// [`Action::kind`]: a new kind of step is one line of [`kinds!`]'s list below.
macro_rules! kinds {
    ($($kind:ident),+ $(,)?) => {
        /// The kinds of step a run takes, each owned by its file in `steps` (its description,
        /// limits and execution: [`StepKind`]). Stored (as JSON, `{"action": "<kind>", <its
        /// fields>}`) in the step's `spec` when the run is created: add kinds, never rename one.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "action", rename_all = "snake_case")]
        pub enum Action {
            $($kind($kind),)+
        }

        impl Action {
            /// The step this action is.
            pub(super) fn kind(&self) -> &dyn StepKind {
                match self {
                    $(Action::$kind(step) => step,)+
                }
            }
        }
    };
}

kinds! {
    RestartPods,
    EnsurePodsReady,
    Recreate,
    ListCrusSessions,
    CheckCpsClients,
    VerifyFasImages,
    ReloadFasFromNexus,
    RestoreBssFromBackup,
    VerifyBssBootParameters,
    ResolveOrcaTargets,
    RestartOrca,
    VerifyHmnfdSubscriptions,
    RestoreBosTemplates,
    CheckEtcd,
    AssessEtcd,
    SafetySnapshot,
    RecoverBitnami,
    RecoverOperator,
}

impl Action {
    /// What the step's data, once it ended, tells the steps after it (see [`Earlier`]).
    pub fn learn(&self, data: &Value, earlier: &mut Earlier) {
        self.kind().learn(data, earlier);
    }

    /// How long the runner lets the step run: the step timeout, or for the recovery steps what
    /// they bound themselves by `[recovery] timeout`.
    pub fn time_limit(&self, config: &Config) -> Duration {
        self.kind().time_limit(config)
    }
}

#[derive(Clone, Debug)]
pub struct PlannedStep {
    pub name: String,
    pub action: Action,
}

impl PlannedStep {
    pub fn describe(&self) -> String {
        self.action.kind().describe()
    }
}

pub(super) fn step(name: &str, action: Action) -> PlannedStep {
    PlannedStep {
        name: name.to_owned(),
        action,
    }
}

pub(super) fn restart_pods(name: &str, restart: &PodRestart) -> PlannedStep {
    step(
        name,
        Action::RestartPods(RestartPods {
            selector: restart.selector.clone(),
            timeout: restart.timeout,
        }),
    )
}

pub(super) fn rerun_job(name: &str, rerun: &JobRerun) -> PlannedStep {
    step(
        name,
        Action::Recreate(Recreate {
            object: ObjectRef::job(&rerun.job),
            timeout: rerun.timeout,
        }),
    )
}
