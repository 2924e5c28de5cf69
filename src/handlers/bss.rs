//! BSS (runbook: "Data is repopulated in BSS when the REDS init job is run"): save the Job
//! `cray-reds-init`, strip its generated selector and labels, delete it, create it again.

use super::{PlannedStep, rerun_job};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![rerun_job("rerun-reds-init-job", &config.bss)]
}
