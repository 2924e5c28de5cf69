//! Member replacement: the broken minority of a Bitnami cluster's members (crash-looping,
//! corrupt, a lost volume) replaced one at a time while the others keep serving, as etcd's
//! runtime reconfiguration guide replaces a failed member (remove it, then add a new one) and
//! as the Bitnami image adds a member that starts with no data:
//!
//! 1. **checked**: the member is still broken, and the healthy members left once it is
//!    removed are a quorum of the members left; what identifies its data (the member id, the
//!    uids of its PVC and pod) is journalled;
//! 2. **removed**: `member remove` (etcd refuses while too few members have been connected to
//!    the leader for long: asked again until the deadline);
//! 3. **deleted**: its PVC deleted, then its pod (the PVC waits for its pod, and the
//!    StatefulSet controller creates the claim again before the pod);
//! 4. **rejoined**: the new pod's etcd, finding no data and a cluster whose members all
//!    answer, adds itself (`member add`) and starts; the member is done once it is healthy,
//!    its pod Ready and its revision has reached the cluster's revision read when the wait
//!    began (it caught up from the leader).
//!
//! No write is lost: every acknowledged write is on a quorum, and the leader holds every
//! committed one; the member replaced held nothing the members left do not. A resume reads
//! the journal and the cluster again: a member already rejoined is skipped, a PVC or pod that
//! is no longer the journalled one is not deleted again, and a member that came back by
//! itself since is left alone.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Preconditions},
};
use serde::{Deserialize, Serialize};

use super::{
    decision::BrokenMember,
    journal::Journaled,
    wait::{Deadline, wait_healthy},
};
use crate::{
    cluster::ObjectRef,
    etcd::{
        EtcdClient,
        layout::{self, EtcdClusterReport, LocatedCluster, MemberHealth},
    },
    model::EtcdLayout,
    step::{StepContext, StepError, StepOutcome},
};

/// How far a member has come (journalled before the change it names is made, and again
/// after).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplacePhase {
    /// To be replaced.
    #[default]
    Planned,
    /// Checked still broken and safe to remove; its ids stored.
    Checked,
    /// Removed from the cluster.
    Removed,
    /// Its PVC and pod deleted.
    Deleted,
    /// A new member runs in its place and has caught up.
    Rejoined,
    /// It was healthy again before anything was done to it.
    CameBack,
}

/// One member being replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberReplacement {
    pub pod: String,
    pub pvc: String,
    /// Why it is replaced (the assessment's words).
    pub why: String,
    pub phase: ReplacePhase,
    /// The member id etcd listed it under when it was checked (none: the pod was no member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// The uids of its PVC and pod when it was checked: only those are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The new member's id, and the revision it had caught up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up_to: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// What `etcd-recover` journals for a replacement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replacement {
    pub cluster: String,
    pub members: Vec<MemberReplacement>,
}

/// `etcd-recover` when `etcd-assess` decided to replace `broken`: see the module. Within
/// `[recovery] timeout` for the whole sequence. A dry run says what it would do.
pub async fn perform(
    ctx: &StepContext<'_>,
    cluster: &str,
    broken: &[BrokenMember],
) -> Result<StepOutcome, StepError> {
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return Err(StepError::Failed(format!(
            "the StatefulSet {cluster} does not exist in namespace {}",
            ctx.cluster.namespace()
        )));
    };
    if found.layout != EtcdLayout::Bitnami {
        return Err(StepError::Failed(format!(
            "{cluster} is an {} cluster: its operator replaces its members itself",
            found.layout.as_str()
        )));
    }
    let pods: Vec<&str> = broken.iter().map(|b| b.pod.as_str()).collect();
    if ctx.mode.is_dry_run() {
        return StepOutcome::done(
            format!(
                "dry run: would replace member(s) {} of {cluster} one at a time while the others \
                 serve: remove the member, delete its PVC and pod, and wait until the new member \
                 has joined and caught up",
                pods.join(", ")
            ),
            serde_json::json!({ "cluster": cluster, "members": broken }),
        );
    }
    let journal = Journaled::<Replacement>::resume(ctx);
    if journal.get().members.is_empty() {
        journal
            .update(|r| {
                r.cluster = cluster.to_owned();
                r.members = broken
                    .iter()
                    .map(|b| MemberReplacement {
                        pod: b.pod.clone(),
                        pvc: format!("data-{}", b.pod),
                        why: b.why.clone(),
                        phase: ReplacePhase::Planned,
                        member_id: b.member_id.clone(),
                        pvc_uid: None,
                        pod_uid: None,
                        new_member_id: None,
                        caught_up_to: None,
                        at: None,
                    })
                    .collect();
            })
            .await?;
    }
    let deadline = Deadline::after(ctx.recovery.timeout);
    let replace = Replace {
        ctx,
        found: &found,
        journal: &journal,
        deadline,
    };
    for at in 0..journal.get().members.len() {
        replace.one(at).await?;
    }
    let done = journal.get();
    let replaced: Vec<String> = done
        .members
        .iter()
        .map(|m| match m.phase {
            ReplacePhase::CameBack => format!("{} came back by itself", m.pod),
            _ => format!(
                "{} is member {} (caught up to revision {})",
                m.pod,
                m.new_member_id.as_deref().unwrap_or("?"),
                m.caught_up_to.unwrap_or_default()
            ),
        })
        .collect();
    StepOutcome::done(
        format!(
            "{cluster} has its members back, every write kept, serving throughout: {}",
            replaced.join("; ")
        ),
        &done,
    )
}

struct Replace<'a, 'b> {
    ctx: &'a StepContext<'b>,
    found: &'a LocatedCluster,
    journal: &'a Journaled<'b, Replacement>,
    deadline: Deadline,
}

impl Replace<'_, '_> {
    fn member(&self, at: usize) -> MemberReplacement {
        self.journal.get().members[at].clone()
    }

    async fn set(
        &self,
        at: usize,
        change: impl FnOnce(&mut MemberReplacement),
    ) -> Result<(), StepError> {
        self.journal
            .update(|r| {
                let member = &mut r.members[at];
                change(member);
                member.at = Some(Utc::now());
            })
            .await
    }

    async fn report(&self) -> Result<EtcdClusterReport, StepError> {
        Ok(layout::report(self.ctx.cluster, self.found, self.ctx.etcd).await?)
    }

    async fn one(&self, at: usize) -> Result<(), StepError> {
        let member = self.member(at);
        if member.phase >= ReplacePhase::Rejoined {
            return Ok(());
        }
        let pod = member.pod.clone();
        if member.phase < ReplacePhase::Removed {
            let report = self.report().await?;
            let view = report
                .member_health
                .iter()
                .find(|m| m.pod.as_deref() == Some(pod.as_str()));
            if view.is_some_and(|m| m.healthy && m.pod_ready && m.alarms.is_empty()) {
                self.ctx
                    .journal
                    .log(&format!("{pod} is healthy again: not replacing it"))
                    .await;
                return self.set(at, |m| m.phase = ReplacePhase::CameBack).await;
            }
            if !report.serving {
                return Err(StepError::Failed(format!(
                    "{} no longer serves ({}): replacing {pod} now could lose the quorum; \
                     nothing was done to it",
                    self.found.name,
                    report.problems.join("; ")
                )));
            }
            let others = report
                .member_health
                .iter()
                .filter(|m| m.id.is_some() && m.pod.as_deref() != Some(pod.as_str()))
                .collect::<Vec<_>>();
            let healthy = others.iter().filter(|m| m.healthy).count();
            let left = others.len().max(1);
            if healthy < left / 2 + 1 {
                return Err(StepError::Failed(format!(
                    "only {healthy} of the {left} other members of {} are healthy: removing \
                     {pod} could lose the quorum; nothing was done to it",
                    self.found.name
                )));
            }
            let member_id = view.and_then(|m| m.id.clone()).or(member.member_id);
            let pvc_uid = self.pvc_uid(&member.pvc).await?;
            let pod_uid = self.pod_uid(&pod).await?;
            self.set(at, |m| {
                m.phase = ReplacePhase::Checked;
                m.member_id = member_id;
                m.pvc_uid = pvc_uid;
                m.pod_uid = pod_uid;
            })
            .await?;
            crate::failpoint::hit("replace-member:checked");
            self.remove(at).await?;
            crate::failpoint::hit("replace-member:removed");
        }
        if self.member(at).phase < ReplacePhase::Deleted {
            self.delete(at).await?;
            crate::failpoint::hit("replace-member:deleted");
        }
        self.rejoined(at).await
    }

    /// The uid of the PVC `name` (listed: the chart's Role lists and deletes PVCs, it does not
    /// get them).
    async fn pvc_uid(&self, name: &str) -> Result<Option<String>, StepError> {
        let pvcs = self.ctx.cluster.list_pvcs(name).await?;
        Ok(pvcs
            .into_iter()
            .find(|p| p.name_any() == name)
            .and_then(|p| p.uid()))
    }

    /// The uid of the member pod `name` (listed by the cluster's pod selector, as the Role
    /// allows).
    async fn pod_uid(&self, name: &str) -> Result<Option<String>, StepError> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.cluster.client().clone(),
            self.ctx.cluster.namespace(),
        );
        let params = ListParams::default().labels(&self.found.pod_selector());
        let pods = self
            .ctx
            .cluster
            .retrying(&format!("listing the pods of {}", self.found.name), || {
                api.list(&params)
            })
            .await?;
        Ok(pods
            .items
            .into_iter()
            .find(|p| p.name_any() == name)
            .and_then(|p| p.uid()))
    }

    /// `member remove` of the journalled member id, asked again while etcd refuses for want
    /// of started members; a member already gone is removed.
    async fn remove(&self, at: usize) -> Result<(), StepError> {
        let member = self.member(at);
        let endpoint = self.endpoint().await?;
        if let Some(id) = member.member_id.clone() {
            let client = EtcdClient::new(&endpoint, self.ctx.etcd)?;
            wait_healthy(
                self.deadline,
                self.ctx.cancel,
                &format!("etcd to remove member {id} ({})", member.pod),
                || async {
                    let listed = client.members().await?;
                    if !listed.iter().any(|m| m.id == id) {
                        return Ok(Ok(()));
                    }
                    match client.remove_member(&id).await {
                        Ok(()) => Ok(Ok(())),
                        Err(e) if e.to_string().contains("member not found") => Ok(Ok(())),
                        Err(e) => Ok(Err(e.to_string())),
                    }
                },
            )
            .await?;
            self.ctx
                .journal
                .log(&format!(
                    "removed member {id} ({}) from the cluster",
                    member.pod
                ))
                .await;
        }
        self.set(at, |m| m.phase = ReplacePhase::Removed).await
    }

    /// Deletes the journalled PVC, then the pod that holds it (the journalled pod, or any pod
    /// while that PVC is still there), and waits until the PVC is gone.
    async fn delete(&self, at: usize) -> Result<(), StepError> {
        let member = self.member(at);
        let cluster = self.ctx.cluster;
        let mode = self.ctx.mode;
        debug_assert!(!mode.is_dry_run());
        let pvc_still_old =
            member.pvc_uid.is_some() && self.pvc_uid(&member.pvc).await? == member.pvc_uid;
        if pvc_still_old && let Some(uid) = &member.pvc_uid {
            // Not waited for here: the claim stays (pvc-protection) until its pod is gone.
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(cluster.client().clone(), cluster.namespace());
            let mut params = DeleteParams::background();
            params.preconditions = Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            });
            match cluster
                .retrying(&format!("deleting PVC {}", member.pvc), || {
                    api.delete(&member.pvc, &params)
                })
                .await
            {
                Ok(_) => {}
                // Gone, or no longer the claim journalled (409: its uid differs).
                Err(e)
                    if e.api_status()
                        .is_some_and(|s| s.code == 404 || s.code == 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let pod_now = self.pod_uid(&member.pod).await?;
        if let Some(uid) =
            pod_now.filter(|uid| pvc_still_old || Some(uid) == member.pod_uid.as_ref())
        {
            cluster
                .delete_and_wait_gone(
                    &ObjectRef::pod(&member.pod),
                    &uid,
                    mode,
                    self.deadline.left(),
                    self.ctx.cancel,
                )
                .await?;
        }
        if let Some(old) = &member.pvc_uid {
            // Gone once no PVC of that name has its uid (the StatefulSet may have created the
            // new one already).
            wait_healthy(
                self.deadline,
                self.ctx.cancel,
                &format!("PVC {} to be deleted", member.pvc),
                || async {
                    Ok(match self.pvc_uid(&member.pvc).await? {
                        Some(uid) if &uid == old => {
                            Err("still there (its pod holds it)".to_owned())
                        }
                        _ => Ok(()),
                    })
                },
            )
            .await?;
        }
        self.ctx
            .journal
            .log(&format!(
                "deleted PVC {} and pod {}: the StatefulSet creates them again, empty",
                member.pvc, member.pod
            ))
            .await;
        self.set(at, |m| m.phase = ReplacePhase::Deleted).await
    }

    async fn endpoint(&self) -> Result<String, StepError> {
        layout::endpoint(self.ctx.cluster, self.found, self.ctx.etcd)
            .await?
            .ok_or_else(|| {
                StepError::Failed(format!(
                    "{} has no client Service to reach it by",
                    self.found.name
                ))
            })
    }

    /// Waits until a new member runs as the pod, healthy and Ready, with the cluster's
    /// revision as it was when the wait began.
    async fn rejoined(&self, at: usize) -> Result<(), StepError> {
        let member = self.member(at);
        let endpoint = self.endpoint().await?;
        let target = EtcdClient::new(&endpoint, self.ctx.etcd)?
            .status()
            .await?
            .revision;
        let old = member.member_id.clone();
        let (id, revision) = wait_healthy(
            self.deadline,
            self.ctx.cancel,
            &format!(
                "{} to rejoin {} as a new member and catch up to revision {target}",
                member.pod, self.found.name
            ),
            || async {
                let report = self.report().await?;
                Ok(caught_up(
                    &report.member_health,
                    &member.pod,
                    old.as_deref(),
                    target,
                ))
            },
        )
        .await?;
        self.ctx
            .journal
            .log(&format!(
                "{} rejoined as member {id}, caught up to revision {revision}",
                member.pod
            ))
            .await;
        self.set(at, |m| {
            m.phase = ReplacePhase::Rejoined;
            m.new_member_id = Some(id);
            m.caught_up_to = Some(revision);
        })
        .await
    }
}

/// The pod's new member (id, revision) once it is healthy, Ready, not the member `old` and at
/// `target` or beyond; else what it is waiting for.
fn caught_up(
    members: &[MemberHealth],
    pod: &str,
    old: Option<&str>,
    target: i64,
) -> Result<(String, i64), String> {
    let Some(m) = members.iter().find(|m| m.pod.as_deref() == Some(pod)) else {
        return Err(format!("no pod {pod} yet"));
    };
    let id = m.id.clone().filter(|id| Some(id.as_str()) != old);
    match (id, m.revision) {
        (None, _) => Err(format!(
            "{pod} is not a new member yet ({})",
            m.container
                .as_deref()
                .or(m.error.as_deref())
                .unwrap_or("starting")
        )),
        (Some(_), _) if !m.healthy || !m.pod_ready => Err(format!(
            "{pod} is a new member, not yet healthy and Ready ({})",
            m.error.as_deref().unwrap_or("not Ready")
        )),
        (Some(_), Some(revision)) if revision < target => Err(format!(
            "{pod} is at revision {revision}, catching up to {target}"
        )),
        (Some(id), Some(revision)) => Ok((id, revision)),
        (Some(_), None) => Err(format!("{pod} does not say its revision yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pod: &str, id: &str, healthy: bool, revision: i64) -> MemberHealth {
        MemberHealth {
            id: Some(id.to_owned()),
            pod: Some(pod.to_owned()),
            pod_ready: healthy,
            healthy,
            revision: Some(revision),
            ..MemberHealth::default()
        }
    }

    #[test]
    fn a_member_is_back_when_it_is_new_healthy_ready_and_caught_up() {
        let old = Some("7");
        assert!(caught_up(&[], "x-1", old, 10).is_err());
        let same = [view("x-1", "7", true, 10)];
        assert!(
            caught_up(&same, "x-1", old, 10)
                .unwrap_err()
                .contains("not a new member")
        );
        let starting = [view("x-1", "8", false, 10)];
        assert!(caught_up(&starting, "x-1", old, 10).is_err());
        let behind = [view("x-1", "8", true, 9)];
        assert!(
            caught_up(&behind, "x-1", old, 10)
                .unwrap_err()
                .contains("catching up")
        );
        let back = [view("x-1", "8", true, 12)];
        assert_eq!(caught_up(&back, "x-1", old, 10), Ok(("8".to_owned(), 12)));
    }
}
