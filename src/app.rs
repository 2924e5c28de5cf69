//! Wiring: from command-line arguments to a running service.

use std::{io::IsTerminal, sync::Arc, time::Duration};
#[cfg(feature = "simulate")]
use std::{net::SocketAddr, path::Path};

use anyhow::Context;
#[cfg(feature = "simulate")]
use sim::{SimCluster, SimOptions};
use tokio::net::TcpListener;

#[cfg(feature = "simulate")]
use crate::cluster::rbac;
use crate::{
    api::{self, AppState, auth::Authenticator, webhooks::Webhooks},
    cli::{ServeArgs, SimArgs},
    cluster::Cluster,
    config::{AuthMode, Config},
    csm::CsmClients,
    drills::Drills,
    runner::Runner,
    snapshots::Snapshotter,
    store::Store,
};

/// The service account the chart creates (and that `serve --simulate` acts as).
pub const SERVICE_ACCOUNT: &str = "etcd-repopulator";

/// What `serve --simulate` and `sim` answer in a binary built without the simulated cluster
/// (the container image is).
pub const NO_SIMULATE: &str = "this binary was built without the simulated cluster (cargo \
     feature `simulate`), so `serve --simulate` and `sim` are not available; build it with the \
     default features (`cargo build --release`) to try the service without a cluster";

/// How long a stopping service waits for runs to reach a safe point.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// JSON logs when not on a terminal (in a pod), human-readable ones on a terminal.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    }
}

/// A service instance: the router and what it owns.
pub struct App {
    pub router: axum::Router,
    pub runner: Runner,
    pub store: Store,
    pub drills: Drills,
}

impl App {
    pub async fn new(database: &str, config: Config, client: kube::Client) -> anyhow::Result<App> {
        let store = Store::open(database)
            .await
            .with_context(|| format!("opening the database {database}"))?;
        let csm = CsmClients::new(&config.csm).context("configuring the CSM API clients")?;
        let auth = Authenticator::from_config(&config.auth)?;
        let webhooks = Webhooks::from_config(&config.webhooks)?;
        let config = Arc::new(config);
        let cluster = Cluster::new(client, config.namespace.clone());
        let runner = Runner::start(store.clone(), cluster, csm, config).await?;
        let drills = Drills::start(&runner).await?;
        let router = api::router(Arc::new(AppState {
            store: store.clone(),
            runner: runner.clone(),
            cluster_configured: true,
            auth,
            webhooks,
            drills: drills.clone(),
        }));
        Ok(App {
            router,
            runner,
            store,
            drills,
        })
    }

    /// The service on the simulated cluster `sim`, configured as `serve --simulate` configures
    /// it ([`Config::use_simulation`]: the simulated CSM services, the etcd checks on when `sim`
    /// runs real etcd clusters) and acting as its service account ([`simulated_client`]); only
    /// the simulated nodes' sshd, which `serve --simulate` adds for the `hmnfd` step, is not
    /// started.
    #[cfg(feature = "simulate")]
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
#[cfg(feature = "simulate")]
pub fn simulated_client(sim: &SimCluster) -> kube::Client {
    sim.service_account_client(SERVICE_ACCOUNT, rbac::policy_rules())
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.simulate && !cfg!(feature = "simulate") {
        anyhow::bail!(NO_SIMULATE);
    }
    #[cfg_attr(not(feature = "simulate"), allow(unused_mut))]
    let mut config = Config::load(args.config.as_deref())?;
    // With the simulated nodes' sshd, kept running while the service serves.
    #[cfg(feature = "simulate")]
    let (client, sim, nodes) = if args.simulate {
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
        let nodes = simulated_nodes(&mut config, &sim, args.sim_sshd.as_deref());
        (simulated_client(&sim), Some(sim), nodes)
    } else {
        (real_cluster_client().await?, None, None)
    };
    #[cfg(not(feature = "simulate"))]
    let client = real_cluster_client().await?;
    let snapshot_config = config.snapshots.clone();
    if config.auth.mode == AuthMode::None && !args.simulate {
        tracing::warn!(
            "AUTHENTICATION IS OFF (auth.mode = \"none\"): anyone who can reach this service can \
             start runs that delete pods and Jobs; set auth.mode to \"token\" or \"jwt\""
        );
    }
    let app = App::new(&args.database, config, client).await?;
    // Snapshots are only worth something if taken while the services are healthy, i.e. all
    // the time the service runs, not when a rebuild has already happened.
    let stop_snapshots = tokio_util::sync::CancellationToken::new();
    if snapshot_config.enabled {
        Snapshotter::new(
            app.runner.csm().clone(),
            app.store.clone(),
            snapshot_config.retain,
        )
        .spawn_periodic(snapshot_config.interval, stop_snapshots.clone());
        tracing::info!(interval = %humantime::format_duration(snapshot_config.interval), "periodic snapshots of BOS session templates and HMNFD subscriptions enabled");
    }
    let _collector = crate::collector::Collector::new(&app.runner).start();
    let _drills = app
        .runner
        .config()
        .drills
        .enabled
        .then(|| app.drills.schedule());
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, database = %args.database, simulate = args.simulate, "serving");
    axum::serve(listener, app.router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    stop_snapshots.cancel();
    tracing::info!("stopping: waiting for runs to reach a safe point");
    app.drills.shutdown(SHUTDOWN_GRACE).await;
    app.runner.shutdown(SHUTDOWN_GRACE).await;
    #[cfg(feature = "simulate")]
    {
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        drop(nodes);
    }
    Ok(())
}

/// Under `--simulate`, unless `[ssh]` is configured: an sshd on loopback for the simulated
/// nodes, and `[ssh]` pointed at it; where none can be started, every SSH fan-out (the `hmnfd`
/// step) fails at once, saying what to install.
#[cfg(feature = "simulate")]
fn simulated_nodes(
    config: &mut Config,
    sim: &SimCluster,
    sshd: Option<&Path>,
) -> Option<crate::sim_nodes::SimNodes> {
    use crate::sim_nodes;
    if config.ssh != crate::remote::SshConfig::default() {
        tracing::info!("[ssh] is configured: the simulated nodes' SSH server is not started");
        return None;
    }
    let started = match sim_nodes::find_sshd(sshd) {
        None => Err(sim_nodes::INSTALL_HINT.to_owned()),
        Some(sshd) => std::env::current_exe()
            .map_err(|e| format!("cannot find this program for the simulated nodes: {e}"))
            .and_then(|program| {
                let nodes = sim_nodes::nodes(config, &sim.csm().hsm_components());
                sim_nodes::start(&sshd, &program, nodes, &config.csm)
            }),
    };
    match started {
        Ok(nodes) => {
            tracing::info!(
                port = nodes.ssh.port,
                nodes = nodes.nodes.len(),
                dir = %nodes.dir().display(),
                "simulated nodes answer SSH on loopback ([ssh] points at them)"
            );
            config.ssh = nodes.ssh.clone();
            Some(nodes)
        }
        Err(reason) => {
            tracing::warn!(%reason, "no SSH server for the simulated nodes: hmnfd runs will fail");
            config.ssh.unavailable = Some(reason);
            None
        }
    }
}

/// `sim` in a binary built without the simulated cluster: refused.
#[cfg(not(feature = "simulate"))]
pub async fn run_sim(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!(NO_SIMULATE)
}

/// `sim`: only the simulated cluster, until SIGTERM/SIGINT.
#[cfg(feature = "simulate")]
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
    shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// How long `serve --simulate` waits for the simulated cluster to settle before it serves.
#[cfg(feature = "simulate")]
const SIM_SETTLE: Duration = Duration::from_secs(60);

#[cfg(feature = "simulate")]
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
    if let Some(path) = kubeconfig {
        std::fs::write(path, sim.kubeconfig_yaml()).with_context(|| {
            format!(
                "writing the simulated cluster's kubeconfig to {}",
                path.display()
            )
        })?;
        tracing::info!(path = %path.display(), "kubeconfig for the simulated cluster written");
    }
    Ok(sim)
}

async fn real_cluster_client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer().await.map_err(|err| {
        anyhow::anyhow!(
            "no Kubernetes cluster configuration found ({err}): run inside a cluster (in-cluster \
             service account) or set KUBECONFIG; to try the service without a cluster, use \
             `serve --simulate`"
        )
    })?;
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
