//! A real OpenSSH sshd on loopback for tests (Debian: openssh-server, openssh-client).
//!
//! One sshd listens on one port on several loopback addresses (127.0.0.0/8 all routes to `lo`
//! on Linux), so each address stands for a distinct "node". Addresses it does not listen on
//! refuse connections, which is how tests get a node that is down.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: TempDir,
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
    child: Child,
}

impl Sshd {
    /// Starts sshd listening on `addresses` (e.g. `["127.0.0.2", "127.0.0.3"]`) and returns
    /// once every address accepts connections.
    pub fn start(addresses: &[&str]) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install Debian's openssh-server (and openssh-client for ssh-keygen)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let keygen = |name: &str| {
            let path = dir.path().join(name);
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .stdin(Stdio::null())
                .status()
                .expect("run ssh-keygen (openssh-client)");
            assert!(status.success(), "ssh-keygen failed for {name}");
            let public = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
            (path, first_two_fields(&public))
        };
        let (host_key, host_public_key) = keygen("host_ed25519");
        let (identity, client_public) = keygen("id_ed25519");
        let (stranger_identity, stranger_public_key) = keygen("stranger_ed25519");
        let authorized_keys = dir.path().join("authorized_keys");
        // SHLVL=1 makes the remote bash a nested shell, so it skips the ~/.bashrc that bash
        // otherwise sources for ssh commands (slow on developer machines, e.g. pyenv init).
        std::fs::write(
            &authorized_keys,
            format!("environment=\"SHLVL=1\" {client_public}\n"),
        )
        .expect("authorized_keys");

        let user = current_user();
        if user == "root" {
            // sshd refuses to start as root without its privilege separation directory.
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }

        let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        let config = dir.path().join("sshd_config");
        let log_path = dir.path().join("sshd.log");
        // A free port can be taken by someone else between our probe and sshd's bind; retry.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let listen: String = addresses
                .iter()
                .map(|a| format!("ListenAddress {a}:{port}\n"))
                .collect();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\n{listen}\
                     HostKey {host_key}\n\
                     AuthorizedKeysFile {authorized_keys}\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PermitUserEnvironment SHLVL\n\
                     PidFile {pid}\n\
                     MaxStartups 2048:30:4096\n\
                     MaxSessions 1000\n\
                     LogLevel VERBOSE\n",
                    host_key = host_key.display(),
                    authorized_keys = authorized_keys.display(),
                    pid = dir.path().join("sshd.pid").display(),
                ),
            )
            .expect("sshd_config");
            let log = std::fs::File::create(&log_path).expect("sshd.log");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn sshd");
            match etcd_repopulator::sim_nodes::wait_until_listening(
                &mut child,
                &addresses,
                port,
                Duration::from_secs(10),
            ) {
                Ok(()) => {
                    return Sshd {
                        dir,
                        port,
                        user,
                        identity,
                        stranger_identity,
                        stranger_public_key,
                        host_public_key,
                        child,
                    };
                }
                Err(failure) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push(format!("port {port}: {failure}; sshd log: {log}"));
                }
            }
        }
        panic!("sshd did not start: {}", failures.join(" | "));
    }

    /// The known_hosts line OpenSSH would record for `address` with this sshd's key.
    pub fn known_hosts_entry(&self, address: &str) -> String {
        format!("[{address}]:{} {}", self.port, self.host_public_key)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free port")
}

fn first_two_fields(public_key_line: &str) -> String {
    public_key_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
