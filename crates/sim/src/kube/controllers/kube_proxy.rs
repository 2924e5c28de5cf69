//! kube-proxy for the Services in front of real processes: a Service's cluster IP answers on
//! its ports for the pods it selects that are Ready (its endpoints), each connection going to
//! one of them in turn (iptables mode picks one at random; turn by turn spreads as evenly),
//! to the pod's IP and the port's `targetPort` (a number, or the name of a container port).
//! With no Ready endpoint nothing listens, so a connection is refused, as iptables' REJECT
//! makes it. Connections already made stay as they are when the endpoints change (conntrack)
//! until the process at either end closes them.
//!
//! Only Services that select at least one pod with a loopback pod IP (a member of an etcd
//! cluster that runs for real, see `etcd_member`) are proxied: nothing else listens in the
//! simulated cluster, and an etcd-operator cluster's one process listens on its client
//! Service's cluster IP itself.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::super::meta;
use super::super::resources::{PODS, SERVICES};
use super::super::selector::{labels_of, string_map};
use super::ctx::{Ctx, all};
use super::replicaset::is_ready;

/// One Service port's listener, while it has endpoints.
struct Proxied {
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    stop: CancellationToken,
}

/// The proxied Service ports (`<cluster IP>:<port>` -> listener).
#[derive(Default)]
pub struct KubeProxy {
    ports: Mutex<HashMap<SocketAddr, Proxied>>,
}

fn pod_ip(pod: &Value) -> Option<Ipv4Addr> {
    pod.pointer("/status/podIP")?.as_str()?.parse().ok()
}

/// The container port `target` names on `pod` (a number stands for itself).
fn target_port(pod: &Value, target: &Value) -> Option<u16> {
    if let Some(port) = target.as_u64() {
        return u16::try_from(port).ok();
    }
    let name = target.as_str()?;
    if let Ok(port) = name.parse::<u16>() {
        return Some(port);
    }
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name)?
        .get("containerPort")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

/// Every proxied Service port and its Ready endpoints (possibly none).
fn endpoints(ctx: &Ctx) -> BTreeMap<SocketAddr, Vec<SocketAddr>> {
    let pods = all(ctx, &PODS);
    let mut out = BTreeMap::new();
    for svc in all(ctx, &SERVICES) {
        let Some(ip) = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(Ipv4Addr::is_loopback)
        else {
            continue;
        };
        let selector = string_map(svc.pointer("/spec/selector"));
        if selector.is_empty() {
            continue;
        }
        let ns = meta::namespace(&svc);
        let selected: Vec<&Value> = pods
            .iter()
            .filter(|p| meta::namespace(p) == ns)
            .filter(|p| {
                let labels = labels_of(p);
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .filter(|p| pod_ip(p).is_some_and(|ip| ip.is_loopback()))
            .collect();
        if selected.is_empty() {
            continue;
        }
        for port in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(number) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let target = port.get("targetPort").unwrap_or(&port["port"]);
            let ready: Vec<SocketAddr> = selected
                .iter()
                .filter(|p| !meta::is_deleting(p) && is_ready(p))
                .filter_map(|p| Some(SocketAddr::from((pod_ip(p)?, target_port(p, target)?))))
                .collect();
            out.insert(SocketAddr::from((ip, number)), ready);
        }
    }
    out
}

/// Forwards `inbound` to the next of `backends` (none answering: the connection is closed).
async fn forward(
    mut inbound: tokio::net::TcpStream,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    turn: Arc<AtomicUsize>,
) {
    let backend = {
        let backends = backends.read().unwrap_or_else(|e| e.into_inner());
        if backends.is_empty() {
            return;
        }
        backends[turn.fetch_add(1, Ordering::Relaxed) % backends.len()]
    };
    let connect = tokio::net::TcpStream::connect(backend);
    let Ok(Ok(mut outbound)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// Listens on `addr` (address reuse on, so that a port closed a moment ago with connections
/// in TIME_WAIT can be listened on again).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl KubeProxy {
    /// Opens, updates and closes the listeners to match the Services' Ready endpoints.
    pub fn reconcile(self: &Arc<Self>, ctx: &Ctx) {
        let wanted = endpoints(ctx);
        let mut retry = false;
        {
            let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
            ports.retain(|addr, proxied| {
                let keep = wanted.get(addr).is_some_and(|ready| !ready.is_empty());
                if !keep {
                    proxied.stop.cancel();
                }
                keep
            });
            for (addr, ready) in wanted {
                if ready.is_empty() {
                    continue;
                }
                if let Some(proxied) = ports.get(&addr) {
                    *proxied.backends.write().unwrap_or_else(|e| e.into_inner()) = ready;
                    continue;
                }
                let listener = match listen(addr) {
                    Ok(listener) => listener,
                    Err(e) => {
                        // The listener closed a moment ago may still hold the port.
                        tracing::debug!(%addr, error = %e, "simulated kube-proxy cannot listen yet");
                        retry = true;
                        continue;
                    }
                };
                let proxied = Proxied {
                    backends: Arc::new(RwLock::new(ready)),
                    stop: ctx.shutdown.child_token(),
                };
                let (backends, stop) = (proxied.backends.clone(), proxied.stop.clone());
                ctx.spawn(async move {
                    let turn = Arc::new(AtomicUsize::new(0));
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            accepted = listener.accept() => {
                                if let Ok((inbound, _)) = accepted {
                                    tokio::spawn(forward(inbound, backends.clone(), turn.clone()));
                                }
                            }
                        }
                    }
                });
                ports.insert(addr, proxied);
            }
        }
        if retry {
            let (proxy, ctx2) = (self.clone(), ctx.clone());
            ctx.spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                proxy.reconcile(&ctx2);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_named_target_port_is_the_pods_container_port_of_that_name() {
        let pod = json!({ "spec": { "containers": [{ "name": "etcd", "ports": [
            { "name": "client", "containerPort": 2379 },
            { "name": "peer", "containerPort": 2380 },
        ]}]}});
        assert_eq!(target_port(&pod, &json!("peer")), Some(2380));
        assert_eq!(target_port(&pod, &json!(2379)), Some(2379));
        assert_eq!(target_port(&pod, &json!("metrics")), None);
    }
}
