//! Webhooks: Alertmanager payloads (firing ignored, resolved starts a run for the services on
//! the etcd cluster, redelivery ignored, unmapped cluster reported) and the HMAC-signed generic
//! webhook (good, bad, stale, replayed).

use crate::common;

use etcd_repopulator::{
    config::{AuthConfig, AuthMode, Config, WebhooksConfig},
    model::EtcdMode,
};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use sim::SimOptions;

use crate::common::{TestApp, problem, start, start_with};

fn alert(status: &str, cluster: &str, fingerprint: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "EtcdClusterUnhealthy", "etcd_cluster": cluster, "severity": "critical"},
        "annotations": {"summary": "etcd cluster is unhealthy"},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": if status == "resolved" { "2024-05-01T10:20:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    })
}

fn payload(status: &str, alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"EtcdClusterUnhealthy\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "etcd-repopulator",
        "groupLabels": {"alertname": "EtcdClusterUnhealthy"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": alerts,
    })
}

async fn deliver(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    app.post("/webhooks/alertmanager", body.clone()).await
}

/// The service with `webhooks.alertmanager.alertnames` set to the alerts these tests send.
async fn start_selecting() -> TestApp {
    let mut config = Config::default();
    config.webhooks.alertmanager.alertnames = vec!["EtcdClusterUnhealthy".into(), "X".into()];
    start_with(SimOptions::default(), config).await
}

#[tokio::test]
async fn alertmanager_resolved_alerts_start_runs_once_and_others_say_why_not() {
    let app = start_selecting().await;

    let (status, body) = deliver(
        &app,
        &payload("firing", vec![alert("firing", "cray-reds-etcd", "f1")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runs"], json!([]));
    assert_eq!(body["alerts"][0]["outcome"], "firing");
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"], json!([]), "firing alerts start nothing");

    let resolved = payload(
        "resolved",
        vec![
            alert("resolved", "cray-reds-etcd", "f1"),
            alert("resolved", "cray-uas-mgr-etcd", "f2"),
        ],
    );
    let (status, body) = deliver(&app, &resolved).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run_id = body["runs"][0].as_str().unwrap().to_owned();
    assert_eq!(body["runs"].as_array().unwrap().len(), 1);
    assert_eq!(body["alerts"][0]["outcome"], "started");
    assert_eq!(body["alerts"][0]["services"], json!(["reds", "meds"]));
    assert_eq!(body["alerts"][1]["outcome"], "unmapped_cluster");
    assert!(body["alerts"][1]["run_id"].is_null());
    assert!(
        body["alerts"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("cray-uas-mgr-etcd")
    );

    // Alertmanager redelivers (it retries, or repeats resolved notifications): nothing new,
    // neither while the run executes nor after it ended.
    let (status, body) = deliver(&app, &resolved).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["alerts"][0]["outcome"], "duplicate");
    assert_eq!(body["alerts"][0]["run_id"], run_id.as_str());

    let run = app.finished_run(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["requested_by"], "webhook:alertmanager");
    let services: Vec<&str> = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["meds", "reds"]);
    let (_, body) = deliver(&app, &resolved).await;
    assert_eq!(body["alerts"][0]["outcome"], "duplicate");
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"].as_array().unwrap().len(), 1);

    // The same alert resolving again later is a new occurrence (another startsAt).
    let mut again = alert("resolved", "cray-reds-etcd", "f1");
    again["startsAt"] = json!("2024-05-02T08:00:00Z");
    let (status, body) = deliver(&app, &payload("resolved", vec![again])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_ne!(body["runs"][0], run_id.as_str());
    app.finished_run(body["runs"][0].as_str().unwrap()).await;

    let (status, _) = deliver(
        &app,
        &json!({"version": "3", "groupKey": "x", "status": "resolved", "alerts": []}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "etcd_repopulator_webhook_deliveries_total{source=\"alertmanager\",outcome=\"started\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn alertmanager_label_key_cluster_and_busy_service() {
    let app = start_selecting().await;
    let mut by_cluster_label = alert("resolved", "ignored", "g1");
    by_cluster_label["labels"] = json!({"alertname": "X", "cluster": "cray-reds-etcd"});
    let busy = alert("resolved", "cray-reds-etcd", "g2");
    let no_label = {
        let mut a = alert("resolved", "x", "g3");
        a["labels"] = json!({"alertname": "X"});
        a
    };
    let (status, body) = deliver(
        &app,
        &payload("resolved", vec![by_cluster_label, busy, no_label]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["alerts"][0]["outcome"], "started");
    assert_eq!(body["alerts"][1]["outcome"], "busy");
    assert_eq!(body["alerts"][1]["run_id"], body["runs"][0]);
    assert_eq!(body["alerts"][2]["outcome"], "no_cluster_label");
    app.finished_run(body["runs"][0].as_str().unwrap()).await;
}

const KEY: &[u8] = b"a-webhook-key-of-32-bytes-length";

fn sign(ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn start_with_key(dir: &std::path::Path) -> TestApp {
    start_with_key_and(dir, WebhooksConfig::default()).await
}

/// Like [`start_with_key`], with `webhooks` as configured (its key file is set here).
async fn start_with_key_and(dir: &std::path::Path, webhooks: WebhooksConfig) -> TestApp {
    let key_file = dir.join("webhook-hmac-key");
    // As `kubectl create secret --from-file` of a file written by echo: a trailing newline.
    std::fs::write(&key_file, [KEY, b"\n"].concat()).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "ops:write:w-0123456789abcdef\n").unwrap();
    let config = Config {
        auth: AuthConfig {
            mode: AuthMode::Token,
            tokens_file: tokens,
            ..AuthConfig::default()
        },
        webhooks: WebhooksConfig {
            hmac_key_file: Some(key_file),
            ..webhooks
        },
        ..Config::default()
    };
    start_with(SimOptions::default(), config).await
}

async fn post_signed(
    app: &TestApp,
    ts: &str,
    signature: Option<&str>,
    body: &[u8],
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/webhooks/generic"))
        .header("content-type", "application/json")
        .header("x-signature-timestamp", ts)
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-signature-256", signature);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn generic_webhook_needs_a_fresh_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_with_key(dir.path()).await;
    let body = br#"{"services":["reds"],"reason":"cray-reds-etcd rebuilt by automation"}"#;
    let now = chrono::Utc::now().timestamp().to_string();

    // Missing, malformed, wrong key or body: 401 problems.
    let p = problem(
        post_signed(&app, &now, None, body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(p["type"].as_str().unwrap().ends_with("bad-signature"));
    problem(
        post_signed(&app, &now, Some("sha256=zz"), body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let other_body = sign(&now, br#"{"services":["bss"]}"#);
    problem(
        post_signed(&app, &now, Some(&other_body), body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Stale: correctly signed ten minutes ago.
    let old = (chrono::Utc::now().timestamp() - 600).to_string();
    let p = problem(
        post_signed(&app, &old, Some(&sign(&old, body)), body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("replay window"), "{p}");
    assert!(detail.contains("s ago"), "{p}");
    // From the future: a clock ahead of the service's.
    let ahead = (chrono::Utc::now().timestamp() + 600).to_string();
    let p = problem(
        post_signed(&app, &ahead, Some(&sign(&ahead, body)), body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("in the future"),
        "{p}"
    );

    // Good: a run, recorded as started by the webhook (no bearer token needed).
    let signature = sign(&now, body);
    let resp = post_signed(&app, &now, Some(&signature), body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["requested_by"], "webhook:generic");
    assert_eq!(run["reason"], "cray-reds-etcd rebuilt by automation");

    // Replayed within the window: the same run, not a second one.
    let resp = post_signed(&app, &now, Some(&signature), body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let replay: Value = resp.json().await.unwrap();
    assert_eq!(replay["id"], run["id"]);

    // Alertmanager, by contrast, authenticates with a bearer token.
    let resp = app
        .http
        .post(app.url("/webhooks/alertmanager"))
        .json(&payload("resolved", vec![]))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNAUTHORIZED).await;

    tokio::time::timeout(common::WAIT, app.runner.idle())
        .await
        .unwrap();
    let metrics = app.metrics().await;
    for (outcome, count) in [("started", 2), ("unauthorized", 5)] {
        let line = format!(
            "etcd_repopulator_webhook_deliveries_total{{source=\"generic\",outcome=\"{outcome}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn generic_webhook_without_a_key_is_disabled() {
    let app = start().await;
    let now = chrono::Utc::now().timestamp().to_string();
    let body = br#"{"services":["reds"]}"#;
    let p = problem(
        post_signed(&app, &now, Some(&sign(&now, body)), body).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(p["type"].as_str().unwrap().ends_with("webhook-disabled"));
    // Unsigned too: the caller learns the webhook is off, not that a signature is missing.
    let p = problem(
        post_signed(&app, &now, None, body).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        p["type"].as_str().unwrap().ends_with("webhook-disabled"),
        "{p}"
    );
    let unsigned = app
        .http
        .post(app.url("/webhooks/generic"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let p = problem(unsigned, StatusCode::NOT_FOUND).await;
    assert!(
        p["type"].as_str().unwrap().ends_with("webhook-disabled"),
        "{p}"
    );
}

/// A field of the wrong type in an Alertmanager payload is a 422 naming it (an enum's too).
#[tokio::test]
async fn alertmanager_fields_of_the_wrong_type_are_422_naming_them() {
    let app = start_selecting().await;
    let good = payload("resolved", vec![alert("resolved", "cray-reds-etcd", "f1")]);
    for (pointer, value, field) in [
        ("/status", json!(1), "status"),
        ("/status", json!(null), "status"),
        ("/version", json!(4), "version"),
        ("/alerts", json!({}), "alerts"),
        ("/alerts/0/status", json!(["resolved"]), "alerts[0].status"),
        ("/alerts/0/fingerprint", json!(7), "alerts[0].fingerprint"),
    ] {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        let (status, p) = deliver(&app, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{pointer}: {p}");
        assert_eq!(p["field"], field, "{pointer}: {p}");
    }
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"], json!([]), "no run was started");
}

#[test]
fn readme_config_example_is_valid() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\n[auth]")
        .expect("README has the [auth] example");
    let block = &readme[start + "```toml\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let config = Config::from_toml(block).unwrap();
    assert_eq!(
        config.webhooks.alertmanager.clusters,
        WebhooksConfig::default().alertmanager.clusters
    );
    assert!(config.webhooks.alertmanager.alertnames.is_empty());

    // The example of alert names to select.
    let start = readme
        .find("```toml\n[webhooks.alertmanager]\nalertnames = [\"")
        .expect("README has the alertnames example");
    let block = &readme[start + "```toml\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let config = Config::from_toml(block).unwrap();
    assert!(!config.webhooks.alertmanager.alertnames.is_empty());
}

#[tokio::test]
async fn alertmanager_selects_no_alert_until_told_which() {
    let app = start().await;
    let (status, body) = deliver(
        &app,
        &payload("resolved", vec![alert("resolved", "cray-reds-etcd", "d1")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runs"], json!([]));
    assert_eq!(body["alerts"][0]["outcome"], "not_selected");
    assert!(
        body["alerts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("webhooks.alertmanager.alertnames"),
        "{body}"
    );
    // No run id to follow: the field is left out rather than null.
    assert!(body["alerts"][0].get("run_id").is_none(), "{body}");
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"], json!([]));
}

#[tokio::test]
async fn webhook_bodies_must_be_json_and_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_with_key(dir.path()).await;
    let token = "w-0123456789abcdef";
    let am = serde_json::to_vec(&payload("resolved", vec![])).unwrap();
    for content_type in [None, Some("text/plain")] {
        let mut request = app
            .http
            .post(app.url("/webhooks/alertmanager"))
            .bearer_auth(token)
            .body(am.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        problem(
            request.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }
    let now = chrono::Utc::now().timestamp().to_string();
    let body = br#"{"services":["reds"]}"#;
    let resp = app
        .http
        .post(app.url("/webhooks/generic"))
        .header("x-signature-timestamp", &now)
        .header("x-signature-256", sign(&now, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Over the limit: a problem, not axum's text/plain.
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(70 * 1024));
    let resp = app
        .http
        .post(app.url("/webhooks/alertmanager"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    let resp = post_signed(
        &app,
        &now,
        Some(&sign(&now, big.as_bytes())),
        big.as_bytes(),
    )
    .await;
    problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    let history: Value = app
        .http
        .get(app.url("/repopulations"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["items"], json!([]), "nothing was started");
}

/// `webhooks.recover_clusters` of one cluster.
fn recover(cluster: &str, mode: EtcdMode) -> WebhooksConfig {
    WebhooksConfig {
        recover_clusters: [(cluster.to_owned(), mode)].into(),
        ..WebhooksConfig::default()
    }
}

#[tokio::test]
async fn alertmanager_recovers_only_the_clusters_configured_and_only_on_firing_alerts() {
    let mut config = Config {
        webhooks: recover("cray-reds-etcd", EtcdMode::Rebuild),
        ..Config::default()
    };
    config.webhooks.alertmanager.alertnames = vec!["EtcdClusterUnhealthy".into()];
    // cray-bss-bitnami-etcd is not the cluster of BSS on this release (1.0: cray-bss-etcd).
    config
        .webhooks
        .recover_clusters
        .insert("cray-bss-bitnami-etcd".to_owned(), EtcdMode::Auto);
    let app = start_with(SimOptions::default(), config).await;

    let (status, body) = deliver(
        &app,
        &payload(
            "firing",
            vec![
                alert("firing", "cray-reds-etcd", "r1"),
                alert("firing", "cray-bos-etcd", "b1"),
                alert("firing", "cray-bss-bitnami-etcd", "s1"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["runs"].as_array().unwrap().len(), 1, "{body}");
    // The configured cluster: a rebuild run of its services, confirmed by the configuration.
    assert_eq!(body["alerts"][0]["outcome"], "started", "{body}");
    let id = body["alerts"][0]["run_id"].as_str().unwrap().to_owned();
    // Not configured: as before, firing starts nothing.
    assert_eq!(body["alerts"][1]["outcome"], "firing", "{body}");
    assert!(
        body["alerts"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("webhooks.recover_clusters"),
        "{body}"
    );
    // Configured, but BSS's cluster here is another one: not confirmed, and said so.
    assert_eq!(body["alerts"][2]["outcome"], "not_confirmed", "{body}");
    assert!(
        body["alerts"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("would touch cray-bss-etcd"),
        "{body}"
    );

    let run = app.finished_run(&id).await;
    assert_eq!(run["etcd"], "rebuild", "{run:#}");
    assert_eq!(run["confirm"], json!(["cray-reds-etcd"]));
    assert_eq!(run["dry_run"], false);
    assert_eq!(run["requested_by"], "webhook:alertmanager");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Alertmanager: EtcdClusterUnhealthy firing for cray-reds-etcd")
            && reason
                .ends_with("; etcd rebuild allowed by webhooks.recover_clusters.cray-reds-etcd"),
        "{reason}"
    );

    // The alerts resolve: the recovered cluster's occurrence started its run already; the
    // other cluster gets a check run, as without the configuration.
    let (status, body) = deliver(
        &app,
        &payload(
            "resolved",
            vec![
                alert("resolved", "cray-reds-etcd", "r1"),
                alert("resolved", "cray-bos-etcd", "b1"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["alerts"][0]["outcome"], "duplicate", "{body}");
    assert_eq!(body["alerts"][0]["run_id"], id.as_str());
    assert_eq!(body["alerts"][1]["outcome"], "started", "{body}");
    let bos = app
        .finished_run(body["alerts"][1]["run_id"].as_str().unwrap())
        .await;
    assert_eq!(bos["etcd"], "check", "{bos:#}");
    assert_eq!(bos["confirm"], json!([]));
}

#[tokio::test]
async fn without_recover_clusters_alertmanager_runs_stay_check() {
    let app = start_selecting().await;
    let (status, body) = deliver(
        &app,
        &payload("firing", vec![alert("firing", "cray-reds-etcd", "c1")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["alerts"][0]["outcome"], "firing");
    let (status, body) = deliver(
        &app,
        &payload("resolved", vec![alert("resolved", "cray-reds-etcd", "c1")]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.finished_run(body["runs"][0].as_str().unwrap()).await;
    assert_eq!(run["etcd"], "check", "{run:#}");
    assert_eq!(run["confirm"], json!([]));
    assert!(run["backup"].is_null());
}

/// POSTs `body` to the generic webhook, signed now.
async fn post_generic(app: &TestApp, body: &Value) -> reqwest::Response {
    let now = chrono::Utc::now().timestamp().to_string();
    let body = serde_json::to_vec(body).unwrap();
    post_signed(app, &now, Some(&sign(&now, &body)), &body).await
}

#[tokio::test]
async fn the_generic_webhook_recovers_only_the_clusters_configured_with_that_mode() {
    // Without webhooks.recover_clusters: check runs only, dry or real.
    let dir = tempfile::tempdir().unwrap();
    let app = start_with_key(dir.path()).await;
    for dry_run in [false, true] {
        let body = json!({"services": ["reds", "meds"], "etcd": "auto", "dry_run": dry_run});
        let p = problem(post_generic(&app, &body).await, StatusCode::FORBIDDEN).await;
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .ends_with("not-allowed-by-configuration"),
            "{p}"
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(
                "webhook:generic may not start etcd auto runs on cray-reds-etcd (not listed)"
            ) && detail.contains(r#"recover_clusters = { "cray-reds-etcd" = "auto" }"#),
            "{p}"
        );
    }
    let resp = post_generic(&app, &json!({"services": ["reds"]})).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["etcd"], "check");
    tokio::time::timeout(common::WAIT, app.runner.idle())
        .await
        .unwrap();
    drop(app);

    // Configured: that mode on that cluster, confirmed by the configuration.
    let dir = tempfile::tempdir().unwrap();
    let app = start_with_key_and(dir.path(), recover("cray-reds-etcd", EtcdMode::Auto)).await;
    let p = problem(
        post_generic(&app, &json!({"services": ["reds"], "etcd": "rebuild"})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("cray-reds-etcd (configured: auto)"),
        "{p}"
    );
    // A cluster not listed among those the run touches: refused as a whole.
    let p = problem(
        post_generic(&app, &json!({"services": ["reds", "bss"], "etcd": "auto"})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("on cray-bss-etcd (not listed):") && !detail.contains("cray-reds-etcd ("),
        "{p}"
    );
    // The configuration confirms: the body does not.
    let p = problem(
        post_generic(
            &app,
            &json!({"services": ["reds"], "etcd": "auto", "confirm": ["cray-reds-etcd"]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["field"], "confirm");

    let resp = post_generic(
        &app,
        &json!({"services": ["reds", "meds"], "etcd": "auto", "reason": "reds etcd down"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["etcd"], "auto");
    assert_eq!(run["confirm"], json!(["cray-reds-etcd"]));
    assert_eq!(run["requested_by"], "webhook:generic");
    assert_eq!(
        run["reason"],
        "reds etcd down (etcd auto on cray-reds-etcd allowed by webhooks.recover_clusters)"
    );
    tokio::time::timeout(common::WAIT, app.runner.idle())
        .await
        .unwrap();
    let stored: Value = app
        .http
        .get(app.url(&format!("/repopulations/{}", run["id"].as_str().unwrap())))
        .bearer_auth("w-0123456789abcdef")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["etcd"], "auto", "{stored:#}");
    assert_eq!(stored["confirm"], json!(["cray-reds-etcd"]));
}
