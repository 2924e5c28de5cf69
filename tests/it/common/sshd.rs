//! A real OpenSSH sshd on loopback for tests (Debian: openssh-server, openssh-client), started
//! by the same launcher as the simulated nodes' (`sim::nodes::sshd`), with a login shell per
//! address instead of a simulated node.
//!
//! One sshd listens on one port on several loopback addresses (127.0.0.0/8 all routes to `lo`
//! on Linux), so each address stands for a distinct "node". Addresses it does not listen on
//! refuse connections, which is how tests get a node that is down.

use std::path::{Path, PathBuf};

use sim::nodes::sshd::{self, Launch, Sshds};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    /// The login user: root when the tests run as root (sshd must then permit root key
    /// logins), otherwise the current user (a non-root sshd can only serve its own user).
    pub user: String,
    /// Client key that is in authorized_keys.
    pub identity: PathBuf,
    /// A second key pair: not authorized, and not sshd's host key. Its public half stands in
    /// for "some other host's key" in known_hosts.
    pub stranger_identity: PathBuf,
    pub stranger_public_key: String,
    /// sshd's host public key, `ssh-ed25519 AAAA...`.
    pub host_public_key: String,
    sshds: Sshds,
}

impl Sshd {
    /// Starts sshd listening on `addresses` (e.g. `["127.0.0.2", "127.0.0.3"]`) and returns
    /// once every address accepts connections.
    pub fn start(addresses: &[&str]) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install Debian's openssh-server (and openssh-client for ssh-keygen)"
        );
        let sshds = Sshds::start(&Launch {
            sshd: Path::new(SSHD),
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            force_command: &|_| None,
            // SHLVL=1 makes the remote bash a nested shell, so it skips the ~/.bashrc that bash
            // otherwise sources for ssh commands (slow on developer machines, e.g. pyenv init).
            environment: Some(("SHLVL", "1")),
            guard: None,
            dir_prefix: "sshd-",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let (stranger_identity, stranger_public_key) =
            sshd::keygen(sshds.dir(), "stranger_ed25519").expect("ssh-keygen (openssh-client)");
        Sshd {
            port: sshds.port,
            user: sshds.user.clone(),
            identity: sshds.identity.clone(),
            stranger_identity,
            stranger_public_key,
            host_public_key: sshds.host_public_key.clone(),
            sshds,
        }
    }

    /// The known_hosts line OpenSSH would record for `address` with this sshd's key.
    pub fn known_hosts_entry(&self, address: &str) -> String {
        self.sshds.known_hosts_entry(address)
    }

    pub fn log(&self) -> String {
        self.sshds.log()
    }

    /// A file in sshd's directory (removed with it).
    pub fn path(&self, name: &str) -> PathBuf {
        self.sshds.dir().join(name)
    }
}
