//! etcd-repopulator: turns the CSM runbook "Repopulate Data in etcd Clusters When Rebuilding
//! Them" into an API. See DESIGN.md in the shared folder for the layers below.

pub mod csm;
pub mod remote;
pub mod sim;
