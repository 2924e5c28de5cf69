//! The environment a recovery sets and puts back, and the order of its phases.

use super::{env::*, state::*};
use crate::recovery::decision::Decision;
use k8s_openapi::api::core::v1::EnvVar;

fn names(vars: &[EnvVar]) -> Vec<String> {
    vars.iter()
        .map(|v| format!("{}={}", v.name, v.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn rebuild_sets_new_then_existing_and_keeps_the_rest() {
    let original = vec![
        env(STATE_VAR, "existing"),
        env("ALLOW_NONE_AUTHENTICATION", "yes"),
    ];
    let (during, after) = recovery_envs(
        &Decision::Rebuild,
        "cray-bss-bitnami-etcd",
        &vars_of(&original),
    );
    assert_eq!(names(&during), ["ETCD_INITIAL_CLUSTER_STATE=new"]);
    assert_eq!(names(&after), ["ETCD_INITIAL_CLUSTER_STATE=existing"]);
    assert_eq!(
        names(&with_vars(&original, &during)),
        [
            "ETCD_INITIAL_CLUSTER_STATE=new",
            "ALLOW_NONE_AUTHENTICATION=yes"
        ]
    );
}

#[test]
fn restore_sets_the_snapshot_and_then_turns_it_off() {
    let original = vec![env(STATE_VAR, "existing"), env(START_VAR, "no")];
    let decision = Decision::Restore {
        backup: "cray-bss/db-2026-11-30_10-00".to_owned(),
        file: "db-2026-11-30_10-00".to_owned(),
    };
    let (during, after) = recovery_envs(&decision, "cray-bss-bitnami-etcd", &original);
    assert_eq!(
        names(&with_vars(&original, &during)),
        [
            "ETCD_INITIAL_CLUSTER_STATE=new",
            "ETCD_START_FROM_SNAPSHOT=yes",
            "ETCD_INIT_SNAPSHOTS_DIR=/snapshots/cray-bss-bitnami-etcd",
            "ETCD_INIT_SNAPSHOT_FILENAME=db-2026-11-30_10-00",
        ]
    );
    // The snapshot variables were not set before: they are removed again.
    assert_eq!(
        names(&with_vars(&with_vars(&original, &during), &after)),
        [
            "ETCD_INITIAL_CLUSTER_STATE=existing",
            "ETCD_START_FROM_SNAPSHOT=no"
        ]
    );
}

#[test]
fn phases_are_ordered_and_each_has_a_failpoint() {
    assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(Phase::Stored.failpoint(), "etcd-recover:stored");
    assert_eq!(Phase::Settled.failpoint(), "etcd-recover:settled");
}
