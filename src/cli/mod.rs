//! The command line: `serve` runs the service; the other commands are tools around it, among
//! them a `cray`-style client of the service's API (`repopulations ...`, `services ...`,
//! `snapshots ...`).

mod client;
pub mod commands;
mod drill_view;
mod error;
mod etcd_view;
mod follow;
mod output;
mod table;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "etcd-repopulator",
    version,
    about = "Repopulates CSM services' data after their etcd clusters are rebuilt"
)]
pub struct Cli {
    /// Where the API is and how to print its answers: accepted before the subcommand as well
    /// as after it (`etcd-repopulator --url URL repopulations list`).
    #[command(flatten)]
    pub client: ClientOptions,
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
    /// Start, follow, list, cancel and resume repopulation runs (a client of the API).
    Repopulations(RepopulationsArgs),
    /// List the services a run can repopulate (a client of the API).
    Services(ServicesArgs),
    /// Capture or list snapshots of BOS session templates and HMNFD subscriptions (a client of
    /// the API).
    Snapshots(SnapshotsArgs),
    /// The services' etcd clusters, in either layout, and their health.
    EtcdClusters(EtcdClustersArgs),
    /// Print a shell completion script (e.g. `etcd-repopulator completion bash >
    /// /etc/bash_completion.d/etcd-repopulator`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the Kubernetes RBAC rules the service needs, as the `rules:` of a Role (this is
    /// what the chart's templates/role.yaml carries).
    #[command(hide = true)]
    RbacRules,
    /// What a node of `serve --simulate` does with a command sent to it over SSH (run by the
    /// simulated nodes' sshd).
    #[command(hide = true)]
    SimNode(SimNodeArgs),
    /// Runs the simulated nodes' sshd until its stdin closes (the service stopped).
    #[command(hide = true)]
    SimNodeGuard(GuardArgs),
}

/// Where the API is and how to talk to it; shared by every client command (and accepted, though
/// unused, by the others: clap's global options reach every subcommand).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Client options (repopulations, services, snapshots)")]
pub struct ClientOptions {
    /// Base URL of the service [default: from the client config, else http://localhost:8080].
    #[arg(long, global = true, env = "ETCD_REPOPULATOR_URL")]
    pub url: Option<String>,
    /// Bearer token sent as `Authorization: Bearer` [default: from the client config].
    #[arg(
        long,
        global = true,
        env = "ETCD_REPOPULATOR_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// TOML file with `url` and `token` [default: ~/.config/etcd-repopulator/client.toml if present].
    #[arg(long, global = true, env = "ETCD_REPOPULATOR_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Output format [default: table on a terminal, else toml].
    #[arg(long, short = 'o', visible_alias = "output", global = true, value_enum)]
    pub format: Option<Format>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: runs, steps and services as aligned tables.
    Table,
    /// The API's answer as TOML (nulls left out), like `cray`: for scripts.
    Toml,
    /// The API's answer as it came: for scripts.
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct RepopulationsArgs {
    #[command(subcommand)]
    pub command: RepopulationsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum RepopulationsCommand {
    /// Start a run (POST /repopulations).
    Create {
        /// Services to repopulate, comma-separated (e.g. bss,reds), or `all` for every
        /// supported one. Required: a run changes the cluster.
        #[arg(long, value_delimiter = ',', required = true)]
        services: Vec<String>,
        /// Plan only: show what would be touched, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (e.g. which etcd cluster was rebuilt); kept in the history.
        #[arg(long)]
        reason: Option<String>,
        /// What to do with each service's etcd cluster first. Every mode but `check` is
        /// DESTRUCTIVE (it may delete the cluster's data): a real run needs the `recover` role
        /// and `--confirm` for each cluster; try it with `--dry-run` first.
        #[arg(long, value_enum, default_value_t = EtcdArg::Check)]
        etcd: EtcdArg,
        /// With `--etcd restore` only: the backup to restore from (as `etcd-clusters backups`
        /// lists it) [default: the newest].
        #[arg(long)]
        backup: Option<String>,
        /// An etcd cluster the run may rebuild or restore (e.g. cray-bss-bitnami-etcd);
        /// repeat it for each. A real run with `--etcd restore|rebuild|auto` must name exactly
        /// the clusters of its services; if it does not, the service says which to name.
        #[arg(long = "confirm", value_name = "CLUSTER")]
        confirm: Vec<String>,
        /// With `--etcd restore|rebuild`: accept throwing away what the cluster holds beyond
        /// the backup (all of it, for a rebuild). Without it such a run stops before it changes
        /// anything, saying how much would be lost; a safety snapshot keeps it either way.
        #[arg(long)]
        discard_newer: bool,
        /// Print the run id at once, then a line per step as it changes (and the phases of
        /// an etcd recovery as they are logged), then the outcome; exit 0 only if the run
        /// succeeded. Ctrl-C stops following (the run goes on).
        #[arg(long)]
        wait: bool,
        /// Do not ask before a destructive run (`--etcd restore|rebuild|auto` without
        /// `--dry-run`): for scripts. From a terminal, such a run asks yes/no naming the
        /// clusters first.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Show a run with its service tasks and steps (GET /repopulations/{id}). Every command
    /// that takes a run id also takes a unique prefix of one (`0193a2`).
    Describe { id: String },
    /// The run history, newest first (GET /repopulations).
    List {
        /// Only runs in this state (pending, running, succeeded, failed, cancelled,
        /// interrupted, action_required, abandoned).
        #[arg(long)]
        state: Option<String>,
        /// Only runs that include this service.
        #[arg(long)]
        service: Option<String>,
        /// At most this many runs per page (1 to 500).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this point: the `next_cursor` of the previous page.
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
        /// Every page, following `next_cursor` to the end.
        #[arg(long)]
        all: bool,
    },
    /// The run's log (GET /repopulations/{id}/events): what is stored so far, or with
    /// `--follow` everything until the run stops.
    Logs {
        id: String,
        /// Keep printing lines as they are appended, until the run stops.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Stop a run at its next safe point (POST /repopulations/{id}/cancel).
    Cancel { id: String },
    /// Continue an interrupted or failed run (POST /repopulations/{id}/resume).
    Resume { id: String },
    /// Give up on an interrupted or failed run: it can never be resumed, and a new recovery of
    /// its etcd clusters may start (POST /repopulations/{id}/abandon; role recover).
    Abandon { id: String },
}

/// `repopulations create --etcd`: what a run does with the services' etcd clusters (the API's
/// `etcd`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdArg {
    /// Leave each cluster alone; stop if it is unhealthy (safe; the default).
    Check,
    /// DESTRUCTIVE: replace each cluster's data with a backup (--backup, else the newest), then
    /// repopulate what the backup does not hold.
    Restore,
    /// DESTRUCTIVE: delete each cluster's data and start it empty, then repopulate everything.
    Rebuild,
    /// DESTRUCTIVE when a cluster is unhealthy: leave a healthy one alone, else restore it from
    /// a recent backup, else rebuild it; then repopulate.
    Auto,
    /// Only what loses no data: a full database (NOSPACE) gets its space back by compaction,
    /// defragmentation and disarming the alarm. Not destructive: no --confirm needed.
    Repair,
}

impl EtcdArg {
    /// The API's name of the mode.
    pub fn mode(self) -> crate::model::EtcdMode {
        use crate::model::EtcdMode;
        match self {
            EtcdArg::Check => EtcdMode::Check,
            EtcdArg::Restore => EtcdMode::Restore,
            EtcdArg::Rebuild => EtcdMode::Rebuild,
            EtcdArg::Auto => EtcdMode::Auto,
            EtcdArg::Repair => EtcdMode::Repair,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServicesArgs {
    #[command(subcommand)]
    pub command: ServicesCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ServicesCommand {
    /// The supported services and the steps a run takes for each (GET /services).
    List,
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotsArgs {
    #[command(subcommand)]
    pub command: SnapshotsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SnapshotsCommand {
    /// Capture BOS session templates and HMNFD subscriptions now (POST /snapshots).
    Create,
    /// The stored snapshots, newest first, without their content (GET /snapshots).
    List {
        /// Only snapshots of this source (bos-session-templates or hmnfd-subscriptions).
        #[arg(long)]
        source: Option<String>,
        /// Include each snapshot's content.
        #[arg(long)]
        content: bool,
        /// At most this many (1 to 500).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct EtcdClustersArgs {
    #[command(subcommand)]
    pub command: EtcdClustersCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum EtcdClustersCommand {
    /// Every etcd cluster with its members, health, alarms and size (GET /etcd-clusters).
    List,
    /// One cluster (GET /etcd-clusters/{name}), e.g. cray-bss-bitnami-etcd.
    Describe { name: String },
    /// A cluster's backups, newest first, in S3 and the snapshotter PVC, each with its last
    /// check and drill (GET /etcd-clusters/{name}/backups).
    Backups { name: String },
    /// Restore drill of a cluster's newest backup (or --backup): restored into a scratch etcd,
    /// its keys compared with the live cluster's (POST /etcd-clusters/{name}/drills); waits
    /// for its result and exits non-zero unless it passed.
    Drill {
        name: String,
        /// The backup to drill (`db-2025-01-01_00-00`) [default: the newest].
        #[arg(long)]
        backup: Option<String>,
        /// Print the started drill and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// A cluster's restore drills, newest first (GET /etcd-clusters/{name}/drills).
    Drills {
        name: String,
        /// At most this many (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTP API [default: 0.0.0.0:8080; with --simulate 127.0.0.1:8080, as
    /// authentication is then off].
    #[arg(long, env = "ETCD_REPOPULATOR_LISTEN")]
    pub listen: Option<SocketAddr>,
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
    /// The simulated Job controller's first back-off after a failed pod (doubling per failure,
    /// capped at 36 times it): the real 10s by default; shorter to rehearse failing Jobs quickly.
    #[arg(long, env = "ETCD_REPOPULATOR_SIM_JOB_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    pub sim_job_backoff: std::time::Duration,
    /// OpenSSH's sshd, started on loopback as the simulated nodes' SSH server (for `hmnfd`)
    /// when `[ssh]` is not configured [default: sshd on PATH, else /usr/sbin/sshd].
    #[arg(long, env = "ETCD_REPOPULATOR_SIM_SSHD")]
    pub sim_sshd: Option<PathBuf>,
    /// The CSM release the simulated cluster is laid out as (1.0, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7).
    #[arg(long, env = "ETCD_REPOPULATOR_CSM_RELEASE", default_value = "1.0",
        value_parser = clap::builder::PossibleValuesParser::new(crate::release::Release::ALL.map(|r| r.as_str())))]
    pub csm_release: String,
}

impl ServeArgs {
    /// Where the API listens: `--listen`, else every interface, else (`--simulate`, whose
    /// authentication is off by default) loopback only.
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or(if self.simulate {
            SocketAddr::from(([127, 0, 0, 1], 8080))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 8080))
        })
    }
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
    /// Write a configuration file for a `serve` in another process here: the simulated CSM
    /// services' URLs, its etcd clusters, its S3 and snapshotter directory (`serve --config
    /// FILE` with `KUBECONFIG` at `--kubeconfig`).
    #[arg(long)]
    pub serve_config: Option<PathBuf>,
    /// How long the simulated kubelet takes to make a new pod Ready.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub kubelet_delay: std::time::Duration,
    /// The Job controller's first back-off after a failed pod (see `serve --sim-job-backoff`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub job_backoff: std::time::Duration,
    /// The CSM release the simulated cluster is laid out as (1.0, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7).
    #[arg(long, env = "ETCD_REPOPULATOR_CSM_RELEASE", default_value = "1.0",
        value_parser = clap::builder::PossibleValuesParser::new(crate::release::Release::ALL.map(|r| r.as_str())))]
    pub csm_release: String,
}

/// `sim-node`: what a simulated node does with the command it was sent over SSH (in
/// `SSH_ORIGINAL_COMMAND`, as sshd's `ForceCommand` leaves it). The simulated nodes' sshd
/// passes these (`sim::nodes::NodeCommand::args`).
#[derive(Args, Debug, Clone)]
pub struct SimNodeArgs {
    /// The node's host name.
    #[arg(long)]
    pub host: String,
    /// The node's xname, when HSM knows it (ORCA subscribes under it).
    #[arg(long)]
    pub xname: Option<String>,
    /// The simulated HMNFD (v2) base URL.
    #[arg(long)]
    pub hmnfd_url: String,
    /// The simulated HSM (v2) base URL.
    #[arg(long)]
    pub hsm_url: String,
    /// The systemd unit of ORCA on the simulated release (`cray-dvs-orca`, `cray-orca`).
    #[arg(long)]
    pub orca_unit: String,
    /// The command, when not run by sshd.
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

/// `sim-node-guard [--remove-dir DIR] SSHD ARGS...`: runs sshd until it exits or this process's
/// stdin closes (the service that started it stopped), then stops it and removes its directory.
#[derive(Args, Debug, Clone)]
pub struct GuardArgs {
    /// Removed once the service is gone (the directory of sshd's keys and configuration).
    #[arg(long)]
    pub remove_dir: Option<PathBuf>,
    /// The program to run and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["etcd-repopulator", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(args) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn the_simulation_listens_on_loopback_unless_told_otherwise() {
        assert_eq!(serve(&[]).listen().to_string(), "0.0.0.0:8080");
        assert_eq!(
            serve(&["--simulate"]).listen().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            serve(&["--simulate", "--listen", "0.0.0.0:9000"])
                .listen()
                .to_string(),
            "0.0.0.0:9000"
        );
    }
}
