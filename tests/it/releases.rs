//! Every CSM release: the simulated cluster laid out as the release, the release detected from
//! it (with the evidence), runs whose steps are the ones the release's runbook names, and the
//! etcd clusters found in either layout and checked against a real etcd.

use std::time::Duration;

use etcd_repopulator::config::Config;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use sim::SimOptions;

use crate::common::{self, etcd::Etcd};

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

fn step<'a>(run: &'a Value, service: &str, step: &str) -> &'a Value {
    run["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["service"] == service)
        .and_then(|t| {
            t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == step)
        })
        .unwrap_or_else(|| panic!("no step {service}/{step} in {run:#}"))
}

/// Runs every service of `release` (dry, then for real) and returns the real run.
async fn run_release(release: &str) -> (common::TestApp, Value, Value) {
    let sim = common::release_sim(release, SimOptions::default()).await;
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
        if !dry_run {
            return (app, services, run);
        }
    }
    unreachable!()
}

#[tokio::test]
async fn csm_1_0_runs_the_seed_runbook() {
    let (app, services, run) = run_release("1.0").await;
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
        step(&run, "fas", "rerun-fas-loader-job")["state"],
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
    let reload = step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    assert!(reload["data"]["loader_run_id"].is_string(), "{reload:#}");
    assert_eq!(
        step(&run, "bss", "rerun-reds-init-job")["state"],
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
    let (status, problem) = app
        .post("/repopulations", json!({ "services": ["externaldns"] }))
        .await;
    assert_eq!(status, 422, "{problem:#}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("\"externaldns\": not part of CSM 1.3"),
        "{problem:#}"
    );
}

#[tokio::test]
async fn csm_1_6_bitnami_nexus_and_bss_restore_named() {
    let sim = common::release_sim("1.6", SimOptions::default()).await;
    // The rebuild lost FAS's images: the Nexus load brings them back.
    assert!(sim.csm().wipe("cray-fas-bitnami-etcd"));
    assert!(sim.csm().fas_images().is_empty());
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
    let reload = step(&run, "fas", "reload-fas-images-from-nexus");
    assert_eq!(reload["state"], "succeeded", "{reload:#}");
    assert!(
        !app.sim.csm().fas_images().is_empty(),
        "images back from Nexus"
    );
    let bss = step(&run, "bss", "restore-bss-from-backup");
    assert_eq!(bss["state"], "action_required", "{bss:#}");
    let message = bss["message"].as_str().unwrap();
    assert!(
        message.contains("etcd_restore_rebuild.sh -s cray-bss"),
        "{message}"
    );
    assert!(
        message.contains("StatefulSet cray-bss-bitnami-etcd exists"),
        "{message}"
    );
    // The services 1.6 does not have are refused, naming the release.
    let (status, problem) = app
        .post("/repopulations", json!({ "services": ["crus"] }))
        .await;
    assert_eq!(status, 422, "{problem:#}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("\"crus\": not part of CSM 1.6"),
        "{problem:#}"
    );
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
    let etcd = crate::common::sim_kube::etcd_api(&client);
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
}

/// Points the client Service of `name` at a real etcd on loopback (as the cluster IP would be
/// in a cluster).
async fn point_service_at(app: &common::TestApp, name: &str, etcd: &Etcd) {
    let port: u16 = etcd.url.rsplit(':').next().unwrap().parse().unwrap();
    let services: Api<Service> = Api::namespaced(app.sim.kube_client(), "services");
    services
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "clusterIP": "127.0.0.1",
                "ports": [{ "name": "client", "port": port, "protocol": "TCP" }],
            }})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn etcd_clusters_lists_both_layouts_and_reports_a_real_etcd_with_an_alarm() {
    // Bitnami (1.6): discovered through the client Service.
    let sim = common::release_sim("1.6", SimOptions::default()).await;
    let mut config = Config::default();
    // Any [etcd] other than the default keeps the checks on under the simulation.
    config.etcd.timeout = Duration::from_secs(5);
    let app = common::start_on(sim, config).await;
    let etcd = Etcd::start().await;
    etcd.put("/bss/defaults", "{}").await;
    point_service_at(&app, "cray-bss-bitnami-etcd", &etcd).await;
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
    let (status, bss) = app.get("/etcd-clusters/cray-bss-bitnami-etcd").await;
    assert_eq!(status, 200, "{bss:#}");
    assert_eq!(bss["layout"], "bitnami");
    assert_eq!(bss["service"], "bss");
    assert_eq!(bss["object"]["kind"], "StatefulSet");
    assert_eq!(
        (bss["members"].as_i64(), bss["ready"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(bss["pvcs"].as_array().unwrap().len(), 3);
    assert_eq!(bss["healthy"], true, "{bss:#}");
    assert_eq!(bss["keys"], 1);
    assert!(bss["version"].as_str().unwrap().starts_with("3."));
    assert_eq!(bss["member_health"][0]["healthy"], true);
    // The check-etcd step finds it the same way.
    let id = app
        .start_run(json!({ "services": ["bss"], "dry_run": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(
        step(&run, "bss", "check-etcd-cluster")["state"],
        "succeeded",
        "{run:#}"
    );
    // A NOSPACE alarm makes it unhealthy, and says so.
    let resp = etcd.http.post(format!("{}/v3/maintenance/alarm", etcd.url))
        .json(&json!({ "action": "ACTIVATE", "memberID": bss["member_health"][0]["id"].as_str().unwrap(), "alarm": "NOSPACE" }))
        .send().await.unwrap();
    assert!(resp.status().is_success());
    let (_, bss) = app.get("/etcd-clusters/cray-bss-bitnami-etcd").await;
    assert_eq!(bss["healthy"], false, "{bss:#}");
    assert_eq!(bss["alarms"][0]["alarm"], "NOSPACE", "{bss:#}");
    // A cluster with no reachable member.
    let (_, bos) = app.get("/etcd-clusters/cray-bos-bitnami-etcd").await;
    assert_eq!(bos["healthy"], false);
    assert!(!bos["problems"].as_array().unwrap().is_empty());
    // Unknown: 404 problem.
    let (status, problem) = app.get("/etcd-clusters/cray-nope-etcd").await;
    assert_eq!(status, 404, "{problem:#}");
    assert_eq!(problem["type"], "urn:etcd-repopulator:problem:not-found");
}

#[tokio::test]
async fn etcd_operator_clusters_are_found_on_1_0() {
    let app = common::start().await;
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
    assert_eq!(bss["members"], 3);
    assert_eq!(bss["client_service"], "cray-bss-etcd-client");
    // The simulated etcd operator runs no member pods and no client Service.
    assert_eq!(bss["healthy"], false);
}
