//! The simulated nodes for `serve --simulate`: a real OpenSSH `sshd` on loopback (with keys of
//! its own, as the tests start one) stands in for every node the `hmnfd` run contacts, so that
//! a rehearsal of every service can succeed.
//!
//! Each node gets an address of its own in 127.78.0.0/16 (all of it is loopback on Linux) and
//! the `[ssh] hosts` map sends its host name there. sshd runs the node's commands through
//! `etcd-repopulator sim-node` (a `ForceCommand` per address): `systemctl restart
//! cray-dvs-orca` does what ORCA does when it starts, it subscribes the node to the simulated
//! HMNFD again (compute nodes and the NCNs HSM knows, by xname). Each sshd runs under
//! `etcd-repopulator sim-node-guard`, which stops it when the service goes away.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use clap::Args;
use serde_json::{Value, json};

use crate::{
    config::Config,
    config::HostnameTemplate,
    csm::{CsmConfig, HsmComponent},
    remote::{SshConfig, hostlist},
};

/// What to install where there is no sshd: one line, shown by the `hmnfd` step.
pub const INSTALL_HINT: &str = "the simulated nodes have no SSH server: install OpenSSH's \
     server (Debian/Ubuntu: `apt-get install openssh-server`, which brings ssh-keygen) and \
     start `serve --simulate` again";

/// The agent ORCA subscribes with and the port it listens on for notifications (as the
/// simulated HMNFD's own seed has them).
const ORCA_AGENT: &str = "cray-dvs-orca";
const ORCA_SCN_PORT: u16 = 7801;
/// The states ORCA asks HMNFD to be told about.
const ORCA_STATES: [&str; 5] = ["Ready", "Off", "Standby", "Halt", "Empty"];
/// How long sshd may take to listen on every address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One simulated node: the host name a run uses, the loopback address sshd answers it on, and
/// its xname when HSM knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNode {
    pub host: String,
    pub address: String,
    pub xname: Option<String>,
}

/// The running sshd (stopped when dropped) and the `[ssh]` settings that reach it.
pub struct SimNodes {
    pub ssh: SshConfig,
    pub nodes: Vec<SimNode>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        stop(&mut self.children);
    }
}

/// Closing a guard's stdin stops its sshd; the guard then exits.
fn stop(guards: &mut [Child]) {
    for guard in guards.iter_mut() {
        drop(guard.stdin.take());
    }
    for guard in guards {
        let _ = guard.wait();
    }
}

impl SimNodes {
    /// The sshds' keys, configuration and logs (removed when the service stops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sshds' logs (authentication failures, the commands they ran).
    pub fn log(&self) -> String {
        (0..self.children.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("sshd-{i}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// `explicit`, else `sshd` on `PATH`, else the usual sbin places (not on a user's `PATH`).
pub fn find_sshd(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return path.is_file().then(|| path.to_owned());
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("sshd"))
        .find(|candidate| candidate.is_file())
}

/// Every node a run of `config` can contact on the simulated system: HSM's compute nodes and
/// management nodes by their host name templates, and the NCN hostlists. A hostlist NCN gets
/// the xname of the HSM management node with the same role letter and number (`ncn-w002` is
/// the second Worker by xname); hostlist names HSM has no node for still answer, without one.
pub fn nodes(config: &Config, hsm: &[HsmComponent]) -> Vec<SimNode> {
    let compute = HostnameTemplate::parse(&config.hmnfd.compute_hostname).ok();
    let ncn = HostnameTemplate::parse(&config.hmnfd.ncn_hostname).ok();
    let mut hosts: BTreeMap<String, Option<String>> = BTreeMap::new();
    for node in hsm.iter().filter(|c| c.kind == "Node") {
        let template = match node.role.as_deref() {
            Some("Compute") => compute.as_ref(),
            Some("Management") => ncn.as_ref(),
            _ => None,
        };
        if let Some(host) = template.and_then(|t| t.render(node)) {
            hosts.entry(host).or_insert_with(|| Some(node.id.clone()));
        }
    }
    for expr in &config.hmnfd.ncn_hostlists {
        for host in hostlist::expand(expr).unwrap_or_default() {
            let xname = ncn_xname(&host, hsm);
            hosts.entry(host).or_insert(xname);
        }
    }
    hosts
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

/// Starts `sshd` for `nodes`, each answering with `program sim-node` (this binary), which
/// reaches the simulated CSM services at `csm`. One sshd listens on at most
/// [`MAX_LISTEN_SOCKETS`] addresses, so there is one per that many nodes, all on one port. The
/// error is one line saying what is missing or what failed.
pub fn start(
    sshd: &Path,
    program: &Path,
    nodes: Vec<SimNode>,
    csm: &CsmConfig,
) -> Result<SimNodes, String> {
    let user = current_user()?;
    if user == "root" {
        // sshd refuses to start as root without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")
            .map_err(|e| format!("creating /run/sshd for sshd: {e}"))?;
    }
    let mut failure = String::new();
    // A free port can be taken by someone else between the probe and sshd's bind: try again
    // (from scratch: a stopped attempt's guards remove its directory).
    for _ in 0..5 {
        match attempt(sshd, program, &nodes, csm, &user)? {
            Ok((ssh, children, dir)) => {
                return Ok(SimNodes {
                    ssh,
                    nodes,
                    children,
                    dir,
                });
            }
            Err(reason) => {
                let port_taken = reason.contains("Address already in use");
                failure = reason;
                if !port_taken {
                    break;
                }
            }
        }
    }
    Err(format!(
        "sshd for the simulated nodes did not start: {failure}"
    ))
}

/// What a started attempt leaves: the `[ssh]` settings, the guards and their directory.
type Started = (SshConfig, Vec<Child>, tempfile::TempDir);

/// One try at starting the sshds on a free port, in a directory of their own with new keys:
/// the outer error is a setup failure, the inner one why sshd did not start.
fn attempt(
    sshd: &Path,
    program: &Path,
    nodes: &[SimNode],
    csm: &CsmConfig,
    user: &str,
) -> Result<Result<Started, String>, String> {
    let dir = tempfile::Builder::new()
        .prefix("etcd-repopulator-sim-nodes-")
        .tempdir()
        .map_err(|e| format!("cannot make a directory for the simulated nodes' sshd: {e}"))?;
    let (host_key, host_public) = keygen(dir.path(), "host_ed25519")?;
    let (identity, client_public) = keygen(dir.path(), "id_ed25519")?;
    let authorized_keys = dir.path().join("authorized_keys");
    write(&authorized_keys, format!("{client_public}\n"))?;
    let files = SshdFiles {
        dir: dir.path(),
        host_key: &host_key,
        authorized_keys: &authorized_keys,
        program,
        csm,
    };
    let port = free_port()?;
    let mut children = Vec::new();
    let started = nodes
        .chunks(MAX_LISTEN_SOCKETS)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            children.push(files.spawn(sshd, i, chunk, port)?);
            let child = children.last_mut().expect("just pushed");
            wait_until_listening(child, chunk.iter().map(|n| &n.address), port, START_TIMEOUT)
                .map_err(|e| {
                    let log = std::fs::read_to_string(dir.path().join(format!("sshd-{i}.log")))
                        .unwrap_or_default();
                    // sshd's last word says why (e.g. "Address already in use").
                    let last = log
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    format!("{e}: {}", last.trim())
                })
        });
    if let Err(reason) = started {
        stop(&mut children);
        return Ok(Err(reason));
    }
    let known_hosts = dir.path().join("known_hosts");
    write(
        &known_hosts,
        nodes
            .iter()
            .map(|n| format!("[{}]:{port} {host_public}\n", n.address))
            .collect(),
    )?;
    let ssh = SshConfig {
        user: user.to_owned(),
        port,
        identity_file: identity,
        known_hosts_file: known_hosts,
        hosts: nodes
            .iter()
            .map(|n| (n.host.clone(), n.address.clone()))
            .collect(),
        ..SshConfig::default()
    };
    Ok(Ok((ssh, children, dir)))
}

/// A new ed25519 key pair `dir/name` (and `.pub`): its path and public key line.
fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, String), String> {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{INSTALL_HINT} (ssh-keygen: {e})"))?;
    if !status.success() {
        return Err(format!("ssh-keygen failed ({status}) making {name}"));
    }
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .map_err(|e| format!("reading {name}.pub: {e}"))?;
    let fields: Vec<&str> = public.split_whitespace().take(2).collect();
    Ok((path, fields.join(" ")))
}

/// sshd's `ListenAddress` limit (`MAX_LISTEN_SOCKS` in OpenSSH).
const MAX_LISTEN_SOCKETS: usize = 16;

fn write(path: &Path, text: String) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// What every sshd of the simulated nodes shares.
struct SshdFiles<'a> {
    dir: &'a Path,
    host_key: &'a Path,
    authorized_keys: &'a Path,
    program: &'a Path,
    csm: &'a CsmConfig,
}

impl SshdFiles<'_> {
    /// sshd number `i`, for `nodes`, logging to `sshd-<i>.log`.
    fn spawn(&self, sshd: &Path, i: usize, nodes: &[SimNode], port: u16) -> Result<Child, String> {
        let config = self.dir.join(format!("sshd-{i}.conf"));
        write(&config, self.config(i, nodes, port))?;
        let log_path = self.dir.join(format!("sshd-{i}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        // Through `sim-node-guard`, which stops sshd when its stdin (held by this process)
        // closes: when the service stops, however it stops, even by SIGKILL.
        Command::new(self.program)
            .arg("sim-node-guard")
            .arg("--remove-dir")
            .arg(self.dir)
            .arg(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", sshd.display()))
    }

    fn config(&self, i: usize, nodes: &[SimNode], port: u16) -> String {
        let mut text = format!(
            "Port {port}\n\
             HostKey {}\n\
             AuthorizedKeysFile {}\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             PidFile {}\n\
             MaxStartups 2048:30:4096\n\
             MaxSessions 1000\n\
             LogLevel VERBOSE\n",
            self.host_key.display(),
            self.authorized_keys.display(),
            self.dir.join(format!("sshd-{i}.pid")).display(),
        );
        for node in nodes {
            text.push_str(&format!("ListenAddress {}:{port}\n", node.address));
        }
        // Match blocks last: everything after one belongs to it.
        for node in nodes {
            let mut command = format!(
                "{} sim-node --host {} --hmnfd-url {} --hsm-url {}",
                shell_quote(&self.program.display().to_string()),
                shell_quote(&node.host),
                shell_quote(&self.csm.hmnfd_url),
                shell_quote(&self.csm.hsm_url),
            );
            if let Some(xname) = &node.xname {
                command.push_str(&format!(" --xname {}", shell_quote(xname)));
            }
            text.push_str(&format!(
                "Match LocalAddress {}\n    ForceCommand {command}\n",
                node.address
            ));
        }
        text
    }
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port for sshd: {e}"))
}

fn current_user() -> Result<String, String> {
    let output = Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| format!("finding the current user (id -un): {e}"))?;
    let user = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if user.is_empty() {
        return Err("finding the current user: `id -un` printed nothing".to_owned());
    }
    Ok(user)
}

/// Waits (bounded by `within`) until `child` (an sshd) accepts TCP connections on `port` at
/// every address; fails at once if it exits. The tests' sshd fixture uses it too.
pub fn wait_until_listening(
    child: &mut Child,
    addresses: impl IntoIterator<Item = impl AsRef<str>>,
    port: u16,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for address in addresses {
        let address = address.as_ref();
        let socket: SocketAddr = format!("{address}:{port}")
            .parse()
            .map_err(|e| format!("bad address {address}: {e}"))?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("sshd exited with {status}"));
            }
            if TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{socket} not accepting connections"));
            }
            // A child process binding its ports gives no other signal than accepting.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// `etcd-repopulator sim-node`: what a simulated node does with the command it was sent over
/// SSH (in `SSH_ORIGINAL_COMMAND`, as sshd's `ForceCommand` leaves it).
#[derive(Args, Debug, Clone)]
pub struct SimNodeArgs {
    /// The node's host name.
    #[arg(long)]
    pub host: String,
    /// The node's xname, when HSM knows it (ORCA subscribes under it).
    #[arg(long)]
    pub xname: Option<String>,
    /// The simulated HMNFD (v2) base URL.
    #[arg(long)]
    pub hmnfd_url: String,
    /// The simulated HSM (v2) base URL.
    #[arg(long)]
    pub hsm_url: String,
    /// The command, when not run by sshd.
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

/// `etcd-repopulator sim-node-guard [--remove-dir DIR] SSHD ARGS...`: runs sshd until it exits
/// or this process's stdin closes (the service that started it stopped), then stops it and
/// removes its directory.
#[derive(Args, Debug, Clone)]
pub struct GuardArgs {
    /// Removed once the service is gone (the directory of sshd's keys and configuration).
    #[arg(long)]
    pub remove_dir: Option<PathBuf>,
    /// The program to run and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// See [`GuardArgs`].
pub async fn guard(args: GuardArgs) -> ExitCode {
    use tokio::io::AsyncReadExt;
    let Some((program, rest)) = args.command.split_first() else {
        return ExitCode::FAILURE;
    };
    let mut child = match tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("sim-node-guard: cannot start {program}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    tokio::select! {
        status = child.wait() => match status.ok().and_then(|s| s.code()) {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        _ = stdin.read_to_end(&mut sink) => {
            let _ = child.kill().await;
            if let Some(dir) = &args.remove_dir {
                // Every guard of the service may try; whoever comes last finds nothing.
                let _ = std::fs::remove_dir_all(dir);
            }
            ExitCode::SUCCESS
        }
    }
}

/// Runs one command on a simulated node, as its shell would, and returns its exit status.
pub async fn node_command(args: SimNodeArgs) -> ExitCode {
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_else(|_| args.command.join(" "));
    let words: Vec<&str> = command.split_whitespace().collect();
    let orca = |unit: &str| matches!(unit, "cray-dvs-orca" | "cray-dvs-orca.service");
    match words.as_slice() {
        [] | ["true"] => ExitCode::SUCCESS,
        ["hostname"] => {
            println!("{}", args.host);
            ExitCode::SUCCESS
        }
        ["systemctl", "restart" | "start", unit] if orca(unit) => match restart_orca(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!(
                    "{}: cray-dvs-orca did not subscribe to HMNFD: {err}",
                    args.host
                );
                ExitCode::FAILURE
            }
        },
        ["systemctl", "status" | "is-active", unit] if orca(unit) => {
            println!("active");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "{}: {command}: not simulated (a simulated node runs `systemctl restart|status \
                 cray-dvs-orca`, `hostname` and `true`)",
                args.host
            );
            ExitCode::from(127)
        }
    }
}

/// What ORCA does when it starts: subscribe its node to state changes of every compute node.
async fn restart_orca(args: &SimNodeArgs) -> Result<(), String> {
    let Some(xname) = &args.xname else {
        // A node HSM does not know: ORCA restarts, but has nothing to subscribe as.
        return Ok(());
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}/State/Components?type=Node&role=Compute",
        args.hsm_url.trim_end_matches('/')
    );
    let components: Value = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let computes: Vec<&str> = components["Components"]
        .as_array()
        .map(|list| list.iter().filter_map(|c| c["ID"].as_str()).collect())
        .unwrap_or_default();
    let url = format!(
        "{}/subscriptions/{xname}/agents/{ORCA_AGENT}",
        args.hmnfd_url.trim_end_matches('/')
    );
    http.post(&url)
        .json(&json!({
            "Components": computes,
            "Enabled": true,
            "States": ORCA_STATES,
            "Url": format!("http://{xname}:{ORCA_SCN_PORT}/scn"),
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("POST {url}: {e}"))?;
    Ok(())
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
    fn every_host_a_run_can_contact_is_a_node() {
        let hsm = [
            node("x1000c0s0b0n0", "Compute", None, 1),
            node("x3000c0s5b0n0", "Management", Some("Worker"), 100_005),
            node("x3000c0s4b0n0", "Management", Some("Worker"), 100_004),
        ];
        let mut config = Config::default();
        config.hmnfd.ncn_hostlists = vec!["ncn-w00[1-3]-can.local".to_owned()];
        let nodes = nodes(&config, &hsm);
        let find = |host: &str| nodes.iter().find(|n| n.host == host).unwrap();
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
        // Discovered NCNs are named by their xname (the default `ncn_hostname`).
        assert!(nodes.iter().any(|n| n.host == "x3000c0s4b0n0"));
        let mut addresses: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
        addresses.dedup();
        assert_eq!(addresses.len(), nodes.len());
    }

    #[test]
    fn force_commands_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
