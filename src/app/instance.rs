//! A service instance: the store, the runner and the drills it starts, and the router over them.

use std::sync::Arc;

use anyhow::Context;

use crate::{
    api::{self, AppState, auth::Authenticator, webhook_setup::Webhooks},
    cluster::Cluster,
    config::Config,
    csm::CsmClients,
    drills::Drills,
    runner::Runner,
    store::Store,
};

/// The service account the chart creates (and that `serve --simulate` acts as).
pub const SERVICE_ACCOUNT: &str = "etcd-repopulator";

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
