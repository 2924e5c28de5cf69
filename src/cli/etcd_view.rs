//! etcd clusters in the table format: the list (one row each) and one cluster described (its
//! facts, its members as etcd and Kubernetes see them, its PVCs and its problems).

use serde_json::Value;

use super::table::{human_size, new_table, trimmed};

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn yes_no(value: &Value, key: &str) -> &'static str {
    if value.get(key) == Some(&Value::Bool(true)) {
        "yes"
    } else {
        "no"
    }
}

fn strings<'a>(value: &'a Value, key: &str) -> Vec<&'a str> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn size(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_u64)
        .map(human_size)
        .unwrap_or_default()
}

/// One row per etcd cluster: layout, members Ready, health and what is wrong.
pub fn clusters(clusters: &[Value]) -> String {
    if clusters.is_empty() {
        return "no etcd clusters".to_owned();
    }
    let mut table = new_table(&[
        "NAME", "SERVICE", "LAYOUT", "READY", "HEALTHY", "LEADER", "KEYS", "PROBLEMS",
    ]);
    for cluster in clusters {
        let problems = strings(cluster, "problems");
        table.add_row(vec![
            text(cluster, "name"),
            text(cluster, "service"),
            text(cluster, "layout"),
            format!("{}/{}", text(cluster, "ready"), text(cluster, "members")),
            yes_no(cluster, "healthy").to_owned(),
            text(cluster, "leader"),
            text(cluster, "keys"),
            problems.join("; "),
        ]);
    }
    trimmed(&mut table)
}

/// One cluster: its facts, then its members (as etcd and Kubernetes see them), its PVCs and
/// its problems, one a line.
pub fn cluster(cluster: &Value) -> Option<String> {
    cluster.get("name")?;
    let mut facts: Vec<(&str, String)> = vec![
        ("Name", text(cluster, "name")),
        ("Service", text(cluster, "service")),
    ];
    let object = cluster.get("object").unwrap_or(&Value::Null);
    facts.push((
        "Layout",
        format!(
            "{} ({} {})",
            text(cluster, "layout"),
            text(object, "kind"),
            text(object, "name")
        ),
    ));
    let serving = if cluster.get("serving") == Some(&Value::Bool(true)) {
        "serving"
    } else {
        "not serving"
    };
    facts.push((
        "Healthy",
        format!("{} ({serving})", yes_no(cluster, "healthy")),
    ));
    facts.push((
        "Pods Ready",
        format!("{}/{}", text(cluster, "ready"), text(cluster, "members")),
    ));
    facts.push(("Leader", text(cluster, "leader")));
    facts.push(("Endpoint", text(cluster, "endpoint")));
    facts.push(("Revision", text(cluster, "revision")));
    facts.push(("Keys", text(cluster, "keys")));
    let quota = cluster.get("quota").unwrap_or(&Value::Null);
    let mut db = size(cluster, "db_size");
    if let Some(in_use) = cluster.get("db_size_in_use").and_then(Value::as_u64) {
        db.push_str(&format!(" ({} in use)", human_size(in_use)));
    }
    if let Some(bytes) = quota.get("bytes").and_then(Value::as_u64) {
        db.push_str(&format!(
            " of a {} quota ({})",
            human_size(bytes),
            text(quota, "source")
        ));
    }
    facts.push(("DB size", db.trim().to_owned()));
    facts.push(("Version", text(cluster, "version")));
    let mut out: String = facts
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key:<12}{value}\n"))
        .collect();

    let members = cluster
        .get("member_health")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    out.push('\n');
    if members.is_empty() {
        out.push_str("no members read\n");
    } else {
        out.push_str(&members_table(members));
        out.push('\n');
    }
    let pvcs = strings(cluster, "pvcs");
    if !pvcs.is_empty() {
        out.push_str(&format!("\nPVCs: {}\n", pvcs.join(" ")));
    }
    if let Some(env) = cluster.get("recovery_env").and_then(Value::as_object)
        && !env.is_empty()
    {
        out.push_str("\nStatefulSet environment (how a member starts):\n");
        for (name, value) in env {
            out.push_str(&format!(
                "  {name}={}\n",
                value.as_str().unwrap_or_default()
            ));
        }
    }
    let problems = strings(cluster, "problems");
    if problems.is_empty() {
        out.push_str("\nno problems\n");
    } else {
        out.push_str("\nProblems:\n");
        for problem in problems {
            out.push_str(&format!("  - {problem}\n"));
        }
    }
    Some(out)
}

/// One row per member: who it is, its pod, what it holds, and what is wrong with it.
fn members_table(members: &[Value]) -> String {
    let mut table = new_table(&[
        "MEMBER", "ID", "POD", "READY", "LEADER", "HEALTHY", "TERM", "INDEX", "REVISION",
        "DB SIZE", "IN USE", "ALARMS", "STATE",
    ]);
    for member in members {
        let mut name = text(member, "name");
        if member.get("is_learner") == Some(&Value::Bool(true)) {
            name.push_str(" (learner)");
        }
        if member.get("started") == Some(&Value::Bool(false)) && member.get("id").is_some() {
            name.push_str(" (not started)");
        }
        let state = match (member.get("container"), member.get("error")) {
            (Some(Value::String(container)), _) => container.clone(),
            (_, Some(Value::String(error))) => error.clone(),
            _ => String::new(),
        };
        table.add_row(vec![
            name,
            text(member, "id"),
            text(member, "pod"),
            if member.get("pod").is_some_and(Value::is_string) {
                yes_no(member, "pod_ready")
            } else {
                ""
            }
            .to_owned(),
            if member.get("is_leader") == Some(&Value::Bool(true)) {
                "*"
            } else {
                ""
            }
            .to_owned(),
            yes_no(member, "healthy").to_owned(),
            text(member, "raft_term"),
            text(member, "raft_index"),
            text(member, "revision"),
            size(member, "db_size"),
            size(member, "db_size_in_use"),
            strings(member, "alarms").join(" "),
            state,
        ]);
    }
    trimmed(&mut table)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_described_cluster_shows_its_members_pvcs_and_problems() {
        let report = json!({
            "name": "cray-bss-bitnami-etcd", "service": "bss", "layout": "bitnami",
            "object": {"kind": "StatefulSet", "name": "cray-bss-bitnami-etcd"},
            "members": 3, "ready": 2, "healthy": false, "serving": true,
            "leader": "1111", "revision": 42, "keys": 7, "db_size": 2_097_152,
            "db_size_in_use": 1_048_576, "quota": {"bytes": 2_147_483_648_u64, "source": "env"},
            "pvcs": ["data-cray-bss-bitnami-etcd-0", "data-cray-bss-bitnami-etcd-1"],
            "recovery_env": {"ETCD_DISASTER_RECOVERY": "yes", "ETCD_INITIAL_CLUSTER_STATE": "existing"},
            "member_health": [
                {"id": "1111", "name": "cray-bss-bitnami-etcd-0", "pod": "cray-bss-bitnami-etcd-0",
                 "pod_ready": true, "started": true, "healthy": true, "is_leader": true,
                 "raft_term": 3, "raft_index": 99, "revision": 42, "db_size": 2_097_152,
                 "db_size_in_use": 1_048_576, "alarms": []},
                {"id": "2222", "name": "cray-bss-bitnami-etcd-1", "pod": "cray-bss-bitnami-etcd-1",
                 "pod_ready": false, "started": true, "healthy": false, "alarms": ["NOSPACE"],
                 "container": "CrashLoopBackOff: etcd exited: the database is corrupt",
                 "error": "unreachable"},
                {"id": "3333", "name": "cray-bss-bitnami-etcd-2", "started": true,
                 "healthy": false, "alarms": []}
            ],
            "problems": ["pod cray-bss-bitnami-etcd-1: CrashLoopBackOff: etcd exited: the database is corrupt",
                         "member cray-bss-bitnami-etcd-2 (3333) has no pod"]
        });
        let text = cluster(&report).expect("a description");
        assert!(text.contains("Healthy     no (serving)"), "{text}");
        assert!(text.contains("Pods Ready  2/3"), "{text}");
        assert!(
            text.contains("2.0 MiB (1.0 MiB in use) of a 2.0 GiB quota (env)"),
            "{text}"
        );
        let row = |pod: &str| {
            text.lines()
                .find(|l| l.starts_with(pod))
                .unwrap()
                .to_owned()
        };
        let leader = row("cray-bss-bitnami-etcd-0");
        assert!(
            leader.contains("1111") && leader.contains('*') && leader.contains("99"),
            "{leader}"
        );
        let looping = row("cray-bss-bitnami-etcd-1");
        assert!(
            looping.contains("NOSPACE") && looping.contains("CrashLoopBackOff: etcd exited"),
            "{looping}"
        );
        assert!(row("cray-bss-bitnami-etcd-2").contains("3333"), "{text}");
        assert!(
            text.contains("PVCs: data-cray-bss-bitnami-etcd-0 data-cray-bss-bitnami-etcd-1"),
            "{text}"
        );
        assert!(
            text.contains("  - member cray-bss-bitnami-etcd-2 (3333) has no pod"),
            "{text}"
        );
        assert!(
            text.contains("  ETCD_DISASTER_RECOVERY=yes\n  ETCD_INITIAL_CLUSTER_STATE=existing"),
            "{text}"
        );
    }
}
