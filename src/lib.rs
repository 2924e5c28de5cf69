//! etcd-repopulator: turns the CSM runbook "Repopulate Data in etcd Clusters When Rebuilding
//! Them" into an API.
//!
//! The layers, from the top: [`api`] (the HTTP API: axum routes, every error as
//! `application/problem+json`) → [`runner`] (runs in the background, one run per service at a
//! time, recovery after a restart) → [`handlers`] (what a run does for each service, as steps,
//! following the CSM [`release`] in force) → [`cluster`] (Kubernetes, through kube-rs), [`csm`]
//! (clients of the CSM REST APIs), [`etcd`] (health and key counts of the etcd clusters) and
//! [`remote`] (SSH fan-out to the nodes). [`drills`] restore the clusters' backups into a
//! scratch etcd to prove them. [`store`] keeps runs ([`run`]), snapshots and drills in SQLite;
//! [`config`] is the one configuration every layer reads, and depends on none of the layers
//! above. [`metrics`] is `/metrics`' registry, which the runner counts runs into and the
//! [`collector`] (started by `serve`) fills with its measures of the etcd clusters. The
//! simulated cluster and CSM services that `serve --simulate` and the tests run against are the
//! workspace crate `crates/sim` (feature `simulate`), wired in `app::simulate`. README.md
//! ("Development") draws the same map.

pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod collector;
pub mod config;
pub mod csm;
pub mod drills;
pub mod errors;
pub mod etcd;
pub mod failpoint;
pub mod handlers;
pub mod metrics;
pub mod model;
pub mod recovery;
pub mod release;
pub mod remote;
pub mod run;
pub mod runner;
pub mod snapshots;
pub mod step;
pub mod store;
