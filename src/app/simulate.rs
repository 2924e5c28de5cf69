//! The one door to the simulation (cargo feature `simulate`): everything the service needs to
//! run on the simulated cluster of `crates/sim` (`serve --simulate`, `sim`, the tests), and the
//! simulated nodes' subcommands. The simulation itself lives in `crates/sim`; this module only
//! wires it: where the configuration points, which client the service uses, which nodes answer
//! SSH. A build without the feature compiles `without_simulate.rs` in its place, which refuses.

use std::{net::SocketAddr, path::Path, process::ExitCode, str::FromStr, time::Duration};

use anyhow::Context;
use sim::{
    SimCluster, SimOptions,
    nodes::{self, NodeCommand, NodeServices, SimNode, SimNodes},
};

use super::{
    instance::{App, SERVICE_ACCOUNT},
    shutdown::shutdown_signal,
};
use crate::{
    cli::{GuardArgs, ServeArgs, SimArgs, SimNodeArgs},
    cluster::rbac,
    config::{Config, HostnameTemplate},
    csm::{CsmConfig, CsmService, HsmComponent},
    etcd::{EtcdConfig, RecoveryConfig},
    release::Release,
    remote::{SshConfig, hostlist},
};

/// This build has the simulated cluster.
pub fn available() -> anyhow::Result<()> {
    Ok(())
}

/// How long `serve --simulate` waits for the simulated cluster to settle before it serves.
const SIM_SETTLE: Duration = Duration::from_secs(60);

/// What `serve --simulate` runs beside the service, until it stops.
pub struct Simulation {
    sim: SimCluster,
    /// The simulated nodes' sshd, when one started.
    nodes: Option<SimNodes>,
}

impl Simulation {
    /// Starts the simulated cluster `args` asks for (seeded and settled), points `config` at it
    /// ([`Config::use_simulation`]) and starts the simulated nodes' sshd.
    pub async fn start(args: &ServeArgs, config: &mut Config) -> anyhow::Result<Simulation> {
        let options = SimOptions {
            job_backoff: args.sim_job_backoff,
            ..SimOptions::interactive()
        };
        let sim = start_sim(
            args.sim_listen,
            options,
            args.sim_kubeconfig.as_deref(),
            &args.csm_release,
        )
        .await?;
        // The simulated CSM services live on the simulated cluster's address.
        config.use_simulation(&sim);
        if !sim.runs_real_etcd() {
            tracing::warn!(
                "`{}` is not installed (Debian: etcd-server): the simulated etcd clusters have \
                 no etcd behind them, so GET /etcd-clusters reports them unreachable and the \
                 etcd checks (check-etcd-cluster, recount-etcd-keys) are off",
                sim::kube::controllers::etcd_member::ETCD_BINARY
            );
        }
        let release = Release::from_str(&args.csm_release)?;
        let nodes = serve_nodes(config, &sim, args.sim_sshd.as_deref(), release);
        Ok(Simulation { sim, nodes })
    }

    /// The service's client of the simulated cluster ([`simulated_client`]).
    pub fn client(&self) -> kube::Client {
        simulated_client(&self.sim)
    }

    /// Stops the simulated cluster and the nodes' sshd.
    pub async fn shutdown(self) {
        self.sim.shutdown().await;
        drop(self.nodes);
    }
}

impl Config {
    /// Points the configuration at the simulated cluster `sim`: its CSM services; the etcd
    /// checks stay as configured when it runs real etcd clusters, and are off otherwise
    /// (nothing answers) unless `[etcd]` was configured, e.g. at a real etcd; `[recovery]` at
    /// its S3 (the Secret `etcd-backup-s3-credentials` as files) and its snapshotter PVC's
    /// directory (none before CSM 1.5), unless configured.
    pub fn use_simulation(&mut self, sim: &SimCluster) {
        self.csm = CsmConfig::simulated(&sim.url());
        if !sim.runs_real_etcd() && self.etcd == EtcdConfig::default() {
            // The simulated cluster has no etcd clusters: no checks.
            self.etcd = EtcdConfig {
                enabled: false,
                ..EtcdConfig::default()
            };
        }
        let defaults = RecoveryConfig::default();
        if let Some(s3) = sim.s3()
            && self.recovery.s3_credentials_dir == defaults.s3_credentials_dir
        {
            self.recovery.s3_credentials_dir = s3.credentials_dir().to_owned();
        }
        if self.recovery.snapshots_dir == defaults.snapshots_dir {
            self.recovery.snapshots_dir = sim
                .snapshots_dir()
                .map(Path::to_path_buf)
                .unwrap_or_default();
        }
    }
}

impl CsmConfig {
    /// Every URL pointing at the fake services of the simulated cluster served at `base`
    /// ([`sim::csm::service_url`]): only the base URLs differ from production.
    pub fn simulated(base: &str) -> CsmConfig {
        let url = |service| sim::csm::service_url(base, service);
        CsmConfig {
            bos_url: url(CsmService::Bos),
            bss_url: url(CsmService::Bss),
            cps_url: url(CsmService::Cps),
            crus_url: url(CsmService::Crus),
            fas_url: url(CsmService::Fas),
            hmnfd_url: url(CsmService::Hmnfd),
            hsm_url: url(CsmService::Hsm),
            ..CsmConfig::default()
        }
    }
}

impl App {
    /// The service on the simulated cluster `sim`, configured as `serve --simulate` configures
    /// it ([`Config::use_simulation`]: the simulated CSM services, the etcd checks on when `sim`
    /// runs real etcd clusters) and acting as its service account ([`simulated_client`]); only
    /// the simulated nodes' sshd, which `serve --simulate` adds for the `hmnfd` step, is not
    /// started.
    pub async fn on_simulation(
        database: &str,
        mut config: Config,
        sim: &SimCluster,
    ) -> anyhow::Result<App> {
        config.use_simulation(sim);
        App::new(database, config, simulated_client(sim)).await
    }
}

/// The service's client of the simulated cluster: its own service account with the chart's
/// Role, as in a cluster.
pub fn simulated_client(sim: &SimCluster) -> kube::Client {
    sim.service_account_client(SERVICE_ACCOUNT, rbac::policy_rules())
}

/// Under `--simulate`, unless `[ssh]` is configured: an sshd on loopback for the simulated
/// nodes, and `[ssh]` pointed at it; where none can be started, every SSH fan-out (the `hmnfd`
/// step) fails at once, saying what to install.
fn serve_nodes(
    config: &mut Config,
    sim: &SimCluster,
    sshd: Option<&Path>,
    release: Release,
) -> Option<SimNodes> {
    if config.ssh != SshConfig::default() {
        tracing::info!("[ssh] is configured: the simulated nodes' SSH server is not started");
        return None;
    }
    let started = match nodes::find_sshd(sshd) {
        None => Err(nodes::INSTALL_HINT.to_owned()),
        Some(sshd) => std::env::current_exe()
            .map_err(|e| format!("cannot find this program for the simulated nodes: {e}"))
            .and_then(|program| start_nodes(config, sim, &sshd, &program, release)),
    };
    match started {
        Ok(nodes) => {
            tracing::info!(
                port = nodes.sshds.port,
                nodes = nodes.nodes.len(),
                dir = %nodes.sshds.dir().display(),
                "simulated nodes answer SSH on loopback ([ssh] points at them)"
            );
            Some(nodes)
        }
        Err(reason) => {
            tracing::warn!(%reason, "no SSH server for the simulated nodes: hmnfd runs will fail");
            config.ssh.unavailable = Some(reason);
            None
        }
    }
}

/// Starts `sshd` as every node a run of `config` can contact on `sim` laid out as `release`,
/// each running its commands through `program sim-node` (the service's binary), and points
/// `config.ssh` at them.
pub fn start_nodes(
    config: &mut Config,
    sim: &SimCluster,
    sshd: &Path,
    program: &Path,
    release: Release,
) -> Result<SimNodes, String> {
    let services = NodeServices {
        hmnfd_url: config.csm.hmnfd_url.clone(),
        hsm_url: config.csm.hsm_url.clone(),
        orca_unit: release.profile().orca_unit.to_owned(),
    };
    let nodes = SimNodes::start(
        sshd,
        program,
        node_hosts(config, &sim.csm().hsm_components()),
        &services,
    )
    .map_err(|e| format!("sshd {e}"))?;
    config.ssh = SshConfig {
        user: nodes.sshds.user.clone(),
        port: nodes.sshds.port,
        identity_file: nodes.sshds.identity.clone(),
        known_hosts_file: nodes.known_hosts.clone(),
        hosts: nodes.hosts(),
        ..SshConfig::default()
    };
    Ok(nodes)
}

/// Every node a run of `config` can contact on the simulated system: HSM's compute nodes and
/// management nodes by their host name templates, and the NCN hostlists.
fn node_hosts(config: &Config, hsm: &[HsmComponent]) -> Vec<SimNode> {
    let compute = HostnameTemplate::parse(&config.hmnfd.compute_hostname).ok();
    let ncn = HostnameTemplate::parse(&config.hmnfd.ncn_hostname).ok();
    let from_hsm = hsm.iter().filter(|c| c.kind == "Node").filter_map(|node| {
        let template = match node.role.as_deref() {
            Some("Compute") => compute.as_ref(),
            Some("Management") => ncn.as_ref(),
            _ => None,
        };
        template
            .and_then(|t| t.render(node))
            .map(|host| (host, Some(node.id.clone())))
    });
    let from_hostlists = config
        .hmnfd
        .ncn_hostlists
        .iter()
        .flat_map(|expr| hostlist::expand(expr).unwrap_or_default())
        .map(|host| (host, None));
    nodes::place(from_hsm.chain(from_hostlists), hsm)
}

/// `sim`: only the simulated cluster, until SIGTERM/SIGINT.
pub async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let options = SimOptions {
        kubelet_ready_delay: args.kubelet_delay,
        job_backoff: args.job_backoff,
        ..SimOptions::interactive()
    };
    let sim = start_sim(
        args.listen,
        options,
        args.kubeconfig.as_deref(),
        &args.csm_release,
    )
    .await?;
    if let Some(path) = &args.serve_config {
        write_serve_config(&sim, path)?;
    }
    shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// The sections of a configuration file that point a `serve` in another process at `sim`, as
/// `serve --simulate` points itself ([`Config::use_simulation`]).
#[derive(serde::Serialize)]
struct ServeConfig {
    csm: crate::csm::CsmConfig,
    etcd: crate::etcd::EtcdConfig,
    recovery: RecoveryConfig,
}

fn write_serve_config(sim: &SimCluster, path: &Path) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.use_simulation(sim);
    let file = ServeConfig {
        csm: config.csm,
        etcd: config.etcd,
        recovery: config.recovery,
    };
    let text = format!(
        "# For `etcd-repopulator serve --config {}` with KUBECONFIG at the simulated cluster's\n\
         # kubeconfig (`sim --kubeconfig`). Written by `etcd-repopulator sim`.\n{}",
        path.display(),
        toml::to_string(&file).context("formatting the configuration")?
    );
    write_whole(path, &text)
        .with_context(|| format!("writing a configuration for serve to {}", path.display()))?;
    tracing::info!(path = %path.display(), "configuration for a serve in another process written");
    Ok(())
}

/// Writes `text` to `path` whole or not at all: into a file beside it, renamed over `path`
/// once written, so that whoever waits for `path` to appear (a script, a test) never reads it
/// half written.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

async fn start_sim(
    listen: SocketAddr,
    options: SimOptions,
    kubeconfig: Option<&Path>,
    csm_release: &str,
) -> anyhow::Result<SimCluster> {
    let sim = SimCluster::start(listen, options).await?;
    sim.seed_csm_release(csm_release).await?;
    // Serve once the seeded pods run and (with real etcd) every etcd cluster answers with its
    // seeded data and backup, so that a rehearsal starts from a settled cluster.
    if let Err(err) = sim.wait_settled(SIM_SETTLE).await {
        tracing::warn!(error = %err, "the simulated cluster has not settled; serving anyway");
    }
    tracing::info!(url = %sim.url(), csm_release, "simulated cluster listening (plain HTTP, no auth)");
    if let Some(s3) = sim.s3() {
        tracing::info!(
            objects = %s3.root().display(),
            credentials = %s3.credentials_dir().display(),
            endpoint = s3.endpoint(),
            "simulated S3 keeps its objects under this directory (bucket/key as paths)"
        );
    }
    if let Some(dir) = sim.snapshots_dir() {
        tracing::info!(dir = %dir.display(), "simulated snapshotter PVC (bitnami-etcd-snapshotter)");
    }
    if let Some(path) = kubeconfig {
        write_whole(path, &sim.kubeconfig_yaml()).with_context(|| {
            format!(
                "writing the simulated cluster's kubeconfig to {}",
                path.display()
            )
        })?;
        tracing::info!(path = %path.display(), "kubeconfig for the simulated cluster written");
    }
    Ok(sim)
}

/// `sim-node`: runs one command on a simulated node.
pub async fn node_command(args: SimNodeArgs) -> ExitCode {
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_else(|_| args.command.join(" "));
    nodes::node::run(&NodeCommand {
        host: args.host,
        xname: args.xname,
        hmnfd_url: args.hmnfd_url,
        hsm_url: args.hsm_url,
        orca_unit: args.orca_unit,
        command,
    })
    .await
}

/// `sim-node-guard`: see [`GuardArgs`].
pub async fn guard(args: GuardArgs) -> ExitCode {
    nodes::node::guard(args.remove_dir, &args.command).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn node(id: &str, role: &str, sub_role: Option<&str>, nid: i64) -> HsmComponent {
        HsmComponent {
            id: id.to_owned(),
            kind: "Node".to_owned(),
            role: Some(role.to_owned()),
            sub_role: sub_role.map(str::to_owned),
            nid: Some(nid),
            ..HsmComponent::default()
        }
    }

    #[test]
    fn every_host_a_run_can_contact_is_a_node() {
        let hsm = [
            node("x1000c0s0b0n0", "Compute", None, 1),
            node("x3000c0s5b0n0", "Management", Some("Worker"), 100_005),
            node("x3000c0s4b0n0", "Management", Some("Worker"), 100_004),
        ];
        let mut config = Config::default();
        config.hmnfd.ncn_hostlists = vec!["ncn-w00[1-3]-can.local".to_owned()];
        let nodes = node_hosts(&config, &hsm);
        let hosts: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
        // HSM's compute node by `compute_hostname`, its NCNs by `ncn_hostname` (the xname by
        // default), and the hostlists' NCNs (sim::nodes::place gives those their xnames).
        assert_eq!(
            hosts,
            [
                "ncn-w001-can.local",
                "ncn-w002-can.local",
                "ncn-w003-can.local",
                "nid000001-nmn",
                "x3000c0s4b0n0",
                "x3000c0s5b0n0"
            ]
        );
        let find = |host: &str| nodes.iter().find(|n| n.host == host).unwrap();
        assert_eq!(
            find("nid000001-nmn").xname.as_deref(),
            Some("x1000c0s0b0n0")
        );
    }

    /// What the simulated nodes' sshd runs is a `sim-node` this binary understands.
    #[test]
    fn the_nodes_forced_command_is_this_programs_sim_node() {
        let node = NodeCommand {
            host: "nid000001-nmn".to_owned(),
            xname: Some("x1000c0s0b0n0".to_owned()),
            hmnfd_url: "http://127.0.0.1:1/hmnfd".to_owned(),
            hsm_url: "http://127.0.0.1:1/hsm".to_owned(),
            orca_unit: "cray-orca".to_owned(),
            command: String::new(),
        };
        let cli =
            Cli::try_parse_from(std::iter::once("etcd-repopulator".to_owned()).chain(node.args()))
                .unwrap();
        let Command::SimNode(args) = cli.command else {
            panic!("not sim-node: {:?}", cli.command);
        };
        assert_eq!(
            (
                args.host,
                args.xname,
                args.hmnfd_url,
                args.hsm_url,
                args.orca_unit
            ),
            (
                node.host,
                node.xname,
                node.hmnfd_url,
                node.hsm_url,
                node.orca_unit
            )
        );
    }
}
