//! External DNS (runbook: save the EtcdCluster, strip what the server set, delete it, recreate
//! it): its etcd only caches CoreDNS data, so recreating it empty is the repopulation.

use super::{
    action::{Action, PlannedStep, step},
    steps::recreate::Recreate,
};
use crate::config::Config;

pub fn steps(config: &Config) -> Vec<PlannedStep> {
    let dns = &config.externaldns;
    vec![step(
        "recreate-externaldns-etcd",
        Action::Recreate(Recreate {
            object: dns.object(),
            timeout: dns.timeout,
        }),
    )]
}
