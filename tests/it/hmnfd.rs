//! The HMNFD handler end to end: targets from the fake HSM, `cray-dvs-orca` "restarted" over
//! SSH on a real sshd (each node a loopback address), subscriptions checked in the fake HMNFD.
//!
//! Compute node `nid00000N-nmn` is 127.0.2.N and NCN `ncn-w00N-can.local` is 127.0.3.N, mapped
//! through `[ssh] hosts`. The remote command leaves a marker named after the server address it
//! ran on (from `$SSH_CONNECTION`), so the test sees which node really ran it; in the rebuild
//! scenario it also subscribes the node to the fake HMNFD with curl, as ORCA does when it starts.

use crate::common;
use crate::common::sshd;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use etcd_repopulator::{
    app::simulate, config::Config, csm::CsmConfig, model::Service, release::Release,
    remote::SshConfig,
};
use serde_json::{Value, json};
use sim::{SimCluster, SimOptions};
use sshd::Sshd;

/// Ready compute nodes of the seeded HSM (NID 4 is Off, 7 is Standby) and their xnames.
const READY_NIDS: [usize; 6] = [1, 2, 3, 5, 6, 8];
const NCNS: [(usize, &str); 2] = [(1, "x3000c0s4b0n0"), (2, "x3000c0s5b0n0")];

fn compute(nid: usize) -> (String, String) {
    (format!("nid{nid:06}-nmn"), format!("127.0.2.{nid}"))
}

fn ncn(n: usize) -> (String, String) {
    (format!("ncn-w00{n}-can.local"), format!("127.0.3.{n}"))
}

/// The seeded HSM's xname of compute NID `nid` (two nodes per blade, two blades per slot).
fn compute_xname(nid: usize) -> String {
    let i = nid - 1;
    format!("x1000c0s{}b{}n{}", i / 4, (i / 2) % 2, i % 2)
}

struct Nodes {
    app: common::TestApp,
    sshd: Sshd,
    marks: PathBuf,
}

impl Nodes {
    /// sshd on every node's address except `down`; `command(marks, xnames, hmnfd_url)` is the
    /// configured remote command.
    async fn start(
        down: &[&str],
        verify_wait: Duration,
        command: impl Fn(&str, &str, &str) -> String,
    ) -> Nodes {
        let mut all: Vec<(String, String, String)> = READY_NIDS
            .iter()
            .map(|&nid| {
                let (host, address) = compute(nid);
                (host, address, compute_xname(nid))
            })
            .collect();
        all.extend(NCNS.iter().map(|&(n, xname)| {
            let (host, address) = ncn(n);
            (host, address, xname.to_owned())
        }));
        let listening: Vec<&str> = all
            .iter()
            .map(|(_, address, _)| address.as_str())
            .filter(|a| !down.contains(a))
            .collect();
        let sshd = Sshd::start(&listening);
        let marks = sshd.path("marks");
        let xnames = sshd.path("xnames");
        std::fs::create_dir(&marks).unwrap();
        std::fs::create_dir(&xnames).unwrap();
        let known_hosts: String = all
            .iter()
            .map(|(_, address, _)| sshd.known_hosts_entry(address) + "\n")
            .collect();
        std::fs::write(sshd.path("known_hosts"), known_hosts).unwrap();
        for (_, address, xname) in &all {
            std::fs::write(xnames.join(address), xname).unwrap();
        }

        let sim = SimCluster::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
            .await
            .unwrap();
        sim.seed_csm().await.unwrap();
        sim.wait_settled(common::WAIT).await.unwrap();
        let hmnfd_url = CsmConfig::simulated(&sim.url()).hmnfd_url;

        let ssh = SshConfig {
            user: sshd.user.clone(),
            port: sshd.port,
            identity_file: sshd.identity.clone(),
            known_hosts_file: sshd.path("known_hosts"),
            fanout: 4,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            hosts: all
                .iter()
                .map(|(host, address, _)| (host.clone(), address.clone()))
                .collect(),
            ..SshConfig::default()
        };
        let mut config = Config {
            ssh,
            ..Config::default()
        };
        config.hmnfd.ncn_hostlists = vec!["ncn-w00[1-2]-can.local".to_owned()];
        config.hmnfd.verify_wait = verify_wait;
        config.hmnfd.command = command(
            &marks.display().to_string(),
            &xnames.display().to_string(),
            &hmnfd_url,
        );
        let app = common::start_on(sim, config).await;
        Nodes { app, sshd, marks }
    }

    fn ran_on(&self, address: &str) -> bool {
        self.marks.join(format!("ran-{address}")).exists()
    }

    async fn run(&self) -> Value {
        let id = self.app.start_run(json!({ "services": ["hmnfd"] })).await;
        self.app.finished_run(&id).await
    }
}

/// Leaves the marker, then runs `rest`.
fn marking(marks: &str, rest: &str) -> String {
    format!("set -- $SSH_CONNECTION; touch {marks}/ran-$3; {rest}")
}

/// What ORCA does when it starts: subscribe its node (xname looked up by address) to HMNFD.
fn subscribe(xnames: &str, hmnfd_url: &str) -> String {
    format!(
        "curl -sSf -X POST -H 'content-type: application/json' \
         -d '{{\"Components\":[\"x1000c0s0b0n0\"],\"States\":[\"Ready\"],\"Url\":\"http://orca/scn\"}}' \
         {hmnfd_url}/subscriptions/$(cat {xnames}/$3)/agents/cray-dvs-orca"
    )
}

#[tokio::test]
async fn every_node_restarts_orca_and_subscribes_again_after_a_rebuild() {
    let nodes = Nodes::start(&[], Duration::from_secs(20), |marks, xnames, url| {
        marking(marks, &subscribe(xnames, url))
    })
    .await;
    assert!(nodes.app.sim.csm().wipe("cray-hmnfd-etcd"));
    assert!(nodes.app.sim.csm().hmnfd_subscriptions().is_empty());

    let run = nodes.run().await;
    assert_eq!(run["state"], "succeeded", "{run:#}\n{}", nodes.sshd.log());
    let steps = &run["services"][0]["steps"];
    let targets = steps[0]["data"]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), READY_NIDS.len() + NCNS.len());
    let results = steps[1]["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), targets.len());
    assert!(
        results
            .iter()
            .all(|r| r["outcome"] == json!({"status": "exited", "detail": 0})),
        "{results:#?}"
    );
    for &nid in &READY_NIDS {
        assert!(nodes.ran_on(&compute(nid).1), "nid {nid}");
    }
    for (n, _) in NCNS {
        assert!(nodes.ran_on(&ncn(n).1), "ncn {n}");
    }
    // Not Ready compute nodes are not contacted.
    assert!(!nodes.ran_on("127.0.2.4") && !nodes.ran_on("127.0.2.7"));

    let subscribed: BTreeSet<String> = nodes
        .app
        .sim
        .csm()
        .hmnfd_subscriptions()
        .iter()
        .filter_map(|s| s.subscriber_component.clone())
        .collect();
    for &nid in &READY_NIDS {
        assert!(subscribed.contains(&compute_xname(nid)), "{subscribed:?}");
    }
    assert_eq!(steps[2]["state"], "succeeded", "{:#}", steps[2]);
    assert_eq!(steps[2]["data"]["checked"], READY_NIDS.len());
}

#[tokio::test]
async fn a_failing_host_fails_the_task_with_the_per_host_table() {
    // nid000008 has no sshd (connection refused); nid000002's command exits 3.
    let nodes = Nodes::start(&["127.0.2.8"], Duration::from_secs(1), |marks, _, _| {
        marking(marks, "[ \"$3\" != 127.0.2.2 ] || exit 3")
    })
    .await;
    let run = nodes.run().await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let task = &run["services"][0];
    let restart = &task["steps"][1];
    assert_eq!(restart["state"], "failed");
    let message = restart["message"].as_str().unwrap();
    assert!(message.starts_with("2 of 8 hosts failed"), "{message}");
    assert!(
        message.contains("nid000002-nmn exited with status 3") && message.contains("nid000008-nmn"),
        "{message}"
    );
    assert_eq!(restart["data"]["summary"], message);
    let results = restart["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    let outcome = |host: &str| {
        results
            .iter()
            .find(|r| r["host"] == host)
            .map(|r| r["outcome"]["status"].clone())
            .unwrap()
    };
    assert_eq!(outcome("nid000001-nmn"), "exited");
    assert_eq!(outcome("nid000008-nmn"), "connect_failed");
    assert!(nodes.ran_on("127.0.2.1") && nodes.ran_on("127.0.2.2"));
    // The verification does not run after a failed restart.
    assert_eq!(task["steps"][2]["state"], "skipped");
}

#[tokio::test]
async fn nodes_that_do_not_subscribe_again_are_reported() {
    // The command restarts nothing that would subscribe: HMNFD stays empty after the wipe.
    let nodes = Nodes::start(&[], Duration::from_secs(1), |marks, _, _| {
        marking(marks, "true")
    })
    .await;
    assert!(nodes.app.sim.csm().wipe("cray-hmnfd-etcd"));
    // One node does subscribe (its ORCA came back by itself).
    nodes.app.sim.csm().add_subscription("nid000003-nmn");

    let run = nodes.run().await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let verify = &run["services"][0]["steps"][2];
    assert_eq!(verify["state"], "action_required");
    let missing: BTreeSet<String> = verify["data"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["xname"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = READY_NIDS
        .iter()
        .filter(|&&nid| nid != 3)
        .map(|&nid| compute_xname(nid))
        .collect();
    assert_eq!(missing, expected);
    let message = verify["message"].as_str().unwrap();
    assert!(
        message.starts_with("5 of 6 node(s) have no HMNFD subscription")
            && message.contains("x1000c0s0b0n0 (nid000001-nmn)")
            && message.contains("systemctl status cray-dvs-orca"),
        "{message}"
    );
}

#[tokio::test]
async fn dry_run_lists_discovered_targets_and_contacts_nobody() {
    // Nothing at the hosts' names would answer; a dry run must not try.
    let keys = tempfile::tempdir().unwrap();
    let (identity_file, known_hosts_file) = common::ssh_files(keys.path());
    let mut config = Config {
        ssh: SshConfig {
            identity_file: identity_file.clone(),
            known_hosts_file,
            ..SshConfig::default()
        },
        ..Config::default()
    };
    config.hmnfd.discover_ncns = true;
    let app = common::start_with(SimOptions::default(), config).await;
    let id = app
        .start_run(json!({ "services": ["hmnfd"], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let steps = &run["services"][0]["steps"];
    let message = steps[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("dry run: would contact 10 host(s) (6 compute, 4 NCN)"),
        "{message}"
    );
    let hosts: Vec<&str> = steps[0]["data"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "nid000001-nmn",
            "nid000002-nmn",
            "nid000003-nmn",
            "nid000005-nmn",
            "nid000006-nmn",
            "nid000008-nmn",
            "x3000c0s10b0n0",
            "x3000c0s11b0n0",
            "x3000c0s4b0n0",
            "x3000c0s5b0n0",
        ]
    );
    let message = steps[1]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "dry run: would run \"systemctl restart cray-dvs-orca\" as root on 10 host(s)"
        ) && message.contains(&format!(
            "SSH identity {} (SHA256:",
            identity_file.display()
        )),
        "{message}"
    );
    assert!(steps[1]["data"].get("results").is_none());
}

#[tokio::test]
async fn dry_run_reports_the_ssh_identity_a_real_run_would_miss() {
    // The default [ssh]: the chart's Secret is not mounted here.
    let app = common::start().await;
    let id = app
        .start_run(json!({ "services": ["hmnfd"], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let step = &run["services"][0]["steps"][1];
    assert_eq!(step["name"], "restart-orca");
    assert_eq!(step["state"], "failed");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "dry run: a real run would end failed here: SSH fan-out could not start: cannot \
             load SSH identity /etc/etcd-repopulator/ssh/id_ed25519: "
        ) && message.contains("cannot read known_hosts file /etc/etcd-repopulator/ssh/known_hosts"),
        "{message}"
    );
}

/// On the simulated nodes of `serve --simulate` laid out as `release`, an `hmnfd` run succeeds:
/// each node answers the release's own ORCA restart (`cray-dvs-orca` on 1.0, `cray-orca` from
/// 1.2, as the release's runbook says) by subscribing to HMNFD again.
async fn hmnfd_succeeds_on_the_simulated_nodes_of(release: Release) {
    let sim = common::release_sim(release.as_str(), SimOptions::default()).await;
    let mut config = Config::default();
    config.use_simulation(&sim);
    let sshd = sim::nodes::find_sshd(None).expect("sshd (Debian: openssh-server)");
    let program = Path::new(env!("CARGO_BIN_EXE_etcd-repopulator"));
    let nodes = simulate::start_nodes(&mut config, &sim, &sshd, program, release).unwrap();
    let cluster = release.profile().etcd_cluster(Service::Hmnfd).unwrap();
    assert!(sim.csm().wipe(&cluster), "{cluster}");
    let app = common::start_on(sim, config).await;

    let id = app.start_run(json!({ "services": ["hmnfd"] })).await;
    let run = app.finished_run(&id).await;
    assert_eq!(
        run["state"],
        "succeeded",
        "CSM {release}: {run:#}\n{}",
        nodes.sshds.log()
    );
    let restart = common::step(&run, "hmnfd", "restart-orca");
    assert_eq!(
        restart["data"]["command"],
        format!("systemctl restart {}", release.profile().orca_unit)
    );
    let subscribed: BTreeSet<String> = app
        .sim
        .csm()
        .hmnfd_subscriptions()
        .iter()
        .filter_map(|s| s.subscriber_component.clone())
        .collect();
    for &nid in &READY_NIDS {
        assert!(
            subscribed.contains(&compute_xname(nid)),
            "CSM {release}: {subscribed:?}"
        );
    }
}

#[tokio::test]
async fn hmnfd_succeeds_on_the_simulated_nodes_of_csm_1_0() {
    hmnfd_succeeds_on_the_simulated_nodes_of(Release::V1_0).await;
}

#[tokio::test]
async fn hmnfd_succeeds_on_the_simulated_nodes_of_csm_1_2() {
    hmnfd_succeeds_on_the_simulated_nodes_of(Release::V1_2).await;
}

#[tokio::test]
async fn hmnfd_succeeds_on_the_simulated_nodes_of_csm_1_3() {
    hmnfd_succeeds_on_the_simulated_nodes_of(Release::V1_3).await;
}

#[tokio::test]
async fn hmnfd_succeeds_on_the_simulated_nodes_of_csm_1_4() {
    hmnfd_succeeds_on_the_simulated_nodes_of(Release::V1_4).await;
}

#[tokio::test]
async fn hmnfd_succeeds_on_the_simulated_nodes_of_csm_1_5() {
    hmnfd_succeeds_on_the_simulated_nodes_of(Release::V1_5).await;
}

#[tokio::test]
async fn hmnfd_succeeds_on_the_simulated_nodes_of_csm_1_6() {
    hmnfd_succeeds_on_the_simulated_nodes_of(Release::V1_6).await;
}
