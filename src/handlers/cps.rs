//! CPS (runbook: make sure the components are up; clients that had content mounted must
//! re-mount, compute nodes by a reboot).

use super::{
    action::{Action, PlannedStep, step},
    steps::csm_checks::CheckCpsClients,
    steps::pods::EnsurePodsReady,
};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![
        step(
            "ensure-cps-pods-ready",
            Action::EnsurePodsReady(EnsurePodsReady {
                selector: config.cps.selector.clone(),
                timeout: config.cps.timeout,
            }),
        ),
        step(
            "check-cps-clients",
            Action::CheckCpsClients(CheckCpsClients {}),
        ),
    ]
}
