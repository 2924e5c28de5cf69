//! The command line: `serve` runs the service; the other commands are tools around it.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "etcd-repopulator",
    version,
    about = "Repopulates CSM services' data after their etcd clusters are rebuilt"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (HTTP API and background runner).
    Serve(ServeArgs),
    /// Run only the simulated cluster (Kubernetes API and CSM services), e.g. for kubectl or
    /// for a `serve` in another process.
    Sim(SimArgs),
    /// Print the OpenAPI document (this is how openapi/openapi.json is regenerated).
    Openapi,
    /// Run a command on many hosts over SSH, like pdsh (`-w HOSTLIST`, `-f FANOUT`).
    Fanout(crate::remote::cli::FanoutArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "ETCD_REPOPULATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// SQLite database: a path or a `sqlite:` URL; created if missing.
    #[arg(
        long,
        env = "ETCD_REPOPULATOR_DATABASE",
        default_value = "./etcd-repopulator.db"
    )]
    pub database: String,
    /// TOML file with per-service settings (namespace, selectors, timeouts); defaults follow the runbook.
    #[arg(long, env = "ETCD_REPOPULATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run against a built-in simulated cluster instead of a real one.
    #[arg(long, env = "ETCD_REPOPULATOR_SIMULATE")]
    pub simulate: bool,
    /// Address of the simulated cluster's API (plain HTTP, no auth); logged at start.
    #[arg(
        long,
        env = "ETCD_REPOPULATOR_SIM_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub sim_listen: SocketAddr,
    /// Write a kubeconfig for the simulated cluster here, so kubectl can look at it.
    #[arg(long, env = "ETCD_REPOPULATOR_SIM_KUBECONFIG")]
    pub sim_kubeconfig: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Address of the simulated cluster's API.
    #[arg(
        long,
        env = "ETCD_REPOPULATOR_SIM_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub listen: SocketAddr,
    /// Write a kubeconfig for it here.
    #[arg(long, env = "ETCD_REPOPULATOR_SIM_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How long the simulated kubelet takes to make a new pod Ready.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub kubelet_delay: std::time::Duration,
}
