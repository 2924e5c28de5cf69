//! How the client prints: `table` for people (the default on a terminal), `toml` (the default
//! otherwise, like `cray`) and `json` for scripts. Writes go through [`emit`], so a reader
//! that goes away (`| head -1`) ends the command quietly instead of a panic.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
};

use chrono::{DateTime, Local, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Format,
    error::ClientError,
    table::{human_size, new_table, trimmed},
};

/// The format asked for, else `table` on a terminal and `toml` otherwise.
pub fn resolve(format: Option<Format>) -> Format {
    format.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Toml
        }
    })
}

/// Writes `text` and a newline to stdout, flushed (so that a follower sees each line as it
/// happens). A closed stdout is [`ClientError::OutputClosed`].
pub fn emit(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|err| {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                ClientError::OutputClosed
            } else {
                ClientError::Output(err)
            }
        })
}

/// What a response is, for the table format (the other formats print any response as is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Run,
    RunList,
    Services,
    Snapshots,
    Capture,
    EtcdClusters,
    EtcdCluster,
    Backups,
    Drill,
    Drills,
}

/// Prints `value` in `format`; in `table`, as `view` says, falling back to TOML for a response
/// that does not have the expected shape (e.g. a newer server's).
pub fn print(value: &Value, format: Format, view: View) -> Result<(), ClientError> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Toml => to_toml(value)?,
        Format::Table => match table(value, view) {
            Some(text) => text,
            None => to_toml(value)?,
        },
    };
    emit(text.trim_end())
}

fn table(value: &Value, view: View) -> Option<String> {
    Some(match view {
        View::Run => run_table(&RunView::deserialize(value).ok()?),
        View::RunList => {
            let list = RunList::deserialize(value).ok()?;
            let mut text = run_list_table(&list.items);
            if let Some(cursor) = list.next_cursor {
                text.push_str(&format!("\nmore: --cursor {cursor} (or --all)"));
            }
            text
        }
        View::Services => services_table(value)?,
        View::Snapshots => snapshots_table(&SnapshotList::deserialize(value).ok()?.items),
        View::Capture => capture_table(value)?,
        View::EtcdClusters => super::etcd_view::clusters(value.get("items")?.as_array()?),
        View::EtcdCluster => super::etcd_view::cluster(value)?,
        View::Backups => backups_table(value.get("items")?.as_array()?),
        View::Drill => super::drill_view::drill(value)?,
        View::Drills => super::drill_view::drills(value.get("items")?.as_array()?),
    })
}

/// One row per backup, newest first: its age, size, where it is, and whether it is one of this
/// service's safety snapshots.
fn backups_table(backups: &[Value]) -> String {
    if backups.is_empty() {
        return "no backups".to_owned();
    }
    let mut table = new_table(&["NAME", "AGE", "SIZE", "WHERE", "DRILLED", "SAFETY SNAPSHOT"]);
    for backup in backups {
        let age = backup
            .get("age_seconds")
            .and_then(Value::as_u64)
            .map(|secs| short_duration(std::time::Duration::from_secs(secs)))
            .unwrap_or_default();
        let size = backup
            .get("size")
            .and_then(Value::as_u64)
            .map(human_size)
            .unwrap_or_default();
        let places: Vec<&str> = ["s3", "snapshotter"]
            .into_iter()
            .filter_map(|place| backup.get(place)?.get("location")?.as_str())
            .collect();
        let safety = match backup.get("safety") {
            Some(safety @ Value::Object(_)) => format!(
                "run {}{}",
                safety.get("run_id").and_then(Value::as_str).unwrap_or(""),
                if safety.get("empty") == Some(&Value::Bool(true)) {
                    " (empty cluster)"
                } else {
                    ""
                }
            ),
            _ => String::new(),
        };
        table.add_row(vec![
            backup
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            age,
            size,
            places.join("\n"),
            super::drill_view::last_drill(backup.get("drill")),
            safety,
        ]);
    }
    trimmed(&mut table)
}

/// `3d4h`, `5h2m`, `7m`, `12s`: the two largest units.
fn short_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    let (days, hours, minutes) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// The fields of a run the client shows. Lists may hold summaries (no steps, perhaps services
/// as a `{service: state}` map), so everything but `id` and `state` may be missing.
#[derive(Debug, Deserialize)]
pub struct RunView {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// The etcd mode (`check` unless the run restores or rebuilds clusters).
    #[serde(default)]
    pub etcd: Option<String>,
    #[serde(default)]
    pub backup: Option<String>,
    #[serde(default)]
    pub confirm: Vec<String>,
    #[serde(default)]
    pub attempt: Option<i64>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "tasks")]
    pub services: Vec<TaskView>,
}

impl RunView {
    /// The etcd mode of a run that may restore or rebuild clusters (not `check`).
    fn recovery(&self) -> Option<&str> {
        self.etcd.as_deref().filter(|mode| *mode != "check")
    }
}

#[derive(Debug, Deserialize)]
pub struct TaskView {
    pub service: String,
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub steps: Vec<StepView>,
}

#[derive(Debug, Deserialize)]
pub struct StepView {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// `services` as a list of tasks, or as a map of service to state.
fn tasks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TaskView>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tasks {
        List(Vec<TaskView>),
        Map(BTreeMap<String, String>),
        Null(()),
    }
    Ok(match Tasks::deserialize(d)? {
        Tasks::List(tasks) => tasks,
        Tasks::Map(map) => map
            .into_iter()
            .map(|(service, state)| TaskView {
                service,
                state,
                message: None,
                started_at: None,
                finished_at: None,
                steps: Vec::new(),
            })
            .collect(),
        Tasks::Null(()) => Vec::new(),
    })
}

#[derive(Deserialize)]
struct RunList {
    items: Vec<RunView>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// `12.3s`, `4m05s`, `2h07m`: how long something took (or has been going, if unfinished).
pub fn duration(started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> String {
    let Some(started) = started else {
        return String::new();
    };
    let end = finished.unwrap_or_else(Utc::now);
    let millis = (end - started).num_milliseconds().max(0);
    let secs = millis / 1000;
    if secs < 60 {
        format!("{:.1}s", millis as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// A time in the reader's time zone, to the second.
pub fn local_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The run's facts, then its services and their steps.
pub fn run_table(run: &RunView) -> String {
    let mut state = run.state.clone();
    let mut notes = Vec::new();
    if let Some(attempt) = run.attempt.filter(|a| *a > 1) {
        notes.push(format!("attempt {attempt}"));
    }
    if run.dry_run {
        notes.push("dry run".to_owned());
    }
    if !notes.is_empty() {
        state = format!("{state} ({})", notes.join(", "));
    }
    let mut facts: Vec<(&str, String)> = vec![("Run", run.id.clone()), ("State", state)];
    if let Some(reason) = &run.reason {
        facts.push(("Reason", reason.clone()));
    }
    if let Some(by) = &run.requested_by {
        facts.push(("Requested by", by.clone()));
    }
    if let Some(mode) = run.recovery() {
        let mut etcd = mode.to_owned();
        if let Some(backup) = &run.backup {
            etcd.push_str(&format!(" from backup {backup}"));
        }
        if !run.confirm.is_empty() {
            etcd.push_str(&format!(" (confirmed: {})", run.confirm.join(", ")));
        }
        facts.push(("etcd", etcd));
    }
    if let Some(created) = run.created_at {
        facts.push(("Created", local_time(created)));
    }
    if run.started_at.is_some() {
        facts.push(("Duration", duration(run.started_at, run.finished_at)));
    }
    if let Some(message) = &run.message {
        facts.push(("Message", message.clone()));
    }
    let mut text: String = facts
        .iter()
        .map(|(key, value)| format!("{key:<13}{value}\n"))
        .collect();
    if run.services.is_empty() {
        return text;
    }
    let mut table = new_table(&["SERVICE", "STEP", "STATE", "DURATION", "MESSAGE"]);
    for task in &run.services {
        table.add_row(vec![
            task.service.clone(),
            String::new(),
            task.state.clone(),
            duration(task.started_at, task.finished_at),
            task.message.clone().unwrap_or_default(),
        ]);
        for step in &task.steps {
            table.add_row(vec![
                String::new(),
                step.name.clone(),
                step.state.clone(),
                duration(step.started_at, step.finished_at),
                step.message.clone().unwrap_or_default(),
            ]);
        }
    }
    text.push('\n');
    text.push_str(&trimmed(&mut table));
    text
}

/// One row per run; a service is marked with its state where that differs from the run's.
pub fn run_list_table(runs: &[RunView]) -> String {
    if runs.is_empty() {
        return "no runs".to_owned();
    }
    let mut table = new_table(&[
        "ID",
        "STATE",
        "SERVICES",
        "CREATED",
        "DURATION",
        "REQUESTED BY",
        "REASON",
    ]);
    for run in runs {
        let services = run
            .services
            .iter()
            .map(|t| {
                if t.state == run.state {
                    t.service.clone()
                } else {
                    format!("{}({})", t.service, t.state)
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let notes: Vec<String> = run
            .recovery()
            .map(|mode| format!("etcd {mode}"))
            .into_iter()
            .chain(run.dry_run.then(|| "dry run".to_owned()))
            .collect();
        let state = if notes.is_empty() {
            run.state.clone()
        } else {
            format!("{} ({})", run.state, notes.join(", "))
        };
        table.add_row(vec![
            run.id.clone(),
            state,
            services,
            run.created_at.map(local_time).unwrap_or_default(),
            duration(run.started_at, run.finished_at),
            run.requested_by.clone().unwrap_or_default(),
            run.reason.clone().unwrap_or_default(),
        ]);
    }
    trimmed(&mut table)
}

fn services_table(value: &Value) -> Option<String> {
    #[derive(Deserialize)]
    struct Services {
        items: Vec<ServiceInfo>,
    }
    #[derive(Deserialize)]
    struct ServiceInfo {
        service: String,
        #[serde(default)]
        supported: bool,
        #[serde(default)]
        description: String,
        #[serde(default)]
        steps: Vec<StepInfo>,
    }
    #[derive(Deserialize)]
    struct StepInfo {
        name: String,
    }
    let services = Services::deserialize(value).ok()?;
    let mut table = new_table(&["SERVICE", "SUPPORTED", "STEPS", "DESCRIPTION"]);
    for s in services.items {
        table.add_row(vec![
            s.service,
            if s.supported { "yes" } else { "no" }.to_owned(),
            s.steps
                .iter()
                .map(|step| step.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            s.description,
        ]);
    }
    Some(trimmed(&mut table))
}

#[derive(Deserialize)]
struct SnapshotView {
    id: String,
    source: String,
    taken_at: DateTime<Utc>,
    #[serde(default)]
    items: u64,
    #[serde(default)]
    redacted: Vec<String>,
}

#[derive(Deserialize)]
struct SnapshotList {
    items: Vec<SnapshotView>,
}

fn snapshots_table(snapshots: &[SnapshotView]) -> String {
    if snapshots.is_empty() {
        return "no snapshots".to_owned();
    }
    let mut table = new_table(&["ID", "SOURCE", "TAKEN", "ITEMS", "REDACTED"]);
    for s in snapshots {
        table.add_row(vec![
            s.id.clone(),
            s.source.clone(),
            local_time(s.taken_at),
            s.items.to_string(),
            s.redacted.join(", "),
        ]);
    }
    trimmed(&mut table)
}

fn capture_table(value: &Value) -> Option<String> {
    #[derive(Deserialize)]
    struct Capture {
        stored: Vec<SnapshotView>,
        #[serde(default)]
        failed: Vec<Failure>,
    }
    #[derive(Deserialize)]
    struct Failure {
        source: String,
        error: String,
    }
    let capture = Capture::deserialize(value).ok()?;
    let mut text = format!("stored:\n{}", snapshots_table(&capture.stored));
    for failure in capture.failed {
        text.push_str(&format!(
            "\nnot captured: {}: {}",
            failure.source, failure.error
        ));
    }
    Some(text)
}

/// Renders a JSON response as a TOML document. TOML has no null, so nulls are dropped; a
/// top-level list (`{"items": [...]}`) comes out as `[[items]]` tables, like cray's
/// `[[results]]`. A response that is not an object is put under `result`.
pub fn to_toml(value: &Value) -> Result<String, toml::ser::Error> {
    let table = match json_to_toml(value) {
        Some(toml::Value::Table(table)) => table,
        Some(other) => toml::Table::from_iter([("result".to_owned(), other)]),
        None => toml::Table::new(),
    };
    toml::to_string(&table)
}

fn json_to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            // Beyond i64 (TOML integers are 64-bit signed) or fractional.
            None => match n.as_f64() {
                Some(f) => toml::Value::Float(f),
                None => toml::Value::String(n.to_string()),
            },
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(json_to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(key, value)| Some((key.clone(), json_to_toml(value)?)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn toml_drops_nulls_and_lists_items_as_tables() {
        let response = json!({
            "items": [
                {"id": "a", "state": "succeeded", "message": null, "services": [{"service": "reds"}]},
                {"id": "b", "state": "running", "attempt": 2}
            ],
            "next_cursor": null
        });
        let text = to_toml(&response).unwrap();
        assert!(text.contains("[[items]]"), "{text}");
        assert!(!text.contains("message"), "{text}");
        assert!(!text.contains("next_cursor"), "{text}");
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["items"][1]["attempt"].as_integer(), Some(2));
        assert_eq!(
            back["items"][0]["services"][0]["service"].as_str(),
            Some("reds")
        );
    }

    #[test]
    fn run_lists_take_full_runs_and_summaries() {
        let list = json!({
            "items": [
                {"id": "a", "state": "failed", "dry_run": false, "extra": {"x": 1},
                 "services": [{"service": "bss", "state": "succeeded", "steps": []},
                              {"service": "reds", "state": "failed"}]},
                {"id": "b", "state": "succeeded", "services": {"meds": "succeeded"}},
                {"id": "c", "state": "pending", "services": null}
            ],
            "next_cursor": "b"
        });
        let text = table(&list, View::RunList).expect("a table");
        assert!(text.contains("bss(succeeded) reds"), "{text}");
        assert!(text.contains("meds"), "{text}");
        assert!(text.contains("more: --cursor b"), "{text}");
    }

    #[test]
    fn describe_shows_services_and_steps_with_durations() {
        let run = json!({
            "id": "r1", "state": "succeeded", "attempt": 2, "dry_run": true,
            "created_at": "2025-01-01T00:00:00Z",
            "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:01:05Z",
            "services": [{"service": "reds", "state": "succeeded",
                "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:00:02.5Z",
                "steps": [{"name": "restart-pods", "state": "succeeded", "message": "ok",
                    "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:00:01.25Z"}]}]
        });
        let text = table(&run, View::Run).expect("a table");
        assert!(
            text.contains("succeeded (attempt 2, dry run)") && text.contains("1m05s"),
            "{text}"
        );
        let step = text.lines().find(|l| l.contains("restart-pods")).unwrap();
        assert!(step.contains("succeeded") && step.contains("1.2s") && step.contains("ok"));
        assert!(
            text.lines()
                .any(|l| l.starts_with(" reds") || l.starts_with("reds"))
        );
    }

    #[test]
    fn a_recovery_run_shows_its_etcd_mode_backup_and_confirmed_clusters() {
        let run = json!({
            "id": "r2", "state": "running", "dry_run": false, "etcd": "restore",
            "backup": "db-1", "confirm": ["cray-bss-bitnami-etcd"], "services": []
        });
        let text = table(&run, View::Run).expect("a table");
        assert!(
            text.contains(
                "etcd         restore from backup db-1 (confirmed: cray-bss-bitnami-etcd)"
            ),
            "{text}"
        );
        let list = json!({"items": [run, {"id": "r3", "state": "succeeded", "etcd": "check"},
            {"id": "r4", "state": "succeeded", "etcd": "auto", "dry_run": true}]});
        let text = table(&list, View::RunList).expect("a table");
        assert!(text.contains("running (etcd restore)"), "{text}");
        assert!(text.contains("succeeded (etcd auto, dry run)"), "{text}");
        assert!(!text.contains("etcd check"), "{text}");
    }

    #[test]
    fn a_narrow_table_wraps_text_between_words_and_never_breaks_an_id() {
        let id = "01968f3a-7b2c-7d4e-9f10-123456789abc";
        let backup = "s3://etcd-backup/cray-bss/db-2025-01-01_00-00-with-a-long-name";
        let reason = "a long reason that has to wrap because the terminal is narrow, word by word";
        let mut table = new_table(&["ID", "STATE", "WHERE", "REASON"]);
        table.set_width(60);
        table.add_row(vec![id, "succeeded (etcd auto, dry run)", backup, reason]);
        let text = trimmed(&mut table);
        assert!(text.contains(id) && text.contains(backup), "{text}");
        let words: Vec<&str> = text.split_whitespace().collect();
        for word in reason.split_whitespace() {
            assert!(words.contains(&word), "{word:?} broken in\n{text}");
        }
        assert!(text.lines().count() > 2, "the reason wraps:\n{text}");
    }

    #[test]
    fn unexpected_shapes_fall_back() {
        assert!(table(&json!({"items": 3}), View::RunList).is_none());
        assert!(table(&json!([]), View::Run).is_none());
    }
}
