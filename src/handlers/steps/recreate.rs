//! Re-create an object from its sanitized manifest (the mechanism is `step::recreate`'s).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    cluster::ObjectRef,
    handlers::kind::{Earlier, StepKind, wait},
    step::{StepContext, StepError, StepOutcome, recreate},
};

/// Delete the object and create it again from its sanitized manifest (stored first), then
/// wait until it completes (Job) or runs (EtcdCluster, StatefulSet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recreate {
    pub object: ObjectRef,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl StepKind for Recreate {
    fn describe(&self) -> String {
        let Self { object, timeout } = self;
        format!(
            "store the sanitized manifest of {} {}, delete it, create it again from the stored \
             manifest and wait up to {} until it {}",
            object.kind,
            object.name,
            wait(timeout),
            if object.kind == "Job" {
                "completes"
            } else {
                "runs"
            }
        )
    }

    /// The loader Jobs a run re-creates (BSS's `cray-reds-init`, FAS's `cray-fas-loader`) only
    /// write their service's data into its etcd: a restore brings it back.
    fn covered_by_restore(&self) -> bool {
        self.object.kind == "Job"
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        recreate::run(ctx, &self.object, self.timeout).await
    }
}
