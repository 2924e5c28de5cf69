//! CSM 1.7: the release detected from the product catalog, its runbook's services run on the
//! simulated 1.7, and the snapshot cray-etcd-base's pre-upgrade Job leaves in S3
//! (`<service>_etcd_upgrade.snapshot-<helm revision>.db`) listed with its revision, drilled and
//! restored like any other backup.

use etcd_repopulator::{
    config::Config,
    model::{Service, State},
};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use reqwest::StatusCode;
use serde_json::json;
use sim::SimOptions;

use crate::{
    common, drills,
    recovery::{BSS_SELECTOR, BSS_STS, break_cluster},
    releases::{refused_service, run_release_on, service_names},
};

const UPGRADE: &str = "cray-bss_etcd_upgrade.snapshot-2.db";

#[tokio::test]
async fn csm_1_7_is_detected_from_the_catalog_and_runs_bos_bss_fas_and_meds() {
    let sim = common::release_sim("1.7", SimOptions::default()).await;
    // Laid out as cray-etcd-base of mid-2025 renders it, upgraded once by Helm.
    let sets: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    let bss = sets.get(BSS_STS).await.unwrap();
    let container = &bss.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(
        container
            .image
            .as_deref()
            .unwrap()
            .ends_with("etcd:3.5.21-debian-12-r6"),
        "{container:?}"
    );
    let quota = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "ETCD_QUOTA_BACKEND_BYTES")
        .unwrap();
    assert_eq!(quota.value.as_deref(), Some("2147483648"));

    let (app, services, run) = run_release_on("1.7", sim).await;
    let release = &services["csm_release"];
    assert_eq!(release["etcd_layout"], "bitnami", "{services:#}");
    // 1.5, 1.6 and 1.7 look alike: the product catalog tells them apart.
    let evidence = release["evidence"].to_string();
    assert!(
        evidence.contains("cray-product-catalog lists CSM 1.7.0"),
        "{evidence}"
    );
    assert!(
        release["runbook"]
            .as_str()
            .unwrap()
            .contains("https://cray-hpe.github.io/docs-csm/en-17/"),
        "{release:#}"
    );
    let names = service_names(&services);
    assert_eq!(names, ["bos", "bss", "fas", "meds"], "{services:#}");
    let ran: Vec<&str> = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert_eq!(ran, names);
    let reload = common::step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    // The 1.7 page has no HMNFD section: a run of it is refused, naming the release.
    refused_service(&app, "hmnfd", "1.7").await;
}

#[tokio::test]
async fn the_pre_upgrade_snapshot_is_listed_with_its_helm_revision_drilled_and_restored() {
    let sim = common::release_sim(
        "1.7",
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: Some(vec![BSS_STS.to_owned()]),
            s3: true,
            ..SimOptions::default()
        },
    )
    .await;
    let keys = sim.bss_key_count().await.unwrap();
    assert!(keys > 1);
    let scratch = tempfile::tempdir().unwrap();
    let mut config = etcd_repopulator::config::Config::default();
    config.drills.scratch_dir = scratch.path().to_owned();
    let app = common::start_on(sim, config).await;

    let (status, list) = app.get(&format!("/etcd-clusters/{BSS_STS}/backups")).await;
    assert_eq!(status, StatusCode::OK, "{list:#}");
    let items = list["items"].as_array().unwrap();
    let upgrade = items
        .iter()
        .find(|b| b["name"] == UPGRADE)
        .unwrap_or_else(|| panic!("no {UPGRADE}: {list:#}"));
    assert_eq!(
        upgrade["upgrade"],
        json!({ "service": "cray-bss", "helm_revision": 2 })
    );
    assert_eq!(
        upgrade["s3"]["location"],
        format!("s3://etcd-backup/cray-bss/{UPGRADE}")
    );
    assert!(
        upgrade["snapshotter"].is_null(),
        "the Job uploads to S3 only"
    );
    assert!(upgrade["safety"].is_null());
    // Taken before the hourly snapshot: listed after it (newest first), which `auto` takes.
    assert!(
        items[0]["name"].as_str().unwrap().starts_with("db-"),
        "{list:#}"
    );
    assert!(items[0]["upgrade"].is_null());

    // A drill of it restores it into a scratch etcd: BSS's keys are there.
    let drill = drills::start_drill(&app, BSS_STS, Some(json!({ "backup": UPGRADE }))).await;
    let drill = drills::ended(&app, BSS_STS, drill["id"].as_str().unwrap()).await;
    assert_eq!(drill["state"], "passed", "{drill:#}");
    assert_eq!(drill["backup"], UPGRADE, "{drill:#}");

    // The cluster lost: a restore from the named upgrade snapshot, planned then done.
    break_cluster(&app, BSS_STS, BSS_SELECTOR).await;
    let restore =
        json!({ "services": ["bss"], "etcd": "restore", "confirm": [BSS_STS], "backup": UPGRADE });
    let mut dry = restore.clone();
    dry["dry_run"] = json!(true);
    let plan = app.finished_run(&app.start_run(dry).await).await;
    assert_eq!(plan["state"], "succeeded", "{plan:#}");
    let assess = common::step(&plan, "bss", "etcd-assess");
    assert_eq!(assess["data"]["decision"]["backup"], UPGRADE, "{assess:#}");
    let run = app.finished_run(&app.start_run(restore).await).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let recover = common::step(&run, "bss", "etcd-recover");
    assert!(
        recover["message"].as_str().unwrap().contains(UPGRADE),
        "{recover:#}"
    );
    assert_eq!(app.sim.bss_key_count().await.unwrap(), keys);
}

#[tokio::test]
async fn an_empty_bss_on_1_7_names_the_restore_procedure_of_1_7() {
    let sim = common::release_sim("1.7", SimOptions::default()).await;
    assert!(sim.csm().wipe(BSS_STS));
    let app = common::start_on(sim, Config::default()).await;
    let id = app.start_run(json!({ "services": ["bss"] })).await;
    let run = app.finished(&id).await;
    let step = common::step_of(&run, Service::Bss, "restore-bss-from-backup");
    assert_eq!(step.state, State::ActionRequired, "{step:#?}");
    let procedure = step.data.as_ref().unwrap()["procedure"].as_str().unwrap();
    assert_eq!(
        procedure,
        "docs-csm Restore_an_etcd_Cluster_from_a_Backup (https://cray-hpe.github.io/docs-csm/\
         en-17/operations/kubernetes/restore_an_etcd_cluster_from_a_backup/)"
    );
    assert!(
        step.message.as_deref().unwrap().contains(procedure),
        "{step:#?}"
    );
}
