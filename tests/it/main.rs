//! The integration tests: one test binary (each module was its own target before, each linking
//! the whole crate), with the shared fixtures in `common`.

mod common;

mod api;
mod auth;
mod backups;
mod bos;
mod chart;
mod cli;
mod csm;
mod csm17;
mod drills;
mod etcd;
mod etcd_ops;
mod events;
mod handlers;
mod history;
mod hmnfd;
mod kube_events;
mod members;
mod metrics;
mod openapi;
mod operator_recovery;
mod prometheus;
mod quorum;
mod rbac;
mod recovery;
mod releases;
mod remote;
mod replace;
// The crash tests abort the service at failpoints, which only a binary built with the feature
// `failpoints` has: `cargo test --workspace --features failpoints` (as `scripts/test` runs).
#[cfg(feature = "failpoints")]
mod restart;
mod sim_rehearsal;
mod space;
mod webhooks;
