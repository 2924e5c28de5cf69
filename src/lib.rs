//! etcd-repopulator: turns the CSM runbook "Repopulate Data in etcd Clusters When Rebuilding
//! Them" into an API. See DESIGN.md in the shared folder for the layers below.

pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod csm;
pub mod etcd;
pub mod failpoint;
pub mod handlers;
pub mod metrics;
pub mod model;
pub mod release;
pub mod remote;
pub mod runner;
#[cfg(feature = "simulate")]
pub mod sim_nodes;
pub mod snapshots;
pub mod store;
