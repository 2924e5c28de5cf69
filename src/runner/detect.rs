//! `csm_release = "auto"`: which release a cluster runs, from what it holds. The etcd layout
//! (EtcdClusters or Bitnami StatefulSets), whether External DNS's etcd and CRUS are still
//! deployed, and the CSM version CSM itself records in the `cray-product-catalog` ConfigMap
//! (key `csm`, one YAML entry per installed version), which tells apart releases whose
//! clusters look alike (1.2 and 1.3; 1.5, 1.6 and 1.7).

use std::collections::BTreeSet;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    cluster::{Cluster, ClusterError},
    etcd::layout,
    model::EtcdLayout,
    release::{PROFILES, Release, ReleaseInForce, known_releases},
};

/// The ConfigMap where CSM's installer records the products and versions installed.
pub const PRODUCT_CATALOG: &str = "cray-product-catalog";

/// What detection saw, one fact a line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence(pub Vec<String>);

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot detect the CSM release: {0}")]
    Cluster(#[from] ClusterError),
    #[error(
        "the cluster matches no CSM release this service knows ({evidence}); set csm_release \
         ({known}) in the configuration", known = known_releases()
    )]
    NoMatch { evidence: Evidence },
    #[error(
        "the cluster matches more than one CSM release ({}) ({evidence}); set csm_release in \
         the configuration to the one it runs", list(.candidates)
    )]
    Ambiguous {
        candidates: Vec<Release>,
        evidence: Evidence,
    },
}

fn list(releases: &[Release]) -> String {
    releases
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The versions the product catalog's `csm` entry lists (its top-level keys).
pub fn catalog_versions(csm: &str) -> Vec<String> {
    csm.lines()
        .filter(|line| !line.starts_with([' ', '\t', '#', '-']))
        .filter_map(|line| line.split_once(':').map(|(key, _)| key.trim()))
        .map(|key| key.trim_matches(['"', '\'']).to_owned())
        .filter(|key| key.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect()
}

/// The newest of `versions` (numerically, `1.10.0` after `1.9.2`).
fn newest(versions: &[String]) -> Option<&String> {
    let key = |v: &String| -> Vec<u64> {
        v.split(['.', '-'])
            .map(|part| part.parse().unwrap_or(0))
            .collect()
    };
    versions.iter().max_by_key(|v| key(v))
}

async fn deployments(cluster: &Cluster) -> Result<BTreeSet<String>, ClusterError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let params = ListParams::default();
    let list = cluster
        .retrying("listing Deployments", || api.list(&params))
        .await?;
    Ok(list.items.iter().map(|d| d.name_any()).collect())
}

async fn catalog(cluster: &Cluster) -> Result<Option<Vec<String>>, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let map = cluster
        .retrying(&format!("reading ConfigMap {PRODUCT_CATALOG}"), || {
            api.get_opt(PRODUCT_CATALOG)
        })
        .await?;
    Ok(map
        .and_then(|m| m.data)
        .and_then(|d| d.get("csm").map(|csm| catalog_versions(csm))))
}

/// Finds the release the cluster runs, with the evidence.
pub async fn detect(cluster: &Cluster) -> Result<ReleaseInForce, DetectError> {
    let mut evidence = Vec::new();
    let mut layouts = BTreeSet::new();
    let operator = layout::operator_clusters(cluster).await?;
    let mut externaldns = false;
    match &operator {
        None => evidence.push("no EtcdCluster CRD (etcd-operator removed)".to_owned()),
        Some(clusters) if clusters.is_empty() => {
            evidence.push("the EtcdCluster CRD but no EtcdClusters".to_owned())
        }
        Some(clusters) => {
            layouts.insert(EtcdLayout::Operator);
            externaldns = clusters.iter().any(|c| c.csm_service == "cray-externaldns");
            evidence.push(format!(
                "{} EtcdCluster(s) (etcd-operator layout: {})",
                clusters.len(),
                clusters
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let bitnami = layout::bitnami_clusters(cluster).await?;
    if bitnami.is_empty() {
        evidence.push("no Bitnami etcd StatefulSets".to_owned());
    } else {
        layouts.insert(EtcdLayout::Bitnami);
        evidence.push(format!(
            "{} Bitnami etcd StatefulSet(s) ({})",
            bitnami.len(),
            bitnami
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let deployments = deployments(cluster).await?;
    let crus = deployments.contains("cray-crus");
    let dns_deployments: Vec<&String> = deployments
        .iter()
        .filter(|d| d.starts_with("cray-externaldns"))
        .collect();
    externaldns |= !dns_deployments.is_empty();
    evidence.push(if crus {
        "Deployment cray-crus (CRUS)".to_owned()
    } else {
        "no Deployment cray-crus".to_owned()
    });
    evidence.push(if externaldns {
        "External DNS's etcd (cray-externaldns-*)".to_owned()
    } else {
        "no cray-externaldns-* etcd or Deployment".to_owned()
    });
    let mut candidates: Vec<Release> = PROFILES
        .iter()
        .filter(|p| layouts.contains(&p.layout) && p.crus == crus && p.externaldns == externaldns)
        .map(|p| p.release)
        .collect();
    match catalog(cluster).await? {
        Some(versions) if !versions.is_empty() => {
            let newest = newest(&versions).cloned().unwrap_or_default();
            evidence.push(format!(
                "{PRODUCT_CATALOG} lists CSM {}",
                versions.join(", ")
            ));
            let by_catalog = newest.parse::<Release>().ok();
            candidates.retain(|r| Some(*r) == by_catalog);
        }
        _ => evidence.push(format!("no CSM entry in ConfigMap {PRODUCT_CATALOG}")),
    }
    let evidence = Evidence(evidence);
    match candidates.as_slice() {
        [] => Err(DetectError::NoMatch { evidence }),
        [release] => Ok(ReleaseInForce::new(*release, "detected", evidence.0)),
        _ => Err(DetectError::Ambiguous {
            candidates,
            evidence,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_are_the_versions() {
        let csm = "1.3.0:\n  configuration:\n    clone_url: x\n\"1.3.2\":\n  images: {}\n";
        let versions = catalog_versions(csm);
        assert_eq!(versions, ["1.3.0", "1.3.2"]);
        assert_eq!(newest(&versions).unwrap(), "1.3.2");
        let versions = vec!["1.9.2".to_owned(), "1.10.0".to_owned()];
        assert_eq!(newest(&versions).unwrap(), "1.10.0");
    }
}
