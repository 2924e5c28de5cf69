//! `/metrics`: Prometheus metrics, every name prefixed, counters moving after a run.

use serde_json::json;

use crate::common::start;

/// The value of the sample `name` (with its labels, exactly as exposed), 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
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
