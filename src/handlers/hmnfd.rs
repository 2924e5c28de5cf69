//! HMNFD (runbook: "Resubscribe the compute nodes and any NCNs that use the ORCA daemon"):
//! `pdsh -w <Ready compute nodes> systemctl restart cray-dvs-orca`, the same on the NCNs, then
//! check that HMNFD lists a subscription for every node again.

//!
//! CSM 1.2+ restarts `cray-orca`, and from 1.3 on the worker NCNs only (not storage): the
//! release's profile supplies these unless `[hmnfd]` sets its own.

use super::{
    action::{Action, PlannedStep, step},
    steps::orca::{NcnTargets, ResolveOrcaTargets, RestartOrca, VerifyHmnfdSubscriptions},
};
use crate::{
    config::{Config, HmnfdConfig},
    release::Profile,
};

/// `[hmnfd]` with the release's unit and NCNs where the configuration keeps the defaults.
pub fn for_release(config: &HmnfdConfig, profile: &Profile) -> HmnfdConfig {
    let defaults = HmnfdConfig::default();
    let mut hmnfd = config.clone();
    if hmnfd.command == defaults.command {
        hmnfd.command = format!("systemctl restart {}", profile.orca_unit);
    }
    if hmnfd.ncn_hostlists == defaults.ncn_hostlists {
        hmnfd.ncn_hostlists = profile
            .orca_ncn_hostlists
            .iter()
            .map(|h| (*h).to_owned())
            .collect();
    }
    if hmnfd.ncn_subroles == defaults.ncn_subroles {
        hmnfd.ncn_subroles = profile
            .orca_ncn_subroles
            .iter()
            .map(|h| (*h).to_owned())
            .collect();
    }
    hmnfd
}

pub fn steps(config: &Config, profile: &Profile) -> Vec<PlannedStep> {
    let hmnfd = &for_release(&config.hmnfd, profile);
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
            Action::ResolveOrcaTargets(ResolveOrcaTargets {
                compute_hostname: hmnfd.compute_hostname.clone(),
                ncns,
            }),
        ),
        step(
            "restart-orca",
            Action::RestartOrca(RestartOrca {
                command: hmnfd.command.clone(),
            }),
        ),
        step(
            "verify-subscriptions",
            Action::VerifyHmnfdSubscriptions(VerifyHmnfdSubscriptions {
                wait: hmnfd.verify_wait,
            }),
        ),
    ]
}
