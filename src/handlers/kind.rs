//! What every kind of step owns, next to its mechanics: its description (the stored plan and
//! `GET /services` show it), how long the runner lets it run, whether a restore of the
//! service's etcd cluster makes it unnecessary, what its data tells the steps after it, and
//! how it is performed. `Action` (in `handlers`) is only the list of kinds and how they are
//! stored.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    time::Duration,
};

use serde_json::Value;

use crate::{
    config::Config,
    recovery::Decided,
    step::{StepContext, StepError, StepOutcome},
};

/// What the earlier steps of a service's task told the steps after them, each fact under its
/// own type: the step that learns it ([`StepKind::learn`]) and the steps that use it name the
/// type, never another step's name. The runner keeps it per task, learning from each step's
/// data as the step ends, and from the stored steps on a resume.
#[derive(Default)]
pub struct Earlier {
    facts: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Earlier {
    pub fn insert<T: Any + Send + Sync>(&mut self, fact: T) {
        self.facts.insert(TypeId::of::<T>(), Box::new(fact));
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        self.facts.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The fact of type `T`, a default one first if there is none yet.
    pub fn entry<T: Any + Send + Sync + Default>(&mut self) -> &mut T {
        self.facts
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("a fact is stored under its own type")
    }

    /// What the recovery steps decided (nothing, when the run recovers nothing).
    pub fn recovery(&self) -> &Decided {
        self.get().unwrap_or(&Decided::NOTHING)
    }
}

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
    fn learn(&self, _data: &Value, _earlier: &mut Earlier) {}

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError>;
}

/// A duration as the descriptions say it (`5m`, `1h 30m`).
pub fn wait(duration: &Duration) -> String {
    humantime::format_duration(*duration).to_string()
}
