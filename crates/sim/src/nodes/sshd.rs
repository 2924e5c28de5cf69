//! A real OpenSSH `sshd` on loopback, with keys of its own: the simulated nodes' (every node an
//! address of its own, its commands forced to the node's program) and the tests' (a login shell
//! per address). One sshd listens on at most [`MAX_LISTEN_SOCKETS`] addresses, so there is one
//! per that many, all on one port; 127.0.0.0/8 all routes to `lo` on Linux, and an address no
//! sshd listens on refuses connections (a node that is down).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// What to install where there is no sshd: one line.
pub const INSTALL_HINT: &str = "the simulated nodes have no SSH server: install OpenSSH's \
     server (Debian/Ubuntu: `apt-get install openssh-server`, which brings ssh-keygen) and \
     start `serve --simulate` again";

/// sshd's `ListenAddress` limit (`MAX_LISTEN_SOCKS` in OpenSSH).
pub const MAX_LISTEN_SOCKETS: usize = 16;

/// How long sshd may take to listen on every address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports to try: one found free can be taken by someone else before sshd binds.
const ATTEMPTS: usize = 5;

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

/// How to start the sshds.
pub struct Launch<'a> {
    /// The sshd program.
    pub sshd: &'a Path,
    /// The addresses to listen on (one port for all).
    pub addresses: Vec<String>,
    /// The command sshd runs on each address instead of the client's (`ForceCommand`, which
    /// leaves the client's in `SSH_ORIGINAL_COMMAND`); `None`: the login shell runs it.
    pub force_command: &'a dyn Fn(&str) -> Option<String>,
    /// `NAME=value` set for every session through the authorized key's `environment=` option
    /// (and `PermitUserEnvironment NAME`).
    pub environment: Option<(&'a str, &'a str)>,
    /// Start each sshd through `<program> sim-node-guard`, which stops it and removes the
    /// directory when the process that started it goes away, however it goes (even SIGKILL).
    pub guard: Option<&'a Path>,
    /// The start of the directory's name (in the temporary directory).
    pub dir_prefix: &'a str,
}

/// Running sshds (stopped when dropped), their directory (keys, configuration, logs) and how a
/// client reaches them.
pub struct Sshds {
    pub port: u16,
    /// The login user: the current user (a non-root sshd can only serve its own user; as root,
    /// root key logins are permitted).
    pub user: String,
    /// The client's private key, in `authorized_keys`.
    pub identity: PathBuf,
    /// The host's public key, `ssh-ed25519 AAAA...`.
    pub host_public_key: String,
    children: Vec<Child>,
    guarded: bool,
    dir: tempfile::TempDir,
}

impl Drop for Sshds {
    fn drop(&mut self) {
        stop(&mut self.children, self.guarded);
    }
}

/// Closing a guard's stdin stops its sshd (the guard then exits); an sshd run directly is
/// killed.
fn stop(children: &mut [Child], guarded: bool) {
    for child in children.iter_mut() {
        if guarded {
            drop(child.stdin.take());
        } else {
            let _ = child.kill();
        }
    }
    for child in children {
        let _ = child.wait();
    }
}

impl Sshds {
    /// Starts sshds for `launch` on a free port, and returns once every address accepts
    /// connections. The error is one line saying what is missing or what failed (sshd's last
    /// log line).
    pub fn start(launch: &Launch<'_>) -> Result<Sshds, String> {
        let user = current_user()?;
        if user == "root" {
            // sshd refuses to start as root without its privilege separation directory.
            std::fs::create_dir_all("/run/sshd")
                .map_err(|e| format!("creating /run/sshd for sshd: {e}"))?;
        }
        let mut failure = String::new();
        // From scratch each time: a stopped attempt's guards remove its directory.
        for _ in 0..ATTEMPTS {
            match attempt(launch, &user)? {
                Ok(sshds) => return Ok(sshds),
                Err(reason) => {
                    let port_taken = reason.contains("Address already in use");
                    failure = reason;
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(format!("sshd did not start: {failure}"))
    }

    /// The keys, configuration and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The logs of every sshd (authentication failures, the commands they ran).
    pub fn log(&self) -> String {
        (0..self.children.len())
            .map(|i| std::fs::read_to_string(self.dir.path().join(log_name(i))).unwrap_or_default())
            .collect()
    }

    /// The `known_hosts` line OpenSSH would record for `address`.
    pub fn known_hosts_entry(&self, address: &str) -> String {
        format!("[{address}]:{} {}", self.port, self.host_public_key)
    }
}

fn log_name(i: usize) -> String {
    format!("sshd-{i}.log")
}

/// One try on a free port, in a directory of its own with new keys: the outer error is a setup
/// failure, the inner one why sshd did not start.
fn attempt(launch: &Launch<'_>, user: &str) -> Result<Result<Sshds, String>, String> {
    let dir = tempfile::Builder::new()
        .prefix(launch.dir_prefix)
        .tempdir()
        .map_err(|e| format!("cannot make a directory for sshd: {e}"))?;
    let (host_key, host_public_key) = keygen(dir.path(), "host_ed25519")?;
    let (identity, client_public) = keygen(dir.path(), "id_ed25519")?;
    let authorized_keys = dir.path().join("authorized_keys");
    let options = match launch.environment {
        Some((name, value)) => format!("environment=\"{name}={value}\" "),
        None => String::new(),
    };
    write(&authorized_keys, format!("{options}{client_public}\n"))?;
    let port = free_port()?;
    let files = Files {
        launch,
        dir: dir.path(),
        host_key: &host_key,
        authorized_keys: &authorized_keys,
        port,
    };
    let mut children = Vec::new();
    let started = launch
        .addresses
        .chunks(MAX_LISTEN_SOCKETS)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            children.push(files.spawn(i, chunk)?);
            let child = children.last_mut().expect("just pushed");
            wait_until_listening(child, chunk, port, START_TIMEOUT).map_err(|e| {
                let log = std::fs::read_to_string(dir.path().join(log_name(i))).unwrap_or_default();
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
        stop(&mut children, launch.guard.is_some());
        return Ok(Err(reason));
    }
    Ok(Ok(Sshds {
        port,
        user: user.to_owned(),
        identity,
        host_public_key,
        children,
        guarded: launch.guard.is_some(),
        dir,
    }))
}

/// A new ed25519 key pair `dir/name` (and `.pub`): its path and public key line
/// (`ssh-ed25519 AAAA...`).
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, String), String> {
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

fn write(path: &Path, text: String) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// What every sshd of one start shares.
struct Files<'a> {
    launch: &'a Launch<'a>,
    dir: &'a Path,
    host_key: &'a Path,
    authorized_keys: &'a Path,
    port: u16,
}

impl Files<'_> {
    /// sshd number `i`, for `addresses`, logging to `sshd-<i>.log`.
    fn spawn(&self, i: usize, addresses: &[String]) -> Result<Child, String> {
        let config = self.dir.join(format!("sshd-{i}.conf"));
        write(&config, self.config(i, addresses))?;
        let log_path = self.dir.join(log_name(i));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let sshd = self.launch.sshd;
        let mut command = match self.launch.guard {
            Some(program) => {
                let mut command = Command::new(program);
                command
                    .arg("sim-node-guard")
                    .arg("--remove-dir")
                    .arg(self.dir)
                    .arg(sshd)
                    // Held by this process: when it closes, the guard stops sshd.
                    .stdin(Stdio::piped());
                command
            }
            None => {
                let mut command = Command::new(sshd);
                command.stdin(Stdio::null());
                command
            }
        };
        command
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", sshd.display()))
    }

    fn config(&self, i: usize, addresses: &[String]) -> String {
        let port = self.port;
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
        if let Some((name, _)) = self.launch.environment {
            text.push_str(&format!("PermitUserEnvironment {name}\n"));
        }
        for address in addresses {
            text.push_str(&format!("ListenAddress {address}:{port}\n"));
        }
        // Match blocks last: everything after one belongs to it.
        for address in addresses {
            if let Some(command) = (self.launch.force_command)(address) {
                text.push_str(&format!(
                    "Match LocalAddress {address}\n    ForceCommand {command}\n"
                ));
            }
        }
        text
    }
}

/// `'text'` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
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

/// Waits (bounded by `within`) until `child` (an sshd, or its guard) accepts TCP connections on
/// `port` at every address; fails at once if it exits.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_commands_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
