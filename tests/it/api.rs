//! The service core end to end: HTTP API -> runner -> kube-rs -> simulated cluster.

use crate::common;

use crate::common::{problem, start};
use etcd_repopulator::model::{Service, State};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn reds_and_meds_run_restarts_the_pods_and_succeeds() {
    let app = start().await;
    let before_reds = app.pods_matching("app.kubernetes.io/name=cray-reds").await;
    let before_meds = app.pods_matching("app.kubernetes.io/name=cray-meds").await;
    assert!(!before_reds.is_empty() && !before_meds.is_empty());

    let resp = app
        .http
        .post(app.url("/repopulations"))
        .json(&json!({"services": ["reds", "meds"], "reason": "cray-reds-etcd rebuilt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = resp.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    assert_eq!(location, format!("/repopulations/{id}"));
    assert_eq!(run["reason"], "cray-reds-etcd rebuilt");
    assert_eq!(run["services"].as_array().unwrap().len(), 2);

    let run = app.finished(id).await;
    assert_eq!(run.state, State::Succeeded, "{run:#?}");
    assert!(run.started_at.is_some() && run.finished_at.is_some());
    let mut services: Vec<Service> = run.services.iter().map(|t| t.service).collect();
    services.sort();
    assert_eq!(services, [Service::Meds, Service::Reds]);
    for task in &run.services {
        assert_eq!(task.state, State::Succeeded, "{task:#?}");
        let step = &task.steps[0];
        assert_eq!(step.state, State::Succeeded);
        let data = step.data.as_ref().expect("the restart's data");
        assert!(!data["new_pods"].as_array().unwrap().is_empty());
    }

    for (selector, before) in [
        ("app.kubernetes.io/name=cray-reds", before_reds),
        ("app.kubernetes.io/name=cray-meds", before_meds),
    ] {
        let after = app.pods_matching(selector).await;
        assert_eq!(after.len(), before.len(), "{selector}: {after:?}");
        for (name, uid, ready) in &after {
            assert!(ready, "{name} is Ready");
            assert!(
                before.iter().all(|(_, old, _)| old != uid),
                "{name} is a new pod"
            );
        }
    }

    let (status, events) = app.get(&format!("/repopulations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events["id"], id);
}

#[tokio::test]
async fn every_user_error_is_a_problem_document() {
    let app = start().await;
    let post_raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(app.url("/repopulations"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let p = problem(
        post_raw("{\"services\": [", "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(p["type"].as_str().unwrap().ends_with("malformed-json"));

    let p = problem(
        post_raw("{\"servics\": [\"reds\"]}", "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["field"], "servics");

    let p = problem(
        post_raw("{\"services\": [\"reds\", \"nope\"]}", "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("nope"), "{p}");
    assert_eq!(p["field"], "services");

    let p = problem(
        post_raw("{\"services\": []}", "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["field"], "services");

    problem(
        post_raw("services=reds", "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(70 * 1024));
    let resp = app
        .http
        .post(app.url("/repopulations"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;

    let p = problem(
        app.http
            .get(app.url("/repopulations/not-a-uuid"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("not-a-uuid"));

    problem(
        app.http
            .get(app.url("/repopulations/0190b5a0-0000-7000-8000-000000000000"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.http
            .delete(app.url("/repopulations"))
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    problem(
        app.http.get(app.url("/nowhere")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    for query in [
        "limit=0",
        "limit=abc",
        "cursor=zzz",
        "state=sleeping",
        "service=dns",
    ] {
        problem(
            app.http
                .get(app.url(&format!("/repopulations?{query}")))
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    // Empty, and with a tab (a valid header character, but not part of a key).
    for key in ["", "a\tb"] {
        problem(
            app.http
                .post(app.url("/repopulations"))
                .header("idempotency-key", key)
                .json(&json!({"services": ["reds"]}))
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[tokio::test]
async fn overlapping_runs_for_a_service_conflict() {
    let app = start().await;
    let body = json!({"services": ["reds"]});
    let (a, b) = tokio::join!(
        app.post("/repopulations", body.clone()),
        app.post("/repopulations", body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let (accepted, conflict) = if a.0 == StatusCode::ACCEPTED {
        (a.1, b.1)
    } else {
        (b.1, a.1)
    };
    assert_eq!(conflict["active_run"], accepted["id"]);
    assert!(
        conflict["detail"]
            .as_str()
            .unwrap()
            .contains(accepted["id"].as_str().unwrap())
    );
    let run = app.finished_run(accepted["id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded");
    // Once it is over, the service is free again.
    let id = app.start_run(json!({"services": ["reds"]})).await;
    assert_eq!(app.finished_run(&id).await["state"], "succeeded");
}

#[tokio::test]
async fn idempotency_key_returns_the_same_run() {
    let app = start().await;
    let send = |key: &'static str, body: Value| {
        app.http
            .post(app.url("/repopulations"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first: Value = send("rebuild-42", json!({"services": ["meds"], "dry_run": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = send("rebuild-42", json!({"services": ["meds"], "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let p = problem(
        send("rebuild-42", json!({"services": ["reds"]}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    app.finished_run(first["id"].as_str().unwrap()).await;
    let (_, list) = app.get("/repopulations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn history_is_newest_first_paginated_and_filterable() {
    let app = start().await;
    let mut ids = Vec::new();
    for service in ["reds", "meds", "reds", "meds", "reds"] {
        let id = app
            .start_run(json!({"services": [service], "dry_run": true}))
            .await;
        assert_eq!(app.finished_run(&id).await["state"], "succeeded");
        ids.push(id);
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut path = "/repopulations?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/repopulations?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let (_, meds) = app.get("/repopulations?service=meds").await;
    let meds: Vec<&str> = meds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(meds, [ids[1].as_str(), ids[3].as_str()]);
    let (_, failed) = app.get("/repopulations?state=failed").await;
    assert!(failed["items"].as_array().unwrap().is_empty());
    let (_, ok) = app.get("/repopulations?state=succeeded&limit=500").await;
    assert_eq!(ok["items"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn dry_run_plans_without_touching_pods() {
    let app = start().await;
    let before = app.pods_matching("app.kubernetes.io/name=cray-reds").await;
    let id = app
        .start_run(json!({"services": ["reds"], "dry_run": true}))
        .await;
    let run = app.finished(&id).await;
    assert_eq!(run.state, State::Succeeded);
    assert!(run.dry_run);
    let step = &run.services[0].steps[0];
    assert!(
        step.message.as_deref().unwrap().starts_with("dry run"),
        "{step:#?}"
    );
    let planned: Vec<&str> = step.data.as_ref().unwrap()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let names: Vec<&str> = before.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(planned, names);
    assert_eq!(
        app.pods_matching("app.kubernetes.io/name=cray-reds").await,
        before
    );
}

#[tokio::test]
async fn services_lists_every_service_with_its_steps() {
    let app = start().await;
    let (status, body) = app.get("/services").await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 9);
    let reds = items.iter().find(|s| s["service"] == "reds").unwrap();
    assert_eq!(reds["supported"], true);
    assert!(
        reds["steps"][0]["description"]
            .as_str()
            .unwrap()
            .contains("app.kubernetes.io/name=cray-reds")
    );
    let (status, health) = app.get("/healthz").await;
    assert_eq!((status, &health["status"]), (StatusCode::OK, &json!("ok")));
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
}

#[tokio::test]
async fn cancel_stops_a_waiting_run() {
    use etcd_repopulator::config::Config;
    use sim::SimOptions;
    // Pods take a minute to become Ready, so the run is still waiting when cancelled (the
    // cluster is not waited on to settle: its pods only need to exist).
    let sim = sim::SimCluster::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            kubelet_ready_delay: std::time::Duration::from_secs(60),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    sim.seed_csm().await.unwrap();
    let app = common::start_on(sim, Config::default()).await;
    let id = app.start_run(json!({"services": ["reds"]})).await;
    app.cancel(&id).await;
    let run = app.finished(&id).await;
    assert_eq!(run.state, State::Cancelled, "{run:#?}");
    assert_eq!(run.services[0].state, State::Cancelled);
    assert_eq!(run.services[0].steps[0].state, State::Cancelled);

    let resp = app
        .http
        .post(app.url(&format!("/repopulations/{id}/cancel")))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::CONFLICT).await;
    let resp = app
        .http
        .post(app.url(&format!("/repopulations/{id}/resume")))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_post_must_say_what_it_repopulates() {
    let app = start().await;
    let url = app.url("/repopulations");
    // What `curl -X POST .../repopulations` sends: no body, no content type.
    let resp = app.http.post(&url).send().await.unwrap();
    let p = problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(
        p["detail"].as_str().unwrap().contains("application/json"),
        "{p}"
    );
    // An empty body that claims to be JSON.
    let resp = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let p = problem(resp, StatusCode::BAD_REQUEST).await;
    assert!(p["type"].as_str().unwrap().ends_with("malformed-json"));
    // JSON without saying so.
    let resp = app
        .http
        .post(&url)
        .body(r#"{"services":["reds"]}"#)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // `services` is required, and names at least one.
    for body in [
        json!({}),
        json!({"dry_run": true}),
        json!({"services": []}),
        json!({"services": ["all", "nope"]}),
    ] {
        let (status, p) = app.post("/repopulations", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["field"], "services", "{body}: {p}");
    }
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"], json!([]), "nothing was started");

    // `["all"]` is every service this build supports.
    let (_, services) = app.get("/services").await;
    let supported: Vec<&str> = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["supported"] == true)
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    // ("all" with other names is still all.)
    let (status, run) = app
        .post(
            "/repopulations",
            json!({"services": ["all", "reds"], "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let planned: Vec<&str> = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert_eq!(planned, supported);
}

#[tokio::test]
async fn a_wrongly_typed_field_is_named_not_its_value() {
    let app = start().await;
    for (body, field) in [
        (json!({"services": ["reds"], "dry_run": 1}), "dry_run"),
        (json!({"services": ["reds"], "reason": 5}), "reason"),
        (json!({"services": "reds"}), "services"),
    ] {
        let (status, p) = app.post("/repopulations", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}: {p}");
    }
}

#[tokio::test]
async fn a_backup_for_services_without_an_etcd_cluster_is_refused() {
    let app = start().await;
    let body = json!({"services": ["meds"], "etcd": "restore", "backup": "db-1", "dry_run": true});
    let (status, p) = app.post("/repopulations", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["field"], "backup", "{p}");
    assert_eq!(
        p["detail"],
        "backup \"db-1\" restores an etcd cluster, and none of the services (meds) has one: \
         leave backup out, or add the service whose cluster it is"
    );
}

/// With `auth.mode = "none"` the served document asks for no credentials (the committed one
/// describes a service with authentication on).
#[tokio::test]
async fn the_served_openapi_document_follows_the_auth_mode() {
    let app = start().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["security"].is_null(), "{}", doc["security"]);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let declared = op["security"].as_array().cloned().unwrap_or_default();
            assert!(
                declared.iter().all(|r| r.get("bearer").is_none()),
                "{method} {path} asks for a bearer token: {declared:?}"
            );
            assert!(op["responses"].get("401").is_none() || path == "/webhooks/generic");
        }
    }
}

/// POSTs `body` and asserts a 422 problem naming `field`; returns the problem.
async fn refused(app: &common::TestApp, body: Value, field: &str) -> Value {
    let resp = app
        .http
        .post(app.url("/repopulations"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let p = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p["field"], field, "{body}: {p}");
    p
}

/// A field of the wrong type is a 422 naming it, whatever the type: never a 400 calling the
/// (valid) JSON malformed.
#[tokio::test]
async fn every_field_of_the_wrong_type_is_a_422_naming_it() {
    let app = start().await;
    let wrong: [(&str, Vec<Value>); 6] = [
        (
            "etcd",
            vec![
                json!(1),
                json!(null),
                json!(true),
                json!(["restore"]),
                json!({}),
            ],
        ),
        (
            "services",
            vec![json!(1), json!(null), json!("reds"), json!({})],
        ),
        (
            "dry_run",
            vec![json!("yes"), json!(null), json!(1), json!([])],
        ),
        ("reason", vec![json!(1), json!(true), json!([]), json!({})]),
        ("backup", vec![json!(1), json!(false), json!(["db-x"])]),
        (
            "confirm",
            vec![json!("cray-reds-etcd"), json!(null), json!(1)],
        ),
    ];
    for (field, values) in wrong {
        for value in values {
            let mut body = json!({"services": ["reds"], "dry_run": true});
            body[field] = value;
            let p = refused(&app, body, field).await;
            assert!(
                p["type"].as_str().unwrap().ends_with("invalid-request"),
                "{p}"
            );
        }
    }
    // An item of the wrong type is named with its index.
    for field in ["services", "confirm"] {
        let mut body = json!({"services": ["reds"], "dry_run": true});
        body[field] = json!([1]);
        refused(&app, body, &format!("{field}[0]")).await;
    }
    // The etcd modes are named.
    let p = refused(&app, json!({"services": ["reds"], "etcd": 1}), "etcd").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("`check`, `restore`, `rebuild`, `auto`"),
        "{p}"
    );
}

/// MEDS and External DNS have no etcd cluster: a backup for them is refused, not ignored.
#[tokio::test]
async fn a_backup_with_no_cluster_to_restore_is_refused() {
    let app = start().await;
    for services in [json!(["meds"]), json!(["meds", "externaldns"])] {
        for dry_run in [false, true] {
            let p = refused(
                &app,
                json!({"services": services, "etcd": "restore", "backup": "db-x",
                       "dry_run": dry_run}),
                "backup",
            )
            .await;
            assert!(p["detail"].as_str().unwrap().contains("meds"), "{p}");
        }
    }
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"], json!([]), "no run was started");
}

#[tokio::test]
async fn a_run_that_may_rebuild_or_restore_etcd_clusters_must_confirm_exactly_them() {
    let app = start().await;

    // An unknown mode; backup without restore; confirm on a check run.
    let p = refused(&app, json!({"services": ["reds"], "etcd": "wipe"}), "etcd").await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("wipe") && detail.contains("`check`, `restore`, `rebuild`, `auto`"),
        "{p}"
    );
    for mode in [json!("auto"), json!("rebuild"), Value::Null] {
        let mut body = json!({"services": ["reds"], "backup": "snap-1", "dry_run": true});
        if !mode.is_null() {
            body["etcd"] = mode;
        }
        let p = refused(&app, body, "backup").await;
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("it needs \"etcd\": \"restore\""),
            "{p}"
        );
    }
    let p = refused(
        &app,
        json!({"services": ["reds"], "etcd": "restore", "backup": "", "dry_run": true}),
        "backup",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("1 to 255"), "{p}");
    // A path is never a backup's name: 422 before anything looks for it.
    for name in [
        "../../etc/passwd",
        "cray-reds/db-2025-01-01_00-00",
        "/etc/passwd",
        "..",
        ".",
        "..\\x",
    ] {
        let p = refused(
            &app,
            json!({"services": ["reds"], "etcd": "restore", "backup": name, "dry_run": true}),
            "backup",
        )
        .await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("is not a backup's name") && detail.contains("one file name"),
            "{name}: {p}"
        );
    }
    refused(
        &app,
        json!({"services": ["reds"], "confirm": ["cray-reds-etcd"]}),
        "confirm",
    )
    .await;

    // A real run without confirm, with a wrong name, with one of two, with one too many: 422
    // saying exactly what to confirm (the release is 1.0: etcd-operator names), and what was.
    let needed = json!(["cray-bss-etcd", "cray-reds-etcd"]);
    for given in [
        json!([]),
        json!(["cray-bss-bitnami-etcd", "cray-reds-bitnami-etcd"]),
        json!(["cray-reds-etcd"]),
        json!(["cray-bss-etcd", "cray-reds-etcd", "cray-fas-etcd"]),
    ] {
        let p = refused(
            &app,
            json!({"services": ["bss", "meds", "reds"], "etcd": "rebuild", "confirm": given}),
            "confirm",
        )
        .await;
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .ends_with("etcd-clusters-not-confirmed"),
            "{p}"
        );
        assert_eq!(p["confirm"], needed, "{p}");
        let mut sorted: Vec<&str> = given
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        sorted.sort_unstable();
        assert_eq!(p["confirm_given"], json!(sorted), "{p}");
        assert!(
            p["detail"].as_str().unwrap().contains(
                r#"confirm exactly cray-bss-etcd, cray-reds-etcd ("confirm": ["cray-bss-etcd","cray-reds-etcd"])"#
            ),
            "{p}"
        );
    }
    // A backup is one cluster's: a restore of two clusters cannot name one.
    refused(
        &app,
        json!({"services": ["bss", "reds"], "etcd": "restore", "backup": "snap-1",
               "confirm": ["cray-bss-etcd", "cray-reds-etcd"]}),
        "backup",
    )
    .await;
    let (_, history) = app.get("/repopulations").await;
    assert_eq!(history["items"], json!([]), "nothing was started");

    // A dry run needs no confirm; its etcd mode is kept.
    let (status, dry) = app
        .post(
            "/repopulations",
            json!({"services": ["reds"], "etcd": "auto", "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dry}");
    assert_eq!(dry["etcd"], "auto");
    assert_eq!(dry["confirm"], json!([]));
    app.finished_run(dry["id"].as_str().unwrap()).await;
    // A confirm a dry run carries is checked all the same (it rehearses the real request).
    let p = refused(
        &app,
        json!({"services": ["reds"], "etcd": "auto", "dry_run": true, "confirm": ["cray-bss-etcd"]}),
        "confirm",
    )
    .await;
    assert_eq!(p["confirm"], json!(["cray-reds-etcd"]));

    // MEDS has no etcd cluster of its own: a real run of it confirms none.
    let (status, meds) = app
        .post(
            "/repopulations",
            json!({"services": ["meds"], "etcd": "rebuild"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{meds}");
    assert_eq!(meds["etcd"], "rebuild");
    app.finished_run(meds["id"].as_str().unwrap()).await;

    // Confirmed exactly (in any order, repeated names count once): accepted, and what was asked
    // is the run's, in GET /repopulations/{id} and (the mode) in the list.
    let (status, run) = app
        .post(
            "/repopulations",
            json!({"services": ["reds", "meds"], "etcd": "restore", "backup": "snap-1",
                   "confirm": ["cray-reds-etcd", "cray-reds-etcd"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap();
    for run in [
        run.clone(),
        app.get(&format!("/repopulations/{id}")).await.1,
    ] {
        assert_eq!(run["etcd"], "restore", "{run}");
        assert_eq!(run["backup"], "snap-1", "{run}");
        assert_eq!(run["confirm"], json!(["cray-reds-etcd"]), "{run}");
        assert_eq!(run["dry_run"], false, "{run}");
    }
    app.finished_run(id).await;
    let (_, run) = app.get(&format!("/repopulations/{id}")).await;
    assert_eq!(
        run["etcd"], "restore",
        "stored with the finished run: {run}"
    );
    assert_eq!(run["confirm"], json!(["cray-reds-etcd"]));
    let (_, list) = app.get("/repopulations").await;
    let modes: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["etcd"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["restore", "rebuild", "auto"]);
}

#[tokio::test]
async fn an_idempotency_key_stands_for_the_etcd_mode_too() {
    let app = start().await;
    let send = |body: Value| {
        app.http
            .post(app.url("/repopulations"))
            .header("idempotency-key", "recover-bss-1")
            .json(&body)
            .send()
    };
    let body = json!({"services": ["meds"], "dry_run": true, "etcd": "auto"});
    let first: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(first["etcd"], "auto");
    let again: Value = send(body).await.unwrap().json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    for other in [
        json!({"services": ["meds"], "dry_run": true}),
        json!({"services": ["meds"], "dry_run": true, "etcd": "rebuild"}),
        json!({"services": ["meds"], "dry_run": true, "etcd": "restore"}),
    ] {
        let p = problem(
            send(other.clone()).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .ends_with("idempotency-key-reused"),
            "{other}: {p}"
        );
    }
    app.finished_run(first["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn on_a_bitnami_release_the_clusters_to_confirm_are_the_bitnami_statefulsets() {
    let sim = common::release_sim("1.6", sim::SimOptions::default()).await;
    let app = common::start_on(sim, etcd_repopulator::config::Config::default()).await;
    let p = refused(
        &app,
        json!({"services": ["bss", "fas", "meds"], "etcd": "auto", "confirm": ["cray-bss-etcd"]}),
        "confirm",
    )
    .await;
    assert_eq!(
        p["confirm"],
        json!(["cray-bss-bitnami-etcd", "cray-fas-bitnami-etcd"])
    );
    assert_eq!(p["confirm_given"], json!(["cray-bss-etcd"]));
    // ["all"]: every cluster of the release.
    let p = refused(
        &app,
        json!({"services": ["all"], "etcd": "rebuild"}),
        "confirm",
    )
    .await;
    assert_eq!(
        p["confirm"],
        json!([
            "cray-bos-bitnami-etcd",
            "cray-bss-bitnami-etcd",
            "cray-fas-bitnami-etcd",
            "cray-hmnfd-bitnami-etcd"
        ])
    );
}
