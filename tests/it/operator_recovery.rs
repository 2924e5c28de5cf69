//! Rebuild and restore of an etcd-operator cluster (CSM ≤ 1.4, the 1.3 pages) on a CSM 1.3
//! simulated cluster with real etcd. Most tests run the step `etcd-recover` alone as the
//! service account, with the chart's Role, through `handlers::execute` (the runner's own entry
//! point), given the decision `etcd-assess` would have stored, with a journal kept in memory so
//! that a second execution resumes from what the first stored; the last ones run whole runs
//! through the API (and a crash of the service process between delete and re-create).

use crate::common::{self, until};

use std::{collections::BTreeSet, path::PathBuf, sync::Mutex};

use base64::{Engine, engine::general_purpose::STANDARD};
use etcd_repopulator::{
    cluster::{Cluster, Mode, RunEvents, rbac},
    config::RecoveryConfig,
    csm::{CsmClients, CsmConfig},
    etcd::EtcdConfig,
    handlers::{self, Action, Journal, RecoverOperator, StepContext, StepError, StepOutcome},
    model::State,
    remote::SshConfig,
    store::Store,
};
use k8s_openapi::api::{apps::v1::Deployment, rbac::v1::PolicyRule};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};
use sim::{SimCluster, SimOptions};
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "cray-bss-etcd";
const DEPLOYMENT: &str = "cray-bss";
const BACKUP: &str = "etcd.backup_v5_2026-11-30-10:00:00";

/// A journal in memory: what the step saved last, and its log; `etcd-assess` decided
/// `decision`.
struct MemoryJournal {
    decision: Value,
    data: Mutex<Option<Value>>,
    log: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Journal for MemoryJournal {
    async fn save(&self, data: &Value) -> Result<(), StepError> {
        *self.data.lock().unwrap() = Some(data.clone());
        Ok(())
    }

    async fn log(&self, message: &str) {
        self.log.lock().unwrap().push(message.to_owned());
    }
}

impl MemoryJournal {
    /// What `etcd-assess` would have stored.
    fn assessment(&self) -> Value {
        json!({
            "cluster": CLUSTER,
            "mode": "auto",
            "healthy": false,
            "report": {},
            "backups": [],
            "restore_max_age": "7days",
            "decision": self.decision,
            "reason": "the test decided",
        })
    }
}

struct Executed {
    result: Result<StepOutcome, StepError>,
    saved: Option<Value>,
    log: Vec<String>,
}

/// Runs `action` as the service account bound to `rules`, resuming from `saved`.
async fn execute(
    sim: &SimCluster,
    action: &Decided,
    saved: Option<Value>,
    dry_run: bool,
    rules: Vec<PolicyRule>,
) -> Executed {
    let cancel = CancellationToken::new();
    execute_until(sim, action, saved, dry_run, rules, &cancel).await
}

/// [`execute`], stopped (as a cancel of the run stops it) when `cancel` is cancelled.
async fn execute_until(
    sim: &SimCluster,
    action: &Decided,
    saved: Option<Value>,
    dry_run: bool,
    rules: Vec<PolicyRule>,
    cancel: &CancellationToken,
) -> Executed {
    let client = sim.service_account_client(etcd_repopulator::app::SERVICE_ACCOUNT, rules);
    let cluster = Cluster::new(client.clone(), "services");
    let csm = CsmClients::new(&CsmConfig::simulated(&sim.url())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("runs.db").to_str().unwrap())
        .await
        .unwrap();
    let run_id = uuid::Uuid::now_v7();
    let events = RunEvents::new(
        client,
        run_id,
        "bss",
        "etcd-recover",
        Mode::dry_run_if(dry_run),
    );
    let journal = MemoryJournal {
        decision: action.decision.clone(),
        data: Mutex::default(),
        log: Mutex::default(),
    };
    let (ssh, etcd) = (SshConfig::default(), EtcdConfig::default());
    let recovery = RecoveryConfig {
        timeout: common::WAIT,
        ..RecoveryConfig::default()
    };
    let ctx = StepContext {
        run_id,
        cluster: &cluster,
        csm: &csm,
        mode: Mode::dry_run_if(dry_run),
        cancel,
        shutdown: &tokio_util::sync::CancellationToken::new(),
        journal: &journal,
        saved,
        ssh: &ssh,
        etcd: &etcd,
        recovery: &recovery,
        store: &store,
        events: &events,
    };
    let recover = Action::RecoverOperator(RecoverOperator {
        cluster: CLUSTER.to_owned(),
        timeout: common::WAIT,
    });
    // What the runner hands the step: the decision `etcd-assess` stored, typed.
    let mut earlier = handlers::Earlier::default();
    earlier
        .entry::<handlers::Decided>()
        .learn_assessment(&journal.assessment());
    let result = handlers::execute(&recover, &ctx, &earlier).await;
    Executed {
        result,
        saved: journal.data.lock().unwrap().clone(),
        log: journal.log.lock().unwrap().clone(),
    }
}

/// What `etcd-assess` decided, for `etcd-recover` of cray-bss-etcd.
struct Decided {
    decision: Value,
}

fn rebuild() -> Decided {
    Decided {
        decision: json!({ "action": "rebuild" }),
    }
}

fn restore(backup: &str) -> Decided {
    let file = backup.rsplit('/').next().unwrap_or(backup);
    Decided {
        decision: json!({ "action": "restore", "backup": backup, "file": file }),
    }
}

/// CSM 1.3 with real etcd, and with the S3 server (`s3`) where a restore needs backups.
async fn sim_1_3(s3: bool) -> SimCluster {
    common::release_sim(
        "1.3",
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: Some(vec![CLUSTER.to_owned()]),
            s3,
            ..SimOptions::default()
        },
    )
    .await
}

fn etcd_api(sim: &SimCluster, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", kind),
        plural,
    );
    Api::namespaced_with(sim.kube_client(), "services", &resource)
}

fn clusters(sim: &SimCluster) -> Api<DynamicObject> {
    etcd_api(sim, "EtcdCluster", "etcdclusters")
}

fn deployments(sim: &SimCluster) -> Api<Deployment> {
    Api::namespaced(sim.kube_client(), "services")
}

async fn uid_of(sim: &SimCluster) -> String {
    clusters(sim)
        .get(CLUSTER)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

async fn replicas(sim: &SimCluster) -> i32 {
    deployments(sim)
        .get(DEPLOYMENT)
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap()
}

async fn scale_to(sim: &SimCluster, n: i32) {
    deployments(sim)
        .patch_scale(
            DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": n } })),
        )
        .await
        .unwrap();
}

/// The real etcd of the cluster, once it answers healthy.
async fn etcd_url(sim: &SimCluster) -> String {
    until("the etcd of cray-bss-etcd to answer", async || {
        let url = sim.etcd_url(CLUSTER)?;
        let body = reqwest::get(format!("{url}/health"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.contains("\"true\"").then_some(url)
    })
    .await
}

async fn deployment_version(sim: &SimCluster) -> Option<String> {
    let deployment = deployments(sim).get(DEPLOYMENT).await.unwrap();
    deployment.metadata.resource_version
}

/// The resourceVersions of the EtcdCluster and of the Deployment (to see nothing changed).
async fn versions(sim: &SimCluster) -> (Option<String>, Option<String>) {
    let cluster = clusters(sim).get(CLUSTER).await.unwrap();
    (
        cluster.metadata.resource_version,
        deployment_version(sim).await,
    )
}

/// Every key of the etcd at `url`, with its value.
async fn keys(url: &str) -> Vec<(String, String)> {
    let body: Value = reqwest::Client::new()
        .post(format!("{url}/v3/kv/range"))
        .json(&json!({ "key": STANDARD.encode("\0"), "range_end": STANDARD.encode("\0") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decode =
        |v: &Value| String::from_utf8(STANDARD.decode(v.as_str().unwrap()).unwrap()).unwrap();
    body["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (decode(&kv["key"]), decode(&kv["value"])))
                .collect()
        })
        .unwrap_or_default()
}

fn message(result: &Result<StepOutcome, StepError>) -> String {
    match result {
        Ok(outcome) => outcome.message.clone(),
        Err(err) => err.to_string(),
    }
}

/// The permissions the service account used (api group, resource[/subresource], verb).
fn used(sim: &SimCluster) -> BTreeSet<(String, String, String)> {
    sim.access_log()
        .iter()
        .inspect(|r| assert!(r.allowed, "a request outside the Role: {r:#?}"))
        .map(|r| {
            let resource = if r.request.subresource.is_empty() {
                r.request.resource.clone()
            } else {
                format!("{}/{}", r.request.resource, r.request.subresource)
            };
            (
                r.request.api_group.clone(),
                resource,
                r.request.verb.clone(),
            )
        })
        .collect()
}

fn assert_used(
    used: &BTreeSet<(String, String, String)>,
    group: &str,
    resource: &str,
    verbs: &[&str],
) {
    for verb in verbs {
        assert!(
            used.contains(&(group.to_owned(), resource.to_owned(), (*verb).to_owned())),
            "{group}/{resource} {verb} not used: {used:#?}"
        );
    }
}

#[tokio::test]
async fn a_rebuild_recreates_the_cluster_empty_and_puts_the_deployment_back() {
    let sim = sim_1_3(false).await;
    scale_to(&sim, 2).await;
    sim.wait_settled(common::WAIT).await.unwrap();
    let url = etcd_url(&sim).await;
    // The simulated BSS keeps its boot parameters there too.
    let seeded = keys(&url).await.len();
    common::etcd_put(&url, "/bss/boot-params/x3000c0s1b0n0", "{\"kernel\":\"k\"}").await;
    assert_eq!(keys(&url).await.len(), seeded + 1);
    let before = uid_of(&sim).await;
    let periodic_before = etcd_api(&sim, "EtcdBackup", "etcdbackups")
        .get("cray-bss-etcd-cluster-periodic-backup")
        .await
        .unwrap()
        .metadata
        .uid;

    // The plan first: it changes nothing.
    let unchanged = versions(&sim).await;
    let plan = execute(&sim, &rebuild(), None, true, rbac::policy_rules()).await;
    let text = message(&plan.result);
    assert!(plan.result.is_ok(), "{text}");
    for needle in [
        "dry run: would scale Deployment cray-bss from 2 replica(s) to 0",
        "EtcdCluster cray-bss-etcd",
        &format!("uid {before}"),
        "size 3",
        "scale cray-bss back to 2",
        "delete the EtcdBackup cray-bss-etcd-cluster-periodic-backup",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert_eq!(
        plan.saved.as_ref().unwrap()["manifest"]["metadata"]["name"],
        CLUSTER
    );
    assert_eq!(versions(&sim).await, unchanged);

    let done = execute(&sim, &rebuild(), None, false, rbac::policy_rules()).await;
    let text = message(&done.result);
    let outcome = done.result.expect(&text);
    assert_eq!(outcome.state, State::Succeeded, "{text}");
    assert!(
        text.contains("was rebuilt from its stored manifest: 3 member pod(s)"),
        "{text}"
    );
    assert!(text.contains("0 key(s)"), "{text}");
    assert!(
        text.contains("Deployment cray-bss back at 2 replica(s), 2 pod(s) Ready"),
        "{text}"
    );
    // A new EtcdCluster, Running with its size, and an empty etcd behind it.
    let after = clusters(&sim).get(CLUSTER).await.unwrap();
    assert_ne!(after.metadata.uid.as_deref(), Some(before.as_str()));
    assert_eq!(after.data["status"]["phase"], "Running");
    assert_eq!(after.data["status"]["size"], 3);
    assert!(keys(&etcd_url(&sim).await).await.is_empty());
    // The Deployment is back at its replica count, and the periodic backup went.
    assert_eq!(replicas(&sim).await, 2);
    assert_eq!(outcome.data["deployment"]["replicas"], 2);
    assert_eq!(outcome.data["deployment_restored"], true);
    // The periodic EtcdBackup was deleted, and CSM's backup job created it again.
    assert_eq!(
        outcome.data["periodic_backup_deleted"],
        "cray-bss-etcd-cluster-periodic-backup"
    );
    let periodic = etcd_api(&sim, "EtcdBackup", "etcdbackups")
        .get("cray-bss-etcd-cluster-periodic-backup")
        .await
        .unwrap();
    assert_ne!(periodic.metadata.uid, periodic_before);
    let used = used(&sim);
    assert_used(&used, "apps", "deployments/scale", &["get", "patch"]);
    // (`watch` too when the object does not go at once: it has no finalizer here.)
    assert_used(
        &used,
        "etcd.database.coreos.com",
        "etcdbackups",
        &["get", "list", "delete"],
    );
}

#[tokio::test]
async fn a_rebuild_stopped_between_delete_and_create_resumes_from_the_stored_manifest() {
    let sim = sim_1_3(false).await;
    let before = uid_of(&sim).await;
    // The first attempt may not create EtcdClusters: it fails right after the delete.
    let mut rules = rbac::policy_rules();
    for rule in &mut rules {
        if rule.resources.as_deref() == Some(&["etcdclusters".to_owned()][..]) {
            rule.verbs.retain(|verb| verb != "create");
        }
    }
    let first = execute(&sim, &rebuild(), None, false, rules).await;
    let text = message(&first.result);
    assert!(first.result.is_err(), "{text}");
    assert!(
        text.contains("was deleted but could not be created again"),
        "{text}"
    );
    // Every ending puts the Deployment back.
    assert!(
        text.contains("Deployment cray-bss put back at its 1 replica(s)"),
        "{text}"
    );
    assert_eq!(replicas(&sim).await, 1);
    assert!(clusters(&sim).get_opt(CLUSTER).await.unwrap().is_none());
    let saved = first.saved.expect("the step stored its data");
    assert_eq!(saved["recreate"]["original_uid"], before.as_str());
    assert_eq!(saved["recreate"]["manifest"]["spec"]["size"], 3);
    assert_eq!(saved["deployment"]["replicas"], 1);

    // The resume, with the stored data: the cluster is created from the stored manifest.
    let second = execute(&sim, &rebuild(), Some(saved), false, rbac::policy_rules()).await;
    let text = message(&second.result);
    assert_eq!(
        second.result.expect(&text).state,
        State::Succeeded,
        "{text}"
    );
    assert!(
        second
            .log
            .iter()
            .any(|l| l
                .contains("is absent; creating it from the manifest stored before it was deleted")),
        "{:#?}",
        second.log
    );
    let after = clusters(&sim).get(CLUSTER).await.unwrap();
    assert_ne!(after.metadata.uid.as_deref(), Some(before.as_str()));
    assert_eq!(after.data["status"]["phase"], "Running");
    assert!(keys(&etcd_url(&sim).await).await.is_empty());
    assert_eq!(replicas(&sim).await, 1);
}

#[tokio::test]
async fn a_rebuild_cancelled_while_the_cluster_starts_puts_the_deployment_back() {
    let sim = sim_1_3(false).await;
    scale_to(&sim, 2).await;
    sim.wait_settled(common::WAIT).await.unwrap();
    // The re-created cluster keeps this annotation (it is in the stored manifest): it never
    // becomes Running, so the step is still waiting when it is cancelled.
    clusters(&sim)
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                "sim.etcd-repopulator.io/never-ready": "true",
            }}})),
        )
        .await
        .unwrap();
    let before = uid_of(&sim).await;
    let cancel = CancellationToken::new();
    let stop = {
        let (cancel, api) = (cancel.clone(), clusters(&sim));
        let before = before.clone();
        async move {
            // Cancel once the cluster exists again (a new uid).
            until("the cluster to be created again", async || {
                let current = api.get_opt(CLUSTER).await.unwrap()?;
                (current.metadata.uid.as_deref() != Some(before.as_str())).then_some(())
            })
            .await;
            cancel.cancel();
        }
    };
    let action = rebuild();
    let (done, ()) = tokio::join!(
        execute_until(&sim, &action, None, false, rbac::policy_rules(), &cancel),
        stop
    );
    let text = message(&done.result);
    assert!(
        matches!(&done.result, Err(err) if err.is_cancelled()),
        "{text}"
    );
    assert!(
        text.contains("Deployment cray-bss put back at its 2 replica(s)"),
        "{text}"
    );
    assert_eq!(replicas(&sim).await, 2);
    assert_ne!(uid_of(&sim).await, before, "the cluster exists again");
}

/// `etcdctl snapshot save` of the cluster's etcd into the simulated S3, as the backup operator
/// stores it (`etcd-backup/cray-bss/<backup>`).
fn save_backup(url: &str, sim: &SimCluster, name: &str) -> PathBuf {
    let file = sim
        .s3()
        .expect("the simulated S3 runs")
        .object_path(&format!("cray-bss/{name}"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg("snapshot")
        .arg("save")
        .arg(&file)
        .output()
        .expect("etcdctl runs (Debian: etcd-client)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    file
}

#[tokio::test]
async fn a_restore_through_an_etcdrestore_brings_the_backups_keys_back() {
    let sim = sim_1_3(true).await;
    let url = etcd_url(&sim).await;
    common::etcd_put(&url, "/bss/boot-params/x3000c0s1b0n0", "{\"kernel\":\"a\"}").await;
    common::etcd_put(&url, "/bss/boot-params/x3000c0s2b0n0", "{\"kernel\":\"b\"}").await;
    let backed_up = keys(&url).await;
    save_backup(&url, &sim, BACKUP);
    // Written after the backup: the restore takes the cluster back to before it.
    common::etcd_put(&url, "/bss/after-the-backup", "lost").await;
    let before = uid_of(&sim).await;
    let deployment_rv = deployment_version(&sim).await;

    let plan = execute(
        &sim,
        &restore(&format!("cray-bss/{BACKUP}")),
        None,
        true,
        rbac::policy_rules(),
    )
    .await;
    let text = message(&plan.result);
    assert!(plan.result.is_ok(), "{text}");
    for needle in [
        "dry run: would create the EtcdRestore cray-bss-etcd",
        &format!("s3://etcd-backup/cray-bss/{BACKUP}"),
        "EtcdBackup cray-bss-etcd-cluster-periodic-backup",
        &format!("uid {before}"),
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let restores = etcd_api(&sim, "EtcdRestore", "etcdrestores");
    assert!(
        restores.get_opt(CLUSTER).await.unwrap().is_none(),
        "a plan creates nothing"
    );
    assert_eq!(uid_of(&sim).await, before);

    let done = execute(&sim, &restore(BACKUP), None, false, rbac::policy_rules()).await;
    let text = message(&done.result);
    let outcome = done.result.expect(&text);
    assert_eq!(outcome.state, State::Succeeded, "{text}");
    assert!(text.contains("was restored from the backup"), "{text}");
    assert!(text.contains("3 member pod(s) Running and Ready"), "{text}");
    let data = &outcome.data;
    assert_eq!(
        data["restore"]["source"]["path"],
        format!("etcd-backup/cray-bss/{BACKUP}")
    );
    assert_eq!(
        data["restore"]["source"]["aws_secret"],
        "etcd-backup-s3-credentials"
    );
    // A new cluster, whose etcd holds exactly what the backup held.
    assert_ne!(uid_of(&sim).await, before);
    assert_eq!(keys(&etcd_url(&sim).await).await, backed_up);
    // The EtcdRestore was deleted (so that future restores can occur), the Deployment untouched.
    assert!(restores.get_opt(CLUSTER).await.unwrap().is_none());
    assert_eq!(deployment_version(&sim).await, deployment_rv);
    let used = used(&sim);
    assert_used(
        &used,
        "etcd.database.coreos.com",
        "etcdrestores",
        &["create", "list", "watch", "delete"],
    );
}

/// A crash (or a lost response) after the `EtcdRestore` was created and before its uid was
/// stored: the resumed step finds its own run's `EtcdRestore` and carries on with it, instead
/// of refusing it as another restore's.
#[tokio::test]
async fn a_restore_resumed_after_its_etcdrestore_was_created_carries_on_with_it() {
    let sim = sim_1_3(true).await;
    let url = etcd_url(&sim).await;
    common::etcd_put(&url, "/bss/boot-params/x3000c0s1b0n0", "{\"kernel\":\"a\"}").await;
    let backed_up = keys(&url).await;
    save_backup(&url, &sim, BACKUP);
    common::etcd_put(&url, "/bss/after-the-backup", "lost").await;
    let before = uid_of(&sim).await;

    // What the attempt that crashed had done: stored its plan (a dry run stores the same one,
    // with the manifest it would create), created the EtcdRestore, and no more.
    let plan = execute(&sim, &restore(BACKUP), None, true, rbac::policy_rules()).await;
    let text = message(&plan.result);
    let saved = plan.saved.expect(&text);
    let restores = etcd_api(&sim, "EtcdRestore", "etcdrestores");
    let created: DynamicObject = serde_json::from_value(saved["etcd_restore"].clone()).unwrap();
    restores
        .create(&Default::default(), &created)
        .await
        .unwrap();

    let resumed = execute(
        &sim,
        &restore(BACKUP),
        Some(json!({ "restore": saved["restore"] })),
        false,
        rbac::policy_rules(),
    )
    .await;
    let text = message(&resumed.result);
    let outcome = resumed.result.expect(&text);
    assert_eq!(outcome.state, State::Succeeded, "{text}");
    assert!(
        resumed
            .log
            .iter()
            .any(|l| l.contains("created by an earlier attempt of this run, for the backup")),
        "{:?}",
        resumed.log
    );
    assert_ne!(uid_of(&sim).await, before);
    assert_eq!(keys(&etcd_url(&sim).await).await, backed_up);
    assert!(restores.get_opt(CLUSTER).await.unwrap().is_none());

    // Another's EtcdRestore (no annotation of this run) is still refused: not waited for, not
    // deleted.
    let mut other = created.clone();
    other.metadata.annotations = None;
    other.metadata.resource_version = None;
    restores.create(&Default::default(), &other).await.unwrap();
    let refused = execute(
        &sim,
        &restore(BACKUP),
        Some(json!({ "restore": saved["restore"] })),
        false,
        rbac::policy_rules(),
    )
    .await;
    let text = message(&refused.result);
    assert!(
        text.contains("an EtcdRestore cray-bss-etcd exists already"),
        "{text}"
    );
    assert!(restores.get_opt(CLUSTER).await.unwrap().is_some());
}

#[tokio::test]
async fn a_restore_without_the_periodic_backup_changes_nothing_and_says_why() {
    let sim = sim_1_3(false).await;
    // A cluster the operator gave up on (so CSM's backup job does not create its periodic
    // EtcdBackup again), whose periodic EtcdBackup is gone.
    clusters(&sim)
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Failed" } })),
        )
        .await
        .unwrap();
    etcd_api(&sim, "EtcdBackup", "etcdbackups")
        .delete("cray-bss-etcd-cluster-periodic-backup", &Default::default())
        .await
        .unwrap();
    let before = uid_of(&sim).await;
    let done = execute(&sim, &restore(BACKUP), None, false, rbac::policy_rules()).await;
    let text = message(&done.result);
    assert!(done.result.is_err(), "{text}");
    assert!(
        text.contains("the EtcdBackup cray-bss-etcd-cluster-periodic-backup does not exist"),
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(uid_of(&sim).await, before);
    // A name that is not a backup of the service is refused before anything happens.
    let other = execute(
        &sim,
        &restore("cray-bos/etcd.backup_v1_x"),
        None,
        false,
        rbac::policy_rules(),
    )
    .await;
    assert!(
        message(&other.result).contains("is not a backup of cray-bss"),
        "{}",
        message(&other.result)
    );
}

#[tokio::test]
async fn a_rebuild_with_nothing_to_rebuild_from_leaves_the_deployment_alone() {
    let sim = sim_1_3(false).await;
    let api = clusters(&sim);
    api.delete(CLUSTER, &Default::default()).await.unwrap();
    // The operator tears the members down and lets the object go.
    until("the cluster to be deleted", async || {
        api.get_opt(CLUSTER).await.unwrap().is_none().then_some(())
    })
    .await;
    let deployment_rv = deployment_version(&sim).await;
    let done = execute(&sim, &rebuild(), None, false, rbac::policy_rules()).await;
    let text = message(&done.result);
    assert!(done.result.is_err(), "{text}");
    assert!(
        text.contains("no run stored its manifest: there is nothing to rebuild it from, and nothing was changed"),
        "{text}"
    );
    assert_eq!(deployment_version(&sim).await, deployment_rv);
}

/// Whole runs on CSM 1.3 through the API: `"etcd": "rebuild"` rebuilds the EtcdCluster (a
/// safety snapshot first) and repopulates BSS; then `"etcd": "restore"` without a backup named
/// restores the safety snapshot of the first run, bringing back what the rebuild lost.
#[tokio::test]
async fn a_rebuild_run_then_a_restore_run_bring_back_the_data_from_before_the_rebuild() {
    let sim = sim_1_3(true).await;
    let url = etcd_url(&sim).await;
    common::etcd_put(&url, "/bss/kept-by-the-safety-snapshot", "yes").await;
    let before = keys(&url).await;
    let app = common::start_on(sim, etcd_repopulator::config::Config::default()).await;

    // The plan of the rebuild changes nothing.
    let unchanged = versions(&app.sim).await;
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "rebuild", "dry_run": true, "discard_newer": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let text = common::step(&run, "bss", "etcd-recover")["message"]
        .as_str()
        .unwrap();
    assert!(
        text.starts_with("dry run: would scale Deployment cray-bss from 1 replica(s) to 0"),
        "{text}"
    );
    assert_eq!(versions(&app.sim).await, unchanged);

    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "rebuild", "confirm": [CLUSTER], "discard_newer": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let recover = common::step(&run, "bss", "etcd-recover");
    assert_eq!(recover["state"], "succeeded", "{recover:#}");
    let text = recover["message"].as_str().unwrap();
    assert!(
        text.contains("was rebuilt from its stored manifest"),
        "{text}"
    );
    assert!(
        text.contains("Deployment cray-bss back at 1 replica(s)"),
        "{text}"
    );
    assert_eq!(
        common::step(&run, "bss", "etcd-safety-snapshot")["state"],
        "succeeded",
        "{run:#}"
    );
    assert_eq!(replicas(&app.sim).await, 1);
    // Rebuilt empty, then BSS repopulated by cray-reds-init: the key put before is gone.
    let rebuilt = keys(&etcd_url(&app.sim).await).await;
    assert!(
        !rebuilt
            .iter()
            .any(|(k, _)| k == "/bss/kept-by-the-safety-snapshot"),
        "{rebuilt:?}"
    );

    // The rebuilt cluster holds what cray-reds-init wrote: a restore replaces it only when the
    // request accepts that.
    let id = app
        .start_run(json!({ "services": ["bss"], "etcd": "restore", "confirm": [CLUSTER], "discard_newer": true }))
        .await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let recover = common::step(&run, "bss", "etcd-recover");
    let text = recover["message"].as_str().unwrap();
    assert!(
        text.contains("was restored from the backup repopulator-"),
        "{text}"
    );
    assert!(text.contains("by the restore operator"), "{text}");
    // The restore brought BSS's boot parameters back: cray-reds-init is not re-run, and the
    // check that BSS holds them still runs.
    let rerun = common::step(&run, "bss", "rerun-reds-init-job");
    assert_eq!(rerun["state"], "skipped", "{rerun:#}");
    assert!(
        rerun["message"]
            .as_str()
            .unwrap()
            .contains("brings this data back"),
        "{rerun:#}"
    );
    assert_eq!(
        common::step(&run, "bss", "verify-bss-boot-parameters")["state"],
        "succeeded",
        "{run:#}"
    );
    let restored = keys(&etcd_url(&app.sim).await).await;
    for kv in &before {
        assert!(restored.contains(kv), "{kv:?} not back: {restored:?}");
    }
    assert!(
        etcd_api(&app.sim, "EtcdRestore", "etcdrestores")
            .get_opt(CLUSTER)
            .await
            .unwrap()
            .is_none()
    );
}
