//! The typed CSM clients against the fake CSM services, over a real loopback listener.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use etcd_repopulator::csm::{
    ComponentFilter, CsmClients, CsmConfig, CsmError, CsmService, RetryConfig,
};
use reqwest::StatusCode;
use serde_json::json;
use sim::csm::FakeCsm;

/// A served fake plus clients configured for it.
struct Harness {
    fake: FakeCsm,
    clients: CsmClients,
    config: CsmConfig,
}

/// Retries fast enough that a test exercising them takes milliseconds.
fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_total_delay: Duration::from_secs(1),
    }
}

/// Serves `fake` under `/csm` (plus a route answering a body that fits no spec, under
/// `/bogus`) and returns the base URL.
async fn serve(fake: &FakeCsm) -> String {
    let app = Router::new().nest("/csm", fake.router()).route(
        "/bogus/session",
        get(|| async { axum::Json(json!({ "not": "a list" })) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn harness_with(fake: FakeCsm, adjust: impl FnOnce(&mut CsmConfig)) -> Harness {
    let base = serve(&fake).await;
    let mut config = CsmConfig::simulated(&base);
    config.retry = fast_retry();
    config.timeout = Duration::from_secs(5);
    adjust(&mut config);
    let clients = CsmClients::new(&config).expect("valid config");
    Harness {
        fake,
        clients,
        config,
    }
}

async fn seeded() -> Harness {
    harness_with(FakeCsm::seeded(), |_| {}).await
}

fn assert_status(result: Result<impl std::fmt::Debug, CsmError>, expected: StatusCode) -> String {
    match result {
        Err(CsmError::Status { status, detail, .. }) if status == expected => detail,
        other => panic!("expected status {expected}, got {other:?}"),
    }
}

#[tokio::test]
async fn crus_lists_the_runbook_sessions() {
    let h = seeded().await;
    let sessions = h.clients.crus.list_sessions().await.expect("list");
    assert_eq!(sessions, h.fake.crus_sessions());
    let active: Vec<_> = sessions.iter().filter(|s| !s.completed).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].upgrade_id, "e0131663-dbee-47c2-aa5c-13fe9b110242");
    assert_eq!(active[0].state, "UPDATING");
    assert_eq!(active[0].upgrade_step_size, 50);
    assert_eq!(active[0].kind, "ComputeUpgradeSession");

    let one = h
        .clients
        .crus
        .get_session(&active[0].upgrade_id)
        .await
        .expect("get");
    assert_eq!(one.as_ref(), Some(active[0]));
    assert_eq!(
        h.clients
            .crus
            .get_session("no-such-session")
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn hsm_filters_ready_compute_and_management_nodes() {
    let h = seeded().await;
    let ready_compute = ComponentFilter::nodes()
        .with_role("Compute")
        .with_state("Ready");
    let nodes = h
        .clients
        .hsm
        .list_components(&ready_compute)
        .await
        .expect("list");
    let nids: Vec<i64> = nodes.iter().filter_map(|n| n.nid).collect();
    assert_eq!(nids, [1, 2, 3, 5, 6, 8]);
    assert_eq!(nodes[0].nmn_hostname().as_deref(), Some("nid000001-nmn"));
    assert!(
        nodes
            .iter()
            .all(|n| n.kind == "Node" && n.enabled == Some(true))
    );

    let ncns = h
        .clients
        .hsm
        .list_components(&ComponentFilter::nodes().with_role("Management"))
        .await
        .expect("list");
    let subroles: BTreeSet<_> = ncns.iter().filter_map(|n| n.sub_role.clone()).collect();
    assert_eq!(ncns.len(), 4);
    assert_eq!(
        subroles,
        BTreeSet::from(["Storage".to_owned(), "Worker".to_owned()])
    );

    let all = h
        .clients
        .hsm
        .list_components(&ComponentFilter::default())
        .await
        .expect("list");
    assert_eq!(all, h.fake.hsm_components());

    let recorded = h.fake.requests();
    let query = recorded.first().and_then(|r| r.query.clone());
    assert_eq!(query.as_deref(), Some("type=Node&state=Ready&role=Compute"));
}

#[tokio::test]
async fn hsm_rejects_an_unknown_type_with_a_problem_detail() {
    let h = seeded().await;
    let detail = assert_status(
        h.clients
            .hsm
            .list_components(&ComponentFilter::default().with_type("Toaster"))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("Toaster"), "{detail}");
}

#[tokio::test]
async fn fas_lists_images_actions_and_snapshots() {
    let h = seeded().await;
    let images = h.clients.fas.list_images().await.expect("images");
    assert_eq!(images, h.fake.fas_images());
    assert_eq!(images.len(), 5);
    assert!(
        images
            .iter()
            .all(|i| !i.s3_url.is_empty() && i.tags == ["default"])
    );

    let actions = h.clients.fas.list_actions().await.expect("actions");
    assert_eq!(actions, h.fake.fas_actions());
    assert_eq!(actions.iter().filter(|a| a.is_in_flight()).count(), 1);

    let snapshots = h.clients.fas.list_snapshots().await.expect("snapshots");
    assert_eq!(snapshots, h.fake.fas_snapshots());
    assert_eq!(snapshots[0].name, "pre_system_upgrade");
}

#[tokio::test]
async fn hmnfd_subscribers_are_the_ready_computes_and_the_ncns() {
    let h = seeded().await;
    let subscriptions = h.clients.hmnfd.list_subscriptions().await.expect("list");
    assert_eq!(subscriptions, h.fake.hmnfd_subscriptions());

    let expected: BTreeSet<String> = h
        .fake
        .hsm_components()
        .into_iter()
        .filter(|c| c.state.as_deref() == Some("Ready"))
        .map(|c| c.id)
        .collect();
    assert_eq!(expected.len(), 10);
    assert_eq!(
        h.clients.hmnfd.subscriber_nodes().await.expect("nodes"),
        expected
    );
}

#[tokio::test]
async fn bss_lists_boot_parameters() {
    let h = seeded().await;
    let entries = h.clients.bss.list_bootparameters().await.expect("list");
    assert_eq!(entries, h.fake.bss_bootparameters());
    assert_eq!(entries.len(), 9, "Default plus one entry per compute node");
    assert_eq!(entries[0].hosts, ["Default"]);
    assert!(entries[0].cloud_init.is_some());
}

#[tokio::test]
async fn cps_reports_contents_deployments_and_serving_nodes() {
    let h = seeded().await;
    let contents = h.clients.cps.list_contents().await.expect("contents");
    assert_eq!(contents, h.fake.cps_contents());
    assert_eq!(contents.iter().filter(|c| c.is_exported()).count(), 1);
    let deployments = h.clients.cps.list_deployments().await.expect("deployments");
    assert_eq!(deployments, h.fake.cps_deployments());
    assert_eq!(deployments.len(), 3);

    let serving = h
        .clients
        .cps
        .nodes_with_mounted_content()
        .await
        .expect("nodes");
    assert_eq!(
        serving,
        BTreeSet::from(["ncn-w001".to_owned(), "ncn-w002".to_owned()])
    );

    h.fake.wipe("cray-cps-etcd");
    let serving = h
        .clients
        .cps
        .nodes_with_mounted_content()
        .await
        .expect("nodes");
    assert!(serving.is_empty(), "no exported content means no clients");
}

#[tokio::test]
async fn bos_template_survives_wipe_and_put_back_unchanged() {
    let h = seeded().await;
    let templates = h.clients.bos.list_session_templates().await.expect("list");
    let names: Vec<_> = templates
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "boot-template",
            "cos-sessiontemplate-2.4.99",
            "uan-sessiontemplate-2.5.3"
        ]
    );

    let original = h
        .clients
        .bos
        .get_session_template("cos-sessiontemplate-2.4.99")
        .await
        .expect("get")
        .expect("seeded template exists");

    assert!(h.fake.wipe("cray-bos-etcd"));
    assert!(
        h.clients
            .bos
            .list_session_templates()
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        h.clients
            .bos
            .get_session_template("cos-sessiontemplate-2.4.99")
            .await
            .expect("get"),
        None
    );

    // Put back exactly what GET returned: the client strips the read-only fields.
    let stored = h
        .clients
        .bos
        .put_session_template("cos-sessiontemplate-2.4.99", &original)
        .await
        .expect("put");
    assert_eq!(stored, original);
    let again = h
        .clients
        .bos
        .get_session_template("cos-sessiontemplate-2.4.99")
        .await
        .expect("get");
    assert_eq!(again, Some(original));
    assert_eq!(h.fake.bos_templates().len(), 1);
}

#[tokio::test]
async fn bos_rejects_a_template_without_boot_sets() {
    let h = seeded().await;
    let detail = assert_status(
        h.clients
            .bos
            .put_session_template("broken", &json!({ "description": "no boot sets" }))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("boot_sets"), "{detail}");

    let not_an_object = h
        .clients
        .bos
        .put_session_template("broken", &json!([1]))
        .await;
    assert!(
        matches!(not_an_object, Err(CsmError::InvalidRequest { .. })),
        "{not_an_object:?}"
    );
    assert!(!h.fake.bos_templates().contains_key("broken"));
}

/// Counts of what each fake holds, in a fixed order, to compare before and after a wipe.
fn inventory(fake: &FakeCsm) -> [(&'static str, usize); 9] {
    [
        ("bos", fake.bos_templates().len()),
        ("bss", fake.bss_bootparameters().len()),
        ("cps contents", fake.cps_contents().len()),
        ("cps deployments", fake.cps_deployments().len()),
        ("crus", fake.crus_sessions().len()),
        ("fas images", fake.fas_images().len()),
        ("fas actions", fake.fas_actions().len()),
        ("hmnfd", fake.hmnfd_subscriptions().len()),
        ("hsm", fake.hsm_components().len()),
    ]
}

#[test]
fn wipe_empties_exactly_the_service_of_that_etcd_cluster() {
    let cases: [(&str, &[&str]); 6] = [
        ("cray-bos-etcd", &["bos"]),
        ("cray-bss-etcd", &["bss"]),
        ("cray-cps-etcd", &["cps contents", "cps deployments"]),
        ("cray-crus-etcd", &["crus"]),
        ("cray-fas-etcd", &["fas images", "fas actions"]),
        ("cray-hmnfd-etcd", &["hmnfd"]),
    ];
    for (cluster, emptied) in cases {
        let fake = FakeCsm::seeded();
        let before = inventory(&fake);
        assert!(
            before.iter().all(|(_, n)| *n > 0),
            "seed has data everywhere: {before:?}"
        );
        assert!(fake.wipe(cluster), "{cluster}");
        for ((name, after), (_, was)) in inventory(&fake).into_iter().zip(before) {
            let expected = if emptied.contains(&name) { 0 } else { was };
            assert_eq!(after, expected, "{name} after wiping {cluster}");
        }
    }
    let fake = FakeCsm::seeded();
    assert!(!fake.wipe("cray-externaldns-etcd"));
    assert!(!fake.wipe("no-such-etcd"));
}

#[tokio::test]
async fn repopulation_mutators_bring_data_back_through_the_api() {
    let h = seeded().await;
    let images = h.fake.fas_images();
    for cluster in ["cray-fas-etcd", "cray-bss-etcd", "cray-hmnfd-etcd"] {
        assert!(h.fake.wipe(cluster));
    }
    assert!(
        h.clients
            .fas
            .list_images()
            .await
            .expect("images")
            .is_empty()
    );
    assert!(
        h.clients
            .bss
            .list_bootparameters()
            .await
            .expect("bss")
            .is_empty()
    );
    assert!(
        h.clients
            .hmnfd
            .list_subscriptions()
            .await
            .expect("subs")
            .is_empty()
    );

    h.fake.reload_fas_images();
    h.fake.repopulate_bss();
    assert_eq!(h.fake.add_subscription("nid000001-nmn"), "x1000c0s0b0n0");
    assert_eq!(h.fake.add_subscription("x3000c0s4b0n0"), "x3000c0s4b0n0");

    assert_eq!(h.clients.fas.list_images().await.expect("images"), images);
    assert!(
        h.clients
            .fas
            .list_actions()
            .await
            .expect("actions")
            .is_empty(),
        "actions are lost for good"
    );
    assert_eq!(
        h.clients
            .bss
            .list_bootparameters()
            .await
            .expect("bss")
            .len(),
        9
    );
    assert_eq!(
        h.clients.hmnfd.subscriber_nodes().await.expect("nodes"),
        BTreeSet::from(["x1000c0s0b0n0".to_owned(), "x3000c0s4b0n0".to_owned()])
    );
}

#[tokio::test]
async fn a_service_that_is_down_answers_503_and_others_keep_working() {
    let h = seeded().await;
    assert!(h.fake.set_available("crus", false));
    let detail = assert_status(
        h.clients.crus.list_sessions().await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(detail, "crus is not available");
    let crus_attempts = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.service == CsmService::Crus)
        .count();
    assert_eq!(crus_attempts, 3, "retried up to max_attempts, then gave up");

    assert_eq!(
        h.clients
            .bos
            .list_session_templates()
            .await
            .expect("bos")
            .len(),
        3
    );

    assert!(h.fake.set_available("crus", true));
    assert_eq!(h.clients.crus.list_sessions().await.expect("list").len(), 2);
    assert!(!h.fake.set_available("no-such-service", false));
}

#[tokio::test]
async fn transient_503s_are_retried_until_the_service_recovers() {
    let h = seeded().await;
    h.fake.fail_next(CsmService::Fas, 2);
    assert_eq!(
        h.clients.fas.list_images().await.expect("recovers").len(),
        5
    );
    let attempts = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.service == CsmService::Fas)
        .count();
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut config = CsmConfig::simulated(&format!("http://{addr}"));
    config.retry = fast_retry();
    let clients = CsmClients::new(&config).expect("valid config");
    let result = clients.crus.list_sessions().await;
    assert!(
        matches!(&result, Err(CsmError::Unreachable { service: CsmService::Crus, url, .. }) if url.ends_with("/csm/crus/session")),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_fit_the_spec_is_a_decode_error() {
    let fake = FakeCsm::new();
    let base = serve(&fake).await;
    let mut config = CsmConfig::simulated(&base);
    config.crus_url = format!("{base}/bogus");
    let clients = CsmClients::new(&config).expect("valid config");
    let result = clients.crus.list_sessions().await;
    assert!(
        matches!(
            result,
            Err(CsmError::Decode {
                service: CsmService::Crus,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_token_is_sent_as_bearer_and_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-t0ken\n").expect("write token");
    let h = harness_with(FakeCsm::seeded(), |c| {
        c.token_file = Some(token_file.clone())
    })
    .await;

    h.fake.set_available("bos", false);
    let err = h
        .clients
        .bos
        .list_session_templates()
        .await
        .expect_err("bos is down");

    let request = h.fake.requests().pop().expect("a request was made");
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer s3cr3t-t0ken")
    );
    let user_agent = request.user_agent.unwrap_or_default();
    assert_eq!(
        user_agent,
        format!("etcd-repopulator/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.accept.as_deref(), Some("application/json"));

    for printed in [
        format!("{:?}", h.clients),
        format!("{:?}", h.config),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(!printed.contains("s3cr3t"), "token leaked: {printed}");
    }
}

#[tokio::test]
async fn without_a_token_file_no_authorization_is_sent() {
    let h = seeded().await;
    h.clients.crus.list_sessions().await.expect("list");
    assert_eq!(h.fake.requests()[0].authorization, None);
}

#[test]
fn an_unreadable_or_empty_token_file_fails_at_construction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = CsmConfig {
        token_file: Some(dir.path().join("absent")),
        ..CsmConfig::default()
    };
    assert!(matches!(
        CsmClients::new(&missing),
        Err(CsmError::Token { .. })
    ));

    let empty_file = dir.path().join("empty");
    std::fs::write(&empty_file, "  \n").expect("write");
    let empty = CsmConfig {
        token_file: Some(empty_file),
        ..CsmConfig::default()
    };
    assert!(matches!(
        CsmClients::new(&empty),
        Err(CsmError::Token { .. })
    ));
}

#[test]
fn config_defaults_are_the_in_cluster_urls_and_toml_overrides_them() {
    let defaults = CsmConfig::default();
    assert_eq!(defaults.bos_url, "http://cray-bos");
    assert_eq!(defaults.hsm_url, "http://cray-smd/hsm/v2");
    assert_eq!(defaults.hmnfd_url, "http://cray-hmnfd/hmi/v2");
    assert_eq!(defaults.timeout, Duration::from_secs(30));

    let parsed: CsmConfig = toml::from_str(
        r#"
        bos_url = "https://api-gw-service-nmn.local/apis/bos"
        token_file = "/var/run/secrets/csm/token"
        timeout = "10s"
        [retry]
        max_attempts = 2
        "#,
    )
    .expect("valid [csm] section");
    assert_eq!(parsed.bos_url, "https://api-gw-service-nmn.local/apis/bos");
    assert_eq!(parsed.crus_url, defaults.crus_url);
    assert_eq!(parsed.timeout, Duration::from_secs(10));
    assert_eq!(parsed.retry.max_attempts, 2);
    assert_eq!(parsed.retry.min_delay, defaults.retry.min_delay);

    let unknown = toml::from_str::<CsmConfig>("bos = \"http://x\"");
    assert!(unknown.is_err(), "unknown keys are rejected");

    let bad_url = CsmConfig {
        fas_url: "not a url".into(),
        ..CsmConfig::default()
    };
    let err = CsmClients::new(&bad_url).expect_err("bad URL");
    assert!(err.to_string().contains("csm.fas_url"), "{err}");
}
