//! The Job controller: one pod per Job (completions 1, parallelism 1), run for
//! `job_run_duration` after it starts, then Succeeded (Job `Complete`) or, with the
//! `sim.etcd-repopulator.io/fail` annotation, Failed (Job `Failed`, `BackoffLimitExceeded`;
//! the simulator does not retry, unlike the real controller's backoff).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::resources::{JOBS, PODS};
use super::super::{KubeVersion, meta};
use super::replicaset::{is_ready, pod_from_template};
use super::{
    Ctx, EFFECT, EFFECT_RELOAD_FAS_IMAGES, EFFECT_REPOPULATE_BSS, FAIL, LOG, all, log_err, owned_by,
};

#[derive(Default)]
pub struct JobController {
    running: HashSet<String>,
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

/// Ends the pod's run: Succeeded, or Failed when the pod carries the fail annotation.
fn finish(ctx: &Ctx, pod: &Value) {
    let fail = meta::annotation(pod, FAIL) == Some("true");
    let job = pod
        .pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let lines: Vec<String> = match meta::annotation(pod, LOG) {
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
    if let Ok(p) = &r {
        ctx.store.append_log(p, lines);
        if !fail {
            match meta::annotation(p, EFFECT) {
                Some(EFFECT_REPOPULATE_BSS) => ctx.csm.repopulate_bss(),
                Some(EFFECT_RELOAD_FAS_IMAGES) => ctx.csm.reload_fas_images(),
                _ => {}
            }
        }
    }
    log_err("finish job pod", r);
}

impl JobController {
    pub fn reconcile(&mut self, ctx: &Ctx) {
        let pods = all(ctx, &PODS);
        let live: HashSet<&str> = pods.iter().filter_map(meta::uid).collect();
        self.running.retain(|u| live.contains(u.as_str()));
        for job in all(ctx, &JOBS) {
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
                    let ctx2 = ctx.clone();
                    let pod = (*pod).clone();
                    let delay = ctx.opts.job_run_duration;
                    ctx.spawn(async move {
                        tokio::time::sleep(delay).await;
                        finish(&ctx2, &pod);
                    });
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
                    } else if failed > 0 {
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
