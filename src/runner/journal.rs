//! The store-backed journal a running step writes to.

use serde_json::Value;
use uuid::Uuid;

use crate::{
    handlers::{Journal, StepError},
    model::Service,
    store::Store,
};

pub(super) struct StoreJournal {
    store: Store,
    run_id: Uuid,
    service: Service,
    ordinal: i64,
    step: String,
}

impl StoreJournal {
    pub(super) fn new(
        store: Store,
        run_id: Uuid,
        service: Service,
        ordinal: i64,
        step: &str,
    ) -> Self {
        StoreJournal {
            store,
            run_id,
            service,
            ordinal,
            step: step.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Journal for StoreJournal {
    async fn save(&self, data: &Value) -> Result<(), StepError> {
        self.store
            .save_step_data(self.run_id, self.service, self.ordinal, data)
            .await
            .map_err(|e| StepError::Journal(e.to_string()))
    }

    async fn earlier_step_data(&self, step: &str) -> Result<Option<Value>, StepError> {
        self.store
            .step_data_by_name(self.run_id, self.service, step)
            .await
            .map_err(|e| StepError::Journal(e.to_string()))
    }

    async fn log(&self, message: &str) {
        tracing::info!("{message}");
        if let Err(err) = self
            .store
            .append_event(
                self.run_id,
                "info",
                Some(self.service),
                Some(&self.step),
                message,
                super::now(),
            )
            .await
        {
            tracing::warn!(error = %err, "could not append to the run's log");
        }
    }
}
