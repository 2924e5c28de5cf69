//! The StatefulSet as it is now: in words, as journalled, and whether a resume may go on.

use k8s_openapi::api::core::v1::EnvVar;
use kube::ResourceExt;
use serde_json::Value;

use crate::{
    cluster::Cluster,
    etcd::layout::{self, LocatedCluster},
    model::EtcdLayout,
    step::StepError,
};

use super::{env::*, state::*};

/// A cluster's report in words: serving or not, healthy or what is wrong, its keys.
pub fn describe_report(report: &layout::EtcdClusterReport) -> String {
    let keys = report
        .keys
        .map(|k| format!(", {k} key(s)"))
        .unwrap_or_default();
    if report.healthy {
        format!("{} is healthy{keys}", report.name)
    } else if report.serving {
        format!(
            "{} serves{keys} but is degraded ({})",
            report.name,
            report.problems.join("; ")
        )
    } else {
        format!(
            "{} does NOT serve ({})",
            report.name,
            report.problems.join("; ")
        )
    }
}

/// A Bitnami StatefulSet's replicas and recovery environment in words, saying when it was left
/// mid-recovery; `None` for other layouts or when it cannot be read.
pub async fn describe_statefulset(cluster: &Cluster, found: &LocatedCluster) -> Option<String> {
    if found.layout != EtcdLayout::Bitnami {
        return None;
    }
    let set = cluster.statefulset(&found.name).await.ok()??;
    let (_, _, env) = etcd_container(&set)?;
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (_, leftover) = without_leftovers(&vars_of(&env));
    Some(match leftover {
        Some(leftover) => format!(
            "StatefulSet {} has {replicas} replica(s) and carries {leftover}: the next recovery \
             run of it cleans that up",
            found.name
        ),
        None => format!(
            "StatefulSet {} has {replicas} replica(s), {}",
            found.name,
            describe_env(&vars_of(&env))
        ),
    })
}

/// The StatefulSet of `saved` and its data PVCs as they are now (`None`: the set is gone).
pub(super) async fn observe(
    cluster: &Cluster,
    saved: &StatefulSetJournal,
) -> Result<Option<Observed>, StepError> {
    let Some(set) = cluster.statefulset(&saved.cluster).await? else {
        return Ok(None);
    };
    let pvcs = cluster
        .list_pvcs(&data_pvc_prefix(&saved.cluster))
        .await?
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    Ok(Some(Observed {
        generation: set.metadata.generation.unwrap_or(0),
        replicas: set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        env: vars_of(&container_env(&set, saved.container_index)),
        pvcs,
    }))
}

/// Why a resume of the `etcd-recover` step whose journal is `data` must not go on: what
/// changed the StatefulSet since its last journalled write, beyond what the phase the resume
/// redoes writes itself (and, when its annotation says so, which run). `None`: it is as the
/// journal left it (or the step changed nothing yet).
pub async fn resume_blocker(
    cluster: &Cluster,
    data: &Value,
    run_id: &str,
) -> Result<Option<String>, StepError> {
    let Ok(saved) = serde_json::from_value::<StatefulSetJournal>(data.clone()) else {
        return Ok(None);
    };
    let (Some(observed), Some(done)) = (&saved.observed, saved.phase) else {
        return Ok(None);
    };
    if saved.dry_run || done == Phase::Settled {
        return Ok(None);
    }
    let name = &saved.cluster;
    let Some(set) = cluster.statefulset(name).await? else {
        return Ok(Some(format!("the StatefulSet {name} is gone")));
    };
    let by = set
        .annotations()
        .get(RUN_ANNOTATION)
        .filter(|by| by.as_str() != run_id)
        .map(|by| format!(" (run {by} recovered it since)"))
        .unwrap_or_default();
    if set.uid().unwrap_or_default() != saved.statefulset_uid {
        return Ok(Some(format!(
            "the StatefulSet {name} was deleted and created again since this run's last \
             journalled phase{by}"
        )));
    }
    let Some(now) = observe(cluster, &saved).await? else {
        return Ok(Some(format!("the StatefulSet {name} is gone")));
    };
    // What the phase a resume redoes first may already have written (a crash in it), and
    // what an interrupted put-back writes.
    let next = if saved.start_over {
        Some(Phase::ScaledDown)
    } else {
        Phase::after(Some(done))
    };
    let mut replicas = vec![observed.replicas];
    let mut envs = vec![observed.env.clone()];
    match next {
        Some(Phase::ScaledDown) => replicas.push(0),
        Some(Phase::EnvSet) => envs.push(saved.recovery_env.clone()),
        Some(Phase::ScaledUp) => replicas.push(saved.replicas),
        Some(Phase::EnvRestored) => envs.push(saved.restored_env.clone()),
        _ => {}
    }
    if saved.start_over || !saved.put_back.is_empty() {
        replicas.push(saved.replicas);
        envs.push(saved.restored_env.clone());
        envs.extend(disaster_recovery_off(&saved.restored_env));
    }
    let sorted = |vars: &[EnvVar]| {
        let mut vars = vars_of(vars);
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        vars
    };
    let same_env = |a: &[EnvVar], b: &[EnvVar]| sorted(a) == sorted(b);
    let mut changed = Vec::new();
    if !replicas.contains(&now.replicas) {
        changed.push(format!(
            "it has {} replica(s), this run left {}",
            now.replicas, observed.replicas
        ));
    }
    if !envs.iter().any(|env| same_env(env, &now.env)) {
        changed.push(format!(
            "its environment is {}, this run left {}",
            describe_env(&now.env),
            describe_env(&observed.env)
        ));
    }
    // Once the environment is set, the run itself may have deleted the data PVCs (the phase
    // after it, or a crash in it); a PVC it saw that now has another uid was made again by
    // someone else's scale-up.
    let pvcs_may_go = done >= Phase::EnvSet;
    for (pvc, uid) in &observed.pvcs {
        match now.pvcs.get(pvc) {
            Some(now_uid) if now_uid != uid => {
                changed.push(format!("PVC {pvc} was deleted and created again"));
            }
            None if !pvcs_may_go => changed.push(format!("PVC {pvc} was deleted")),
            _ => {}
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "StatefulSet {name} changed since this run's last journalled phase ({}, generation {} \
         then, {} now): {}{by}",
        done.as_str(),
        observed.generation,
        now.generation,
        changed.join("; ")
    )))
}
