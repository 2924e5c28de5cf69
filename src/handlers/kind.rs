//! What every kind of step owns, next to its mechanics: its description (the stored plan and
//! `GET /services` show it), how long the runner lets it run, whether a restore of the
//! service's etcd cluster makes it unnecessary, what its data tells the steps after it, and
//! how it is performed. `Action` (in `handlers`) is only the list of kinds and how they are
//! stored.

use std::time::Duration;

use serde_json::Value;

use crate::{
    config::Config,
    recovery::Decided,
    step::{StepContext, StepError, StepOutcome},
};

#[async_trait::async_trait]
pub trait StepKind: Send + Sync {
    /// What the step does, in one sentence.
    fn describe(&self) -> String;

    /// How long the runner lets the step run.
    fn time_limit(&self, config: &Config) -> Duration {
        config.step_timeout
    }

    /// Repopulates data a restore of the service's etcd cluster brings back: after a restore,
    /// the step ends `skipped`, saying so (see `handlers::perform`).
    fn covered_by_restore(&self) -> bool {
        false
    }

    /// What the step's data, once it ended, tells the steps after it.
    fn learn(&self, _data: &Value, _decided: &mut Decided) {}

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        decided: &Decided,
    ) -> Result<StepOutcome, StepError>;
}

/// A duration as the descriptions say it (`5m`, `1h 30m`).
pub fn wait(duration: &Duration) -> String {
    humantime::format_duration(*duration).to_string()
}
