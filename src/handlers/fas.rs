//! FAS (runbook: "Run the cray-fas-loader Kubernetes job"): re-run the loader, check the images
//! are back, and tell the operator that actions and snapshots in flight were lost.

use super::{Action, PlannedStep, rerun_job, step};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![
        rerun_job("rerun-fas-loader-job", &config.fas),
        step("verify-fas-images", Action::VerifyFasImages),
    ]
}
