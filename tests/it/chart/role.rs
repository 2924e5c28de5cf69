//! The Role: its rules are the output of `etcd-repopulator rbac-rules`, exactly the code's
//! permissions, in the services' namespace only, without wildcards or secrets.

use super::*;

const BEGIN: &str = "# BEGIN rbac-rules";
const END: &str = "# END rbac-rules";

/// The plain-YAML block between the marker comments of templates/role.yaml.
fn role_rules_block() -> String {
    let role = chart_file("templates/role.yaml");
    let start = role.find(BEGIN).expect("role.yaml has the BEGIN marker");
    let start = start + role[start..].find('\n').expect("marker line ends") + 1;
    let end = role.find(END).expect("role.yaml has the END marker");
    role[start..end].to_owned()
}

/// One rule as written: (apiGroups, resources, verbs).
#[derive(Debug, Default, PartialEq, Eq)]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// Parses the subset of YAML a Role's `rules:` are written in here: a `rules:` line, then
/// items `- apiGroups: [...]` with `resources: [...]` and `verbs: [...]` as flow lists of
/// quoted or plain strings. Anything else fails the test, so the block stays in this form.
fn parse_rules(block: &str) -> Vec<Rule> {
    let mut lines = block.lines().filter(|line| !line.trim().is_empty());
    assert_eq!(lines.next().map(str::trim_end), Some("rules:"), "{block}");
    let mut rules: Vec<Rule> = Vec::new();
    for line in lines {
        let trimmed = line.trim();
        let entry = match trimmed.strip_prefix("- ") {
            Some(entry) => {
                rules.push(Rule::default());
                entry
            }
            None => trimmed,
        };
        let (key, value) = entry
            .split_once(':')
            .unwrap_or_else(|| panic!("not `key: [list]`: {line:?}"));
        let rule = rules
            .last_mut()
            .unwrap_or_else(|| panic!("key before the first `- `: {line:?}"));
        let list = parse_flow_list(value.trim());
        let slot = match key.trim() {
            "apiGroups" => &mut rule.api_groups,
            "resources" => &mut rule.resources,
            "verbs" => &mut rule.verbs,
            other => panic!("unexpected key {other:?} in a rule"),
        };
        assert!(slot.is_empty(), "{key} given twice: {line:?}");
        *slot = list;
    }
    rules
}

fn parse_flow_list(text: &str) -> Vec<String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a flow list: {text:?}"));
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            let unquoted = item
                .strip_prefix('"')
                .and_then(|i| i.strip_suffix('"'))
                .or_else(|| item.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')))
                .unwrap_or(item);
            assert!(!unquoted.contains(['"', '\\']), "unsupported item {item:?}");
            unquoted.to_owned()
        })
        .collect()
}

fn rule_of(permission: &Permission) -> Rule {
    Rule {
        api_groups: vec![permission.api_group.to_owned()],
        resources: vec![permission.resource.to_owned()],
        verbs: permission.verbs.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn role_rules_are_exactly_the_required_permissions() {
    let in_chart = parse_rules(&role_rules_block());
    let in_code: Vec<Rule> = rbac::REQUIRED.iter().map(rule_of).collect();
    assert_eq!(
        in_chart, in_code,
        "templates/role.yaml differs from cluster::rbac::REQUIRED; regenerate the block \
         between the markers with `etcd-repopulator rbac-rules`"
    );
}

#[test]
fn role_rules_block_is_the_rbac_rules_output() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-repopulator"))
        .arg("rbac-rules")
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed, rbac::rules_yaml());
    assert_eq!(role_rules_block(), printed);
}

#[test]
fn rbac_is_namespaced_and_narrow() {
    for template in ["templates/role.yaml", "templates/rolebinding.yaml"] {
        let text = chart_file(template);
        assert!(!text.contains("ClusterRole"), "{template}");
        assert!(
            text.contains("namespace: {{ .Values.targetNamespace }}"),
            "{template}"
        );
    }
    let rules = parse_rules(&role_rules_block());
    for rule in &rules {
        for item in rule
            .api_groups
            .iter()
            .chain(&rule.resources)
            .chain(&rule.verbs)
        {
            assert_ne!(item, "*");
        }
        assert!(!rule.resources.iter().any(|r| r == "secrets"));
    }
}
