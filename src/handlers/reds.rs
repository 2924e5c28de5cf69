//! REDS (runbook: "Restart REDS"): `kubectl -n services delete pods --selector=app.kubernetes.io/name=cray-reds`.

use super::action::{PlannedStep, restart_pods};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![restart_pods("restart-reds-pods", &config.reds)]
}
