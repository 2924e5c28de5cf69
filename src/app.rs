//! Wiring: from command-line arguments to a running service.

// The simulated cluster's wiring, behind the feature `simulate`; without it, its refusal.
mod instance;
mod shutdown;
#[cfg(feature = "simulate")]
pub mod simulate;
#[cfg(not(feature = "simulate"))]
#[path = "app/without_simulate.rs"]
pub mod simulate;

use std::{io::IsTerminal, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    cli::ServeArgs,
    config::{AuthMode, Config},
    snapshots::Snapshotter,
    store::DatabaseLock,
};
pub use instance::{App, SERVICE_ACCOUNT};
use shutdown::shutdown_signal;

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

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.simulate {
        simulate::available()?;
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
