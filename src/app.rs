//! Wiring: from command-line arguments to a running service.

// The simulated cluster's wiring, behind the feature `simulate`; without it, its refusal.
#[cfg(feature = "simulate")]
pub mod simulate;
#[cfg(not(feature = "simulate"))]
#[path = "app/without_simulate.rs"]
pub mod simulate;

use std::{io::IsTerminal, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    api::{self, AppState, auth::Authenticator, webhooks::Webhooks},
    cli::ServeArgs,
    cluster::Cluster,
    config::{AuthMode, Config},
    csm::CsmClients,
    drills::Drills,
    runner::Runner,
    snapshots::Snapshotter,
    store::{DatabaseLock, Store},
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
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.simulate && !simulate::AVAILABLE {
        anyhow::bail!(NO_SIMULATE);
    }
    let mut config = Config::load(args.config.as_deref())?;
    // One service per database, before anything reads it: the runner marks the runs it finds
    // running as interrupted, which would take over the live runs of another service.
    let lock = DatabaseLock::acquire(&args.database)?;
    if let Some(lock) = &lock {
        tracing::info!(lock = %lock.path().display(), "database locked for this service");
    }
    // And a service that cannot serve must not take over either.
    let listen = args.listen();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // The simulated cluster and its nodes' sshd, kept running while the service serves.
    let (client, simulation) = if args.simulate {
        let simulation = simulate::Simulation::start(&args, &mut config).await?;
        (simulation.client(), Some(simulation))
    } else {
        (real_cluster_client().await?, None)
    };
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
    tracing::info!(listen = %listener.local_addr()?, database = %args.database, simulate = args.simulate, "serving");
    axum::serve(listener, app.router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    stop_snapshots.cancel();
    tracing::info!("stopping: waiting for runs to reach a safe point");
    app.drills.shutdown(SHUTDOWN_GRACE).await;
    app.runner.shutdown(SHUTDOWN_GRACE).await;
    if let Some(simulation) = simulation {
        simulation.shutdown().await;
    }
    drop(lock);
    Ok(())
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

/// SIGTERM or SIGINT.
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
