//! HMNFD (runbook: "Resubscribe the compute nodes and any NCNs that use the ORCA daemon"):
//! `pdsh -w <Ready compute nodes> systemctl restart cray-dvs-orca`, the same on the NCNs, then
//! check that HMNFD lists a subscription for every node again.

use super::{Action, NcnTargets, PlannedStep, step};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    let hmnfd = &config.hmnfd;
    let ncns = if hmnfd.discover_ncns {
        NcnTargets::Discover {
            subroles: hmnfd.ncn_subroles.clone(),
            hostname: hmnfd.ncn_hostname.clone(),
        }
    } else {
        NcnTargets::Hostlists {
            hostlists: hmnfd.ncn_hostlists.clone(),
        }
    };
    vec![
        step(
            "resolve-targets",
            Action::ResolveOrcaTargets {
                compute_hostname: hmnfd.compute_hostname.clone(),
                ncns,
            },
        ),
        step(
            "restart-orca",
            Action::RestartOrca {
                command: hmnfd.command.clone(),
            },
        ),
        step(
            "verify-subscriptions",
            Action::VerifyHmnfdSubscriptions {
                wait: hmnfd.verify_wait,
            },
        ),
    ]
}
