//! `etcd-repopulator fanout`: the fan-out engine as a pdsh-like command for administrators
//! (and for benchmarking against pdsh). Output is `host: line`, like pdsh; a summary and the
//! failed hosts go to stderr; the exit status is 1 if any host failed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;

use super::config::SshConfig;
use super::hostlist;
use super::{
    fanout,
    outcome::{OutputLine, OutputStream},
};

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Target hosts as a hostlist (`nid[000001-000064]-nmn,ncn-w00[1-4]-can.local`), or
    /// `^FILE` for a file of hosts (one or more per line, `#` comments). Repeatable.
    #[arg(short = 'w', value_name = "HOSTLIST", required = true)]
    pub hosts: Vec<String>,
    /// Hosts to leave out (hostlist or `^FILE`). Repeatable.
    #[arg(short = 'x', value_name = "HOSTLIST")]
    pub exclude: Vec<String>,
    /// How many hosts to work on at once.
    #[arg(short = 'f', value_name = "FANOUT", default_value_t = SshConfig::default().fanout)]
    pub fanout: usize,
    /// Remote user.
    #[arg(short = 'l', value_name = "USER", default_value_t = SshConfig::default().user)]
    pub user: String,
    #[arg(short = 'p', value_name = "PORT", default_value_t = SshConfig::default().port)]
    pub port: u16,
    /// Private key (unencrypted OpenSSH or PKCS#8).
    #[arg(short = 'i', value_name = "IDENTITY", default_value_os_t = SshConfig::default().identity_file)]
    pub identity: PathBuf,
    #[arg(long, value_name = "FILE", default_value_os_t = SshConfig::default().known_hosts_file)]
    pub known_hosts: PathBuf,
    /// Accept hosts missing from known_hosts (a changed key is still refused).
    #[arg(long)]
    pub accept_unknown_host_keys: bool,
    /// Bound on connect, handshake and authentication per host (e.g. 10s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Bound on running the command per host.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    pub command_timeout: Duration,
    /// A file in /etc/hosts format (`ADDRESS NAME...`) mapping host names to addresses before
    /// DNS is consulted.
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// The command, run by the remote user's shell; words are joined with spaces like pdsh.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl FanoutArgs {
    fn ssh_config(&self) -> anyhow::Result<SshConfig> {
        let hosts = match &self.hosts_file {
            Some(path) => read_hosts_file(path)?,
            None => BTreeMap::new(),
        };
        Ok(SshConfig {
            user: self.user.clone(),
            port: self.port,
            identity_file: self.identity.clone(),
            known_hosts_file: self.known_hosts.clone(),
            accept_unknown_host_keys: self.accept_unknown_host_keys,
            fanout: self.fanout,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            hosts,
            unavailable: None,
        })
    }

    fn target_hosts(&self) -> anyhow::Result<Vec<String>> {
        let mut hosts = Vec::new();
        for spec in &self.hosts {
            hosts.extend(expand_spec(spec)?);
        }
        let mut excluded = std::collections::HashSet::new();
        for spec in &self.exclude {
            excluded.extend(expand_spec(spec)?);
        }
        hosts.retain(|h| !excluded.contains(h));
        if hosts.is_empty() {
            bail!("no hosts left to run on");
        }
        Ok(hosts)
    }
}

/// Expands one `-w`/`-x` value: a hostlist, or `^FILE` whose lines are hostlists.
fn expand_spec(spec: &str) -> anyhow::Result<Vec<String>> {
    let (text, origin) = match spec.strip_prefix('^') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read host file {path}"))?;
            let text: Vec<&str> = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or_default())
                .collect();
            (text.join("\n"), format!("host file {path}"))
        }
        None => (spec.to_owned(), format!("hostlist {spec:?}")),
    };
    hostlist::expand(&text).with_context(|| format!("invalid {origin}"))
}

fn read_hosts_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hosts file {}", path.display()))?;
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(address) = fields.next() else {
            continue;
        };
        for name in fields {
            // Like /etc/hosts: the first line naming a host wins.
            map.entry(name.to_owned())
                .or_insert_with(|| address.to_owned());
        }
    }
    Ok(map)
}

pub async fn run_cli(args: FanoutArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.ssh_config()?;
    let hosts = args.target_hosts()?;
    let command = args.command.join(" ");

    let (sender, receiver) = mpsc::channel(1024);
    let printer = tokio::task::spawn_blocking(move || print_lines(receiver));
    let cancel = tokio_util::sync::CancellationToken::new();
    // Ctrl-C stops cleanly: running hosts are reported as cancelled, the summary still prints.
    let on_interrupt = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let report = fanout::run_with_output(&cfg, &hosts, &command, Some(cancel), Some(sender)).await;
    on_interrupt.abort();
    // The sender was moved into the fan-out and is dropped by now, so the printer drains and ends.
    printer.await.context("output printer failed")?;
    let report = report?;

    let mut stderr = std::io::stderr().lock();
    for failed in report.failed() {
        writeln!(stderr, "{}: {}", failed.host, failed.outcome)?;
    }
    writeln!(
        stderr,
        "{} ({})",
        report.summary(),
        humantime::format_duration(Duration::from_millis(report.duration.as_millis() as u64))
    )?;
    Ok(if report.all_succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints `host: line` as pdsh does, stdout lines to stdout and stderr lines to stderr.
/// Runs on a blocking thread so a slow terminal or pipe never stalls the runtime's workers.
fn print_lines(mut receiver: mpsc::Receiver<OutputLine>) {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(line) = receiver.blocking_recv() {
        let written = match line.stream {
            OutputStream::Stdout => writeln!(stdout, "{}: {}", line.host, line.line),
            OutputStream::Stderr => {
                // Keep the two streams in order relative to each other.
                let _ = stdout.flush();
                writeln!(std::io::stderr(), "{}: {}", line.host, line.line)
            }
        };
        // A closed pipe (`| head`) is not an error worth failing the fan-out for.
        if written.is_err() {
            break;
        }
        if receiver.is_empty() {
            let _ = stdout.flush();
        }
    }
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FanoutArgs,
    }

    fn parse(argv: &[&str]) -> FanoutArgs {
        match Cli::try_parse_from(std::iter::once("fanout").chain(argv.iter().copied())) {
            Ok(cli) => cli.args,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn pdsh_style_arguments() {
        let args = parse(&[
            "-w",
            "ncn-w00[0-4]-can.local",
            "-w",
            "ncn-s001-can.local",
            "-x",
            "ncn-w002-can.local",
            "-f",
            "8",
            "--command-timeout",
            "90s",
            "systemctl",
            "restart",
            "cray-dvs-orca",
        ]);
        assert_eq!(args.fanout, 8);
        assert_eq!(args.user, "root");
        assert_eq!(args.command_timeout, Duration::from_secs(90));
        assert_eq!(args.command.join(" "), "systemctl restart cray-dvs-orca");
        let hosts = args.target_hosts().expect("hosts");
        assert_eq!(
            hosts,
            [
                "ncn-w000-can.local",
                "ncn-w001-can.local",
                "ncn-w003-can.local",
                "ncn-w004-can.local",
                "ncn-s001-can.local"
            ]
        );
    }

    #[test]
    fn command_may_contain_dashes() {
        let args = parse(&["-w", "a", "ls", "-l", "/tmp"]);
        assert_eq!(args.command, ["ls", "-l", "/tmp"]);
    }

    #[test]
    fn caret_reads_a_host_file_like_the_runbook_tmpfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hosts");
        std::fs::write(
            &file,
            "nid000001-nmn\nnid000002-nmn # comment\n\n# all\nnid00000[3-4]-nmn\n",
        )
        .expect("write");
        let hosts = expand_spec(&format!("^{}", file.display())).expect("expand");
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[3], "nid000004-nmn");
        let err = expand_spec("^/nonexistent/hosts").expect_err("missing file");
        assert!(format!("{err:#}").contains("cannot read host file"));
        let err = expand_spec("n[1-").expect_err("bad hostlist");
        assert!(format!("{err:#}").contains("never closed"), "{err:#}");
    }

    #[test]
    fn hosts_file_maps_names_to_addresses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hosts");
        std::fs::write(&file, "127.0.0.2 nid000001-nmn n1 # c\n127.0.0.9 n1\n# x\n")
            .expect("write");
        let map = read_hosts_file(&file).expect("read");
        assert_eq!(
            map.get("nid000001-nmn").map(String::as_str),
            Some("127.0.0.2")
        );
        assert_eq!(map.get("n1").map(String::as_str), Some("127.0.0.2"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn excluding_everything_is_an_error() {
        let args = parse(&["-w", "a,b", "-x", "a", "-x", "b", "true"]);
        assert!(args.target_hosts().is_err());
    }
}
