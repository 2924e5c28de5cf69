//! BOS (runbook: "Reconstruct boot session templates for impacted product streams"): instead
//! of rebuilding them by hand from the product docs, put back the ones the service captured
//! while BOS was healthy; without a snapshot, say exactly where the runbook sends the admin.

use super::{
    action::{Action, PlannedStep, step},
    steps::bos::RestoreBosTemplates,
};
use crate::config::Config;

pub fn steps(_config: &Config) -> Vec<PlannedStep> {
    vec![step(
        "restore-session-templates",
        Action::RestoreBosTemplates(RestoreBosTemplates {}),
    )]
}
