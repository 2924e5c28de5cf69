//! BSS (runbook: "Data is repopulated in BSS when the REDS init job is run"): save the Job
//! `cray-reds-init`, strip its generated selector and labels, delete it, create it again; then
//! check BSS really holds boot parameters again (the runbook leaves that to the reader).

//!
//! CSM 1.5+ ("Restore BSS from the ETCD backup"): a run with `"etcd": "restore"` restores the
//! cluster first and the step ends `skipped`; otherwise it ends `action_required`, naming how.

use super::{
    action::{Action, PlannedStep, rerun_job, step},
    steps::bss::RestoreBssFromBackup,
    steps::csm_checks::VerifyBssBootParameters,
};
use crate::{
    config::Config,
    model::Service,
    release::{BssRepopulation, Profile},
};

pub fn steps(config: &Config, profile: &Profile) -> Vec<PlannedStep> {
    if profile.bss == BssRepopulation::RestoreFromBackup {
        return vec![step(
            "restore-bss-from-backup",
            Action::RestoreBssFromBackup(RestoreBssFromBackup {
                cluster: profile
                    .etcd_cluster(Service::Bss)
                    .unwrap_or_else(|| "cray-bss-bitnami-etcd".to_owned()),
                procedure: Some(profile.restore_procedure()),
            }),
        )];
    }
    vec![
        rerun_job("rerun-reds-init-job", &config.bss),
        step(
            "verify-bss-boot-parameters",
            Action::VerifyBssBootParameters(VerifyBssBootParameters {}),
        ),
    ]
}
