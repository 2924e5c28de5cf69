//! SSH fan-out executor (pdsh-like: hostlist expressions, fan-out limit, per-host results).
//!
//! `hostlist` turns `ncn-w00[0-4]-can.local` into names, `fanout` runs one command on all of
//! them over SSH with a concurrency limit and reports per-host outcomes.

pub mod cli;
mod config;
pub mod fanout;
pub mod hostlist;
mod known_hosts;
pub mod outcome;
mod ssh;
mod tail;

pub use config::SshConfig;
pub use fanout::{preflight, run, run_with_output};
pub use known_hosts::KnownHostsError;
pub use outcome::{
    FanoutError, FanoutReport, HostOutcome, HostResult, OutputLine, OutputStream, TimeoutPhase,
};
