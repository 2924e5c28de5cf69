//! The etcd container of a Bitnami StatefulSet's pod template: the one named `etcd`, else the
//! first (the chart names it `etcd`; a template edited by hand may not).

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Container};

/// The etcd container of `set`'s pod template and its index there.
pub fn etcd_container(set: &StatefulSet) -> Option<(usize, &Container)> {
    let containers = &set.spec.as_ref()?.template.spec.as_ref()?.containers;
    let index = containers
        .iter()
        .position(|c| c.name == "etcd")
        .or((!containers.is_empty()).then_some(0))?;
    Some((index, &containers[index]))
}
