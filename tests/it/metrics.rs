//! `/metrics`: Prometheus metrics, every name prefixed, counters moving after a run; the
//! collector's measures of the etcd clusters (real etcd on CSM 1.6, none on 1.0), their backups,
//! drills and recoveries, and the runs waiting for a person.

use std::time::Duration;

use etcd_repopulator::{collector::Collector, config::Config, model::EtcdLayout};
use serde_json::json;
use sim::SimOptions;

use crate::{
    common::{start, start_with},
    recovery::FAS_STS,
};

/// The value of the sample `name` (with its labels, exactly as exposed), 0 when absent.
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn counters_and_histograms_move_after_a_run() {
    let app = start().await;
    let before = app.metrics().await;
    for line in before.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("etcd_repopulator_"), "{line}");
    }
    assert_eq!(sample(&before, "etcd_repopulator_runs_started_total"), 0.0);

    let id = app.start_run(json!({"services": ["reds"]})).await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded");

    let after = app.metrics().await;
    assert_eq!(sample(&after, "etcd_repopulator_runs_started_total"), 1.0);
    assert_eq!(
        sample(
            &after,
            "etcd_repopulator_runs_finished_total{state=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(sample(&after, "etcd_repopulator_active_runs"), 0.0);
    assert_eq!(
        sample(
            &after,
            "etcd_repopulator_run_duration_seconds_count{state=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "etcd_repopulator_service_duration_seconds_count{service=\"reds\",state=\"succeeded\"}"
        ),
        1.0
    );
    assert!(
        after.contains("etcd_repopulator_step_duration_seconds_count{service=\"reds\","),
        "{after}"
    );
}

/// The sample lines of `name` (`name{` or `name `), as exposed.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect()
}

/// The labels of a cluster's series, as exposed.
fn cluster(name: &str, service: &str, layout: &str) -> String {
    format!("cluster=\"{name}\",service=\"{service}\",layout=\"{layout}\"")
}

#[tokio::test]
async fn every_cluster_its_backups_and_its_recoveries_are_measured() {
    let sim = crate::common::real_etcd_sim("1.6").await;
    let app = crate::common::start_on(sim, Config::default()).await;
    // Every member of every cluster up (the real etcd processes take a moment).
    let listed = crate::common::until("every etcd cluster healthy", async || {
        let (_, listed) = app.get("/etcd-clusters").await;
        let items = listed["items"].as_array()?;
        items
            .iter()
            .all(|c| c["healthy"] == true && c["ready"] == c["members"])
            .then_some(listed)
    })
    .await;
    let collector = Collector::new(&app.runner);
    let snapshot = collector.collect().await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let clusters = snapshot.clusters.expect("the clusters are listed");
    assert_eq!(
        clusters
            .iter()
            .map(|c| c.labels.cluster.as_str())
            .collect::<Vec<_>>(),
        names
    );
    assert!(names.contains(&FAS_STS), "{names:?}");

    let text = app.metrics().await;
    for item in listed["items"].as_array().unwrap() {
        let name = item["name"].as_str().unwrap();
        let labels = cluster(name, item["service"].as_str().unwrap(), "bitnami");
        let value = |metric: &str| sample(&text, &format!("{metric}{{{labels}}}"));
        assert_eq!(
            value("etcd_repopulator_etcd_healthy"),
            1.0,
            "{name}\n{text}"
        );
        // As GET /etcd-clusters counts them (not every cluster of 1.6 has 3 members).
        let members = item["members"].as_f64().unwrap();
        assert!(members >= 1.0);
        assert_eq!(
            value("etcd_repopulator_etcd_members_wanted"),
            members,
            "{name}"
        );
        assert_eq!(
            value("etcd_repopulator_etcd_members_ready"),
            members,
            "{name}"
        );
        // The members etcd lists that answer healthy (the simulation runs one etcd process
        // behind a cluster's pods).
        let healthy = item["member_health"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["healthy"] == true)
            .count();
        assert!(healthy >= 1, "{item:#}");
        assert_eq!(
            value("etcd_repopulator_etcd_members_healthy"),
            healthy as f64,
            "{name}"
        );
        assert_eq!(value("etcd_repopulator_etcd_has_leader"), 1.0, "{name}");
        // The sizes etcd reports, as GET /etcd-clusters shows them.
        let size = value("etcd_repopulator_etcd_db_size_bytes");
        let in_use = value("etcd_repopulator_etcd_db_size_in_use_bytes");
        assert!(
            size > 0.0 && in_use > 0.0 && in_use <= size,
            "{name}: {size} {in_use}"
        );
        assert_eq!(item["quota"]["bytes"], 2_147_483_648_u64, "{item:#}");
        assert_eq!(item["quota"]["source"], "env", "{item:#}");
        // The StatefulSet's ETCD_QUOTA_BACKEND_BYTES (cray-etcd-base's 2 GB).
        assert_eq!(
            sample(
                &text,
                &format!("etcd_repopulator_etcd_quota_bytes{{{labels},source=\"env\"}}")
            ),
            2_147_483_648.0
        );
        assert!(samples(&text, "etcd_repopulator_etcd_alarms").is_empty());
        assert_eq!(
            sample(
                &text,
                &format!("etcd_repopulator_collection_success{{{labels},part=\"etcd\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("etcd_repopulator_collection_success{{{labels},part=\"backups\"}}")
            ),
            1.0
        );
        // The seeded backup.
        assert!(value("etcd_repopulator_backups") >= 1.0, "{name}");
        let newest = samples(&text, "etcd_repopulator_backup_newest_timestamp_seconds")
            .into_iter()
            .find(|line| line.contains(&labels))
            .unwrap_or_else(|| panic!("no newest backup of {name}:\n{text}"));
        // The snapshotter's hourly file (`<snapshots_dir>/<sts>/db-...`), or its S3 copy.
        assert!(
            newest.contains(&format!("/{name}/db-")) || newest.contains("s3://etcd-backup/"),
            "{newest}"
        );
        let taken_at: f64 = newest.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(taken_at > 0.0 && taken_at <= chrono::Utc::now().timestamp() as f64);
    }
    assert_eq!(
        sample(
            &text,
            "etcd_repopulator_runs_waiting{state=\"action_required\",mode=\"rebuild\"}"
        ),
        0.0
    );
    assert!(
        samples(
            &text,
            "etcd_repopulator_recovery_last_success_timestamp_seconds"
        )
        .is_empty()
    );

    let fas_backups = sample(
        &text,
        &format!(
            "etcd_repopulator_backups{{{}}}",
            cluster(FAS_STS, "fas", "bitnami")
        ),
    );

    // A real rebuild of FAS's cluster: a recovery, which ends needing a person (FAS's
    // firmware actions are lost for good).
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let recovered = crate::common::step(&run, "fas", "etcd-recover");
    assert_eq!(recovered["state"], "succeeded", "{recovered:#}");
    let finished_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(recovered["finished_at"].clone()).unwrap();
    collector.collect().await;
    let text = app.metrics().await;
    let fas = cluster(FAS_STS, "fas", "bitnami");
    assert_eq!(
        sample(
            &text,
            &format!("etcd_repopulator_recovery_last_success_timestamp_seconds{{{fas}}}")
        ),
        finished_at.timestamp() as f64
    );
    let rebuild = "mode=\"rebuild\",outcome=\"action_required\"";
    assert_eq!(
        sample(
            &text,
            &format!("etcd_repopulator_recovery_runs_total{{{rebuild}}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("etcd_repopulator_recovery_run_duration_seconds_count{{{rebuild}}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "etcd_repopulator_recovery_runs_total{mode=\"rebuild\",outcome=\"failed\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "etcd_repopulator_runs_waiting{state=\"action_required\",mode=\"rebuild\"}"
        ),
        1.0
    );
    let run_finished: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(run["finished_at"].clone()).unwrap();
    assert_eq!(
        sample(
            &text,
            "etcd_repopulator_runs_last_finished_timestamp_seconds{state=\"action_required\",mode=\"rebuild\"}"
        ),
        run_finished.timestamp() as f64
    );
    // The rebuilt cluster is healthy again; the safety snapshot of what it held is one more
    // backup of it.
    assert_eq!(
        sample(&text, &format!("etcd_repopulator_etcd_healthy{{{fas}}}")),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("etcd_repopulator_backups{{{fas}}}")),
        fas_backups + 1.0
    );
}

#[tokio::test]
async fn operator_clusters_are_measured_with_etcd_s_default_quota_and_without_backups() {
    // CSM 1.0: EtcdClusters of the etcd operator, no etcd behind them.
    let app = start().await;
    let collector = Collector::new(&app.runner);
    // Described before the first pass, and before any drill.
    let before = app.metrics().await;
    for name in [
        "etcd_repopulator_etcd_healthy",
        "etcd_repopulator_backup_newest_age_seconds",
        "etcd_repopulator_drill_last_timestamp_seconds",
        "etcd_repopulator_drill_last_success",
        "etcd_repopulator_drill_last_success_timestamp_seconds",
    ] {
        assert!(
            before.contains(&format!("# TYPE {name} gauge\n")),
            "{name}\n{before}"
        );
        assert!(samples(&before, name).is_empty(), "{name}");
    }

    collector.collect().await;
    let text = app.metrics().await;
    let bss = cluster("cray-bss-etcd", "bss", "etcd-operator");
    let value = |metric: &str| sample(&text, &format!("{metric}{{{bss}}}"));
    assert_eq!(value("etcd_repopulator_etcd_members_wanted"), 3.0, "{text}");
    // Nothing answers: checked, and unhealthy.
    assert_eq!(value("etcd_repopulator_etcd_healthy"), 0.0);
    assert_eq!(value("etcd_repopulator_etcd_has_leader"), 0.0);
    assert_eq!(
        sample(
            &text,
            &format!("etcd_repopulator_etcd_quota_bytes{{{bss},source=\"etcd-default\"}}")
        ),
        2_147_483_648.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("etcd_repopulator_collection_success{{{bss},part=\"etcd\"}}")
        ),
        1.0
    );
    // CSM kept no backups of etcd-operator clusters in S3 or the snapshotter PVC.
    assert!(samples(&text, "etcd_repopulator_backups").is_empty());
    assert!(!text.contains("part=\"backups\""));
    assert!(sample(&text, "etcd_repopulator_collection_last_timestamp_seconds") > 0.0);

    // A drill's result, as the drills record it.
    let at = chrono::Utc::now();
    let metrics = app.runner.metrics();
    metrics.record_drill("cray-bss-etcd", "bss", EtcdLayout::Operator, at, true);
    metrics.record_drill("cray-bss-etcd", "bss", EtcdLayout::Operator, at, false);
    let text = app.metrics().await;
    let value = |metric: &str| sample(&text, &format!("{metric}{{{bss}}}"));
    assert_eq!(value("etcd_repopulator_drill_last_success"), 0.0);
    assert_eq!(
        value("etcd_repopulator_drill_last_timestamp_seconds"),
        at.timestamp() as f64
    );
    assert_eq!(
        value("etcd_repopulator_drill_last_success_timestamp_seconds"),
        at.timestamp() as f64
    );
}

#[tokio::test]
async fn a_cluster_not_checked_in_time_counts_as_unhealthy() {
    let mut config = Config::default();
    config.metrics.cluster_timeout = Duration::from_millis(1);
    let app = start_with(SimOptions::default(), config).await;
    // Every answer of the API server takes longer than the timeout.
    app.sim.faults().set_latency(Duration::from_millis(200));
    Collector::new(&app.runner).collect().await;
    app.sim.faults().set_latency(Duration::ZERO);
    let text = app.metrics().await;
    let bss = cluster("cray-bss-etcd", "bss", "etcd-operator");
    assert_eq!(
        sample(
            &text,
            &format!("etcd_repopulator_collection_success{{{bss},part=\"etcd\"}}")
        ),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("etcd_repopulator_etcd_healthy{{{bss}}}")),
        0.0
    );
    assert!(samples(&text, "etcd_repopulator_etcd_has_leader").is_empty());
}

#[tokio::test]
async fn runs_interrupted_by_a_restart_wait_for_a_person() {
    // Pods that take long to be Ready: the run is still waiting for REDS's when the service
    // stops.
    let options = SimOptions {
        kubelet_ready_delay: Duration::from_secs(5),
        ..SimOptions::default()
    };
    let app = start_with(options, Config::default()).await;
    let id = app.start_run(json!({"services": ["reds"]})).await;
    crate::common::until("the run to restart pods", async || {
        let (_, run) = app.get(&format!("/repopulations/{id}")).await;
        (run["state"] == "running").then_some(())
    })
    .await;
    let app = app.restart_with(Config::default()).await;
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert_eq!(run["state"], "interrupted", "{run:#}");
    Collector::new(&app.runner).collect().await;
    let text = app.metrics().await;
    assert_eq!(
        sample(
            &text,
            "etcd_repopulator_runs_waiting{state=\"interrupted\",mode=\"check\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "etcd_repopulator_runs_waiting{state=\"action_required\",mode=\"check\"}"
        ),
        0.0
    );
    // Not counted as running: it is not.
    assert_eq!(sample(&text, "etcd_repopulator_active_runs"), 0.0);
}
