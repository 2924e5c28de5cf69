//! Restore drills in the table format: one drill (its facts, then its keys by data, backup
//! against live), a cluster's drills, and a backup's last drill in the listing of backups.

use serde_json::Value;

use super::table::{new_table, trimmed};

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A backup's last drill, for the listing: `passed 2026-01-02T03:04:05Z`.
pub fn last_drill(drill: Option<&Value>) -> String {
    match drill {
        Some(drill @ Value::Object(_)) => format!(
            "{} {}",
            if drill.get("passed") == Some(&Value::Bool(true)) {
                "passed"
            } else {
                "FAILED"
            },
            text(drill, "at")
        ),
        _ => String::new(),
    }
}

/// One drill: its facts, then the keys by data.
pub fn drill(drill: &Value) -> Option<String> {
    drill.get("id")?;
    let mut out = String::new();
    for (label, key) in [
        ("drill", "id"),
        ("cluster", "cluster"),
        ("state", "state"),
        ("backup", "backup"),
        ("location", "location"),
        ("started", "started_at"),
        ("took (s)", "took_seconds"),
        ("restore (s)", "restore_seconds"),
        ("backup age (s)", "backup_age_seconds"),
        ("backup revision", "backup_revision"),
        ("live revision", "live_revision"),
        ("detail", "detail"),
    ] {
        let value = text(drill, key);
        if !value.is_empty() {
            out.push_str(&format!("{label:<16} {value}\n"));
        }
    }
    let report = drill.get("report");
    if let Some(problems) = report
        .and_then(|r| r.get("problems"))
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    {
        out.push_str("problems:\n");
        for problem in problems.iter().filter_map(Value::as_str) {
            out.push_str(&format!("  - {problem}\n"));
        }
    }
    if let Some(data) = report
        .and_then(|r| r.get("data"))
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
    {
        let mut table = new_table(&[
            "DATA",
            "PREFIX",
            "BACKUP",
            "LIVE",
            "ONLY LIVE",
            "ONLY BACKUP",
            "CHANGED",
        ]);
        for row in data {
            table.add_row(vec![
                text(row, "data"),
                text(row, "prefix"),
                text(row, "backup_keys"),
                text(row, "live_keys"),
                text(row, "only_live"),
                text(row, "only_backup"),
                text(row, "modified_since"),
            ]);
        }
        out.push('\n');
        out.push_str(&trimmed(&mut table));
    }
    Some(out)
}

/// A cluster's drills, newest first.
pub fn drills(drills: &[Value]) -> String {
    if drills.is_empty() {
        return "no drills".to_owned();
    }
    let mut table = new_table(&["ID", "STARTED", "STATE", "BACKUP", "TRIGGER", "DETAIL"]);
    for drill in drills {
        table.add_row(vec![
            text(drill, "id"),
            text(drill, "started_at"),
            text(drill, "state"),
            text(drill, "backup"),
            text(drill, "trigger"),
            text(drill, "detail"),
        ]);
    }
    trimmed(&mut table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_drill_shows_its_facts_problems_and_counts() {
        let shown = drill(&json!({
            "id": "0190",
            "cluster": "cray-bss-bitnami-etcd",
            "state": "failed",
            "backup": "db-1",
            "detail": "db-1: the backup has none of boot parameters",
            "report": {
                "problems": ["the backup has none of boot parameters"],
                "data": [{ "data": "boot parameters", "prefix": "/params/", "known": true,
                    "backup_keys": 0, "live_keys": 9, "only_live": 9, "only_backup": 0,
                    "modified_since": 0 }],
            },
        }))
        .unwrap();
        assert!(shown.contains("state            failed"), "{shown}");
        assert!(
            shown.contains("  - the backup has none of boot parameters"),
            "{shown}"
        );
        assert!(shown.contains("boot parameters  /params/  0"), "{shown}");
        assert_eq!(drill(&json!([])), None);
        assert_eq!(drills(&[]), "no drills");
        assert_eq!(
            last_drill(Some(
                &json!({ "passed": false, "at": "2026-01-01T00:00:00Z" })
            )),
            "FAILED 2026-01-01T00:00:00Z"
        );
        assert_eq!(last_drill(None), "");
    }
}
