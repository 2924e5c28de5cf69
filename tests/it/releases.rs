//! Every CSM release: the simulated cluster laid out as the release, the release detected from
//! it (with the evidence), runs whose steps are the ones the release's runbook names, and the
//! etcd clusters found in either layout and checked against a real etcd.

use std::time::Duration;

use etcd_repopulator::config::Config;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Service},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use sim::SimOptions;

use crate::common;

/// Every service of the release but HMNFD (it needs sshd: tests/it/hmnfd.rs).
fn services_without_hmnfd(services: &Value) -> Vec<String> {
    services["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_owned())
        .filter(|s| s != "hmnfd")
        .collect()
}

/// Runs every service of `release` but HMNFD (dry, then for real) on `sim`, asserting each
/// ends `succeeded` or `action_required`, and returns the real run.
pub(crate) async fn run_release_on(
    release: &str,
    sim: sim::SimCluster,
) -> (common::TestApp, Value, Value) {
    let app = common::start_on(sim, Config::default()).await;
    let (status, services) = app.get("/services").await;
    assert_eq!(status, 200, "{services:#}");
    assert_eq!(services["csm_release"]["release"], release, "{services:#}");
    assert_eq!(services["csm_release"]["source"], "detected");
    let wanted = services_without_hmnfd(&services);
    for dry_run in [true, false] {
        let id = app
            .start_run(json!({ "services": wanted, "dry_run": dry_run }))
            .await;
        let run = app.finished_run(&id).await;
        for task in run["services"].as_array().unwrap() {
            let state = task["state"].as_str().unwrap();
            assert!(
                state == "succeeded" || state == "action_required",
                "CSM {release} {}{}: {state}: {:#}",
                task["service"],
                if dry_run { " (dry run)" } else { "" },
                task
            );
        }
        // The run records the release it followed, and why, as GET /services showed it.
        assert_eq!(run["csm_release"], services["csm_release"], "{run:#}");
        assert!(
            !run["csm_release"]["evidence"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{run:#}"
        );
        if !dry_run {
            return (app, services, run);
        }
    }
    unreachable!()
}

/// [`run_release_on`] a simulated cluster without real etcd (the etcd checks are off).
async fn run_release(release: &str) -> (common::TestApp, Value, Value) {
    run_release_on(
        release,
        common::release_sim(release, SimOptions::default()).await,
    )
    .await
}

/// A run of `service`, which CSM `release` does not have: refused, naming the release; the
/// problem.
pub(crate) async fn refused_service(app: &common::TestApp, service: &str, release: &str) -> Value {
    let (status, problem) = app
        .post("/repopulations", json!({ "services": [service] }))
        .await;
    assert_eq!(status, 422, "{problem:#}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("\"{service}\": not part of CSM {release}")),
        "{problem:#}"
    );
    problem
}

/// The services of the release in `GET /services`, HMNFD included.
pub(crate) fn service_names(services: &Value) -> Vec<&str> {
    services["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn csm_1_2_has_no_externaldns_and_reloads_fas_from_nexus() {
    let (_app, services, run) = run_release("1.2").await;
    assert_eq!(
        service_names(&services),
        ["bos", "bss", "cps", "crus", "fas", "hmnfd", "meds", "reds"]
    );
    let reload = common::step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    let hmnfd = services["items"][5].to_string();
    assert!(hmnfd.contains("systemctl restart cray-orca"), "{hmnfd}");
}

#[tokio::test]
async fn csm_1_4_has_no_crus() {
    let (app, services, run) = run_release("1.4").await;
    assert_eq!(
        service_names(&services),
        ["bos", "bss", "cps", "fas", "hmnfd", "meds", "reds"]
    );
    assert_eq!(
        common::step(&run, "bss", "rerun-reds-init-job")["state"],
        "succeeded"
    );
    refused_service(&app, "crus", "1.4").await;
}

#[tokio::test]
async fn csm_1_5_is_bitnami_and_names_the_bss_restore() {
    let (_app, services, run) = run_release("1.5").await;
    assert_eq!(services["csm_release"]["etcd_layout"], "bitnami");
    assert_eq!(
        service_names(&services),
        ["bos", "bss", "fas", "hmnfd", "meds"]
    );
    // BSS still holds its boot parameters: nothing is missing, nothing to restore.
    let bss = common::step(&run, "bss", "restore-bss-from-backup");
    assert_eq!(bss["state"], "succeeded", "{bss:#}");
    assert!(
        bss["message"]
            .as_str()
            .unwrap()
            .contains("its data is there, nothing to restore"),
        "{bss:#}"
    );
    assert_eq!(
        common::step(&run, "fas", "reload-fas-images-from-nexus")["state"],
        "succeeded"
    );
}

#[tokio::test]
async fn csm_1_0_runs_the_seed_runbook() {
    // With the etcd-operator clusters' etcd running for real, the etcd checks run too.
    let (app, services, run) = run_release_on("1.0", common::real_etcd_sim("1.0").await).await;
    let check = common::step(&run, "bss", "check-etcd-cluster");
    assert_eq!(check["state"], "succeeded", "{check:#}");
    let names = services_without_hmnfd(&services);
    assert_eq!(
        names,
        [
            "bos",
            "bss",
            "cps",
            "crus",
            "externaldns",
            "fas",
            "meds",
            "reds"
        ]
    );
    assert_eq!(
        common::step(&run, "fas", "rerun-fas-loader-job")["state"],
        "succeeded"
    );
    let hmnfd = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "hmnfd")
        .unwrap();
    assert!(
        hmnfd
            .to_string()
            .contains("systemctl restart cray-dvs-orca"),
        "{hmnfd:#}"
    );
    let (_, events) = app
        .get(&format!(
            "/repopulations/{}/events",
            run["id"].as_str().unwrap()
        ))
        .await;
    let _ = events;
}

#[tokio::test]
async fn csm_1_3_reloads_fas_from_nexus_and_restarts_cray_orca_on_workers() {
    let (app, services, run) = run_release("1.3").await;
    let names = services_without_hmnfd(&services);
    assert_eq!(names, ["bos", "bss", "cps", "crus", "fas", "meds", "reds"]);
    let evidence = services["csm_release"]["evidence"].to_string();
    assert!(evidence.contains("Deployment cray-crus"), "{evidence}");
    assert!(evidence.contains("lists CSM 1.3.0"), "{evidence}");
    let reload = common::step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    assert!(reload["data"]["loader_run_id"].is_string(), "{reload:#}");
    assert_eq!(
        common::step(&run, "bss", "rerun-reds-init-job")["state"],
        "succeeded"
    );
    let hmnfd = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "hmnfd")
        .unwrap();
    let text = hmnfd.to_string();
    assert!(text.contains("systemctl restart cray-orca"), "{text}");
    assert!(
        !text.contains("ncn-s00"),
        "1.3 resubscribes workers only: {text}"
    );
    // A service 1.3 does not have.
    refused_service(&app, "externaldns", "1.3").await;
}

#[tokio::test]
async fn csm_1_6_bitnami_nexus_and_bss_restore_named() {
    let sim = common::real_etcd_sim("1.6").await;
    // The rebuild lost FAS's images: the Nexus load brings them back. BSS lost its boot
    // parameters: the run says how to restore them.
    assert!(sim.csm().wipe("cray-fas-bitnami-etcd"));
    assert!(sim.csm().fas_images().is_empty());
    assert!(sim.csm().wipe_async("cray-bss-bitnami-etcd").await);
    assert_eq!(sim.bss_key_count().await.unwrap(), 0);
    let app = common::start_on(sim, Config::default()).await;
    let (_, services) = app.get("/services").await;
    assert_eq!(services["csm_release"]["release"], "1.6", "{services:#}");
    assert_eq!(services["csm_release"]["etcd_layout"], "bitnami");
    let names: Vec<&str> = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bos", "bss", "fas", "hmnfd", "meds"]);
    let id = app
        .start_run(json!({ "services": ["bos", "bss", "fas", "meds"] }))
        .await;
    let run = app.finished_run(&id).await;
    let reload = common::step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    assert!(
        !app.sim.csm().fas_images().is_empty(),
        "images back from Nexus"
    );
    let check = common::step(&run, "bss", "check-etcd-cluster");
    assert_eq!(check["state"], "succeeded", "{check:#}");
    let bss = common::step(&run, "bss", "restore-bss-from-backup");
    assert_eq!(bss["state"], "action_required", "{bss:#}");
    let message = bss["message"].as_str().unwrap();
    assert!(
        message.starts_with("BSS holds no boot parameters"),
        "{message}"
    );
    assert!(
        message.contains("etcd_restore_rebuild.sh -s cray-bss"),
        "{message}"
    );
    assert!(
        message.contains("StatefulSet cray-bss-bitnami-etcd exists"),
        "{message}"
    );
    // It names the newest backup, and how to restore it with a run of this service.
    assert!(message.contains("its newest backup is db-"), "{message}");
    assert!(
        message.contains("\"etcd\": \"restore\", \"confirm\": [\"cray-bss-bitnami-etcd\"]"),
        "{message}"
    );
    // The services 1.6 does not have are refused, naming the release.
    let problem = refused_service(&app, "crus", "1.6").await;
    assert_eq!(problem["field"], "services");
}

#[tokio::test]
async fn the_bitnami_layout_has_its_services_config_and_pvcs_which_outlive_the_pods() {
    let sim = common::release_sim("1.6", SimOptions::default()).await;
    let client = sim.kube_client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "services");
    let services: Api<Service> = Api::namespaced(client.clone(), "services");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "services");
    for i in 0..3 {
        let pvc = pvcs
            .get(&format!("data-cray-bss-bitnami-etcd-{i}"))
            .await
            .unwrap();
        let labels = pvc.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "cray-bss");
        assert!(pvc.metadata.owner_references.is_none());
        assert_eq!(
            pvc.metadata.finalizers.unwrap(),
            ["kubernetes.io/pvc-protection"]
        );
    }
    services.get("cray-bss-bitnami-etcd").await.unwrap();
    services
        .get("cray-bss-bitnami-etcd-headless")
        .await
        .unwrap();
    maps.get("cray-bss-bitnami-etcd-config").await.unwrap();
    // No EtcdCluster CRD on 1.5+.
    let etcd = sim::testing::etcd_api(&client);
    let err = etcd.list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
    // The StatefulSet goes; its PVCs stay.
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), "services");
    sts.delete("cray-bss-bitnami-etcd", &DeleteParams::foreground())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while sts
            .get_opt("cray-bss-bitnami-etcd")
            .await
            .unwrap()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("StatefulSet deleted");
    assert_eq!(
        pvcs.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p
                .metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("data-cray-bss-bitnami-etcd-"))
            .count(),
        3
    );
}

#[tokio::test]
async fn an_ambiguous_cluster_is_a_clear_error() {
    // A 1.3 cluster whose product catalog is gone looks like 1.2 as much as 1.3.
    let sim = common::release_sim("1.3", SimOptions::default()).await;
    let maps: Api<ConfigMap> = Api::namespaced(sim.kube_client(), "services");
    maps.delete("cray-product-catalog", &DeleteParams::default())
        .await
        .unwrap();
    let app = common::start_on(sim, Config::default()).await;
    let (status, problem) = app.get("/services").await;
    assert_eq!(status, 409, "{problem:#}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("more than one CSM release (1.2 and 1.3)"),
        "{detail}"
    );
    assert!(detail.contains("EtcdCluster(s)"), "{detail}");
    assert!(detail.contains("set csm_release"), "{detail}");
    let (status, _) = app
        .post("/repopulations", json!({ "services": ["bos"] }))
        .await;
    assert_eq!(status, 409);
    // Pinned, the same cluster runs.
    let config = Config {
        csm_release: "1.3".parse().unwrap(),
        ..Config::default()
    };
    let app = common::start_on(
        common::release_sim("1.3", SimOptions::default()).await,
        config,
    )
    .await;
    let (status, services) = app.get("/services").await;
    assert_eq!(status, 200);
    assert_eq!(services["csm_release"]["source"], "configured");
    let id = app
        .start_run(json!({ "services": ["bos"], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["csm_release"]["release"], "1.3", "{run:#}");
    assert_eq!(run["csm_release"]["source"], "configured");
    assert_eq!(run["csm_release"]["evidence"], json!([]));
}

/// Marks the pod `name` not Ready, as the kubelet does when its readiness probe fails.
async fn make_unready(app: &common::TestApp, name: &str) {
    app.pods()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "conditions": [
                { "type": "Ready", "status": "False", "reason": "ContainersNotReady" },
            ]}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn etcd_clusters_reports_the_real_etcd_of_a_bitnami_cluster_an_unready_member_and_an_alarm() {
    let sim = common::real_etcd_sim("1.6").await;
    let url = sim
        .etcd_url("cray-bss-bitnami-etcd")
        .expect("bss etcd runs");
    let services: Api<Service> = Api::namespaced(sim.kube_client(), "services");
    let client_ip = services
        .get("cray-bss-bitnami-etcd")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    assert!(client_ip.starts_with("127.77."), "{client_ip}");
    assert_eq!(url, format!("http://{client_ip}:2379"));
    // BSS keeps its seeded boot parameters there; one more key beside them.
    let bss_keys = sim.bss_key_count().await.unwrap();
    assert!(bss_keys > 1, "{bss_keys}");
    common::etcd_put(&url, "/bss/defaults", "{}").await;
    let app = common::start_on(sim, Config::default()).await;
    let (status, list) = app.get("/etcd-clusters").await;
    assert_eq!(status, 200, "{list:#}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cray-bos-bitnami-etcd",
            "cray-bss-bitnami-etcd",
            "cray-fas-bitnami-etcd",
            "cray-hmnfd-bitnami-etcd"
        ]
    );
    for cluster in list["items"].as_array().unwrap() {
        assert_eq!(cluster["healthy"], true, "{cluster:#}");
    }
    let (status, bss) = app.get("/etcd-clusters/cray-bss-bitnami-etcd").await;
    assert_eq!(status, 200, "{bss:#}");
    assert_eq!(bss["layout"], "bitnami");
    assert_eq!(bss["service"], "bss");
    assert_eq!(bss["object"]["kind"], "StatefulSet");
    assert_eq!(bss["endpoint"], url.as_str());
    assert_eq!(
        (bss["members"].as_i64(), bss["ready"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(bss["pvcs"].as_array().unwrap().len(), 3);
    assert_eq!(bss["keys"], bss_keys + 1);
    assert!(bss["version"].as_str().unwrap().starts_with("3."));
    // Three members, one per pod.
    let mut members: Vec<(&str, bool)> = bss["member_health"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["healthy"] == true))
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            ("cray-bss-bitnami-etcd-0", true),
            ("cray-bss-bitnami-etcd-1", true),
            ("cray-bss-bitnami-etcd-2", true)
        ]
    );
    assert!(bss["problems"].as_array().unwrap().is_empty(), "{bss:#}");
    // The check-etcd step finds it the same way.
    let id = app
        .start_run(json!({ "services": ["bss"], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(
        common::step(&run, "bss", "check-etcd-cluster")["state"],
        "succeeded",
        "{run:#}"
    );
    // A member whose pod is not Ready makes the cluster unhealthy.
    make_unready(&app, "cray-bos-bitnami-etcd-1").await;
    let (_, bos) = app.get("/etcd-clusters/cray-bos-bitnami-etcd").await;
    assert_eq!(bos["ready"], 2, "{bos:#}");
    assert_eq!(bos["healthy"], false, "{bos:#}");
    assert!(!bos["problems"].as_array().unwrap().is_empty(), "{bos:#}");
    // A NOSPACE alarm, raised on the real member, makes it unhealthy, and says so.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v3/maintenance/alarm"))
        .json(&json!({
            "action": "ACTIVATE",
            "memberID": bss["member_health"][0]["id"].as_str().unwrap(),
            "alarm": "NOSPACE",
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let (_, bss) = app.get("/etcd-clusters/cray-bss-bitnami-etcd").await;
    assert_eq!(bss["healthy"], false, "{bss:#}");
    assert_eq!(bss["alarms"][0]["alarm"], "NOSPACE", "{bss:#}");
    let id = app
        .start_run(json!({ "services": ["bss"], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(
        common::step(&run, "bss", "check-etcd-cluster")["state"],
        "failed",
        "{run:#}"
    );
    // Unknown: 404 problem.
    let (status, problem) = app.get("/etcd-clusters/cray-nope-etcd").await;
    assert_eq!(status, 404, "{problem:#}");
    assert_eq!(problem["type"], "urn:etcd-repopulator:problem:not-found");
}

#[tokio::test]
async fn etcd_operator_clusters_run_member_pods_and_a_real_etcd_on_1_0() {
    let sim = common::real_etcd_sim("1.0").await;
    let url = sim.etcd_url("cray-bss-etcd").expect("bss etcd runs");
    let bss_keys = sim.bss_key_count().await.unwrap();
    common::etcd_put(&url, "/bss/a", "1").await;
    common::etcd_put(&url, "/bss/b", "2").await;
    let app = common::start_on(sim, Config::default()).await;
    let (status, list) = app.get("/etcd-clusters").await;
    assert_eq!(status, 200, "{list:#}");
    let bss = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cray-bss-etcd")
        .unwrap();
    assert_eq!(bss["layout"], "etcd-operator");
    assert_eq!(bss["object"]["kind"], "EtcdCluster");
    assert_eq!(bss["client_service"], "cray-bss-etcd-client");
    assert_eq!(bss["endpoint"], url.as_str());
    assert_eq!(
        (bss["members"].as_i64(), bss["ready"].as_i64()),
        (Some(3), Some(3)),
        "{bss:#}"
    );
    assert_eq!(bss["pods"].as_array().unwrap().len(), 3);
    assert_eq!(bss["healthy"], true, "{bss:#}");
    assert_eq!(bss["keys"], bss_keys + 2);
    // The operator's member pods, as the real operator labels them.
    let members = app
        .pods_matching("app=etcd,etcd_cluster=cray-bss-etcd")
        .await;
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|(name, _, ready)| *ready && name.starts_with("cray-bss-etcd-"))
    );
    // A member not Ready.
    make_unready(&app, &members[0].0).await;
    let (_, bss) = app.get("/etcd-clusters/cray-bss-etcd").await;
    assert_eq!(
        (bss["ready"].as_i64(), bss["healthy"].as_bool()),
        (Some(2), Some(false)),
        "{bss:#}"
    );
    // The cluster deleted: its pods go, and so does its etcd.
    let clusters = sim::testing::etcd_api(&app.sim.kube_client());
    clusters
        .delete("cray-bos-etcd", &DeleteParams::background())
        .await
        .unwrap();
    tokio::time::timeout(common::WAIT, async {
        while app.sim.etcd_url("cray-bos-etcd").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the deleted cluster's etcd stops");
}

#[tokio::test]
async fn a_bitnami_cluster_scaled_to_zero_and_back_keeps_its_data_in_its_pvc() {
    let sim = common::real_etcd_sim_of("1.6", Some(&["cray-fas-bitnami-etcd"])).await;
    let url = sim
        .etcd_url("cray-fas-bitnami-etcd")
        .expect("fas etcd runs");
    common::etcd_put(&url, "/fas/images", "[]").await;
    let sts: Api<StatefulSet> = Api::namespaced(sim.kube_client(), "services");
    let app = common::start_on(sim, Config::default()).await;
    // The scale subresource, as on the real server.
    let scale = sts.get_scale("cray-fas-bitnami-etcd").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    let status = scale.status.unwrap();
    assert_eq!(status.replicas, 3);
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=cray-fas,app.kubernetes.io/name=etcd")
    );
    let scaled = sts
        .patch_scale(
            "cray-fas-bitnami-etcd",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(0));
    assert_eq!(
        sts.get("cray-fas-bitnami-etcd")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(0)
    );
    // The pods go, and so does etcd: the cluster is reported unreachable.
    let fas = common::cluster_until(&app, "cray-fas-bitnami-etcd", |c| {
        c["pods"].as_array().unwrap().is_empty() && c["healthy"] == false
    })
    .await;
    assert_eq!(
        (fas["members"].as_i64(), fas["ready"].as_i64()),
        (Some(0), Some(0))
    );
    assert!(!fas["problems"].as_array().unwrap().is_empty(), "{fas:#}");
    assert_eq!(fas["pvcs"].as_array().unwrap().len(), 3, "the PVCs stay");
    // A negative scale is refused as the real server refuses it.
    let err = sts
        .patch_scale(
            "cray-fas-bitnami-etcd",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": -1 } })),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    // Back to 3: etcd starts again on the same PVCs and still has the key. Three members
    // starting with data at once each find the cluster not responding; with CSM's
    // ETCD_DISASTER_RECOVERY=yes they would crash-loop (no `/snapshots/db-*` to restore, as
    // the sim's own tests show), so the cluster is told to recover on its own.
    sts.patch(
        "cray-fas-bitnami-etcd",
        &PatchParams::default(),
        &Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": [{
            "name": "etcd", "env": [{ "name": "ETCD_DISASTER_RECOVERY", "value": "no" }],
        }]}}}})),
    )
    .await
    .unwrap();
    sts.patch_scale(
        "cray-fas-bitnami-etcd",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
    )
    .await
    .unwrap();
    let fas = common::cluster_until(&app, "cray-fas-bitnami-etcd", |c| c["healthy"] == true).await;
    assert_eq!(fas["keys"], 1, "{fas:#}");
    assert_eq!(fas["ready"], 3);
}
