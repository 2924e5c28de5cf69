//! `helm lint --strict` without a remark, with the default values and every values file of
//! `ci/`; Chart.yaml's metadata.

use super::*;

#[test]
fn helm_lint_strict_passes_with_the_default_values_and_every_ci_values_file() {
    let mut values_files: Vec<String> = std::fs::read_dir(root().join(CHART).join("ci"))
        .expect("ci/")
        .map(|entry| {
            format!(
                "{CHART}/ci/{}",
                entry.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    values_files.sort();
    assert!(!values_files.is_empty(), "no values files in ci/");
    for values in [None].into_iter().chain(values_files.iter().map(Some)) {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(values.iter().flat_map(|file| ["--values", file.as_str()]));
        let output = run_tool("helm", &args);
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "helm lint {values:?}:\n{printed}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Not even an [INFO] recommendation.
        let remarks: Vec<&str> = printed.lines().filter(|l| l.starts_with('[')).collect();
        assert!(remarks.is_empty(), "helm lint {values:?}: {remarks:?}");
        assert!(printed.contains("1 chart(s) linted, 0 chart(s) failed"));
    }
}

#[test]
fn chart_metadata_names_its_sources_maintainers_and_icon() {
    let chart: serde_json::Value =
        serde_saphyr::from_str(&chart_file("Chart.yaml")).expect("Chart.yaml parses");
    assert!(chart["sources"].as_array().is_some_and(|s| !s.is_empty()));
    let maintainers = chart["maintainers"].as_array().expect("maintainers");
    assert!(maintainers.iter().all(|m| m["name"].is_string()));
    let icon = chart["icon"].as_str().expect("icon");
    assert!(icon.starts_with("data:image/svg+xml;base64,"), "{icon}");
}
