//! The Kubernetes permissions the service needs, in one place: the chart's Role
//! (`charts/etcd-repopulator/templates/role.yaml`) carries exactly these rules, printed by
//! `etcd-repopulator rbac-rules`, and `tests/it/chart.rs` fails when the two differ.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// One Role rule: some verbs on one resource of one API group (`""` is the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// What the primitives in this module do, in the services' namespace. Nothing cluster-wide,
/// no secrets, no wildcards.
pub const REQUIRED: &[Permission] = &[
    // Restart pods by selector and watch the replacements become Ready.
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["list", "watch", "delete"],
    },
    // The log tail of a failed Job's pod goes into the step.
    Permission {
        api_group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
    // The client Service of each etcd cluster (`etcd::layout`: its endpoint).
    Permission {
        api_group: "",
        resource: "services",
        verbs: &["get"],
    },
    // The product catalog (`cray-product-catalog`), where CSM records its version
    // (`csm_release = "auto"`).
    Permission {
        api_group: "",
        resource: "configmaps",
        verbs: &["get"],
    },
    // The data PVCs of Bitnami etcd clusters (`GET /etcd-clusters`); a restore or rebuild
    // deletes them and waits until they are gone (`recovery::bitnami`).
    Permission {
        api_group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list", "watch", "delete"],
    },
    // Which services the release deploys (cray-crus, cray-externaldns-*): release detection.
    Permission {
        api_group: "apps",
        resource: "deployments",
        verbs: &["list"],
    },
    // Rebuilding an etcd-operator cluster takes its service's Deployment down and back up
    // (`recovery::operator`): its Scale read, then set.
    Permission {
        api_group: "apps",
        resource: "deployments/scale",
        verbs: &["get", "patch"],
    },
    // A pod is only deleted when a ReplicaSet will replace it (and how many it wants).
    Permission {
        api_group: "apps",
        resource: "replicasets",
        verbs: &["get"],
    },
    // Bitnami etcd clusters (`etcd::layout`: list, get; a restore or rebuild sets the etcd
    // container's environment with a patch and watches the rollout) and External DNS's
    // cluster as a StatefulSet on releases configured that way (watch, create, delete).
    Permission {
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "delete", "patch"],
    },
    // A restore or rebuild scales the etcd StatefulSet to 0 and back (`kubectl scale`).
    Permission {
        api_group: "apps",
        resource: "statefulsets/scale",
        verbs: &["patch"],
    },
    // Kubernetes Events on the objects a run touches. Only `create`: each step publishes each
    // Event once (a repeat would be a `patch` of its series, see `cluster::events`).
    Permission {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create"],
    },
    // Re-run cray-reds-init (BSS) and cray-fas-loader (FAS).
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get", "list", "watch", "create", "delete"],
    },
    // Recreate cray-externaldns-etcd, and rebuild an etcd-operator cluster.
    Permission {
        api_group: "etcd.database.coreos.com",
        resource: "etcdclusters",
        verbs: &["get", "list", "watch", "create", "delete"],
    },
    // Restore an etcd-operator cluster: an EtcdRestore for the restore operator, watched until
    // handled, then deleted ("Restore an etcd Cluster from a Backup", CSM 1.3); read when its
    // create is refused as existing (this run's own, created before a crash?).
    Permission {
        api_group: "etcd.database.coreos.com",
        resource: "etcdrestores",
        verbs: &["get", "list", "watch", "create", "delete"],
    },
    // The periodic EtcdBackup of a cluster: where its backups are (a restore reads its S3
    // settings), deleted after a rebuild ("Rebuild Unhealthy etcd Clusters", CSM 1.3).
    Permission {
        api_group: "etcd.database.coreos.com",
        resource: "etcdbackups",
        verbs: &["get", "list", "watch", "delete"],
    },
];

/// [`REQUIRED`] as the rules of a Role (the simulated cluster enforces them on the service).
pub fn policy_rules() -> Vec<PolicyRule> {
    REQUIRED
        .iter()
        .map(|permission| PolicyRule {
            api_groups: Some(vec![permission.api_group.to_owned()]),
            resources: Some(vec![permission.resource.to_owned()]),
            verbs: permission
                .verbs
                .iter()
                .map(|verb| verb.to_string())
                .collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// [`REQUIRED`] as the `rules:` of a Role, in YAML (flow lists, double-quoted strings).
pub fn rules_yaml() -> String {
    fn list(items: &[&str]) -> String {
        let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }
    let mut yaml = String::from("rules:\n");
    for permission in REQUIRED {
        yaml.push_str(&format!(
            "  - apiGroups: {}\n    resources: {}\n    verbs: {}\n",
            list(&[permission.api_group]),
            list(&[permission.resource]),
            list(permission.verbs),
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_and_no_secrets() {
        for permission in REQUIRED {
            assert!(!permission.resource.contains('*'));
            assert_ne!(permission.resource, "secrets");
            assert!(!permission.verbs.contains(&"*"));
        }
    }

    #[test]
    fn yaml_lists_every_rule() {
        let yaml = rules_yaml();
        assert!(yaml.starts_with("rules:\n"));
        assert!(yaml.contains(
            "  - apiGroups: [\"\"]\n    resources: [\"pods/log\"]\n    verbs: [\"get\"]\n"
        ));
        assert_eq!(yaml.matches("- apiGroups").count(), REQUIRED.len());
    }
}
