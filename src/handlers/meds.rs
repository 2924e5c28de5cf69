//! MEDS (runbook: "Restart MEDS"): `kubectl -n services delete pods --selector=app.kubernetes.io/name=cray-meds`.

use super::action::{PlannedStep, restart_pods};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![restart_pods("restart-meds-pods", &config.meds)]
}
