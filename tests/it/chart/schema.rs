//! values.schema.json: typos and bad values fail `helm template` (and so `helm install`)
//! before anything reaches the cluster.

use super::*;

#[test]
fn the_values_schema_refuses_typos_and_bad_values() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["--set", "metrics.serviceMonitor.enabeld=true"],
            "Additional property enabeld is not allowed",
        ),
        (
            &["--set", "metrics.prometheusRule.backupMaxAge=2 hours"],
            "metrics.prometheusRule.backupMaxAge: Does not match pattern",
        ),
        (
            &["--set", "metrics.prometheusRule.dbQuotaRatio=80"],
            "metrics.prometheusRule.dbQuotaRatio",
        ),
        (
            &["--set", "auth.mode=jtw"],
            r#"auth.mode: auth.mode must be one of the following: "token", "jwt", "none""#,
        ),
        (
            &["--set-json", r#"config={"auth":{"mode":"jtw"}}"#],
            "config.auth.mode: config.auth.mode must be one of the following",
        ),
        (
            &["--set", "servce.port=80"],
            "Additional property servce is not allowed",
        ),
        (
            &["--set", "auth.existingSecert=x"],
            "Additional property existingSecert is not allowed",
        ),
        (
            &[
                "--set-json",
                r#"auth.tokens=["ops:admin:0123456789abcdef"]"#,
            ],
            "auth.tokens.0: Does not match pattern",
        ),
        (
            &["--set", "auth.webhookHmacKey=too-short"],
            "auth.webhookHmacKey",
        ),
    ];
    for (values, message) in cases {
        let error = render_error(values);
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{values:?}: {error}"
        );
        assert!(error.contains(message), "{values:?}: {error}");
    }
}
