//! The monitoring for kube-prometheus-stack, off by default: the ServiceMonitor scrapes the
//! Service's /metrics, the PrometheusRule carries the thresholds of the values, and the Grafana
//! dashboard is the chart's dashboards/etcd-repopulator.json in a ConfigMap the sidecar loads.
//! The rules themselves are tested with promtool and a real Prometheus in tests/it/prometheus.rs.

use super::*;

/// The monitoring objects' templates, which render nothing with the default values.
pub(super) const TEMPLATES: [&str; 3] = [
    "templates/grafana-dashboard.yaml",
    "templates/prometheusrule.yaml",
    "templates/servicemonitor.yaml",
];

const MONITORING: [&str; 2] = [
    "--values",
    "charts/etcd-repopulator/ci/monitoring-values.yaml",
];

/// The kind, namespace and labels of a rendered custom resource.
fn metadata(document: &serde_json::Value) -> ObjectMeta {
    typed(&document["metadata"])
}

/// The recommended labels, component `monitoring`, and `extra`.
fn assert_labels(meta: &ObjectMeta, extra: &[(&str, &str)]) {
    let labels = meta.labels.clone().unwrap_or_default();
    let mut keys: BTreeSet<&str> = RECOMMENDED_LABELS.into();
    keys.extend(extra.iter().map(|(key, _)| *key));
    assert_eq!(
        labels.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        keys
    );
    assert_eq!(labels["app.kubernetes.io/component"], "monitoring");
    assert_eq!(labels["app.kubernetes.io/instance"], DEFAULT_RELEASE.name);
    for (key, value) in extra {
        assert_eq!(labels[*key], *value, "{key}");
    }
}

#[test]
fn nothing_of_it_is_rendered_by_default() {
    let rendered = render(DEFAULT_RELEASE, &[]);
    assert!(rendered.monitoring.is_empty());
    assert_eq!(rendered.config_maps.len(), 1);
}

#[test]
fn the_service_monitor_scrapes_the_service_s_metrics() {
    let rendered = render(DEFAULT_RELEASE, &MONITORING);
    let monitor = rendered
        .monitoring
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let meta = metadata(monitor);
    assert_eq!(meta.name.as_deref(), Some("etcd-repopulator"));
    assert_eq!(meta.namespace.as_deref(), Some("sysmgmt-health"));
    assert_labels(&meta, &[("release", "cray-sysmgmt-health")]);
    let spec = &monitor["spec"];
    // From Prometheus's namespace, the Service in the release's.
    assert_eq!(
        spec["namespaceSelector"]["matchNames"],
        serde_json::json!([DEFAULT_RELEASE.namespace])
    );
    let selector: BTreeMap<String, String> =
        serde_json::from_value(spec["selector"]["matchLabels"].clone()).unwrap();
    let service = &rendered.services[0];
    assert_eq!(
        Some(&selector),
        service.spec.as_ref().unwrap().selector.as_ref(),
        "it selects the Service by the labels the Service selects the pods by"
    );
    assert!(selects(
        &selector,
        service.metadata.labels.as_ref().unwrap()
    ));
    let endpoints = spec["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let port = service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .name
        .clone();
    assert_eq!(endpoints[0]["port"].as_str(), port.as_deref());
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(endpoints[0]["interval"], "30s");
    assert_eq!(endpoints[0]["scrapeTimeout"], "15s");
}

#[test]
fn the_prometheus_rule_carries_the_thresholds_of_the_values() {
    let rendered = render(DEFAULT_RELEASE, &MONITORING);
    let rule = rendered
        .monitoring
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let meta = metadata(rule);
    assert_eq!(meta.namespace.as_deref(), Some("sysmgmt-health"));
    assert_labels(&meta, &[("release", "cray-sysmgmt-health")]);
    let expr = |alert: &str| -> String {
        rule["spec"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"))["expr"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // backupMaxAge 3h, drillMaxAge 2d, dbQuotaRatio 0.75, runAlertWindow 12h,
    // collectionMaxAge 15m, in seconds (PromQL's numbers have no units).
    assert!(expr("EtcdClusterBackupTooOld").ends_with("> 10800"));
    assert!(expr("EtcdClusterDrillOverdue").contains("> 172800)"));
    assert!(expr("EtcdClusterDatabaseNearQuota").ends_with("> 0.75"));
    assert!(expr("EtcdRepopulatorRecoveryRunFailed").ends_with("< 43200"));
    assert!(expr("EtcdRepopulatorMetricsStale").ends_with("> 900"));
}

#[test]
fn the_dashboard_is_a_config_map_grafana_s_sidecar_loads() {
    let rendered = render(DEFAULT_RELEASE, &MONITORING);
    let dashboard = rendered
        .config_maps
        .iter()
        .find(|map| map.metadata.name.as_deref() == Some("etcd-repopulator-dashboard"))
        .expect("the dashboard's ConfigMap");
    assert_eq!(
        dashboard.metadata.namespace.as_deref(),
        Some("sysmgmt-health")
    );
    assert_labels(&dashboard.metadata, &[("grafana_dashboard", "1")]);
    assert_eq!(
        dashboard.metadata.annotations.as_ref().unwrap()["grafana_folder"],
        "CSM"
    );
    let data = dashboard.data.as_ref().unwrap();
    let json: serde_json::Value = serde_json::from_str(&data["etcd-repopulator.json"]).unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&chart_file("dashboards/etcd-repopulator.json")).unwrap();
    assert_eq!(json, file);
    assert_eq!(json["uid"], "etcd-repopulator");
}
