//! FAS on CSM 1.2+: "Reload the firmware images from Nexus" (`FAS_Admin_Procedures.md`, "Load
//! Firmware from Nexus"): `POST /loader/nexus`, then wait until `GET /loader` says `ready`
//! with the run in its list. The run id is saved first, so a resumed run waits for the same
//! load instead of starting another.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::step::{StepContext, StepError, StepOutcome};

use serde::{Deserialize, Serialize};

use crate::handlers::kind::{Earlier, StepKind, wait};

/// `POST /loader/nexus` on FAS (CSM 1.2+), then wait until the loader is `ready` again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadFasFromNexus {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl StepKind for ReloadFasFromNexus {
    fn describe(&self) -> String {
        format!(
            "POST /loader/nexus on FAS (\"Load Firmware from Nexus\") and wait up to {} until \
             the loader is ready again",
            wait(&self.timeout)
        )
    }

    /// FAS's images are written into its etcd: a restore brings them back.
    fn covered_by_restore(&self) -> bool {
        true
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        reload_from_nexus(ctx, self.timeout).await
    }
}

/// How often the loader's status is asked while it loads (FAS has no watch).
const POLL: Duration = Duration::from_millis(500);

pub async fn reload_from_nexus(
    ctx: &StepContext<'_>,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let status = ctx.csm.fas.loader_status().await?;
    if ctx.mode.is_dry_run() {
        return StepOutcome::done(
            format!(
                "would POST /loader/nexus on FAS and wait for the loader (now {})",
                status.loader_status
            ),
            json!({ "loader_status": status.loader_status }),
        );
    }
    let saved = ctx
        .saved
        .as_ref()
        .and_then(|data| data["loader_run_id"].as_str())
        .map(str::to_owned);
    let run_id = match saved {
        Some(id) => {
            ctx.journal
                .log(&format!("waiting for the Nexus load {id} started before"))
                .await;
            id
        }
        None => {
            let started = ctx.csm.fas.load_from_nexus().await?;
            ctx.journal
                .save(&json!({ "loader_run_id": started.loader_run_id }))
                .await?;
            ctx.journal
                .log(&format!(
                    "FAS loader run {} started: loading firmware from Nexus",
                    started.loader_run_id
                ))
                .await;
            started.loader_run_id
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        let status = ctx.csm.fas.loader_status().await?;
        let listed = status
            .loader_run_list
            .as_deref()
            .unwrap_or_default()
            .contains(&run_id);
        if status.loader_status == "ready" && listed {
            return StepOutcome::done(
                format!("FAS loader run {run_id} finished; the loader is ready"),
                json!({ "loader_run_id": run_id, "loader_status": status.loader_status }),
            );
        }
        if Instant::now() >= deadline {
            return Err(StepError::Failed(format!(
                "the FAS loader is still {} {} after POST /loader/nexus (run {run_id}{}); \
                 check `cray fas loader describe {run_id}` and the cray-fas pod's log, then \
                 resume this run",
                status.loader_status,
                humantime::format_duration(timeout),
                if listed { "" } else { ", not in its run list" }
            )));
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                return Err(StepError::Cancelled(format!("waiting for FAS loader run {run_id}")));
            }
            // FAS has no watch: ask again shortly.
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
