//! Kubernetes primitives on kube-rs: the mechanics the handlers are built from. Waiting is
//! always done by watching (never by sleeping and polling), with a deadline and cancellation.

mod client;
mod error;
mod events;
mod mode;
mod objects;
mod pods;
pub mod rbac;
mod retry;
mod scale;
mod statefulset;
mod wait;

pub use client::Cluster;
pub use error::{ClusterError, describe_kube_error};
pub use events::{REASON as EVENT_REASON, RunEvents};
pub use mode::Mode;
pub use objects::{JobOutcome, ObjectRef, Sanitized, object_uid, sanitize};
pub use pods::{PodRef, PodsReady, RestartPlan, RestartReport, is_ready as pod_is_ready};
pub use scale::DeploymentScale;
