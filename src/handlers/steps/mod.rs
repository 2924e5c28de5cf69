//! The implementations of the step actions, built from the cluster and CSM primitives.

pub mod bos;
pub mod bss;
pub mod csm_checks;
pub mod etcd;
pub mod fas;
pub mod orca;
pub mod pods;
pub mod recovery;
pub mod recreate;
