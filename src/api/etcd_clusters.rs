//! `GET /etcd-clusters`: every etcd cluster of the services' namespace, in either layout, with
//! what Kubernetes and etcd say of it ("Check the Health of etcd Clusters" as an API); its
//! backups, each with its last check and last drill, and a check of one on demand.

use axum::{
    Json,
    extract::{Path, State},
};
use futures::future::try_join_all;
use serde::Serialize;
use utoipa::ToSchema;

use super::{problem::ApiError, state::SharedState};
use crate::drills::{DrillOutcome, last_drill};
use crate::etcd::{
    backups::{
        Backup, BackupError, Backups,
        check::{self, BackupCheck, LastCheck},
    },
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

pub(super) async fn find_cluster(
    cluster: &crate::cluster::Cluster,
    name: &str,
) -> Result<layout::LocatedCluster, ApiError> {
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
    pub items: Vec<ListedBackup>,
}

/// A backup, with what is known of whether it restores.
#[derive(Serialize, ToSchema)]
pub struct ListedBackup {
    #[serde(flatten)]
    pub backup: Backup,
    /// The last check of one of its copies as they are now (before a restore, or
    /// `POST .../check`); absent when none was checked.
    pub check: Option<LastCheck>,
    /// False when that check failed: a restore does not use it (`check.detail` says why).
    pub usable: bool,
    /// Its last restore drill that reached a verdict (`GET .../drills` has them all); absent
    /// when none did.
    pub drill: Option<DrillOutcome>,
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
    let listed = backups.list(&found.csm_service, &found.name).await?;
    let checks = check::last_checks(&state.store, &listed).await?;
    let mut items = Vec::with_capacity(listed.len());
    for (backup, check) in listed.into_iter().zip(checks) {
        items.push(ListedBackup {
            usable: check.as_ref().is_none_or(|c| c.ok),
            drill: last_drill(&state.store, &backup).await?,
            backup,
            check,
        });
    }
    Ok(Json(BackupList {
        service: found.csm_service,
        items,
    }))
}

/// The verdict of a backup's check.
#[derive(Serialize, ToSchema)]
pub struct BackupCheckResult {
    pub backup: String,
    /// It is an etcd snapshot that restores.
    pub ok: bool,
    /// What it holds and how it was proven (when `ok`).
    pub check: Option<BackupCheck>,
    /// What it holds, or what is wrong with it.
    pub detail: String,
}

/// Checks one backup now, as a restore does before it deletes anything: its SHA-256 trailer,
/// its database read whole (an etcd database: revision, keys, live keys by prefix), and a
/// restore into a scratch directory by `etcdutl` (or etcd 3.4's `etcdctl`) when the service
/// has one. The copy in the snapshotter directory is checked where it is; a backup only in S3
/// is downloaded into a temporary file, removed after. The verdict is remembered: the listing
/// shows it, and a restore skips a backup whose copy failed.
#[utoipa::path(post, path = "/etcd-clusters/{name}/backups/{backup}/check", tag = "etcd", operation_id = "check_etcd_cluster_backup",
    params(
        ("name" = String, Path, description = "Name of the cluster: the EtcdCluster or the StatefulSet"),
        ("backup" = String, Path, description = "Name of the backup (`db-2025-01-01_00-00`)"),
    ),
    responses(
        (status = 200, description = "The check ran: `ok` says whether the backup restores", body = BackupCheckResult),
        (status = 404, description = "No etcd cluster, or no backup, of that name", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 502, description = "S3 refused the request (its keys) or failed, or the backup could not be read", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Neither S3 nor the snapshotter directory is configured, or what is configured is missing (the credentials, the mount)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 504, description = "The check did not finish within [recovery] timeout", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn check_etcd_cluster_backup(
    State(state): State<SharedState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Json<BackupCheckResult>, ApiError> {
    let found = find_cluster(state.runner.cluster(), &name).await?;
    let backups = Backups::new(&state.runner.config().recovery).recording(&state.store);
    let listed = backups
        .find(&found.csm_service, &found.name, &backup)
        .await?;
    let result = match backups.check(&listed).await {
        Ok(check) => BackupCheckResult {
            backup,
            ok: true,
            detail: check.summary(),
            check: Some(check),
        },
        Err(BackupError::Corrupt { path, detail }) => BackupCheckResult {
            backup,
            ok: false,
            check: None,
            detail: format!("{}: {detail}", path.display()),
        },
        Err(other) => return Err(other.into()),
    };
    Ok(Json(result))
}
