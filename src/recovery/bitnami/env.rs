//! The etcd container's environment: what a recovery sets, and what it puts back.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::EnvVar};

use crate::recovery::decision::Decision;

use super::state::*;

pub(super) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// `list` with the variables of `wanted` set to their values and the other `VARS` removed;
/// the rest is kept, in order; new ones go last.
pub(super) fn with_vars(list: &[EnvVar], wanted: &[EnvVar]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = list
        .iter()
        .filter(|v| !VARS.contains(&v.name.as_str()) || wanted.iter().any(|w| w.name == v.name))
        .map(|v| {
            wanted
                .iter()
                .find(|w| w.name == v.name)
                .cloned()
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    for w in wanted {
        if !out.iter().any(|v| v.name == w.name) {
            out.push(w.clone());
        }
    }
    out
}

/// What the names of the StatefulSet's data PVCs start with (`data-<sts>-N`, as CSM's scripts
/// delete them: by name).
pub(super) fn data_pvc_prefix(sts: &str) -> String {
    format!("data-{sts}-")
}

/// The four variables as `list` has them.
pub(super) fn vars_of(list: &[EnvVar]) -> Vec<EnvVar> {
    list.iter()
        .filter(|v| VARS.contains(&v.name.as_str()))
        .cloned()
        .collect()
}

pub(super) fn describe_env(vars: &[EnvVar]) -> String {
    let mut parts: Vec<String> = vars
        .iter()
        .map(|v| match (&v.value, &v.value_from) {
            (Some(value), _) => format!("{}={value}", v.name),
            (None, Some(_)) => format!("{}=(from a reference)", v.name),
            (None, None) => format!("{}=", v.name),
        })
        .collect();
    if parts.is_empty() {
        parts.push("none of the etcd variables set".to_owned());
    }
    parts.join(", ")
}

/// The etcd container of the set's pod template: `etcd`, else the first.
pub(super) fn etcd_container(set: &StatefulSet) -> Option<(usize, String, Vec<EnvVar>)> {
    let (index, c) = crate::etcd::container::etcd_container(set)?;
    Some((index, c.name.clone(), c.env.clone().unwrap_or_default()))
}

pub(super) fn container_env(set: &StatefulSet, index: usize) -> Vec<EnvVar> {
    set.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.get(index))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

/// What the recovery sets, and what is set back afterwards (CSM's `set env` calls).
pub(super) fn recovery_envs(
    decision: &Decision,
    cluster: &str,
    original: &[EnvVar],
) -> (Vec<EnvVar>, Vec<EnvVar>) {
    let original_of = |name: &str| original.iter().find(|v| v.name == name).cloned();
    let mut during = vec![env(STATE_VAR, "new")];
    let mut after = vec![env(STATE_VAR, "existing")];
    let restoring = match decision {
        Decision::Restore { file, .. } => {
            during.push(env(START_VAR, "yes"));
            during.push(env(DIR_VAR, &format!("{POD_SNAPSHOTS_DIR}/{cluster}")));
            during.push(env(FILE_VAR, file));
            true
        }
        _ => {
            // A rebuild does not start from a snapshot, whatever the set says.
            if original_of(START_VAR).is_some() {
                during.push(env(START_VAR, "no"));
            }
            false
        }
    };
    if restoring || original_of(START_VAR).is_some() {
        after.push(env(START_VAR, "no"));
    }
    // Disaster recovery stays as it was (it only matters to a member that starts with data).
    during.extend(original_of(DR_VAR));
    after.extend(original_of(DR_VAR));
    // The snapshot variables are removed afterwards: with `ETCD_START_FROM_SNAPSHOT=no` they
    // mean nothing, and left behind they name a snapshot the next restore may not want.
    if !restoring {
        during.extend([DIR_VAR, FILE_VAR].into_iter().filter_map(original_of));
    }
    (during, after)
}

/// The four variables as a clean set has them, and what an earlier recovery left on it
/// (`ETCD_INITIAL_CLUSTER_STATE=new`, `ETCD_START_FROM_SNAPSHOT=yes`, the snapshot variables),
/// if anything.
pub(super) fn without_leftovers(vars: &[EnvVar]) -> (Vec<EnvVar>, Option<String>) {
    let value = |name: &str| {
        vars.iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.clone())
    };
    let mid_recovery =
        value(STATE_VAR).as_deref() == Some("new") || value(START_VAR).as_deref() == Some("yes");
    let snapshot_vars = vars.iter().any(|v| v.name == DIR_VAR || v.name == FILE_VAR);
    if !mid_recovery && !snapshot_vars {
        return (vars.to_vec(), None);
    }
    let left: Vec<EnvVar> = vars
        .iter()
        .filter(|v| v.name != STATE_VAR && v.name != START_VAR)
        .filter(|v| v.name != DIR_VAR && v.name != FILE_VAR)
        .cloned()
        .chain([env(STATE_VAR, "existing")])
        .chain(value(START_VAR).map(|_| env(START_VAR, "no")))
        .collect();
    let found = describe_env(&vars_of(vars));
    (
        left,
        Some(if mid_recovery {
            format!("left mid-recovery: {found}")
        } else {
            format!("snapshot variables an earlier restore left: {found}")
        }),
    )
}

/// `env` with ETCD_DISASTER_RECOVERY=no, when it has it on (`None` when it is off or unset).
pub(super) fn disaster_recovery_off(env: &[EnvVar]) -> Option<Vec<EnvVar>> {
    let on = env
        .iter()
        .any(|v| v.name == DR_VAR && v.value.as_deref() == Some("yes"));
    on.then(|| {
        env.iter()
            .map(|v| {
                if v.name == DR_VAR {
                    self::env(DR_VAR, "no")
                } else {
                    v.clone()
                }
            })
            .collect()
    })
}
