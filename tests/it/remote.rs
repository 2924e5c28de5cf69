//! The SSH fan-out against a real OpenSSH sshd on loopback.
//!
//! Node `nid00000N-nmn` is reached at 127.0.0.(N+1) through `SshConfig.hosts`; the remote
//! command proves where it ran by touching a marker named after the server address in
//! `$SSH_CONNECTION`.

use crate::common::sshd;

use std::path::PathBuf;
use std::time::Duration;

use etcd_repopulator::remote::{self, HostOutcome, SshConfig, TimeoutPhase};
use sshd::Sshd;
use tokio_util::sync::CancellationToken;

fn node(n: usize) -> String {
    format!("nid{n:06}-nmn")
}

fn address(n: usize) -> String {
    format!("127.0.0.{}", n + 1)
}

struct Fixture {
    sshd: Sshd,
    cfg: SshConfig,
    marks: PathBuf,
}

impl Fixture {
    /// sshd listening for nodes 1..=listening, known_hosts recording all of them, and the
    /// `hosts` map covering nodes 1..=mapped (those above `listening` refuse connections).
    fn new(listening: usize, mapped: usize) -> Self {
        let addresses: Vec<String> = (1..=listening).map(address).collect();
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let sshd = Sshd::start(&refs);
        let marks = sshd.path("marks");
        std::fs::create_dir(&marks).expect("marks dir");
        let cfg = SshConfig {
            user: sshd.user.clone(),
            port: sshd.port,
            identity_file: sshd.identity.clone(),
            known_hosts_file: sshd.path("known_hosts"),
            fanout: 16,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            hosts: (1..=mapped).map(|n| (node(n), address(n))).collect(),
            ..SshConfig::default()
        };
        let fixture = Fixture { sshd, cfg, marks };
        fixture.write_known_hosts(
            (1..=mapped)
                .map(|n| fixture.sshd.known_hosts_entry(&address(n)))
                .collect(),
        );
        fixture
    }

    fn write_known_hosts(&self, lines: Vec<String>) {
        std::fs::write(&self.cfg.known_hosts_file, lines.join("\n") + "\n").expect("known_hosts");
    }

    fn hosts(&self, nodes: impl IntoIterator<Item = usize>) -> Vec<String> {
        nodes.into_iter().map(node).collect()
    }

    fn ran_on(&self, n: usize) -> bool {
        self.marks.join(format!("ran-{}", address(n))).exists()
    }

    /// A shell command that leaves a marker for the server address it ran on, then `rest`.
    fn marking(&self, rest: &str) -> String {
        format!(
            "set -- $SSH_CONNECTION; touch {}/ran-$3; {rest}",
            self.marks.display()
        )
    }
}

async fn run(
    fixture: &Fixture,
    cfg: &SshConfig,
    hosts: &[String],
    command: &str,
) -> remote::FanoutReport {
    match remote::run(cfg, hosts, command, None).await {
        Ok(report) => report,
        Err(e) => panic!(
            "fan-out setup failed: {e}\nsshd log:\n{}",
            fixture.sshd.log()
        ),
    }
}

fn outcome_of<'a>(report: &'a remote::FanoutReport, host: &str) -> &'a HostOutcome {
    &report
        .results
        .iter()
        .find(|r| r.host == host)
        .unwrap_or_else(|| panic!("no result for {host}"))
        .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_runs_the_command() {
    let fx = Fixture::new(4, 4);
    let hosts = fx.hosts(1..=4);
    let report = run(&fx, &fx.cfg, &hosts, &fx.marking("echo hello from $3")).await;

    assert_eq!(
        report.summary(),
        "all 4 hosts succeeded",
        "{report:#?}\n{}",
        fx.sshd.log()
    );
    let names: Vec<&str> = report.results.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(names, hosts, "results come back in input order");
    for (n, result) in (1..=4).zip(&report.results) {
        assert_eq!(result.outcome, HostOutcome::Exited(0));
        assert_eq!(result.stdout_tail, [format!("hello from {}", address(n))]);
        assert!(result.stderr_tail.is_empty());
        assert!(fx.ran_on(n), "no marker for {}", node(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_records_status_and_stderr() {
    let fx = Fixture::new(3, 3);
    let hosts = fx.hosts(1..=3);
    let command = fx.marking(&format!(
        "if [ $3 = {} ]; then echo first >&2; echo boom >&2; exit 3; fi; seq 1 30",
        address(2)
    ));
    let report = run(&fx, &fx.cfg, &hosts, &command).await;

    let failed: Vec<_> = report.failed().collect();
    assert_eq!(failed.len(), 1, "{report:#?}");
    assert_eq!(failed[0].host, node(2));
    assert_eq!(failed[0].outcome, HostOutcome::Exited(3));
    assert_eq!(failed[0].stderr_tail, ["first", "boom"]);
    assert_eq!(
        report.summary(),
        format!("1 of 3 hosts failed: {} exited with status 3", node(2))
    );
    // Only the last lines are kept.
    let tail = &report.results[0].stdout_tail;
    assert_eq!(tail.len(), 20);
    assert_eq!(tail.first().map(String::as_str), Some("11"));
    assert_eq!(tail.last().map(String::as_str), Some("30"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_keep_only_the_tails_of_large_output() {
    let fx = Fixture::new(2, 2);
    let hosts = fx.hosts(1..=2);
    // 100 000 lines, then a 100 kB line without a newline on stdout; 50 lines on stderr.
    let command = "seq 1 100000; head -c 100000 /dev/zero | tr '\\0' x; seq 1 50 >&2";
    let report = run(&fx, &fx.cfg, &hosts, command).await;

    assert!(report.all_succeeded(), "{}", report.summary());
    for result in &report.results {
        let stdout = &result.stdout_tail;
        assert_eq!(stdout.len(), remote::outcome::TAIL_LINES, "{}", result.host);
        assert_eq!(stdout[0], "99982");
        assert_eq!(stdout[18], "100000");
        assert_eq!(
            stdout[19],
            format!("{} [line truncated]", "x".repeat(4096)),
            "a line is cut at 4 KiB"
        );
        let stderr: Vec<String> = (31..=50).map(|i| i.to_string()).collect();
        assert_eq!(result.stderr_tail, stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_sshd_is_connection_refused() {
    // Node 3 is mapped to 127.0.0.4, where nothing listens.
    let fx = Fixture::new(2, 3);
    let hosts = fx.hosts(1..=3);
    let report = run(&fx, &fx.cfg, &hosts, &fx.marking("true")).await;

    assert_eq!(
        outcome_of(&report, &node(3)),
        &HostOutcome::ConnectFailed("connection refused".into())
    );
    assert_eq!(report.failed().count(), 1, "{report:#?}");
    assert!(
        report
            .summary()
            .contains("nid000003-nmn connection refused"),
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_and_command_not_run() {
    let fx = Fixture::new(3, 3);
    fx.write_known_hosts(vec![
        fx.sshd.known_hosts_entry(&address(1)),
        format!(
            "[{}]:{} {}",
            address(2),
            fx.sshd.port,
            fx.sshd.stranger_public_key
        ),
        fx.sshd.known_hosts_entry(&address(3)),
    ]);
    let hosts = fx.hosts(1..=3);
    // Even with unknown keys accepted, a recorded key that differs is refused.
    let cfg = SshConfig {
        accept_unknown_host_keys: true,
        ..fx.cfg.clone()
    };
    let report = run(&fx, &cfg, &hosts, &fx.marking("true")).await;

    match outcome_of(&report, &node(2)) {
        HostOutcome::HostKeyRejected(reason) => {
            assert!(reason.contains("does not match"), "{reason}");
            assert!(reason.contains("line(s) 2"), "{reason}");
        }
        other => panic!("expected HostKeyRejected, got {other:?}"),
    }
    assert!(!fx.ran_on(2), "command ran on a host with a changed key");
    assert!(fx.ran_on(1) && fx.ran_on(3));
    assert_eq!(report.failed().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_refused_unless_accepted() {
    let fx = Fixture::new(2, 2);
    fx.write_known_hosts(vec![fx.sshd.known_hosts_entry(&address(1))]);
    let hosts = fx.hosts(1..=2);

    let report = run(&fx, &fx.cfg, &hosts, &fx.marking("true")).await;
    match outcome_of(&report, &node(2)) {
        HostOutcome::HostKeyRejected(reason) => assert!(reason.contains("not in"), "{reason}"),
        other => panic!("expected HostKeyRejected, got {other:?}"),
    }
    assert!(!fx.ran_on(2));
    assert!(fx.ran_on(1));

    let cfg = SshConfig {
        accept_unknown_host_keys: true,
        ..fx.cfg.clone()
    };
    let report = run(&fx, &cfg, &hosts, &fx.marking("true")).await;
    assert!(report.all_succeeded(), "{}", report.summary());
    assert!(fx.ran_on(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_may_name_the_host_instead_of_the_address() {
    let fx = Fixture::new(1, 1);
    fx.write_known_hosts(vec![format!(
        "[{}]:{} {}",
        node(1),
        fx.sshd.port,
        fx.sshd.host_public_key
    )]);
    let report = run(&fx, &fx.cfg, &fx.hosts([1]), "true").await;
    assert!(report.all_succeeded(), "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_key_is_auth_failure() {
    let fx = Fixture::new(1, 1);
    let cfg = SshConfig {
        identity_file: fx.sshd.stranger_identity.clone(),
        ..fx.cfg.clone()
    };
    let report = run(&fx, &cfg, &fx.hosts([1]), &fx.marking("true")).await;
    assert!(
        matches!(outcome_of(&report, &node(1)), HostOutcome::AuthFailed(_)),
        "{report:#?}"
    );
    assert!(!fx.ran_on(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_limit_bounds_concurrency() {
    const HOSTS: usize = 9;
    const FANOUT: usize = 3;
    let fx = Fixture::new(HOSTS, HOSTS);
    let cfg = SshConfig {
        fanout: FANOUT,
        ..fx.cfg.clone()
    };
    // The sleep is the workload that makes commands overlap, not synchronisation.
    let command = fx.marking(&format!(
        "date +%s%N > {m}/start-$3; sleep 0.3; date +%s%N > {m}/end-$3",
        m = fx.marks.display()
    ));
    let report = run(&fx, &cfg, &fx.hosts(1..=HOSTS), &command).await;
    assert!(report.all_succeeded(), "{}", report.summary());

    let read = |kind: &str, n: usize| -> i128 {
        let path = fx.marks.join(format!("{kind}-{}", address(n)));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
    };
    // Sweep over start (+1) and end (-1) events; ends sort before starts at equal times.
    let mut events: Vec<(i128, i32)> = (1..=HOSTS)
        .flat_map(|n| [(read("start", n), 1), (read("end", n), -1)])
        .collect();
    events.sort();
    let mut running = 0;
    let mut peak = 0;
    for (_, delta) in events {
        running += delta;
        peak = peak.max(running);
    }
    assert!(
        peak <= FANOUT as i32,
        "{peak} commands ran at once with fanout {FANOUT}"
    );
    assert!(
        peak >= 2,
        "commands never overlapped (peak {peak}): no parallelism"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_command_times_out() {
    let fx = Fixture::new(2, 2);
    let cfg = SshConfig {
        // Generous enough for the fast host on a loaded 2-core CI machine.
        command_timeout: Duration::from_secs(2),
        ..fx.cfg.clone()
    };
    let command = fx.marking(&format!("if [ $3 = {} ]; then sleep 20; fi", address(2)));
    let report = run(&fx, &cfg, &fx.hosts(1..=2), &command).await;

    assert_eq!(outcome_of(&report, &node(1)), &HostOutcome::Exited(0));
    assert_eq!(
        outcome_of(&report, &node(2)),
        &HostOutcome::TimedOut(TimeoutPhase::Command)
    );
    assert!(
        report.duration < Duration::from_secs(10),
        "{:?}",
        report.duration
    );
    assert_eq!(
        report.summary(),
        format!("1 of 2 hosts failed: {} command timed out", node(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out_connecting() {
    let fx = Fixture::new(1, 1);
    // A socket that completes the TCP handshake (the kernel does that from the backlog) but
    // never speaks SSH: the handshake, not the TCP connect, has to be bounded.
    let silent = std::net::TcpListener::bind(format!("{}:{}", address(2), fx.sshd.port))
        .expect("bind silent listener");
    let mut cfg = SshConfig {
        // Generous enough for the real host on a loaded 2-core CI machine.
        connect_timeout: Duration::from_secs(2),
        ..fx.cfg.clone()
    };
    cfg.hosts.insert(node(2), address(2));
    let report = run(&fx, &cfg, &fx.hosts(1..=2), "true").await;
    assert_eq!(
        outcome_of(&report, &node(2)),
        &HostOutcome::TimedOut(TimeoutPhase::Connect)
    );
    assert_eq!(outcome_of(&report, &node(1)), &HostOutcome::Exited(0));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_running_and_pending_hosts() {
    let fx = Fixture::new(2, 2);
    let cfg = SshConfig {
        fanout: 1,
        ..fx.cfg.clone()
    };
    let cancel = CancellationToken::new();
    let (lines, mut received) = tokio::sync::mpsc::channel(16);
    let hosts = fx.hosts(1..=2);
    let command = fx.marking("echo started; sleep 5");
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { remote::run_with_output(&cfg, &hosts, &command, Some(cancel), Some(lines)).await }
    });
    // Cancel as soon as the first host proves its command is running.
    let first = received.recv().await.expect("an output line");
    assert_eq!(first.line, "started");
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("cancelled run finishes promptly")
        .expect("task")
        .expect("setup");
    assert_eq!(outcome_of(&report, &node(1)), &HostOutcome::Cancelled);
    assert_eq!(outcome_of(&report, &node(2)), &HostOutcome::Cancelled);
    assert!(!fx.ran_on(2), "fanout 1: the second host had not started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_hosts_run_once() {
    let fx = Fixture::new(1, 1);
    let hosts = vec![node(1), node(1)];
    let report = run(&fx, &fx.cfg, &hosts, "true").await;
    assert_eq!(report.results.len(), 1);
}
