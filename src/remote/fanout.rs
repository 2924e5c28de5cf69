//! Runs one command on many hosts over SSH with bounded concurrency, like `pdsh -f N -w HOSTS`.
//!
//! Setup problems (unreadable key, broken known_hosts, nonsensical limits) fail the whole call
//! with [`FanoutError`]; everything that goes wrong on one host is that host's [`HostOutcome`],
//! so one bad node never hides the results of the other thousand.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::SshConfig;
use super::known_hosts::{KnownHosts, KnownHostsError};
use super::outcome::{FanoutError, FanoutReport, HostOutcome, HostResult, OutputLine};
use super::ssh::{self, HostRun, Shared};

/// Runs `command` on every host and waits for all of them.
pub async fn run(
    cfg: &SshConfig,
    hosts: &[String],
    command: &str,
    cancel: Option<CancellationToken>,
) -> Result<FanoutReport, FanoutError> {
    run_with_output(cfg, hosts, command, cancel, None).await
}

/// Like [`run`], also sending every output line to `output` as it arrives. A slow receiver
/// slows the hosts down (backpressure) rather than buffering without bound; a dropped receiver
/// is ignored.
pub async fn run_with_output(
    cfg: &SshConfig,
    hosts: &[String],
    command: &str,
    cancel: Option<CancellationToken>,
    output: Option<mpsc::Sender<OutputLine>>,
) -> Result<FanoutReport, FanoutError> {
    let shared = Arc::new(prepare(cfg, output)?);
    let cancel = cancel.unwrap_or_default();
    let command: Arc<str> = command.into();
    let started = Utc::now();
    let clock = Instant::now();

    // The same name twice would run the command twice on one node; pdsh dedups too.
    let mut seen = std::collections::HashSet::new();
    let hosts: Vec<&String> = hosts.iter().filter(|h| seen.insert(*h)).collect();

    let mut kept = Kept::new(hosts.len());
    let mut tasks = JoinSet::new();
    // Only the running hosts: at most `fanout` entries, whatever the host count.
    let mut index_of_task = HashMap::with_capacity(cfg.fanout.min(hosts.len()));
    let mut next = 0;
    // Tasks are spawned (rather than polled in one future) so TLS-like per-connection crypto
    // spreads over all runtime workers; at most `fanout` exist at any time.
    loop {
        while next < hosts.len() && tasks.len() < cfg.fanout && !cancel.is_cancelled() {
            let task = tasks.spawn(ssh::run_on_host(
                shared.clone(),
                hosts[next].as_str().into(),
                command.clone(),
                cancel.clone(),
            ));
            index_of_task.insert(task.id(), next);
            next += 1;
        }
        let Some(joined) = tasks.join_next_with_id().await else {
            break;
        };
        let (id, run) = match joined {
            Ok(finished) => finished,
            // A panic in one host's task must not take the fan-out down with it.
            Err(error) => (
                error.id(),
                HostRun {
                    outcome: HostOutcome::SessionFailed(format!("internal error: {error}")),
                    duration: Duration::ZERO,
                    stdout_tail: Vec::new(),
                    stderr_tail: Vec::new(),
                },
            ),
        };
        if let Some(index) = index_of_task.remove(&id) {
            kept.keep(index, run);
        }
    }

    Ok(FanoutReport {
        results: kept.into_results(&hosts),
        started,
        duration: clock.elapsed(),
    })
}

/// What the fan-out keeps of the finished hosts until it reports: outcome and duration in one
/// array sized once, and all output tails packed into one text buffer. Keeping each host's
/// tail lines in allocations of their own (a few tens of bytes each, made while other hosts'
/// sessions come and go) scatters long-lived blocks through the memory the sessions free, so
/// the allocator can neither reuse nor return it, and the process grows with the host count
/// although only `fanout` sessions exist at a time. Per-host results are built once, at the end.
struct Kept {
    hosts: Vec<Option<KeptHost>>,
    /// The kept lines, back to back; line `i` ends at `ends[i]`.
    text: String,
    ends: Vec<usize>,
}

struct KeptHost {
    outcome: HostOutcome,
    duration: Duration,
    stdout: Range<usize>,
    stderr: Range<usize>,
}

impl Kept {
    fn new(hosts: usize) -> Self {
        Self {
            hosts: std::iter::repeat_with(|| None).take(hosts).collect(),
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Keeps host `index`'s outcome, duration and tails; `run`'s own buffers are freed here.
    fn keep(&mut self, index: usize, run: HostRun) {
        let stdout = self.keep_lines(run.stdout_tail);
        let stderr = self.keep_lines(run.stderr_tail);
        self.hosts[index] = Some(KeptHost {
            outcome: run.outcome,
            duration: run.duration,
            stdout,
            stderr,
        });
    }

    fn keep_lines(&mut self, lines: Vec<String>) -> Range<usize> {
        let first = self.ends.len();
        for line in lines {
            self.text.push_str(&line);
            self.ends.push(self.text.len());
        }
        first..self.ends.len()
    }

    /// One result per host, in `hosts` order; hosts that never finished are cancelled.
    fn into_results(self, hosts: &[&String]) -> Vec<HostResult> {
        let Kept {
            hosts: kept,
            text,
            ends,
        } = self;
        let lines = |range: Range<usize>| -> Vec<String> {
            range
                .map(|i| {
                    let start = if i == 0 { 0 } else { ends[i - 1] };
                    text[start..ends[i]].to_owned()
                })
                .collect()
        };
        hosts
            .iter()
            .zip(kept)
            .map(|(host, kept)| {
                let (outcome, duration, stdout_tail, stderr_tail) = match kept {
                    Some(kept) => (
                        kept.outcome,
                        kept.duration,
                        lines(kept.stdout),
                        lines(kept.stderr),
                    ),
                    None => (
                        HostOutcome::Cancelled,
                        Duration::ZERO,
                        Vec::new(),
                        Vec::new(),
                    ),
                };
                HostResult {
                    host: (*host).clone(),
                    outcome,
                    duration,
                    stdout_tail,
                    stderr_tail,
                }
            })
            .collect()
    }
}

/// Checks what a fan-out needs before it contacts any host, without contacting one: the
/// configuration, the identity (readable, unencrypted, a supported key type) and the
/// known_hosts file (readable and well-formed, unless unknown keys are accepted and there is
/// none). Returns the identity's fingerprint (`SHA256:...`), or every problem found.
pub fn preflight(cfg: &SshConfig) -> Result<String, Vec<FanoutError>> {
    if let Some(reason) = &cfg.unavailable {
        return Err(vec![FanoutError::Unavailable(reason.clone())]);
    }
    let known_hosts = load_known_hosts(cfg);
    let shared = prepare_with(cfg, KnownHosts::default(), None);
    match (shared, known_hosts) {
        (Ok(shared), Ok(_)) => Ok(shared.key_fingerprint),
        (shared, known_hosts) => Err([shared.err(), known_hosts.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

/// The configuration checked, the identity and the known hosts loaded.
fn prepare(
    cfg: &SshConfig,
    output: Option<mpsc::Sender<OutputLine>>,
) -> Result<Shared, FanoutError> {
    if let Some(reason) = &cfg.unavailable {
        return Err(FanoutError::Unavailable(reason.clone()));
    }
    prepare_with(cfg, load_known_hosts(cfg)?, output)
}

fn prepare_with(
    cfg: &SshConfig,
    known_hosts: KnownHosts,
    output: Option<mpsc::Sender<OutputLine>>,
) -> Result<Shared, FanoutError> {
    if cfg.fanout == 0 {
        return Err(FanoutError::InvalidConfig(
            "fanout must be at least 1".into(),
        ));
    }
    Shared::new(cfg.clone(), known_hosts, output)
}

fn load_known_hosts(cfg: &SshConfig) -> Result<KnownHosts, FanoutError> {
    match KnownHosts::load(&cfg.known_hosts_file) {
        Ok(known) => Ok(known),
        // Without a file every host is unknown, which is only usable when unknown keys are
        // accepted; otherwise the missing file is the setup error to report, not 1000 refusals.
        Err(KnownHostsError::Read { source, .. })
            if cfg.accept_unknown_host_keys && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(KnownHosts::default())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::outcome::{TAIL_LINES, TimeoutPhase};
    use super::super::tail::Tail;
    use super::*;

    fn result(host: &str, outcome: HostOutcome) -> HostResult {
        HostResult {
            host: host.into(),
            outcome,
            duration: Duration::from_millis(5),
            stdout_tail: vec![],
            stderr_tail: vec![],
        }
    }

    fn report(results: Vec<HostResult>) -> FanoutReport {
        FanoutReport {
            results,
            started: Utc::now(),
            duration: Duration::from_secs(1),
        }
    }

    #[test]
    fn summary_names_first_failures() {
        let ok = report(vec![result("a", HostOutcome::Exited(0)); 3]);
        assert_eq!(ok.summary(), "all 3 hosts succeeded");
        assert!(ok.all_succeeded());

        let mut results = vec![
            result(
                "n1",
                HostOutcome::ConnectFailed("connection refused".into()),
            ),
            result("n2", HostOutcome::Exited(0)),
            result("n3", HostOutcome::Exited(3)),
        ];
        results.extend((4..10).map(|i| {
            result(
                &format!("n{i}"),
                HostOutcome::TimedOut(TimeoutPhase::Command),
            )
        }));
        let failed = report(results);
        assert_eq!(failed.failed().count(), 8);
        assert_eq!(
            failed.summary(),
            "8 of 9 hosts failed: n1 connection refused, n3 exited with status 3, \
             n4 command timed out, n5 command timed out, n6 command timed out, and 3 more"
        );
    }

    #[test]
    fn outcomes_serialize_for_step_data() {
        let json = serde_json::to_value(result("n1", HostOutcome::TimedOut(TimeoutPhase::Connect)))
            .expect("serialize");
        assert_eq!(
            json["outcome"],
            serde_json::json!({"status": "timed_out", "detail": "connect"})
        );
        assert_eq!(json["duration"], "5ms");
        let back: HostResult = serde_json::from_value(json).expect("round trip");
        assert_eq!(back.outcome, HostOutcome::TimedOut(TimeoutPhase::Connect));
        let cancelled = serde_json::to_value(HostOutcome::Cancelled).expect("serialize");
        assert_eq!(cancelled, serde_json::json!({"status": "cancelled"}));
    }

    #[test]
    fn kept_results_hold_only_outcome_duration_and_tails() {
        let names = ["n1".to_owned(), "n2".to_owned(), "n3".to_owned()];
        let hosts: Vec<&String> = names.iter().collect();
        let mut kept = Kept::new(hosts.len());
        // n2 printed 1000 lines; its task hands over the tail, which is all that stays.
        let mut tail = Tail::new(TAIL_LINES);
        for i in 0..1000 {
            tail.push(format!("line {i}"));
        }
        kept.keep(
            1,
            HostRun {
                outcome: HostOutcome::Exited(0),
                duration: Duration::from_millis(7),
                stdout_tail: tail.into_vec(),
                stderr_tail: vec!["warning".into()],
            },
        );
        kept.keep(
            0,
            HostRun {
                outcome: HostOutcome::Exited(3),
                duration: Duration::from_millis(5),
                stdout_tail: vec![],
                stderr_tail: vec!["boom".into()],
            },
        );
        let tail_text: usize = (980..1000).map(|i| format!("line {i}").len()).sum();
        assert_eq!(kept.text.len(), tail_text + "warning".len() + "boom".len());
        assert_eq!(kept.ends.len(), TAIL_LINES + 2);

        let results = kept.into_results(&hosts);
        assert_eq!(
            results[0],
            HostResult {
                host: "n1".into(),
                outcome: HostOutcome::Exited(3),
                duration: Duration::from_millis(5),
                stdout_tail: vec![],
                stderr_tail: vec!["boom".into()],
            }
        );
        let expected: Vec<String> = (980..1000).map(|i| format!("line {i}")).collect();
        assert_eq!(results[1].stdout_tail, expected);
        assert_eq!(results[1].stderr_tail, ["warning"]);
        assert_eq!(results[1].duration, Duration::from_millis(7));
        // n3 never finished (the fan-out was cancelled before it ran).
        assert_eq!(results[2].host, "n3");
        assert_eq!(results[2].outcome, HostOutcome::Cancelled);
        assert!(results[2].stdout_tail.is_empty() && results[2].stderr_tail.is_empty());
    }

    #[tokio::test]
    async fn setup_errors_are_fanout_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SshConfig {
            identity_file: dir.path().join("missing_key"),
            known_hosts_file: dir.path().join("missing_known_hosts"),
            ..SshConfig::default()
        };
        let hosts = vec!["h".to_owned()];
        let err = run(&cfg, &hosts, "true", None)
            .await
            .expect_err("no known_hosts");
        assert!(matches!(err, FanoutError::KnownHosts(_)), "{err}");

        let cfg = SshConfig {
            accept_unknown_host_keys: true,
            ..cfg
        };
        let err = run(&cfg, &hosts, "true", None).await.expect_err("no key");
        assert!(matches!(err, FanoutError::Identity { .. }), "{err}");

        let cfg = SshConfig { fanout: 0, ..cfg };
        let err = run(&cfg, &hosts, "true", None).await.expect_err("fanout 0");
        assert!(matches!(err, FanoutError::InvalidConfig(_)), "{err}");
    }
}
