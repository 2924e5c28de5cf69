//! BOS session templates: captured into snapshots (POST /snapshots), lost with BOS's etcd
//! (`FakeCsm::wipe("cray-bos-etcd")`), and restored by a `bos` run.

use crate::common;

use reqwest::StatusCode;
use serde_json::{Value, json};

async fn run_bos(app: &common::TestApp, dry_run: bool) -> Value {
    let id = app
        .start_run(json!({ "services": ["bos"], "dry_run": dry_run }))
        .await;
    app.finished_run(&id).await
}

/// Writes a template straight into the fake BOS, as an admin with `cray bos` would.
async fn put_template(app: &common::TestApp, name: &str, template: Value) {
    let url = format!("{}/csm/bos/v2/sessiontemplates/{name}", app.sim.url());
    let resp = app.http.put(url).json(&template).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn templates_come_back_from_the_snapshot_after_a_rebuild() {
    let app = common::start().await;
    let before = app.sim.csm().bos_templates();
    assert_eq!(before.len(), 3);

    let (status, report) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{report:#}");
    let bos = report["stored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "bos-session-templates")
        .unwrap();
    assert_eq!(bos["items"], 3);

    assert!(app.sim.csm().wipe("cray-bos-etcd"));
    assert!(app.sim.csm().bos_templates().is_empty());
    // An admin already recreated one template by hand, differently: it must stay as it is.
    let mut own = before["boot-template"].clone();
    own["description"] = json!("recreated by hand");
    for read_only in ["name", "tenant", "links"] {
        own.as_object_mut().unwrap().remove(read_only);
    }
    put_template(&app, "boot-template", own).await;

    // A capture after the rebuild records the loss; the restore must skip it.
    let (status, partial) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let partial_bos = partial["stored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "bos-session-templates")
        .unwrap();

    let run = run_bos(&app, false).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let step = &run["services"][0]["steps"][0];
    assert_eq!(
        step["data"]["restored"],
        json!(["cos-sessiontemplate-2.4.99", "uan-sessiontemplate-2.5.3"])
    );
    assert_eq!(step["data"]["already_present"], json!(["boot-template"]));
    // Each from the newest snapshot that holds it: the capture after the rebuild holds neither.
    for source in step["data"]["to_restore"].as_array().unwrap() {
        assert_eq!(source["snapshot"], bos["id"], "{source}");
    }
    assert_eq!(step["data"]["snapshots_considered"], 2);
    assert_ne!(partial_bos["id"], bos["id"]);

    let after = app.sim.csm().bos_templates();
    assert_eq!(after.len(), 3);
    for name in ["cos-sessiontemplate-2.4.99", "uan-sessiontemplate-2.5.3"] {
        assert_eq!(after[name], before[name], "{name}");
    }
    assert_eq!(after["boot-template"]["description"], "recreated by hand");
}

/// `POST /snapshots`; returns the id of the BOS snapshot it stored.
async fn capture(app: &common::TestApp) -> Value {
    let (status, report) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{report:#}");
    report["stored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "bos-session-templates")
        .unwrap()["id"]
        .clone()
}

/// A template as an admin would write it (without the fields BOS sets).
fn writable(template: &Value, description: &str) -> Value {
    let mut template = template.clone();
    for read_only in ["name", "tenant", "links"] {
        template.as_object_mut().unwrap().remove(read_only);
    }
    template["description"] = json!(description);
    template
}

#[tokio::test]
async fn every_missing_template_comes_from_the_newest_snapshot_that_holds_it() {
    let app = common::start().await;
    let seeded = app.sim.csm().bos_templates();
    let old = capture(&app).await;
    // Later an admin changes one template and adds another; a capture records both.
    put_template(
        &app,
        "boot-template",
        writable(&seeded["boot-template"], "changed"),
    )
    .await;
    put_template(
        &app,
        "added-later",
        writable(&seeded["boot-template"], "added"),
    )
    .await;
    let newer = capture(&app).await;
    let held = app.sim.csm().bos_templates();
    // The rebuild; an admin recreates one template under a new name, and a capture (by hand
    // or the periodic one) records only that.
    assert!(app.sim.csm().wipe("cray-bos-etcd"));
    put_template(
        &app,
        "made-after",
        writable(&seeded["boot-template"], "new"),
    )
    .await;
    let after = capture(&app).await;

    let run = run_bos(&app, false).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let step = &run["services"][0]["steps"][0];
    assert_eq!(step["data"]["snapshots_considered"], 3);
    assert_eq!(step["data"]["already_present"], json!(["made-after"]));
    let sources: Vec<(String, Value)> = step["data"]["to_restore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["snapshot"].clone(),
            )
        })
        .collect();
    // Everything BOS held before the rebuild, from the newer capture; nothing from `after`.
    assert_eq!(sources.len(), 4, "{sources:?}");
    assert!(sources.iter().all(|(_, id)| *id == newer), "{sources:?}");
    assert_ne!(old, newer);
    assert_ne!(after, newer);
    let message = step["message"].as_str().unwrap();
    assert!(
        message.starts_with("restored 4 template(s): ")
            && message.contains(&format!("from snapshot {}", newer.as_str().unwrap())),
        "{message}"
    );
    let now = app.sim.csm().bos_templates();
    assert_eq!(now.len(), 5);
    for (name, _) in &sources {
        assert_eq!(now[name.as_str()], held[name.as_str()], "{name}");
    }
    assert_eq!(now["boot-template"]["description"], "changed");
    assert_eq!(now["made-after"]["description"], "new");
}

#[tokio::test]
async fn a_template_only_an_older_snapshot_holds_comes_from_that_one() {
    let app = common::start().await;
    let seeded = app.sim.csm().bos_templates();
    let old = capture(&app).await;
    // An admin removes a template (say by mistake); the next capture lacks it.
    let url = format!(
        "{}/csm/bos/v2/sessiontemplates/uan-sessiontemplate-2.5.3",
        app.sim.url()
    );
    assert!(
        app.http
            .delete(url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let newer = capture(&app).await;
    assert!(app.sim.csm().wipe("cray-bos-etcd"));

    let run = run_bos(&app, false).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let sources = run["services"][0]["steps"][0]["data"]["to_restore"].clone();
    let from = |name: &str| {
        sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not restored: {sources:#}"))["snapshot"]
            .clone()
    };
    assert_eq!(from("uan-sessiontemplate-2.5.3"), old);
    assert_eq!(from("boot-template"), newer);
    assert_eq!(app.sim.csm().bos_templates().len(), seeded.len());
}

#[tokio::test]
async fn dry_run_lists_what_would_be_restored_and_sends_nothing() {
    let app = common::start().await;
    let (status, _) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(app.sim.csm().wipe("cray-bos-etcd"));
    let run = run_bos(&app, true).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let message = run["services"][0]["steps"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("dry run: would restore 3 template(s)"),
        "{message}"
    );
    assert!(app.sim.csm().bos_templates().is_empty());
    assert!(
        app.sim.csm().requests().iter().all(|r| r.method != "PUT"),
        "a dry run sent a PUT"
    );
}

#[tokio::test]
async fn without_a_snapshot_the_admin_gets_the_runbook_guidance() {
    let app = common::start().await;
    assert!(app.sim.csm().wipe("cray-bos-etcd"));
    let run = run_bos(&app, false).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let message = run["services"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("no snapshot of BOS session templates")
            && message.contains("PREPARE UAN BOOT SESSION TEMPLATES")
            && message.contains("Install and Configure UANs")
            && message.contains("Create a Boot Session Template")
            && message.contains("Boot COS"),
        "{message}"
    );
    assert!(app.sim.csm().bos_templates().is_empty());
}

#[tokio::test]
async fn snapshots_never_contain_credentials() {
    let app = common::start().await;
    let mut leaky = app.sim.csm().bos_templates()["boot-template"].clone();
    for read_only in ["name", "tenant", "links"] {
        leaky.as_object_mut().unwrap().remove(read_only);
    }
    leaky["cfs"]["vault_token"] = json!("s3cr3t-token-value");
    leaky["cfs"]["credentials"] = json!({ "user": "admin", "password": "hunter2-password" });
    put_template(&app, "leaky", leaky).await;

    let (status, report) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{report:#}");
    let (status, list) = app
        .get("/snapshots?source=bos-session-templates&content=true")
        .await;
    assert_eq!(status, StatusCode::OK);
    let snapshot = &list["items"][0];
    let text = snapshot["content"].to_string();
    assert!(text.contains("\"leaky\""), "{text}");
    for secret in [
        "s3cr3t-token-value",
        "hunter2-password",
        "vault_token",
        "credentials",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let redacted: Vec<&str> = snapshot["redacted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(redacted.len(), 2, "{redacted:?}");
    assert!(
        redacted
            .iter()
            .all(|p| p.ends_with(".cfs.credentials") || p.ends_with(".cfs.vault_token"))
    );

    // Nor anywhere in the database files (the WAL included).
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", app.db.display());
        let bytes = std::fs::read(&path).unwrap_or_default();
        let haystack = String::from_utf8_lossy(&bytes);
        assert!(
            !haystack.contains("s3cr3t-token-value") && !haystack.contains("hunter2-password"),
            "secret stored in {path}"
        );
    }

    // Restored without them: the run names them, per template, for a person to set again.
    assert!(app.sim.csm().wipe("cray-bos-etcd"));
    let run = run_bos(&app, false).await;
    assert_eq!(run["state"], "action_required", "{run:#}");
    let message = run["services"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("leaky.cfs.credentials") && message.contains("leaky.cfs.vault_token"),
        "{message}"
    );
}

#[tokio::test]
async fn snapshots_over_http() {
    let app = common::start().await;
    let (status, first) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{first:#}");
    let stored = first["stored"].as_array().unwrap();
    assert_eq!(stored.len(), 2);
    assert!(first["failed"].as_array().unwrap().is_empty());
    let hmnfd = stored
        .iter()
        .find(|s| s["source"] == "hmnfd-subscriptions")
        .unwrap();
    assert_eq!(
        hmnfd["items"],
        app.sim.csm().hmnfd_subscriptions().len(),
        "{hmnfd:#}"
    );
    assert!(hmnfd["content"].is_array());

    // BOS down: HMNFD is still captured, and the failure is reported.
    assert!(app.sim.csm().set_available("bos", false));
    let (status, second) = app.post("/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["stored"].as_array().unwrap().len(), 1);
    assert_eq!(second["failed"][0]["source"], "bos-session-templates");

    let (status, list) = app.get("/snapshots").await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["id"], second["stored"][0]["id"], "newest first");
    assert!(items.iter().all(|s| s.get("content").is_none()));
    let (_, only_bos) = app
        .get("/snapshots?source=bos-session-templates&limit=1")
        .await;
    assert_eq!(only_bos["items"].as_array().unwrap().len(), 1);

    let resp = app
        .http
        .get(app.url("/snapshots?source=sls"))
        .send()
        .await
        .unwrap();
    let problem = common::problem(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["field"], "source");

    // Nothing readable at all: 502, nothing stored.
    assert!(app.sim.csm().set_available("hmnfd", false));
    let resp = app.http.post(app.url("/snapshots")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let (_, list) = app.get("/snapshots").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

/// Polls `GET /snapshots?source=...` (bounded) until it lists `count` snapshots.
async fn snapshots_reach(app: &common::TestApp, source: &str, count: usize) {
    tokio::time::timeout(common::WAIT, async {
        loop {
            let (_, list) = app.get(&format!("/snapshots?source={source}")).await;
            if list["items"].as_array().is_some_and(|i| i.len() >= count) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {count} snapshot(s) of {source}"));
}

#[tokio::test]
async fn periodic_snapshots_start_at_once_and_retry_what_does_not_answer() {
    let app = common::start().await;
    assert!(app.sim.csm().set_available("bos", false));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = etcd_repopulator::snapshots::Snapshotter::new(
        app.runner.csm().clone(),
        app.runner.store().clone(),
        10,
    )
    // An hour: anything captured within the test was captured at the start or retried.
    .spawn_periodic(std::time::Duration::from_secs(3600), stop.clone());
    snapshots_reach(&app, "hmnfd-subscriptions", 1).await;
    let (_, bos) = app.get("/snapshots?source=bos-session-templates").await;
    assert_eq!(bos["items"], json!([]));

    // BOS answers again: it is captured without waiting for the interval.
    assert!(app.sim.csm().set_available("bos", true));
    snapshots_reach(&app, "bos-session-templates", 1).await;
    stop.cancel();
    task.await.unwrap();
    let (_, hmnfd) = app.get("/snapshots?source=hmnfd-subscriptions").await;
    assert_eq!(
        hmnfd["items"].as_array().unwrap().len(),
        1,
        "only what failed is tried again"
    );
    let (_, bos) = app.get("/snapshots?source=bos-session-templates").await;
    assert_eq!(bos["items"].as_array().unwrap().len(), 1);
}

/// A tgz as CSM's `export_bos_data.sh` writes it.
fn bos_export_archive(templates: &Value) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, content) in [
        (
            "bos-export-20261201093000-oK4WMw/v2/options.json",
            "{}".to_owned(),
        ),
        (
            "bos-export-20261201093000-oK4WMw/v2/sessiontemplates.json",
            templates.to_string(),
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// An export made with `export_bos_data.sh` before BOS's etcd was lost is imported as a snapshot
/// (POST /snapshots with the archive) and the bos run restores its templates; what is not an
/// export is refused, saying why.
#[tokio::test]
async fn an_export_of_export_bos_data_is_imported_and_restored_from() {
    let app = common::start().await;
    let mut exported = app.sim.csm().bos_templates()["boot-template"].clone();
    exported["name"] = json!("exported-before-upgrade");
    exported["description"] = json!("from the export");
    let archive = bos_export_archive(&json!([exported]));
    let resp = app
        .http
        .post(app.url("/snapshots"))
        .header("content-type", "application/gzip")
        .body(archive)
        .send()
        .await
        .unwrap();
    let (status, report) = common::json(resp).await;
    assert_eq!(status, StatusCode::CREATED, "{report:#}");
    let stored = &report["stored"][0];
    assert_eq!(stored["source"], "bos-session-templates");
    assert_eq!(stored["items"], 1);
    assert_eq!(stored["taken_at"], "2026-12-01T09:30:00Z");

    assert!(app.sim.csm().wipe("cray-bos-etcd"));
    let run = run_bos(&app, false).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let now = app.sim.csm().bos_templates();
    assert_eq!(
        now["exported-before-upgrade"]["description"], "from the export",
        "{now:#?}"
    );

    for (body, why) in [
        (b"not an archive".to_vec(), "not JSON"),
        (vec![0x1f, 0x8b, 0, 0], "not a gzip-compressed tar archive"),
        (br#"[{"enable_cfs": true}]"#.to_vec(), "has no name"),
    ] {
        let resp = app
            .http
            .post(app.url("/snapshots"))
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, problem) = common::json(resp).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem:#}");
        assert!(
            problem["detail"].as_str().unwrap().contains(why),
            "{problem:#}"
        );
    }
}
