//! In place of `simulate.rs` in a build without the simulated cluster (cargo feature
//! `simulate`; the container image is built so): `serve --simulate`, `sim` and the simulated
//! nodes' subcommands refuse, saying why.

use std::process::ExitCode;

use crate::{
    cli::{GuardArgs, ServeArgs, SimArgs, SimNodeArgs},
    config::Config,
};

/// What `serve --simulate` and `sim` answer in a binary built without the simulated cluster
/// (the container image is).
const NO_SIMULATE: &str = "this binary was built without the simulated cluster (cargo \
     feature `simulate`), so `serve --simulate` and `sim` are not available; build it with the \
     default features (`cargo build --release`) to try the service without a cluster";

/// Refuses: this build has no simulated cluster.
pub fn available() -> anyhow::Result<()> {
    anyhow::bail!(NO_SIMULATE)
}

/// Never made: there is nothing to simulate with.
pub enum Simulation {}

impl Simulation {
    pub async fn start(_args: &ServeArgs, _config: &mut Config) -> anyhow::Result<Simulation> {
        anyhow::bail!(NO_SIMULATE)
    }

    pub fn client(&self) -> kube::Client {
        match *self {}
    }

    pub async fn shutdown(self) {
        match self {}
    }
}

pub async fn run_sim(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!(NO_SIMULATE)
}

pub async fn node_command(_args: SimNodeArgs) -> ExitCode {
    eprintln!("etcd-repopulator: {NO_SIMULATE}");
    ExitCode::FAILURE
}

pub async fn guard(_args: GuardArgs) -> ExitCode {
    eprintln!("etcd-repopulator: {NO_SIMULATE}");
    ExitCode::FAILURE
}
