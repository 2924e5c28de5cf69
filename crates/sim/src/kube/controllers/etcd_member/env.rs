//! What a member's container sees of the cluster: its environment as the kubelet makes it,
//! the cluster DNS names in it (CoreDNS's records of Services and of the pods behind headless
//! Services), and its pod paths on the volumes the simulated cluster backs with directories.
//!
//! etcd resolves the host names of its URLs itself, and the simulated cluster has no DNS
//! server, so the names are resolved when the container starts and the URLs handed to etcd
//! and etcdctl carry addresses: `http://cray-bss-bitnami-etcd-1.cray-bss-bitnami-etcd-headless.services.svc.cluster.local:2380`
//! becomes `http://<that pod's IP>:2380`. A StatefulSet pod's IP is stable across its
//! incarnations (see `RealEtcd::pod_ip`), as its DNS name is on a real cluster, so the peer
//! URLs the members registered stay right when a pod is made again.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::Value;

use super::super::super::meta;
use super::super::super::selector::{labels_of, string_map};

/// The pod's etcd container (named `etcd`, else the first).
pub fn etcd_container(pod: &Value) -> Option<&Value> {
    let containers = pod.pointer("/spec/containers")?.as_array()?;
    containers
        .iter()
        .find(|c| c["name"] == "etcd")
        .or_else(|| containers.first())
}

/// The container's environment as the kubelet makes it: `value`s with `$(VAR)` references to
/// earlier variables expanded, and the `fieldRef`s the chart uses.
pub fn pod_env(pod: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(vars) = etcd_container(pod)
        .and_then(|c| c.get("env"))
        .and_then(Value::as_array)
    else {
        return env;
    };
    for var in vars {
        let Some(name) = var.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = if let Some(v) = var.get("value").and_then(Value::as_str) {
            expand(v, &env)
        } else if let Some(path) = var
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            let field = match path {
                "metadata.name" => meta::name(pod),
                "metadata.namespace" => meta::namespace(pod),
                "status.podIP" => pod.pointer("/status/podIP").and_then(Value::as_str),
                _ => None,
            };
            field.unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        env.insert(name.to_owned(), value);
    }
    env
}

/// `$(VAR)` -> its value when defined earlier; `$$` -> `$`; anything else is kept.
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = tail
            .strip_prefix("$(")
            .and_then(|t| t.split_once(')'))
            .filter(|(name, _)| env.contains_key(*name))
        {
            out.push_str(&env[name]);
            rest = after;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Where the pod's path `path` is here: on the volume mounted at the longest matching
/// `mountPath`, when `claim_dir` backs that volume's PVC with a directory (None: the path is
/// on no volume the simulated cluster backs, so not in the container).
pub fn resolve_pod_path(
    pod: &Value,
    path: &str,
    claim_dir: &dyn Fn(&str) -> Option<PathBuf>,
) -> Option<PathBuf> {
    let mounts = etcd_container(pod)?.get("volumeMounts")?.as_array()?;
    let (mount, rest) = mounts
        .iter()
        .filter_map(|m| {
            let at = m.get("mountPath")?.as_str()?.trim_end_matches('/');
            let rest = if path.trim_end_matches('/') == at {
                ""
            } else {
                path.strip_prefix(at)?.strip_prefix('/')?
            };
            Some((m, rest, at.len()))
        })
        .max_by_key(|(_, _, len)| *len)
        .map(|(m, rest, _)| (m, rest))?;
    let volume = mount.get("name")?.as_str()?;
    let claim = pod
        .pointer("/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| v["name"] == volume)?
        .pointer("/persistentVolumeClaim/claimName")?
        .as_str()?;
    let mut host = claim_dir(claim)?;
    if let Some(sub) = mount
        .get("subPath")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        host.push(sub);
    }
    // No escaping the volume.
    if rest.split('/').any(|c| c == "..") {
        return None;
    }
    let rest = rest.trim_end_matches('/');
    if !rest.is_empty() {
        host.push(rest);
    }
    Some(host)
}

/// The cluster DNS of one namespace as CoreDNS answers it: `<svc>[.<ns>[.svc[.cluster.local]]]`
/// is a Service's cluster IP; `<hostname>.<subdomain>[...]` a pod's IP when a headless
/// Service `<subdomain>` selects it; a headless Service's own name every such pod's IP (its
/// not-ready pods' too with `publishNotReadyAddresses`, as the Bitnami chart sets it).
#[derive(Clone, Debug, Default)]
pub struct Dns {
    ns: String,
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// Headless Service -> the StatefulSets whose pods it names (`spec.serviceName`).
    statefulsets: HashMap<String, Vec<String>>,
}

/// The names under which a pod of `ns` finds `name`, through its search path
/// (`<ns>.svc.cluster.local svc.cluster.local cluster.local`).
fn fqdn_forms(name: &str, ns: &str) -> [String; 4] {
    [
        format!("{name}.{ns}.svc.cluster.local"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}"),
        name.to_owned(),
    ]
}

fn pod_ip(pod: &Value) -> Option<Ipv4Addr> {
    pod.pointer("/status/podIP")?.as_str()?.parse().ok()
}

impl Dns {
    /// The records of namespace `ns` for its `services`, `pods` and `statefulsets`.
    pub fn of_namespace(
        ns: &str,
        services: &[Value],
        pods: &[Value],
        statefulsets: &[Value],
    ) -> Dns {
        let mut dns = Dns {
            ns: ns.to_owned(),
            ..Dns::default()
        };
        let in_ns = |o: &&Value| meta::namespace(o) == Some(ns);
        for svc in services.iter().filter(in_ns) {
            let Some(name) = meta::name(svc) else {
                continue;
            };
            let ips = match svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                Some("None") => dns.headless(ns, name, svc, pods),
                Some(ip) => ip.parse::<Ipv4Addr>().into_iter().collect(),
                None => continue,
            };
            for form in fqdn_forms(name, ns) {
                dns.names.insert(form, ips.clone());
            }
        }
        for set in statefulsets.iter().filter(in_ns) {
            if let (Some(name), Some(service)) = (
                meta::name(set),
                set.pointer("/spec/serviceName").and_then(Value::as_str),
            ) {
                dns.statefulsets
                    .entry(service.to_owned())
                    .or_default()
                    .push(name.to_owned());
            }
        }
        dns
    }

    /// The pods the headless Service `svc` selects: their IPs, and the records of their
    /// `<hostname>.<subdomain>` names.
    fn headless(&mut self, ns: &str, name: &str, svc: &Value, pods: &[Value]) -> Vec<Ipv4Addr> {
        let selector = string_map(svc.pointer("/spec/selector"));
        let not_ready = svc
            .pointer("/spec/publishNotReadyAddresses")
            .and_then(Value::as_bool)
            == Some(true);
        let mut ips = Vec::new();
        for pod in pods.iter().filter(|p| meta::namespace(p) == Some(ns)) {
            let labels = labels_of(pod);
            let selected = !selector.is_empty()
                && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                && !meta::is_deleting(pod)
                && (not_ready || super::super::replicaset::is_ready(pod));
            let Some(ip) = pod_ip(pod).filter(|_| selected) else {
                continue;
            };
            ips.push(ip);
            let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str);
            let subdomain = pod.pointer("/spec/subdomain").and_then(Value::as_str);
            if let (Some(host), Some(name)) = (hostname, subdomain.filter(|s| *s == name)) {
                for form in fqdn_forms(&format!("{host}.{name}"), ns) {
                    self.names.insert(form, vec![ip]);
                }
            }
        }
        ips.sort();
        ips
    }

    /// The addresses of `host` (`getent ahosts`); an IP stands for itself; empty when the name
    /// does not resolve.
    pub fn lookup(&self, host: &str) -> Vec<Ipv4Addr> {
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return vec![ip];
        }
        self.names
            .get(host.trim_end_matches('.'))
            .cloned()
            .unwrap_or_default()
    }

    /// The address of `host` for a URL handed to etcd: as [`Dns::lookup`], and a StatefulSet
    /// pod's name under its headless Service also before the pod runs, at `stable_ip` (the
    /// address it will have).
    pub fn resolve(
        &self,
        host: &str,
        stable_ip: &dyn Fn(&str) -> Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.lookup(host).first() {
            return Some(*ip);
        }
        let (pod, domain) = host.trim_end_matches('.').split_once('.')?;
        let (service, rest) = domain.split_once('.').unwrap_or((domain, ""));
        let suffixes = [
            format!("{}.svc.cluster.local", self.ns),
            format!("{}.svc", self.ns),
            self.ns.clone(),
            String::new(),
        ];
        if !suffixes.iter().any(|s| s == rest) {
            return None;
        }
        let (set, ordinal) = pod.rsplit_once('-')?;
        let owns = self
            .statefulsets
            .get(service)
            .is_some_and(|sets| sets.iter().any(|s| s == set));
        (owns && !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stable_ip(pod))
            .flatten()
    }

    /// `value` (a URL, a list of them separated by `,` or `;`, or `name=url` entries as in
    /// `--initial-cluster`) with every host name resolved, and `0.0.0.0` (every address of the
    /// pod) as `own_ip`. A name that does not resolve is kept (etcd then fails on it, as it
    /// would on a real cluster).
    pub fn rewrite_urls(
        &self,
        value: &str,
        own_ip: Ipv4Addr,
        stable_ip: &dyn Fn(&str) -> Option<Ipv4Addr>,
    ) -> String {
        let one = |url: &str| -> String {
            let (prefix, url) = match url.split_once('=') {
                Some((name, url)) if !name.contains("://") => (format!("{name}="), url),
                _ => (String::new(), url),
            };
            let Ok(mut parsed) = reqwest::Url::parse(url.trim()) else {
                return format!("{prefix}{url}");
            };
            let ip = match parsed.host_str() {
                Some("0.0.0.0") => Some(own_ip),
                Some(host) => self.resolve(host, stable_ip),
                None => None,
            };
            if let Some(ip) = ip
                && parsed.set_ip_host(ip.into()).is_ok()
            {
                let text = parsed.to_string();
                // Url adds a `/` path to `http://host:port`; etcd's URLs have none.
                let text = if url.trim().ends_with('/') {
                    text
                } else {
                    text.trim_end_matches('/').to_owned()
                };
                return format!("{prefix}{text}");
            }
            format!("{prefix}{url}")
        };
        let separator = if value.contains(';') && !value.contains(',') {
            ";"
        } else {
            ","
        };
        value
            .split([',', ';'])
            .filter(|u| !u.trim().is_empty())
            .map(one)
            .collect::<Vec<_>>()
            .join(separator)
    }
}
