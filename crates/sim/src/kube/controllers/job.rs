//! The Job controller: one pod per Job (completions 1, parallelism 1), run for
//! `job_run_duration` after it starts, then Succeeded (Job `Complete`) or, with the
//! `sim.etcd-repopulator.io/fail` annotation, failed. A failure is retried as the real
//! controllers do (see [`super::super::SimOptions::job_backoff`]):
//!
//! * `restartPolicy: Never`: the pod stays Failed and the Job controller creates a new pod
//!   after 10 s, 20 s, 40 s, ... (capped at 6 min); once `status.failed` exceeds `backoffLimit`
//!   the Job gets `Failed` with reason `BackoffLimitExceeded`.
//! * `restartPolicy: OnFailure`: the kubelet restarts the container in the same pod after the
//!   crash-loop back-off (10 s, 20 s, ..., capped at 5 min), counting `restartCount`; once the
//!   restarts reach `backoffLimit` the Job fails the same way and its active pod is deleted.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::resources::{JOBS, PODS};
use super::super::{meta, options::KubeVersion};
use super::replicaset::{delete_pod, is_ready, pod_from_template};
use super::{
    annotations::{EFFECT, EFFECT_RELOAD_FAS_IMAGES, EFFECT_REPOPULATE_BSS, FAIL, LOG},
    ctx::{Ctx, all, log_err, owned_by},
};

#[derive(Default)]
pub struct JobController {
    running: HashSet<String>,
    /// `(job uid, failed pods)` whose replacement pod is scheduled (`restartPolicy: Never`).
    retrying: HashSet<(String, usize)>,
}

/// After the back-off, a new pod for the Job, if it is still the same, unfinished, and has no
/// active pod.
fn retry(ctx: &Ctx, job: &Value) {
    let (Some(ns), Some(name), Some(uid)) = (meta::namespace(job), meta::name(job), meta::uid(job))
    else {
        return;
    };
    let Some(current) = ctx.store.try_get(&JOBS, ns, name) else {
        return;
    };
    if meta::uid(&current) != Some(uid)
        || meta::is_deleting(&current)
        || has_condition(&current, "Complete")
        || has_condition(&current, "Failed")
    {
        return;
    }
    let pods = all(ctx, &PODS);
    if owned_by(&pods, &current).any(|p| !matches!(phase(p), Some("Succeeded" | "Failed"))) {
        return;
    }
    let template = current
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    log_err(
        "create job pod after back-off",
        ctx.store
            .create(&PODS, ns, pod_from_template(&current, &template), false),
    );
}

fn has_condition(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

fn condition(kind: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    })
}

fn phase(pod: &Value) -> Option<&str> {
    pod.pointer("/status/phase").and_then(Value::as_str)
}

/// The Job controller's pod failure back-off caps at 6 min, the kubelet's crash-loop back-off
/// at 5 min: 36 and 30 times the 10 s they start from.
const JOB_BACKOFF_CAP: u32 = 36;
const CRASH_LOOP_CAP: u32 = 30;

/// `base` doubled for every failure after the first, at most `cap` times `base`.
fn backoff(base: Duration, failures: u32, cap: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings)
        .min(base.saturating_mul(cap))
}

fn restarts_in_place(job_or_pod: &Value, template: &str) -> bool {
    job_or_pod
        .pointer(&format!("{template}/spec/restartPolicy"))
        .and_then(Value::as_str)
        == Some("OnFailure")
}

/// The containers' restarts (what `backoffLimit` counts under `OnFailure`).
fn restart_count(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the pod's container(s) until they succeed, fail for good, or the pod goes: a failing
/// `OnFailure` pod is restarted in place after the crash-loop back-off.
async fn run(ctx: Ctx, mut pod: Value) {
    loop {
        tokio::time::sleep(ctx.opts.job_run_duration).await;
        let effect_error = effect(&ctx, &pod).await;
        let Some(crashed) = finish(&ctx, &pod, effect_error) else {
            return;
        };
        // The n-th crash waits the n-th back-off; `restartCount` counts the restarts done.
        let crashes = u32::try_from(restart_count(&crashed) + 1).unwrap_or(u32::MAX);
        tokio::time::sleep(backoff(ctx.opts.job_backoff, crashes, CRASH_LOOP_CAP)).await;
        let now = meta::now();
        match ctx.modify(&PODS, &crashed, |p| {
            if meta::is_deleting(p) || phase(p) != Some("Running") {
                return;
            }
            if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
                for c in cs {
                    let restarts = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
                    c["restartCount"] = json!(restarts + 1);
                    c["state"] = json!({ "running": { "startedAt": now } });
                    c["started"] = json!(true);
                    c["ready"] = json!(true);
                }
            }
            if let Some(cs) = p["status"]["conditions"].as_array_mut() {
                for c in cs {
                    if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                        c["status"] = json!("True");
                        c["lastTransitionTime"] = json!(now);
                        if let Some(m) = c.as_object_mut() {
                            m.remove("reason");
                        }
                    }
                }
            }
        }) {
            Ok(restarted) if !meta::is_deleting(&restarted) => pod = restarted,
            _ => return,
        }
    }
}

/// The work of a pod that is about to succeed ([`EFFECT`]) on the fake CSM services; the error
/// that makes it fail instead (BSS's etcd not answering, for `cray-reds-init`).
async fn effect(ctx: &Ctx, pod: &Value) -> Option<String> {
    let ns = meta::namespace(pod).unwrap_or_default();
    let current = ctx
        .store
        .get(&PODS, ns, meta::name(pod).unwrap_or_default())
        .ok()?;
    if meta::uid(&current) != meta::uid(pod)
        || meta::is_deleting(&current)
        || phase(&current) != Some("Running")
        || meta::annotation(pod, FAIL) == Some("true")
    {
        return None;
    }
    match meta::annotation(pod, EFFECT) {
        Some(EFFECT_REPOPULATE_BSS) => ctx.csm.repopulate_bss_async().await.err(),
        Some(EFFECT_RELOAD_FAS_IMAGES) => {
            ctx.csm.reload_fas_images();
            None
        }
        _ => None,
    }
}

/// Ends the pod's run: Succeeded, or failed when the pod carries the fail annotation or its
/// effect failed (`effect_error`). A failed `OnFailure` pod stays Running with its container
/// waiting in `CrashLoopBackOff`; it is returned so that the kubelet can restart the container.
fn finish(ctx: &Ctx, pod: &Value, effect_error: Option<String>) -> Option<Value> {
    let fail = meta::annotation(pod, FAIL) == Some("true") || effect_error.is_some();
    let in_place = fail && restarts_in_place(pod, "");
    let job = pod
        .pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let lines: Vec<String> = match meta::annotation(pod, LOG) {
        _ if effect_error.is_some() => vec![format!(
            "Error: {job}: {}",
            effect_error.unwrap_or_default()
        )],
        Some(text) => text.lines().map(str::to_string).collect(),
        None if fail => vec![format!(
            "Error: {job}: failed to populate etcd: context deadline exceeded"
        )],
        None => vec![format!("{job}: populated etcd, done")],
    };
    let now = meta::now();
    let r = ctx.modify(&PODS, pod, |p| {
        if meta::is_deleting(p) || phase(p) != Some("Running") {
            return;
        }
        if in_place {
            crash(p, &now);
            return;
        }
        let (ph, exit, reason) = if fail {
            ("Failed", 1, "Error")
        } else {
            ("Succeeded", 0, "Completed")
        };
        p["status"]["phase"] = json!(ph);
        if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
            for c in cs {
                let started = c.pointer("/state/running/startedAt").cloned();
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c["state"] = json!({ "terminated": {
                    "exitCode": exit, "reason": reason, "startedAt": started, "finishedAt": now,
                }});
            }
        }
        if let Some(cs) = p["status"]["conditions"].as_array_mut() {
            for c in cs {
                if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodCompleted");
                    c["lastTransitionTime"] = json!(now);
                }
            }
        }
    });
    let mut crashed = None;
    if let Ok(p) = &r {
        ctx.store.append_log(p, lines);
        let waiting = p
            .pointer("/status/containerStatuses/0/state/waiting")
            .is_some();
        if in_place && waiting && !meta::is_deleting(p) {
            crashed = Some(p.clone());
        }
    }
    log_err("finish job pod", r);
    crashed
}

/// The container exited 1 and waits to be restarted (`OnFailure`), as the kubelet shows it.
fn crash(pod: &mut Value, now: &str) {
    if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
        for c in cs {
            let started = c.pointer("/state/running/startedAt").cloned();
            c["ready"] = json!(false);
            c["started"] = json!(false);
            c["lastState"] = json!({ "terminated": {
                "exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": now,
            }});
            c["state"] = json!({ "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off restarting failed container",
            }});
        }
    }
    if let Some(cs) = pod["status"]["conditions"].as_array_mut() {
        for c in cs {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!("False");
                c["reason"] = json!("ContainersNotReady");
                c["lastTransitionTime"] = json!(now);
            }
        }
    }
}

impl JobController {
    pub fn reconcile(&mut self, ctx: &Ctx) {
        let pods = all(ctx, &PODS);
        let live: HashSet<&str> = pods.iter().filter_map(meta::uid).collect();
        self.running.retain(|u| live.contains(u.as_str()));
        let jobs = all(ctx, &JOBS);
        {
            let live_jobs: HashSet<&str> = jobs.iter().filter_map(meta::uid).collect();
            self.retrying
                .retain(|(uid, _)| live_jobs.contains(uid.as_str()));
        }
        for job in jobs {
            if meta::is_deleting(&job)
                || has_condition(&job, "Complete")
                || has_condition(&job, "Failed")
            {
                continue;
            }
            let ns = meta::namespace(&job).unwrap_or_default().to_string();
            let owned: Vec<&Value> = owned_by(&pods, &job).collect();
            let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
            if owned.is_empty() && !suspended && job.pointer("/status/startTime").is_none() {
                let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
                let pod = pod_from_template(&job, &template);
                log_err("create job pod", ctx.store.create(&PODS, &ns, pod, false));
                log_err(
                    "start job",
                    ctx.modify(&JOBS, &job, |j| {
                        j["status"] = json!({
                            "startTime": meta::now(),
                            "active": 1,
                            "ready": 0,
                            "terminating": 0,
                            "uncountedTerminatedPods": {},
                        });
                    }),
                );
                continue;
            }
            for pod in &owned {
                if phase(pod) == Some("Running")
                    && !meta::is_deleting(pod)
                    && let Some(uid) = meta::uid(pod)
                    && self.running.insert(uid.to_string())
                {
                    ctx.spawn(run(ctx.clone(), (*pod).clone()));
                }
            }
            let succeeded = owned
                .iter()
                .filter(|p| phase(p) == Some("Succeeded"))
                .count();
            let failed = owned.iter().filter(|p| phase(p) == Some("Failed")).count();
            let active = owned
                .iter()
                .filter(|p| !matches!(phase(p), Some("Succeeded" | "Failed")))
                .count();
            let ready = owned.iter().filter(|p| is_ready(p)).count();
            let backoff_limit = job
                .pointer("/spec/backoffLimit")
                .and_then(Value::as_i64)
                .unwrap_or(6);
            // `pastBackoffLimitOnFailure`: restarts of the active pods' containers.
            let restarts: i64 = owned
                .iter()
                .filter(|p| matches!(phase(p), Some("Running" | "Pending")))
                .map(|p| restart_count(p))
                .sum();
            let past_limit = failed as i64 > backoff_limit
                || (restarts_in_place(&job, "/spec/template")
                    && if backoff_limit == 0 {
                        restarts > 0
                    } else {
                        restarts >= backoff_limit
                    });
            let job_uid = meta::uid(&job).unwrap_or_default().to_string();
            // The failed pods are deleted when the Job fails (and counted as failed).
            let (active, failed) = if succeeded == 0 && past_limit {
                for pod in owned
                    .iter()
                    .filter(|p| !matches!(phase(p), Some("Succeeded" | "Failed")))
                {
                    delete_pod(ctx, pod);
                }
                (0, failed + active)
            } else {
                if succeeded == 0
                    && failed > 0
                    && active == 0
                    && self.retrying.insert((job_uid, failed))
                {
                    let failures = u32::try_from(failed).unwrap_or(u32::MAX);
                    let delay = backoff(ctx.opts.job_backoff, failures, JOB_BACKOFF_CAP);
                    let ctx2 = ctx.clone();
                    let job = job.clone();
                    ctx.spawn(async move {
                        tokio::time::sleep(delay).await;
                        retry(&ctx2, &job);
                    });
                }
                (active, failed)
            };
            let now = meta::now();
            // Since 1.31 the controller adds the interim conditions before the final one.
            let interim = ctx.opts.kubernetes_version >= KubeVersion::new(1, 31);
            log_err(
                "update job status",
                ctx.modify(&JOBS, &job, |j| {
                    let st = &mut j["status"];
                    st["active"] = json!(active);
                    st["ready"] = json!(ready);
                    st["succeeded"] = json!(succeeded);
                    st["failed"] = json!(failed);
                    let finished = if succeeded > 0 {
                        st["completionTime"] = json!(now);
                        Some((
                            "SuccessCriteriaMet",
                            "Complete",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        ))
                    } else if past_limit {
                        Some((
                            "FailureTarget",
                            "Failed",
                            "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit",
                        ))
                    } else {
                        None
                    };
                    if let Some((target, last, reason, message)) = finished {
                        let mut conditions = Vec::new();
                        if interim {
                            conditions.push(condition(target, reason, message, &now));
                        }
                        conditions.push(condition(last, reason, message, &now));
                        st["conditions"] = json!(conditions);
                    }
                    if succeeded == 0
                        && let Some(m) = st.as_object_mut()
                    {
                        m.remove("succeeded");
                    }
                    if failed == 0
                        && let Some(m) = st.as_object_mut()
                    {
                        m.remove("failed");
                    }
                }),
            );
        }
    }
}
