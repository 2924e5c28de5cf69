//! Everything that decides and performs the recovery of a service's etcd cluster, for both
//! layouts: the decision ([`assess`]: health, backups, restore or rebuild or nothing), the
//! Bitnami StatefulSet's sequence ([`bitnami`], CSM ≥ 1.5) and the etcd-operator's
//! ([`operator`], CSM ≤ 1.4); and repair instead of deletion: a full database given its space
//! back ([`space`]), a broken minority of members replaced while the others serve
//! ([`replace`]), a cluster whose quorum is lost for good restored from the member left
//! ([`decision::Decision::RestoreFromMember`], through the Bitnami sequence). The steps in `handlers` name what runs; this module does it.

pub mod assess;
pub mod bitnami;
pub mod decision;
pub mod journal;
pub mod operator;
pub mod replace;
pub mod safety_snapshot;
pub mod space;
pub mod wait;

use serde::Deserialize;
use serde_json::Value;

use crate::{
    cluster::Mode,
    model::State,
    step::{StepError, StepOutcome},
};
use assess::Assessment;
use decision::Decision;

/// The recovery steps before a service's own (`"etcd": "restore" | "rebuild" | "auto"`).
pub const ETCD_ASSESS: &str = "etcd-assess";
pub const ETCD_SAFETY_SNAPSHOT: &str = "etcd-safety-snapshot";
pub const ETCD_RECOVER: &str = "etcd-recover";

/// What the recovery steps of a service's task decided, handed typed to the steps after them
/// (the runner learns it from each step's data as the step ends, and from the stored steps on
/// a resume): no step reads another step's journal by its name.
#[derive(Clone, Debug, Default)]
pub struct Decided {
    assessment: Option<Result<Assessment, String>>,
    safety_snapshot: Option<SafetySnapshot>,
}

/// The snapshot `etcd-safety-snapshot` took of the cluster before it was recovered.
#[derive(Clone, Debug, Deserialize)]
pub struct SafetySnapshot {
    /// Listed among the backups under this name.
    #[serde(rename = "backup")]
    pub name: String,
    /// The cluster held no keys: restoring it would bring nothing back.
    #[serde(default)]
    pub empty: bool,
}

impl Decided {
    /// Before the recovery steps, or in a run that recovers nothing.
    pub const NOTHING: Decided = Decided {
        assessment: None,
        safety_snapshot: None,
    };

    /// Learns the decision from what `etcd-assess` stored.
    pub fn learn_assessment(&mut self, data: &Value) {
        self.assessment =
            Some(serde_json::from_value(data.clone()).map_err(|e| format!("{ETCD_ASSESS}: {e}")));
    }

    /// Learns the safety snapshot from what `etcd-safety-snapshot` stored (none when it took
    /// none).
    pub fn learn_safety_snapshot(&mut self, data: &Value) {
        self.safety_snapshot = serde_json::from_value(data.clone()).ok();
    }

    /// What `etcd-assess` weighed and decided, for the steps that act on it.
    pub fn assessment(&self) -> Result<&Assessment, StepError> {
        match &self.assessment {
            Some(Ok(assessment)) => Ok(assessment),
            Some(Err(unreadable)) => Err(StepError::BadData(unreadable.clone())),
            None => Err(StepError::Failed(format!(
                "step {ETCD_ASSESS} stored no decision; start a new run"
            ))),
        }
    }

    pub fn safety_snapshot(&self) -> Option<&SafetySnapshot> {
        self.safety_snapshot.as_ref()
    }

    fn decided(&self) -> Option<&Assessment> {
        self.assessment.as_ref().and_then(|a| a.as_ref().ok())
    }

    /// What the service's etcd cluster is after the recovery decided (`None`: left alone, or
    /// no recovery planned), for a dry run's steps after it, which cannot look at the cluster
    /// as it would be.
    pub fn planned_recovery(&self) -> Option<String> {
        let assessment = self.decided()?;
        match &assessment.decision {
            Decision::LeaveAlone => None,
            Decision::Rebuild => Some(format!("rebuilt empty ({})", assessment.cluster)),
            Decision::ReclaimSpace => Some(format!(
                "given its space back, every key kept ({})",
                assessment.cluster
            )),
            Decision::ReplaceMembers { members } => Some(format!(
                "with member(s) {} replaced, every key kept ({})",
                members
                    .iter()
                    .map(|m| m.pod.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                assessment.cluster
            )),
            Decision::Restore { backup, .. } => {
                Some(format!("restored from {backup} ({})", assessment.cluster))
            }
            Decision::StartWithData => Some(format!(
                "its members started with their data, every key kept ({})",
                assessment.cluster
            )),
            Decision::RestoreFromMember { pod, revision } => Some(format!(
                "restored from member pod {pod}'s snapshot, revision {revision} ({})",
                assessment.cluster
            )),
        }
    }

    /// The backup this run restored the service's cluster from (`etcd-recover` restores it
    /// before any later step runs).
    pub fn restored_from(&self) -> Option<&str> {
        match &self.decided()?.decision {
            Decision::Restore { backup, .. } => Some(backup),
            // Restored from the safety snapshot taken through the member.
            Decision::RestoreFromMember { .. } => self.safety_snapshot().map(|s| s.name.as_str()),
            _ => None,
        }
    }

    /// Why a step that repopulates data a restore brings back is skipped, when this run
    /// restored the service's cluster.
    pub fn covered_by_restore(&self, mode: Mode) -> Option<String> {
        let backup = self.restored_from()?;
        let cluster = &self.decided()?.cluster;
        Some(format!(
            "{}the restore of {cluster} from backup {backup} (step etcd-recover) brings this \
             data back: nothing to repopulate",
            if mode.is_dry_run() { "dry run: " } else { "" },
        ))
    }
}

/// `etcd-recover` when `etcd-assess` left the cluster alone: skipped, saying why.
pub fn nothing_to_recover(
    cluster: &str,
    assessment: &Assessment,
) -> Result<StepOutcome, StepError> {
    StepOutcome::with_state(
        State::Skipped,
        format!(
            "nothing to recover: {} (step etcd-assess)",
            assessment.reason
        ),
        serde_json::json!({ "cluster": cluster, "decision": assessment.decision }),
    )
}
