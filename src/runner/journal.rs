//! The store-backed journal a running step writes to.

use serde_json::Value;

use crate::{
    step::{Journal, StepError},
    store::{StepKey, Store},
};

pub(super) struct StoreJournal {
    store: Store,
    key: StepKey,
    step: String,
}

impl StoreJournal {
    pub(super) fn new(store: Store, key: StepKey, step: &str) -> Self {
        StoreJournal {
            store,
            key,
            step: step.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Journal for StoreJournal {
    async fn save(&self, data: &Value) -> Result<(), StepError> {
        self.store
            .save_step_data(self.key, data)
            .await
            .map_err(|e| StepError::Journal(e.to_string()))
    }

    async fn log(&self, message: &str) {
        tracing::info!("{message}");
        if let Err(err) = self
            .store
            .append_event(
                self.key.run_id,
                "info",
                Some(self.key.service),
                Some(&self.step),
                message,
                super::state::now(),
            )
            .await
        {
            tracing::warn!(error = %err, "could not append to the run's log");
        }
    }
}
