//! One host's SSH session: connect, verify the host key, authenticate, run, collect output.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::config::SshConfig;
use super::known_hosts::{HostKeyStatus, KnownHosts};
use super::outcome::{
    FanoutError, HostOutcome, OutputLine, OutputStream, TAIL_LINES, TimeoutPhase,
};
use super::tail::{LineSplitter, Tail};

/// Everything the host tasks share; built once per fan-out so the key file and known_hosts
/// are read and parsed once, not once per host as `pdsh -R ssh` (one ssh process per host) does.
pub(crate) struct Shared {
    ssh: SshConfig,
    client: Arc<client::Config>,
    key: Arc<PrivateKey>,
    pub(crate) key_fingerprint: String,
    known_hosts: KnownHosts,
    output: Option<mpsc::Sender<OutputLine>>,
}

// Hand-written so the private key can never end up in a log line through `{:?}`.
impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("ssh", &self.ssh)
            .field("key", &self.key_fingerprint)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        ssh: SshConfig,
        known_hosts: KnownHosts,
        output: Option<mpsc::Sender<OutputLine>>,
    ) -> Result<Self, FanoutError> {
        let identity_error = |reason: String| FanoutError::Identity {
            path: ssh.identity_file.clone(),
            reason,
        };
        // The russh error texts name the problem (missing file, encrypted, unsupported type),
        // never the key bytes.
        let key = russh::keys::load_secret_key(&ssh.identity_file, None)
            .map_err(|e| identity_error(e.to_string()))?;
        let key_fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let client = client::Config {
            // Commands are tiny and interactive-sized; Nagle would only add latency per round trip.
            nodelay: true,
            ..client::Config::default()
        };
        Ok(Self {
            ssh,
            client: Arc::new(client),
            key: Arc::new(key),
            key_fingerprint,
            known_hosts,
            output,
        })
    }
}

/// What a host's task hands back: only what the fan-out keeps. The session, its buffers and
/// the output beyond the tails are gone by the time this exists.
#[derive(Debug)]
pub(crate) struct HostRun {
    pub outcome: HostOutcome,
    pub duration: Duration,
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
}

/// Runs `command` on `host`; never fails, every problem becomes the result's outcome.
pub(crate) async fn run_on_host(
    shared: Arc<Shared>,
    host: Arc<str>,
    command: Arc<str>,
    cancel: CancellationToken,
) -> HostRun {
    let started = Instant::now();
    let mut output = Output::new(host.clone(), shared.output.clone());
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => HostOutcome::Cancelled,
        outcome = connect_and_run(&shared, &host, &command, &cancel, &mut output) => outcome,
    };
    let (stdout_tail, stderr_tail) = output.finish().await;
    HostRun {
        outcome,
        duration: started.elapsed(),
        stdout_tail,
        stderr_tail,
    }
}

async fn connect_and_run(
    shared: &Arc<Shared>,
    host: &str,
    command: &str,
    cancel: &CancellationToken,
    output: &mut Output,
) -> HostOutcome {
    let handle = match timeout(shared.ssh.connect_timeout, connect(shared, host)).await {
        Ok(Ok(handle)) => handle,
        Ok(Err(outcome)) => return outcome,
        Err(_) => return HostOutcome::TimedOut(TimeoutPhase::Connect),
    };
    let deadline = tokio::time::Instant::now() + shared.ssh.command_timeout;
    let outcome = execute(&handle, command, deadline, cancel, output).await;
    // Best effort and bounded: the result is already known, a slow goodbye must not delay it.
    let _ = timeout(
        Duration::from_secs(1),
        handle.disconnect(Disconnect::ByApplication, "", "en"),
    )
    .await;
    outcome
}

async fn connect(shared: &Arc<Shared>, host: &str) -> Result<Handle<HostKeyCheck>, HostOutcome> {
    let ssh = &shared.ssh;
    let address = ssh.address_of(host);
    // A literal address skips tokio's resolver, which runs getaddrinfo on a blocking thread:
    // with a large fan-out that would spin up one OS thread (and malloc arena) per host.
    let connected = match address.parse::<IpAddr>() {
        Ok(ip) => TcpStream::connect((ip, ssh.port)).await,
        Err(_) => TcpStream::connect((address, ssh.port)).await,
    };
    let tcp =
        connected.map_err(|e| HostOutcome::ConnectFailed(describe_connect_error(address, &e)))?;
    let _ = tcp.set_nodelay(true);

    let rejection = Arc::new(Mutex::new(None));
    let check = HostKeyCheck {
        shared: shared.clone(),
        names: vec![host.to_owned(), address.to_owned()],
        rejection: rejection.clone(),
    };
    let mut handle = client::connect_stream(shared.client.clone(), tcp, check)
        .await
        .map_err(|e| {
            // A refused host key surfaces from russh as a generic error; our reason is better.
            let reason = rejection.lock().ok().and_then(|mut r| r.take());
            match reason {
                Some(reason) => HostOutcome::HostKeyRejected(reason),
                None => HostOutcome::ConnectFailed(format!("SSH handshake failed: {e}")),
            }
        })?;

    // RSA keys need the server's preferred signature hash (rsa-sha2-512/256); asking costs
    // nothing extra since the answer came with the handshake, but only RSA needs it.
    let hash = if matches!(shared.key.algorithm(), Algorithm::Rsa { .. }) {
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(
            ssh.user.clone(),
            PrivateKeyWithHashAlg::new(shared.key.clone(), hash),
        )
        .await
        .map_err(|e| HostOutcome::AuthFailed(e.to_string()))?;
    if !auth.success() {
        return Err(HostOutcome::AuthFailed(format!(
            "server refused key {} for user {}",
            shared.key_fingerprint, ssh.user
        )));
    }
    Ok(handle)
}

async fn execute(
    handle: &Handle<HostKeyCheck>,
    command: &str,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
    output: &mut Output,
) -> HostOutcome {
    let mut channel = match timeout_at(deadline, handle.channel_open_session()).await {
        Some(Ok(channel)) => channel,
        Some(Err(e)) => return HostOutcome::SessionFailed(format!("cannot open session: {e}")),
        None => return HostOutcome::TimedOut(TimeoutPhase::Command),
    };
    if let Err(e) = channel.exec(true, command).await {
        return HostOutcome::SessionFailed(format!("cannot start command: {e}"));
    }
    let mut status = None;
    let mut signal = None;
    loop {
        let message = tokio::select! {
            message = channel.wait() => message,
            () = sleep_until(deadline) => {
                // Best effort: without a pty, hanging up sends the command no SIGHUP, so ask
                // sshd to TERM it. OpenSSH honours this only for non-root logins (root
                // sessions run without privilege separation, where sshd refuses signals), so
                // for root the command may outlive the timeout, exactly as under `pdsh -u`.
                let _ = timeout(Duration::from_secs(1), channel.signal(Sig::TERM)).await;
                return HostOutcome::TimedOut(TimeoutPhase::Command);
            }
            () = cancel.cancelled() => {
                let _ = timeout(Duration::from_secs(1), channel.signal(Sig::TERM)).await;
                return HostOutcome::Cancelled;
            }
        };
        let Some(message) = message else { break };
        match message {
            ChannelMsg::Data { data } => output.push(OutputStream::Stdout, &data).await,
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                output.push(OutputStream::Stderr, &data).await;
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                let mut name = signal_text(&signal_name);
                if core_dumped {
                    name.push_str(" (core dumped)");
                }
                signal = Some(name);
            }
            ChannelMsg::Failure => {
                return HostOutcome::SessionFailed("server refused to run the command".into());
            }
            _ => {}
        }
    }
    match (status, signal) {
        (Some(status), _) => HostOutcome::Exited(status),
        (None, Some(signal)) => HostOutcome::Signal(signal),
        (None, None) => {
            HostOutcome::SessionFailed("connection closed before the command exited".into())
        }
    }
}

async fn timeout_at<F: std::future::Future>(
    deadline: tokio::time::Instant,
    future: F,
) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, future).await.ok()
}

fn signal_text(signal: &Sig) -> String {
    match signal {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(name) => name.clone(),
    }
}

/// Short, stable texts for the failures an admin sees most (`connection refused`), the OS
/// text otherwise.
fn describe_connect_error(address: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::TimedOut => "connection timed out".into(),
        _ => format!("cannot connect to {address}: {error}"),
    }
}

/// russh client handler: decides on the server's host key against known_hosts.
struct HostKeyCheck {
    shared: Arc<Shared>,
    /// The name as given and the address dialled: a known_hosts entry may use either.
    names: Vec<String>,
    rejection: Arc<Mutex<Option<String>>>,
}

impl HostKeyCheck {
    fn verdict(&self, key: &PublicKeyOrCertificate) -> Result<(), String> {
        let shared = &self.shared;
        let file = shared.ssh.known_hosts_file.display();
        let host = &self.names[0];
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return Err("host certificates are not supported".into());
            }
        };
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        match shared.known_hosts.check(&names, shared.ssh.port, key) {
            HostKeyStatus::Match => Ok(()),
            HostKeyStatus::Unknown if shared.ssh.accept_unknown_host_keys => Ok(()),
            HostKeyStatus::Unknown => Err(format!(
                "{host} presented {} which is not in {file} (and unknown host keys are not accepted)",
                key.fingerprint(HashAlg::Sha256)
            )),
            HostKeyStatus::Mismatch { fingerprint, lines } => Err(format!(
                "{host} presented {fingerprint} which does not match {file} line(s) {}; \
                 possible man-in-the-middle or a reinstalled node",
                lines
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            HostKeyStatus::Revoked { fingerprint, line } => Err(format!(
                "{host} presented {fingerprint} which is revoked in {file} line {line}"
            )),
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match self.verdict(server_public_key) {
            Ok(()) => Ok(true),
            Err(reason) => {
                if let Ok(mut slot) = self.rejection.lock() {
                    *slot = Some(reason);
                }
                Ok(false)
            }
        }
    }
}

/// A host's output: line splitting, bounded tails, optional live streaming.
struct Output {
    host: Arc<str>,
    sink: Option<mpsc::Sender<OutputLine>>,
    stdout: (LineSplitter, Tail),
    stderr: (LineSplitter, Tail),
    pending: Vec<String>,
}

impl Output {
    fn new(host: Arc<str>, sink: Option<mpsc::Sender<OutputLine>>) -> Self {
        Self {
            host,
            sink,
            stdout: (LineSplitter::new(), Tail::new(TAIL_LINES)),
            stderr: (LineSplitter::new(), Tail::new(TAIL_LINES)),
            pending: Vec::new(),
        }
    }

    async fn push(&mut self, stream: OutputStream, chunk: &[u8]) {
        let (splitter, _) = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        let pending = &mut self.pending;
        splitter.push(chunk, |line| pending.push(line));
        self.flush(stream).await;
    }

    async fn flush(&mut self, stream: OutputStream) {
        let lines = std::mem::take(&mut self.pending);
        for line in lines {
            if let Some(sink) = &self.sink
                && sink
                    .send(OutputLine {
                        host: self.host.clone(),
                        stream,
                        line: line.clone(),
                    })
                    .await
                    .is_err()
            {
                self.sink = None;
            }
            match stream {
                OutputStream::Stdout => self.stdout.1.push(line),
                OutputStream::Stderr => self.stderr.1.push(line),
            }
        }
    }

    async fn finish(mut self) -> (Vec<String>, Vec<String>) {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let (splitter, _) = match stream {
                OutputStream::Stdout => &mut self.stdout,
                OutputStream::Stderr => &mut self.stderr,
            };
            let pending = &mut self.pending;
            splitter.finish(|line| pending.push(line));
            self.flush(stream).await;
        }
        (self.stdout.1.into_vec(), self.stderr.1.into_vec())
    }
}
