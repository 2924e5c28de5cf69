//! What a recovery saved before it changed anything, read back typed on a resume: the step's
//! stored data is one serde type per sequence (never looked up by string keys), saved whole,
//! durably, before the change it prepares.

use std::sync::Mutex;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::step::{Journal, StepContext, StepError};

/// What an earlier attempt of this step saved, as `T`; `None` on a first attempt, or when
/// what it saved is not a `T`.
pub fn earlier<T: DeserializeOwned>(ctx: &StepContext<'_>) -> Option<T> {
    ctx.saved
        .clone()
        .and_then(|value| serde_json::from_value(value).ok())
}

/// Stores `value` whole as the step's data; returns once it is on disk.
pub async fn save<T: Serialize>(journal: &dyn Journal, value: &T) -> Result<(), StepError> {
    journal.save(&to_value(value)?).await
}

pub fn to_value<T: Serialize>(value: &T) -> Result<Value, StepError> {
    serde_json::to_value(value).map_err(|e| StepError::BadData(e.to_string()))
}

/// A step's typed data shared by the parts of a sequence (and a nested step writing into one
/// of its fields): every change is saved whole, through the step's journal.
pub struct Journaled<'a, T> {
    journal: &'a dyn Journal,
    value: Mutex<T>,
}

impl<'a, T> Journaled<'a, T>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send,
{
    /// What an earlier attempt saved (see [`earlier`]), or a fresh `T`.
    pub fn resume(ctx: &StepContext<'a>) -> Self {
        Journaled {
            journal: ctx.journal,
            value: Mutex::new(earlier(ctx).unwrap_or_default()),
        }
    }

    /// The journal the step logs to.
    pub fn journal(&self) -> &'a dyn Journal {
        self.journal
    }

    /// A copy of what is saved.
    pub fn get(&self) -> T {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the data and stores it whole, durably, before returning.
    pub async fn update(&self, change: impl FnOnce(&mut T)) -> Result<(), StepError> {
        let value = {
            let mut value = self.value.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut value);
            value.clone()
        };
        save(self.journal, &value).await
    }

    /// What is saved, as the step's outcome data.
    pub fn to_value(&self) -> Result<Value, StepError> {
        to_value(&self.get())
    }
}
