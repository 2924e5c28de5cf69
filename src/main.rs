use std::process::ExitCode;

use clap::Parser;
use etcd_repopulator::remote;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run a command on many hosts over SSH, like pdsh.
    Fanout(remote::cli::FanoutArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Fanout(args) => remote::cli::run_cli(args).await,
    }
}
