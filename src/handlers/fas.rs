//! FAS. CSM 1.0 ("Run the cray-fas-loader Kubernetes job"): re-run the loader Job. CSM 1.2+
//! ("Reload the firmware images from Nexus"): `POST /loader/nexus` on the FAS API and wait for
//! the loader. Then check the images are back, and tell the operator that actions and
//! snapshots in flight were lost.

use super::{
    action::{Action, PlannedStep, rerun_job, step},
    steps::csm_checks::VerifyFasImages,
    steps::fas::ReloadFasFromNexus,
};
use crate::{
    config::Config,
    release::{FasReload, Profile},
};

pub fn steps(config: &Config, profile: &Profile) -> Vec<PlannedStep> {
    let reload = match profile.fas {
        FasReload::LoaderJob => rerun_job("rerun-fas-loader-job", &config.fas),
        FasReload::Nexus => step(
            "reload-fas-images-from-nexus",
            Action::ReloadFasFromNexus(ReloadFasFromNexus {
                timeout: config.fas.timeout,
            }),
        ),
    };
    vec![
        reload,
        step(
            "verify-fas-images",
            Action::VerifyFasImages(VerifyFasImages {}),
        ),
    ]
}
