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
use crate::etcd::{
    backups::{Backup, Backups},
    layout::{self, EtcdClusterReport},
};

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
    let found = find_cluster(cluster, &name).await?;
    let report = layout::report(cluster, &found, &state.runner.config().etcd)
        .await
        .map_err(cluster_error)?;
    Ok(Json(report))
}

async fn find_cluster(
    cluster: &crate::cluster::Cluster,
    name: &str,
) -> Result<layout::Found, ApiError> {
    // Every EtcdCluster's and StatefulSet's name is one; anything else (`../x`, `a/b`) is no
    // cluster, and is never put into a path of the API server.
    labels::dns1123_subdomain(name).map_err(|why| {
        ApiError::NotFound(format!(
            "no etcd cluster {name:?}: {why}, as the name of every EtcdCluster and StatefulSet is"
        ))
    })?;
    layout::find(cluster, name)
        .await
        .map_err(cluster_error)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no etcd cluster {name:?} in namespace {}: neither an EtcdCluster nor a Bitnami \
                 etcd StatefulSet (<service>-etcd or <service>-bitnami-etcd) of that name",
                cluster.namespace()
            ))
        })
}

#[derive(Serialize, ToSchema)]
pub struct BackupList {
    /// The CSM service whose folder of the bucket was listed (`cray-bss`).
    pub service: String,
    /// Newest first.
    pub items: Vec<Backup>,
}

/// The backups of one etcd cluster, newest first: CSM's S3 bucket (`etcd-backup/<service>/`)
/// and the snapshotter PVC (`/snapshots/<statefulset>/`), merged by name, with this service's
/// safety snapshots marked.
#[utoipa::path(get, path = "/etcd-clusters/{name}/backups", tag = "etcd", operation_id = "list_etcd_cluster_backups",
    params(("name" = String, Path, description = "Name of the cluster: the EtcdCluster or the StatefulSet")),
    responses(
        (status = 200, description = "The cluster's backups, newest first", body = BackupList),
        (status = 404, description = "No etcd cluster of that name", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 502, description = "S3 refused the request (its keys) or failed, or the snapshotter directory could not be read", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Neither S3 nor the snapshotter directory is configured, or what is configured is missing (the credentials, the mount)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 504, description = "S3 did not answer within [recovery] timeout", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_etcd_cluster_backups(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<BackupList>, ApiError> {
    let found = find_cluster(state.runner.cluster(), &name).await?;
    let backups = Backups::new(&state.runner.config().recovery);
    let items = backups.list(&found.csm_service, &found.name).await?;
    Ok(Json(BackupList {
        service: found.csm_service,
        items,
    }))
}
