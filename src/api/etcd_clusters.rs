//! `GET /etcd-clusters`: every etcd cluster of the services' namespace, in either layout, with
//! what Kubernetes and etcd say of it ("Check the Health of etcd Clusters" as an API).

use axum::{
    Json,
    extract::{Path, State},
};
use futures::future::try_join_all;
use serde::Serialize;
use utoipa::ToSchema;

use super::{SharedState, problem::ApiError};
use crate::etcd::layout::{self, EtcdClusterReport};

#[derive(Serialize, ToSchema)]
pub struct EtcdClusterList {
    pub items: Vec<EtcdClusterReport>,
}

fn cluster_error(err: crate::cluster::ClusterError) -> ApiError {
    ApiError::Internal(format!("reading the etcd clusters: {err}"))
}

/// Every etcd cluster (EtcdClusters of the etcd operator and Bitnami etcd StatefulSets), each
/// checked member by member.
#[utoipa::path(get, path = "/etcd-clusters", tag = "etcd", operation_id = "list_etcd_clusters",
    responses((status = 200, description = "The etcd clusters and their health", body = EtcdClusterList)))]
pub async fn list_etcd_clusters(
    State(state): State<SharedState>,
) -> Result<Json<EtcdClusterList>, ApiError> {
    let cluster = state.runner.cluster();
    let etcd = &state.runner.config().etcd;
    let found = layout::find_all(cluster).await.map_err(cluster_error)?;
    let items = try_join_all(found.iter().map(|f| layout::report(cluster, f, etcd)))
        .await
        .map_err(cluster_error)?;
    Ok(Json(EtcdClusterList { items }))
}

/// One etcd cluster by name (`cray-bss-etcd`, `cray-bss-bitnami-etcd`).
#[utoipa::path(get, path = "/etcd-clusters/{name}", tag = "etcd", operation_id = "get_etcd_cluster",
    params(("name" = String, Path, description = "Name of the cluster: the EtcdCluster or the StatefulSet")),
    responses(
        (status = 200, description = "The cluster and its health", body = EtcdClusterReport),
        (status = 404, description = "No etcd cluster of that name", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_etcd_cluster(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<EtcdClusterReport>, ApiError> {
    let cluster = state.runner.cluster();
    let found = layout::find(cluster, &name)
        .await
        .map_err(cluster_error)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no etcd cluster {name:?} in namespace {}: neither an EtcdCluster nor a Bitnami \
                 etcd StatefulSet (<service>-etcd or <service>-bitnami-etcd) of that name",
                cluster.namespace()
            ))
        })?;
    let report = layout::report(cluster, &found, &state.runner.config().etcd)
        .await
        .map_err(cluster_error)?;
    Ok(Json(report))
}
