//! The etcd checks around a service's steps, against a real etcd (Debian's etcd-server): the
//! runbook's prerequisite (a rebuilt, healthy cluster) checked before anything is touched, and
//! the keys counted before and after.

use crate::common;

use crate::common::etcd as etcd_fixture;

use std::time::Duration;

use etcd_fixture::Etcd;
use etcd_repopulator::{config::Config, etcd::EtcdConfig};
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use sim::SimOptions;

fn config_for(endpoint: &str) -> Config {
    Config {
        etcd: EtcdConfig {
            enabled: true,
            endpoint: endpoint.to_owned(),
            timeout: Duration::from_secs(5),
            ..EtcdConfig::default()
        },
        ..Config::default()
    }
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["services"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {run:#}"))
}

#[tokio::test]
async fn a_healthy_cluster_is_checked_first_and_its_keys_counted_around_the_service() {
    let etcd = Etcd::start().await;
    etcd.put("/reds/endpoints/x3000c0s1b0", "{}").await;
    etcd.put("/reds/endpoints/x3000c0s2b0", "{}").await;
    let app = common::start_with(SimOptions::default(), config_for(&etcd.url)).await;
    let run = app.run_services(json!(["reds"])).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let names: Vec<&str> = run["services"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "check-etcd-cluster",
            "restart-reds-pods",
            "recount-etcd-keys"
        ]
    );
    let check = step(&run, "check-etcd-cluster");
    assert_eq!(check["data"]["cluster"], "cray-reds-etcd");
    assert_eq!(check["data"]["status"]["keys"], 2);
    assert!(
        check["data"]["status"]["version"]
            .as_str()
            .unwrap()
            .starts_with("3."),
        "{check:#}"
    );
    let message = check["message"].as_str().unwrap();
    assert!(message.contains("already holds 2 key(s)"), "{message}");
    let recount = step(&run, "recount-etcd-keys");
    assert_eq!(
        recount["message"],
        "cray-reds-etcd holds 2 key(s) now, 2 before the service was repopulated"
    );
}

#[tokio::test]
async fn an_empty_cluster_reads_as_rebuilt() {
    let etcd = Etcd::start().await;
    let app = common::start_with(SimOptions::default(), config_for(&etcd.url)).await;
    let run = app.run_services(json!(["bss"])).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let check = step(&run, "check-etcd-cluster");
    let message = check["message"].as_str().unwrap();
    assert!(message.contains("cray-bss-etcd is healthy"), "{message}");
    assert!(message.contains("empty, as after a rebuild"), "{message}");
    assert_eq!(check["data"]["status"]["keys"], 0);
}

#[tokio::test]
async fn an_unreachable_cluster_stops_the_run_before_anything_changes() {
    // A port nothing listens on: the cluster is down (not rebuilt yet).
    let port = common::free_port();
    let app = common::start_with(
        SimOptions::default(),
        config_for(&format!("http://127.0.0.1:{port}")),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(app.sim.kube_client(), "services");
    let before = jobs.get("cray-reds-init").await.unwrap().uid();
    let run = app.run_services(json!(["bss"])).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let check = step(&run, "check-etcd-cluster");
    assert_eq!(check["state"], "failed");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("cray-bss-etcd is not ready to be repopulated")
            && message.contains("unreachable")
            && message.contains("Rebuild Unhealthy etcd Clusters"),
        "{message}"
    );
    assert_eq!(step(&run, "rerun-reds-init-job")["state"], "skipped");
    assert_eq!(
        jobs.get("cray-reds-init").await.unwrap().uid(),
        before,
        "the Job was not touched"
    );
}

#[tokio::test]
async fn the_plan_names_the_endpoint_of_each_cluster() {
    let app = common::start_with(
        SimOptions::default(),
        config_for("http://{cluster}-client.{namespace}.svc:2379"),
    )
    .await;
    let (status, body) = app.get("/services").await;
    assert_eq!(status, 200);
    let steps_of = |service: &str| -> Value {
        let items = body["items"].as_array().unwrap();
        let entry = items.iter().find(|s| s["service"] == service).unwrap();
        entry["steps"].clone()
    };
    let bos = steps_of("bos");
    let first = bos[0]["description"].as_str().unwrap();
    assert!(
        first.contains("cray-bos-etcd (http://cray-bos-etcd-client.services.svc:2379)"),
        "{first}"
    );
    assert_ne!(
        steps_of("meds")[0]["name"],
        "check-etcd-cluster",
        "MEDS has no cluster of its own"
    );
}

#[tokio::test]
async fn a_cluster_behind_tls_with_client_certificates_is_checked_with_the_configured_files() {
    let (etcd, tls) = Etcd::start_tls().await;
    etcd.put("/params/x3000c0s1b0n0", "{}").await;

    // Without the CA the server certificate is not trusted: the run stops at the check, and
    // says where to configure it.
    let app = common::start_with(SimOptions::default(), config_for(&etcd.url)).await;
    let untrusted = app.run_services(json!(["bss"])).await;
    assert_eq!(untrusted["state"], "failed", "{untrusted:#}");
    let message = step(&untrusted, "check-etcd-cluster")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("certificate") && message.contains("ca_file"),
        "{message}"
    );

    let mut config = config_for(&etcd.url);
    config.etcd.ca_file = Some(tls.ca.clone());
    config.etcd.cert_file = Some(tls.client_cert.clone());
    config.etcd.key_file = Some(tls.client_key.clone());
    let app = common::start_with(SimOptions::default(), config).await;
    let run = app.run_services(json!(["bss"])).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        step(&run, "check-etcd-cluster")["data"]["status"]["keys"],
        1
    );
}
