//! A cluster's backend quota: beyond it etcd raises `NOSPACE` and refuses writes. CSM's
//! cray-etcd-base sets it with `ETCD_QUOTA_BACKEND_BYTES` (2 GB); without it etcd uses its
//! default.

use k8s_openapi::api::apps::v1::StatefulSet;
use serde::Serialize;
use utoipa::ToSchema;

use super::container::etcd_container;

/// etcd's backend quota when `--quota-backend-bytes` is not set (or not positive): 2 GiB.
pub const ETCD_DEFAULT_QUOTA: u64 = 2 * 1024 * 1024 * 1024;

/// The environment variable etcd reads its backend quota from.
const QUOTA_ENV: &str = "ETCD_QUOTA_BACKEND_BYTES";

/// A cluster's backend quota: beyond it etcd raises `NOSPACE` and refuses writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Quota {
    pub bytes: u64,
    /// Where it comes from: `env` (`ETCD_QUOTA_BACKEND_BYTES` in the StatefulSet's etcd
    /// container, or the EtcdCluster's `spec.pod.etcdEnv`, as cray-etcd-base sets it) or
    /// `etcd-default` (not set: etcd's default, 2 GiB).
    pub source: QuotaSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaSource {
    Env,
    EtcdDefault,
}

impl QuotaSource {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaSource::Env => "env",
            QuotaSource::EtcdDefault => "etcd-default",
        }
    }
}

impl Quota {
    /// From the value of `ETCD_QUOTA_BACKEND_BYTES`, if set: etcd takes 0 (and a negative
    /// value, which it reads as no quota, capped by bbolt) as its default.
    fn from_env(value: Option<&str>) -> Quota {
        match value
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|b| *b > 0)
        {
            Some(bytes) => Quota {
                bytes,
                source: QuotaSource::Env,
            },
            None => Quota {
                bytes: ETCD_DEFAULT_QUOTA,
                source: QuotaSource::EtcdDefault,
            },
        }
    }
}

/// The value of `ETCD_QUOTA_BACKEND_BYTES` in a list of container environment variables
/// (`[{name, value}]`, as JSON).
fn quota_env(env: &serde_json::Value) -> Option<&str> {
    env.as_array()?
        .iter()
        .find(|var| var["name"] == QUOTA_ENV)?["value"]
        .as_str()
}

impl Quota {
    /// The quota of the StatefulSet's etcd container (the one named `etcd`, else the first).
    pub fn of_statefulset(sts: &StatefulSet) -> Quota {
        let value = etcd_container(sts)
            .and_then(|(_, c)| c.env.as_ref())
            .and_then(|env| env.iter().find(|var| var.name == QUOTA_ENV))
            .and_then(|var| var.value.as_deref());
        Quota::from_env(value)
    }

    /// The quota of an EtcdCluster's members, from its `spec.pod.etcdEnv` (`[{name, value}]`).
    pub fn of_etcd_env(env: &serde_json::Value) -> Quota {
        Quota::from_env(quota_env(env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_is_the_environment_s_else_etcd_s_default() {
        let set = Quota::from_env(Some("4294967296"));
        assert_eq!((set.bytes, set.source), (4_294_967_296, QuotaSource::Env));
        for unset in [None, Some("0"), Some("-1"), Some("2GB")] {
            let quota = Quota::from_env(unset);
            assert_eq!(quota.bytes, 2_147_483_648, "{unset:?}");
            assert_eq!(quota.source, QuotaSource::EtcdDefault, "{unset:?}");
        }
        let env = serde_json::json!([
            {"name": "ETCD_NAME", "value": "x"},
            {"name": "ETCD_QUOTA_BACKEND_BYTES", "value": "1073741824"},
        ]);
        assert_eq!(quota_env(&env), Some("1073741824"));
        assert_eq!(quota_env(&serde_json::Value::Null), None);
    }
}
