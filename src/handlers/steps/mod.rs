//! The implementations of the step actions, built from the cluster and CSM primitives.

pub mod csm_checks;
pub mod pods;
pub mod recreate;
