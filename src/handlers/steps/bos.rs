//! Restore BOS session templates from the newest snapshot (see `crate::snapshots`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{
    handlers::{StepContext, StepError, StepOutcome},
    snapshots::{Snapshot, SnapshotSource},
};

/// The runbook's answer when nothing was captured: rebuild them from the product docs.
const RUNBOOK_GUIDANCE: &str = "reconstruct the boot session templates of the impacted product \
    streams by hand, as the runbook says: UANs: the \"PREPARE UAN BOOT SESSION TEMPLATES\" \
    header in the \"Install and Configure UANs\" procedure (UAN product stream repository); \
    COS: the \"Create a Boot Session Template\" header in the \"Boot COS\" procedure (COS \
    product stream documentation)";

pub async fn restore_templates(ctx: &StepContext<'_>) -> Result<StepOutcome, StepError> {
    let Some((snapshot, passed_over)) = choose_snapshot(ctx).await? else {
        let present = ctx.csm.bos.list_session_templates().await?.len();
        return StepOutcome::action_required(
            format!(
                "no snapshot of BOS session templates was taken before the rebuild (BOS has {present} \
                 template(s) now), so none can be restored automatically: {RUNBOOK_GUIDANCE}"
            ),
            json!({ "snapshot": null, "present_now": present }),
        );
    };
    let templates = snapshot
        .content
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let present: BTreeSet<String> = ctx
        .csm
        .bos
        .list_session_templates()
        .await?
        .iter()
        .filter_map(template_name)
        .collect();
    let mut untouched = Vec::new();
    let mut missing = Vec::new();
    for template in &templates {
        match template_name(template) {
            Some(name) if present.contains(&name) => untouched.push(name),
            Some(name) => missing.push((name, template)),
            // A template without a name cannot be addressed in BOS; BOS never lists one.
            None => {}
        }
    }
    let missing_names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
    let mut data = json!({
        "snapshot": { "id": snapshot.id, "taken_at": snapshot.taken_at, "redacted": snapshot.redacted },
        "passed_over": passed_over,
        "already_present": untouched,
        "to_restore": missing_names,
        "restored": [],
        "failed": [],
    });
    ctx.journal.save(&data).await?;
    let from = format!(
        "snapshot {} taken at {}",
        snapshot.id,
        snapshot.taken_at.to_rfc3339()
    );
    let untouched_note = if untouched.is_empty() {
        String::new()
    } else {
        format!(
            "; already present, left untouched: {}",
            untouched.join(", ")
        )
    };
    if ctx.dry_run {
        return StepOutcome::done(
            format!(
                "dry run: would restore {} template(s) from {from}: {}{untouched_note}",
                missing.len(),
                if missing_names.is_empty() {
                    "none".to_owned()
                } else {
                    missing_names.join(", ")
                }
            ),
            data,
        );
    }
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    for (name, template) in &missing {
        match ctx.csm.bos.put_session_template(name, template).await {
            Ok(_) => {
                ctx.journal
                    .log(&format!("restored session template {name}"))
                    .await;
                restored.push(name.clone());
            }
            Err(err) => failed.push(json!({ "name": name, "error": err.to_string() })),
        }
    }
    data["restored"] = json!(restored);
    data["failed"] = json!(failed);
    if !failed.is_empty() {
        return StepOutcome::failed(
            format!(
                "{} of {} template(s) could not be restored from {from}: {}",
                failed.len(),
                missing.len(),
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
    let message = format!(
        "restored {} template(s) from {from}: {}{untouched_note}",
        restored.len(),
        if restored.is_empty() {
            "none missing".to_owned()
        } else {
            restored.join(", ")
        }
    );
    if !snapshot.redacted.is_empty() && !restored.is_empty() {
        return StepOutcome::action_required(
            format!(
                "{message}. Fields that looked like secrets were not captured and must be set \
                 again by hand where needed: {}",
                snapshot.redacted.join(", ")
            ),
            data,
        );
    }
    StepOutcome::done(message, data)
}

/// The newest snapshot, unless an older one holds every template it holds and more: then the
/// newer one caught BOS partly repopulated after the rebuild (e.g. an admin recreated one
/// template before the run), and the older one is what BOS had. Returns the chosen snapshot
/// and the ids of the newer ones passed over.
async fn choose_snapshot(
    ctx: &StepContext<'_>,
) -> Result<Option<(Snapshot, Vec<uuid::Uuid>)>, StepError> {
    let source = SnapshotSource::BosSessionTemplates;
    let Some(mut chosen) = ctx.store.nth_nonempty_snapshot(source, 0).await? else {
        return Ok(None);
    };
    let mut passed_over = Vec::new();
    let mut n = 1;
    while let Some(older) = ctx.store.nth_nonempty_snapshot(source, n).await? {
        let (newer_names, older_names) = (names(&chosen), names(&older));
        if !(newer_names.len() < older_names.len() && newer_names.is_subset(&older_names)) {
            break;
        }
        passed_over.push(chosen.id);
        chosen = older;
        n += 1;
    }
    Ok(Some((chosen, passed_over)))
}

fn names(snapshot: &Snapshot) -> BTreeSet<String> {
    snapshot
        .content
        .as_ref()
        .and_then(Value::as_array)
        .map(|templates| templates.iter().filter_map(template_name).collect())
        .unwrap_or_default()
}

fn template_name(template: &Value) -> Option<String> {
    template
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}
