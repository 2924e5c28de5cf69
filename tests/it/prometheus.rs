//! The chart's alert rules and Grafana dashboard, for real, with Debian's `prometheus` package:
//! `promtool check rules` and `promtool test rules` on the rules helm renders (every alert
//! firing and not firing: tests/prometheus/alerts.test.yaml), every metric name the rules and
//! the dashboard use is one /metrics describes, and a real `prometheus` scraping the service on
//! the simulated CSM 1.6 cluster (real etcd) evaluates every rule's expression and every
//! panel's query without error and finds every series they use.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use etcd_repopulator::{collector::Collector, config::Config, model::EtcdLayout};
use serde_json::{Value, json};

use crate::{
    common::{self, etcd, free_port},
    recovery::FAS_STS,
};

const CHART: &str = "charts/etcd-repopulator";
const ALERTS_TEST: &str = "tests/prometheus/alerts.test.yaml";
const DASHBOARD: &str = "charts/etcd-repopulator/dashboards/etcd-repopulator.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rule groups of the chart's PrometheusRule, rendered by helm with the default values.
fn rule_groups() -> Value {
    let tools = Command::new("bash")
        .arg(root().join("scripts/tools"))
        .output()
        .expect("bash scripts/tools");
    assert!(tools.status.success(), "{tools:?}");
    let helm = Path::new(String::from_utf8(tools.stdout).unwrap().trim()).join("helm");
    let output = Command::new(helm)
        .args(["template", "etcd-repopulator", CHART])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .current_dir(root())
        .output()
        .expect("helm runs");
    assert!(output.status.success(), "{output:?}");
    let rule: Value = serde_saphyr::from_str(&String::from_utf8(output.stdout).unwrap())
        .expect("the PrometheusRule parses");
    assert_eq!(rule["kind"], "PrometheusRule");
    json!({ "groups": rule["spec"]["groups"] })
}

fn rules(groups: &Value) -> impl Iterator<Item = &Value> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
}

/// Writes `groups` where promtool and prometheus read it (`rules.yaml`: JSON is YAML).
fn write_rules(dir: &Path, groups: &Value) {
    std::fs::write(dir.join("rules.yaml"), groups.to_string()).unwrap();
}

/// A temporary directory with the rendered rules in it, and the rules.
fn rules_dir() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let groups = rule_groups();
    write_rules(dir.path(), &groups);
    (dir, groups)
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian: prometheus) runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{printed}");
    printed
}

#[test]
fn promtool_checks_the_rendered_rules() {
    let (dir, groups) = rules_dir();
    let printed = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    let count = rules(&groups).count();
    assert!(
        printed.contains(&format!("SUCCESS: {count} rules found")),
        "{printed}"
    );
    // Every alert says what to do, naming the API call or the CLI command.
    for rule in rules(&groups) {
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains("etcd-repopulator ") && description.contains(" /"),
            "{}: {description}",
            rule["alert"]
        );
        assert!(rule["annotations"]["summary"].is_string());
        assert!(rule["labels"]["severity"].is_string());
    }
}

/// `text` with every `{{ $labels.NAME }}` replaced by the label's value, as Prometheus expands
/// an alert's annotations; the annotations use no other template.
fn expand(text: &str, labels: &serde_json::Map<String, Value>) -> String {
    let mut out = text.to_owned();
    while let Some(start) = out.find("{{ $labels.") {
        let end = start + out[start..].find(" }}").expect("a closed template");
        let name = &out[start + "{{ $labels.".len()..end];
        let value = labels.get(name).and_then(Value::as_str).unwrap_or_default();
        out.replace_range(start..end + " }}".len(), value);
    }
    assert!(
        !out.contains("{{"),
        "an annotation template other than $labels: {text}"
    );
    out
}

#[test]
fn promtool_tests_every_alert_firing_and_not_firing() {
    let (dir, groups) = rules_dir();
    let mut tests: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join(ALERTS_TEST)).unwrap())
            .unwrap();
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for group in tests["tests"].as_array_mut().unwrap() {
        for case in group["alert_rule_test"].as_array_mut().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let rule = rules(&groups)
                .find(|r| r["alert"] == name)
                .unwrap_or_else(|| panic!("{ALERTS_TEST} tests {name}, which is no alert"));
            let expected = case["exp_alerts"].as_array_mut().unwrap();
            if expected.is_empty() {
                silent.insert(name);
                continue;
            }
            firing.insert(name);
            for alert in expected {
                let labels = alert["exp_labels"].as_object().unwrap().clone();
                let annotations: serde_json::Map<String, Value> = rule["annotations"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(expand(v.as_str().unwrap(), &labels))))
                    .collect();
                alert["exp_annotations"] = Value::Object(annotations);
            }
        }
    }
    let alerts: BTreeSet<String> = rules(&groups)
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(firing, alerts, "alerts never tested firing");
    assert_eq!(silent, alerts, "alerts never tested not firing");
    std::fs::write(dir.path().join("alerts.test.yaml"), tests.to_string()).unwrap();
    let printed = promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
    assert!(printed.contains("SUCCESS"), "{printed}");
}

/// The dashboard's PromQL queries, with Grafana's variables as a query from Grafana would have
/// them: every cluster, a range of an hour, a rate interval of a minute.
fn panel_queries() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL target");
            queries.push(
                expr.replace("$cluster", ".*")
                    .replace("$__range", "1h")
                    .replace("$__rate_interval", "1m"),
            );
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");
    queries
}

/// Every `etcd_repopulator_*` name in `text`, as a series name (`..._bucket`, `..._total`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("etcd_repopulator_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The names of the series /metrics can have: each described metric, with the suffixes of its
/// type.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
                true
            }
            _ => names.insert(name.to_owned()),
        };
    }
    names
}

/// The metric names the rules' expressions and the dashboard's queries use.
fn used_names() -> BTreeSet<String> {
    let groups = rule_groups();
    let mut used = BTreeSet::new();
    for rule in rules(&groups) {
        used.extend(metric_names(rule["expr"].as_str().unwrap()));
    }
    for query in panel_queries() {
        used.extend(metric_names(&query));
    }
    let dashboard = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    used.extend(metric_names(&dashboard));
    used
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    // Before any run, any pass of the collector or any drill: described all the same.
    let app = common::start().await;
    let exported = exported_names(&app.metrics().await);
    let used = used_names();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// A `prometheus` process, killed when dropped (the test's every ending).
struct Prometheus {
    child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Scraping `target` (host:port) every second, with `dir/rules.yaml`, its data in `dir`.
    async fn start(dir: &Path, target: &str) -> Prometheus {
        let config = json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "rule_files": ["rules.yaml"],
            "scrape_configs": [{
                "job_name": "etcd-repopulator",
                "static_configs": [{ "targets": [target] }],
            }],
        });
        std::fs::write(dir.join("prometheus.yml"), config.to_string()).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg("--config.file=prometheus.yml")
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (Debian: prometheus) starts");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// `GET /api/v1/{path}` with `query`: the `data` of a `success`, or the error.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(body.to_string())
        }
    }

    /// The instant vector of `expr`, which must evaluate without error.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api("query", &[("query", expr)])
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert!(
            data["resultType"] == "vector" || data["resultType"] == "scalar",
            "{expr}: {data}"
        );
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; this waits for nothing, so start it here too.
        let _ = self.child.start_kill();
    }
}

/// Waits (bounded) until `check` holds, polling the server (a condition, not a sleep).
async fn eventually(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(deadline, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn prometheus_scrapes_the_service_and_evaluates_every_rule_and_panel() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::real_etcd_sim("1.6").await;
    // A NOSPACE alarm on BOS's cluster, so that the alarm series exist.
    let bos = sim
        .etcd_url("cray-bos-bitnami-etcd")
        .expect("bos etcd runs");
    let members = etcd::gateway(&bos, "/v3/cluster/member/list", json!({})).await;
    let member = members["members"][0]["ID"].clone();
    let alarm = json!({ "action": "ACTIVATE", "memberID": member, "alarm": "NOSPACE" });
    let raised = etcd::gateway(&bos, "/v3/maintenance/alarm", alarm).await;
    assert_eq!(raised["alarms"][0]["alarm"], "NOSPACE", "{raised}");

    let mut config = Config::default();
    config.metrics.cluster_interval = Duration::from_secs(5);
    config.metrics.cluster_timeout = Duration::from_secs(5);
    let app = common::start_on(sim, config).await;
    let _collector = Collector::new(&app.runner).start();
    // A drill of each kind, and a recovery (FAS's cluster rebuilt), so that every series exists.
    let now = chrono::Utc::now();
    let metrics = app.runner.metrics();
    metrics.record_drill(FAS_STS, "fas", EtcdLayout::Bitnami, now, true);
    metrics.record_drill(
        "cray-bss-bitnami-etcd",
        "bss",
        EtcdLayout::Bitnami,
        now,
        false,
    );
    let id = app
        .start_run(json!({ "services": ["fas"], "etcd": "rebuild", "confirm": [FAS_STS] }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(
        common::step(&run, "fas", "etcd-recover")["state"],
        "succeeded",
        "{run:#}"
    );

    let groups = rule_groups();
    write_rules(dir.path(), &groups);
    let target = app.base.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(dir.path(), &target).await;
    // Scraped, after a pass that saw the recovery and read BOS's alarm (on a busy machine a
    // pass may time out reading a cluster; the next one reads it).
    eventually(
        "prometheus to scrape a pass after the recovery that read BOS's alarm",
        Duration::from_secs(180),
        async || {
            let mut seen = true;
            for query in [
                "etcd_repopulator_recovery_last_success_timestamp_seconds",
                "etcd_repopulator_etcd_alarms",
            ] {
                seen &= prometheus
                    .api("query", &[("query", query)])
                    .await
                    .is_ok_and(|data| !data["result"].as_array().unwrap().is_empty());
            }
            seen
        },
    )
    .await;
    let up = prometheus.query("up{job=\"etcd-repopulator\"}").await;
    assert_eq!(up[0]["value"][1], "1", "{up:?}");

    // Every rule loaded and evaluated by Prometheus itself without error.
    eventually(
        "every rule to be evaluated",
        Duration::from_secs(30),
        async || {
            let Ok(data) = prometheus.api("rules", &[]).await else {
                return false;
            };
            let loaded: Vec<&Value> = data["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap())
                .collect();
            loaded.len() == rules(&groups).count()
                && loaded
                    .iter()
                    .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
        },
    )
    .await;
    // Every rule's expression and every panel's query, through the query API.
    for rule in rules(&groups) {
        prometheus.query(rule["expr"].as_str().unwrap()).await;
    }
    for query in panel_queries() {
        prometheus.query(&query).await;
    }
    // The series they use exist.
    for name in used_names() {
        let series = prometheus
            .api("series", &[("match[]", name.as_str())])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !series.as_array().unwrap().is_empty(),
            "no series {name} in Prometheus"
        );
    }
    // And they say what the service saw: BOS's alarm fires its alert's expression, the
    // failed drill too; the healthy FAS cluster is not unhealthy.
    let alarms = prometheus.query("etcd_repopulator_etcd_alarms > 0").await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["metric"]["cluster"], "cray-bos-bitnami-etcd");
    let failed = prometheus
        .query("etcd_repopulator_drill_last_success == 0")
        .await;
    assert_eq!(
        failed[0]["metric"]["cluster"], "cray-bss-bitnami-etcd",
        "{failed:?}"
    );
    let unhealthy = prometheus
        .query("etcd_repopulator_etcd_healthy{cluster=\"cray-fas-bitnami-etcd\"} == 0")
        .await;
    assert!(unhealthy.is_empty(), "{unhealthy:?}");
    drop(prometheus);
}
