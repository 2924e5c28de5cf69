//! CRUS (runbook: list the sessions, restart the cray-crus pod so it rediscovers them): record
//! the sessions, restart, and list them again.

use super::{
    action::{Action, PlannedStep, restart_pods, step},
    steps::csm_checks::ListCrusSessions,
};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    vec![
        step(
            "list-crus-sessions",
            Action::ListCrusSessions(ListCrusSessions {
                after_restart: false,
            }),
        ),
        restart_pods("restart-crus-pods", &config.crus),
        step(
            "list-crus-sessions-again",
            Action::ListCrusSessions(ListCrusSessions {
                after_restart: true,
            }),
        ),
    ]
}
