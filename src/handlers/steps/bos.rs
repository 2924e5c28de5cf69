//! Restore BOS session templates from the snapshots (see `crate::snapshots`): every template
//! BOS lacks now comes back from the newest snapshot that holds it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    snapshots::SnapshotSource,
    step::{StepContext, StepError, StepOutcome},
};

use serde::{Deserialize, Serialize};

use crate::handlers::kind::{Earlier, StepKind};

/// Put back every BOS session template BOS no longer has, each from the newest snapshot that
/// holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreBosTemplates {}

#[async_trait::async_trait]
impl StepKind for RestoreBosTemplates {
    fn describe(&self) -> String {
        "restore every session template BOS lacks, each from the newest snapshot that holds it; \
         leave existing ones untouched"
            .to_owned()
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        restore_templates(ctx).await
    }
}

/// The runbook's answer when nothing was captured: rebuild them from the product docs.
const RUNBOOK_GUIDANCE: &str = "reconstruct the boot session templates of the impacted product \
    streams by hand, as the runbook says: UANs: the \"PREPARE UAN BOOT SESSION TEMPLATES\" \
    header in the \"Install and Configure UANs\" procedure (UAN product stream repository); \
    COS: the \"Create a Boot Session Template\" header in the \"Boot COS\" procedure (COS \
    product stream documentation)";

/// Snapshots read from the store at a time.
const PAGE: u32 = 32;

/// A template to restore and the snapshot it comes from.
#[derive(Clone, Debug, Serialize)]
struct Source {
    name: String,
    snapshot: Uuid,
    taken_at: DateTime<Utc>,
    /// Fields removed from this template when it was captured (they looked like secrets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    redacted: Vec<String>,
    #[serde(skip)]
    template: Value,
}

/// What the snapshots hold that matters now.
#[derive(Default)]
struct LocatedCluster {
    /// Non-empty snapshots read.
    considered: usize,
    /// Templates of the snapshots that BOS still has.
    present: BTreeSet<String>,
    /// Templates BOS lacks, by name, from the newest snapshot that holds each.
    missing: BTreeMap<String, Source>,
}

pub async fn restore_templates(ctx: &StepContext<'_>) -> Result<StepOutcome, StepError> {
    let present: BTreeSet<String> = ctx
        .csm
        .bos
        .list_session_templates()
        .await?
        .iter()
        .filter_map(template_name)
        .collect();
    let found = find_missing(ctx, &present).await?;
    if found.considered == 0 {
        return StepOutcome::action_required(
            format!(
                "{}no snapshot of BOS session templates was taken before the rebuild (BOS has {} \
                 template(s) now), so none can be restored automatically: {RUNBOOK_GUIDANCE}",
                if ctx.mode.is_dry_run() {
                    "dry run: a real run would restore nothing and ask for this: "
                } else {
                    ""
                },
                present.len()
            ),
            json!({ "snapshots_considered": 0, "present_now": present.len() }),
        );
    }
    let sources: Vec<&Source> = found.missing.values().collect();
    let untouched: Vec<&String> = found.present.iter().collect();
    let mut data = json!({
        "snapshots_considered": found.considered,
        "already_present": untouched,
        "to_restore": sources,
        "restored": [],
        "failed": [],
    });
    ctx.journal.save(&data).await?;
    let untouched_note = if untouched.is_empty() {
        String::new()
    } else {
        format!(
            "; already present, left untouched: {}",
            found.present.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let considered = format!("{} snapshot(s) considered", found.considered);
    if ctx.mode.is_dry_run() {
        let message = format!(
            "dry run: would restore {} template(s){} ({considered}){untouched_note}",
            sources.len(),
            by_snapshot(&sources)
        );
        let redacted = redacted_fields(&sources);
        if !redacted.is_empty() {
            return StepOutcome::action_required(
                format!(
                    "{message}. Fields that looked like secrets were not captured and would have \
                     to be set again by hand: {}",
                    redacted.join(", ")
                ),
                data,
            );
        }
        return StepOutcome::done(message, data);
    }
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    for source in &sources {
        let name = &source.name;
        match ctx
            .csm
            .bos
            .put_session_template(name, &source.template)
            .await
        {
            Ok(_) => {
                ctx.journal
                    .log(&format!(
                        "restored session template {name} from snapshot {}",
                        source.snapshot
                    ))
                    .await;
                restored.push(*source);
            }
            Err(err) => failed.push(json!({ "name": name, "error": err.to_string() })),
        }
    }
    data["restored"] = json!(restored.iter().map(|s| &s.name).collect::<Vec<_>>());
    data["failed"] = json!(failed);
    if !failed.is_empty() {
        return StepOutcome::failed(
            format!(
                "{} of {} template(s) could not be restored: {}",
                failed.len(),
                sources.len(),
                failed
                    .iter()
                    .map(|f| format!(
                        "{} ({})",
                        f["name"].as_str().unwrap_or("?"),
                        f["error"].as_str().unwrap_or("?")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            data,
        );
    }
    let message = if restored.is_empty() {
        format!("restored 0 template(s): none missing ({considered}){untouched_note}")
    } else {
        format!(
            "restored {} template(s){} ({considered}){untouched_note}",
            restored.len(),
            by_snapshot(&restored)
        )
    };
    let redacted = redacted_fields(&restored);
    if !redacted.is_empty() {
        return StepOutcome::action_required(
            format!(
                "{message}. Fields that looked like secrets were not captured and must be set \
                 again by hand where needed: {}",
                redacted.join(", ")
            ),
            data,
        );
    }
    StepOutcome::done(message, data)
}

/// The fields removed from these templates when they were captured (`name.path`).
fn redacted_fields(sources: &[&Source]) -> Vec<String> {
    sources
        .iter()
        .flat_map(|s| s.redacted.iter().cloned())
        .collect()
}

/// ": a, b from snapshot X taken at T; c from snapshot Y taken at U", newest snapshot first.
fn by_snapshot(sources: &[&Source]) -> String {
    let mut groups: BTreeMap<(DateTime<Utc>, Uuid), Vec<&str>> = BTreeMap::new();
    for source in sources {
        groups
            .entry((source.taken_at, source.snapshot))
            .or_default()
            .push(&source.name);
    }
    if groups.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = groups
        .iter()
        .rev()
        .map(|((taken_at, id), names)| {
            format!(
                "{} from snapshot {id} taken at {}",
                names.join(", "),
                taken_at.to_rfc3339()
            )
        })
        .collect();
    format!(": {}", parts.join("; "))
}

/// Walks every stored snapshot, newest first: each template BOS lacks comes from the newest
/// snapshot that holds it. So a capture taken after the rebuild, when an admin had already
/// recreated a template or two (under their old names or new ones), hides nothing that an
/// older snapshot holds.
async fn find_missing(
    ctx: &StepContext<'_>,
    present: &BTreeSet<String>,
) -> Result<LocatedCluster, StepError> {
    let mut found = LocatedCluster::default();
    let mut before = None;
    loop {
        let page = ctx
            .store
            .nonempty_snapshots(SnapshotSource::BosSessionTemplates, before, PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(found);
        };
        before = Some(last.id);
        for snapshot in page {
            found.considered += 1;
            let templates = snapshot
                .content
                .as_ref()
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (index, template) in templates.into_iter().enumerate() {
                // A template without a name cannot be addressed in BOS; BOS never lists one.
                let Some(name) = template_name(&template) else {
                    continue;
                };
                if present.contains(&name) {
                    found.present.insert(name);
                    continue;
                }
                if found.missing.contains_key(&name) {
                    continue;
                }
                let prefix = format!("$[{index}]");
                let redacted = snapshot
                    .redacted
                    .iter()
                    .filter_map(|path| path.strip_prefix(&prefix))
                    .filter(|rest| rest.starts_with(['.', '[']))
                    .map(|rest| format!("{name}{rest}"))
                    .collect();
                found.missing.insert(
                    name.clone(),
                    Source {
                        name,
                        snapshot: snapshot.id,
                        taken_at: snapshot.taken_at,
                        redacted,
                        template,
                    },
                );
            }
        }
    }
}

fn template_name(template: &Value) -> Option<String> {
    template
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}
