//! BSS (runbook: "Data is repopulated in BSS when the REDS init job is run"): save the Job
//! `cray-reds-init`, strip its generated selector and labels, delete it, create it again; then
//! check BSS really holds boot parameters again (the runbook leaves that to the reader).

use super::{Action, PlannedStep, rerun_job, step};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![
        rerun_job("rerun-reds-init-job", &config.bss),
        step(
            "verify-bss-boot-parameters",
            Action::VerifyBssBootParameters,
        ),
    ]
}
