//! The simulated nodes for `serve --simulate`: a real OpenSSH `sshd` on loopback (with keys of
//! its own, as the tests start one, see [`sshd`]) stands in for every node the `hmnfd` run
//! contacts, so that a rehearsal of every service can succeed.
//!
//! Each node gets an address of its own in 127.78.0.0/16 (all of it is loopback on Linux) and
//! the service's `[ssh] hosts` map sends its host name there. sshd runs the node's commands
//! through the service's `sim-node` subcommand (a `ForceCommand` per address, see [`node`]):
//! `systemctl restart <the release's ORCA unit>` does what ORCA does when it starts, it
//! subscribes the node to the simulated HMNFD again (compute nodes and the NCNs HSM knows, by
//! xname). Each sshd runs under the service's `sim-node-guard`, which stops it when the service
//! goes away.

pub mod node;
pub mod sshd;

use std::{collections::BTreeMap, path::Path};

use csm_wire::HsmComponent;

pub use node::NodeCommand;
pub use sshd::{INSTALL_HINT, Sshds, find_sshd};

/// One simulated node: the host name a run uses, the loopback address sshd answers it on, and
/// its xname when HSM knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNode {
    pub host: String,
    pub address: String,
    pub xname: Option<String>,
}

/// The nodes for `hosts` (host names in order, each with its xname when the caller knows it;
/// the first of a name counts). A host without one that is named like an NCN (`ncn-w002...`)
/// gets the xname of the HSM management node with the same role letter and number (the second
/// Worker by xname); other names HSM has no node for still answer, without one.
pub fn place(
    hosts: impl IntoIterator<Item = (String, Option<String>)>,
    hsm: &[HsmComponent],
) -> Vec<SimNode> {
    let mut named: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (host, xname) in hosts {
        if let std::collections::btree_map::Entry::Vacant(entry) = named.entry(host) {
            let xname = xname.or_else(|| ncn_xname(entry.key(), hsm));
            entry.insert(xname);
        }
    }
    named
        .into_iter()
        .enumerate()
        .map(|(i, (host, xname))| SimNode {
            host,
            // 127.78.0.1, 127.78.0.2, ...: clear of 127.0.0.1, of the simulated cluster IPs
            // (127.77.0.0/16) and of the tests' ranges.
            address: format!("127.78.{}.{}", i / 250, i % 250 + 1),
            xname,
        })
        .collect()
}

/// `ncn-w002...` -> the second Management node with subrole Worker, by xname.
fn ncn_xname(host: &str, hsm: &[HsmComponent]) -> Option<String> {
    let rest = host.strip_prefix("ncn-")?;
    let subrole = match rest.chars().next()? {
        'm' => "Master",
        's' => "Storage",
        'w' => "Worker",
        _ => return None,
    };
    let digits: String = rest[1..].chars().take_while(char::is_ascii_digit).collect();
    let index: usize = digits.parse().ok()?;
    let mut candidates: Vec<&HsmComponent> = hsm
        .iter()
        .filter(|c| c.role.as_deref() == Some("Management"))
        .filter(|c| c.sub_role.as_deref() == Some(subrole))
        .collect();
    candidates.sort_by(|a, b| a.id.cmp(&b.id));
    Some(candidates.get(index.checked_sub(1)?)?.id.clone())
}

/// What the nodes reach and run: the simulated CSM services, and the release's ORCA unit.
#[derive(Clone, Debug)]
pub struct NodeServices {
    pub hmnfd_url: String,
    pub hsm_url: String,
    /// `cray-dvs-orca` (CSM 1.0) or `cray-orca` (1.2 on).
    pub orca_unit: String,
}

/// The running sshds of the nodes (stopped when dropped) and the nodes they answer for.
pub struct SimNodes {
    pub nodes: Vec<SimNode>,
    pub sshds: Sshds,
    /// `known_hosts` with every node's address and the sshds' host key.
    pub known_hosts: std::path::PathBuf,
}

impl SimNodes {
    /// Starts `sshd` for `nodes`, each answering with `program sim-node` (the service's binary),
    /// which reaches `services`. The error is one line saying what is missing or what failed.
    pub fn start(
        sshd: &Path,
        program: &Path,
        nodes: Vec<SimNode>,
        services: &NodeServices,
    ) -> Result<SimNodes, String> {
        let by_address: BTreeMap<&str, &SimNode> =
            nodes.iter().map(|n| (n.address.as_str(), n)).collect();
        let force_command = |address: &str| {
            by_address.get(address).map(|node| {
                std::iter::once(program.display().to_string())
                    .chain(command_for(node, services).args())
                    .map(|word| sshd::shell_quote(&word))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        let sshds = Sshds::start(&sshd::Launch {
            sshd,
            addresses: nodes.iter().map(|n| n.address.clone()).collect(),
            force_command: &force_command,
            environment: None,
            guard: Some(program),
            dir_prefix: "etcd-repopulator-sim-nodes-",
        })
        .map_err(|e| format!("for the simulated nodes: {e}"))?;
        let known_hosts = sshds.dir().join("known_hosts");
        let lines: String = nodes
            .iter()
            .map(|n| sshds.known_hosts_entry(&n.address) + "\n")
            .collect();
        std::fs::write(&known_hosts, lines)
            .map_err(|e| format!("writing {}: {e}", known_hosts.display()))?;
        Ok(SimNodes {
            nodes,
            sshds,
            known_hosts,
        })
    }

    /// Each node's host name and the address that answers for it (the `[ssh] hosts` map).
    pub fn hosts(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .map(|n| (n.host.clone(), n.address.clone()))
            .collect()
    }
}

/// The `sim-node` of `node` (its command comes from sshd).
pub fn command_for(node: &SimNode, services: &NodeServices) -> NodeCommand {
    NodeCommand {
        host: node.host.clone(),
        xname: node.xname.clone(),
        hmnfd_url: services.hmnfd_url.clone(),
        hsm_url: services.hsm_url.clone(),
        orca_unit: services.orca_unit.clone(),
        command: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, role: &str, sub_role: Option<&str>, nid: i64) -> HsmComponent {
        HsmComponent {
            id: id.to_owned(),
            kind: "Node".to_owned(),
            role: Some(role.to_owned()),
            sub_role: sub_role.map(str::to_owned),
            nid: Some(nid),
            ..HsmComponent::default()
        }
    }

    #[test]
    fn hostlist_ncns_get_the_xname_of_their_worker() {
        let hsm = [
            node("x3000c0s5b0n0", "Management", Some("Worker"), 100_005),
            node("x3000c0s4b0n0", "Management", Some("Worker"), 100_004),
        ];
        let nodes = place(
            [
                ("nid000001-nmn".to_owned(), Some("x1000c0s0b0n0".to_owned())),
                ("ncn-w001-can.local".to_owned(), None),
                ("ncn-w002-can.local".to_owned(), None),
                ("ncn-w003-can.local".to_owned(), None),
                ("nid000001-nmn".to_owned(), None),
            ],
            &hsm,
        );
        let find = |host: &str| nodes.iter().find(|n| n.host == host).unwrap();
        assert_eq!(nodes.len(), 4, "the first of a name counts");
        assert_eq!(
            find("nid000001-nmn").xname.as_deref(),
            Some("x1000c0s0b0n0")
        );
        assert_eq!(
            find("ncn-w001-can.local").xname.as_deref(),
            Some("x3000c0s4b0n0")
        );
        assert_eq!(
            find("ncn-w002-can.local").xname.as_deref(),
            Some("x3000c0s5b0n0")
        );
        assert_eq!(find("ncn-w003-can.local").xname, None);
        let mut addresses: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
        addresses.dedup();
        assert_eq!(addresses.len(), nodes.len());
    }
}
