//! Authentication and authorization: static tokens and JWTs (verified against a JWKS served by
//! a local listener), 401 vs 403, open endpoints, and who a run records as its requester.

use std::{path::Path, time::Duration};

use etcd_repopulator::{
    config::{AuthConfig, AuthMode, Config},
    etcd::EtcdConfig,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sim::SimOptions;

use crate::common::{TestApp, problem, start_with};

const TOKENS: &str = "\
# name:role:token
ops:write:w-0123456789abcdef
viewer:read:r-0123456789abcdef
oncall:recover:x-0123456789abcdef
";

async fn start_token_mode(dir: &Path) -> TestApp {
    start_token_mode_with(dir, Config::default()).await
}

async fn start_token_mode_with(dir: &Path, config: Config) -> TestApp {
    let file = dir.join("tokens");
    std::fs::write(&file, TOKENS).unwrap();
    let config = Config {
        auth: AuthConfig {
            mode: AuthMode::Token,
            tokens_file: file,
            ..AuthConfig::default()
        },
        ..config
    };
    start_with(SimOptions::default(), config).await
}

/// Asserts a 403 problem saying `who` may not do it for want of the `recover` role.
async fn needs_recover(resp: reqwest::Response, who: &str, action: &str) {
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let p = problem(resp, StatusCode::FORBIDDEN).await;
    assert_eq!(p["required_role"], "recover", "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("{who} may not {action}"))
            && detail.ends_with("it needs the recover role"),
        "{p}"
    );
}

fn assert_bearer_challenge(resp: &reqwest::Response) {
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
}

#[tokio::test]
async fn token_mode_separates_401_and_403_and_records_the_token_name() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_token_mode(dir.path()).await;
    let run = json!({"services": ["reds"], "dry_run": true});

    // No token, a malformed header, an unknown token: 401 with a Bearer challenge.
    let resp = app
        .http
        .get(app.url("/repopulations"))
        .send()
        .await
        .unwrap();
    assert_bearer_challenge(&resp);
    let p = problem(resp, StatusCode::UNAUTHORIZED).await;
    assert!(p["type"].as_str().unwrap().ends_with("unauthorized"));
    for auth in ["Basic b3BzOnB3", "Bearer nope"] {
        let resp = app
            .http
            .post(app.url("/repopulations"))
            .header("authorization", auth)
            .json(&run)
            .send()
            .await
            .unwrap();
        assert_bearer_challenge(&resp);
        problem(resp, StatusCode::UNAUTHORIZED).await;
    }

    // A read token reads, but may not start runs.
    let resp = app
        .http
        .get(app.url("/repopulations"))
        .bearer_auth("r-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .http
        .post(app.url("/repopulations"))
        .bearer_auth("r-0123456789abcdef")
        .json(&run)
        .send()
        .await
        .unwrap();
    let p = problem(resp, StatusCode::FORBIDDEN).await;
    assert!(p["detail"].as_str().unwrap().contains("viewer"), "{p}");

    // A write token starts one; the run says who.
    let resp = app
        .http
        .post(app.url("/repopulations"))
        .bearer_auth("w-0123456789abcdef")
        .json(&run)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["requested_by"], "ops");

    // Probes, metrics and the API description stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    // Unknown paths do not tell strangers what exists.
    let resp = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_malformed_token_file_stops_the_start_naming_the_line_not_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "ok:read:aaaaaaaaaaaa\nbad:admin:very-secret-token\n").unwrap();
    let err = etcd_repopulator::api::auth::Authenticator::from_config(&AuthConfig {
        mode: AuthMode::Token,
        tokens_file: file,
        ..AuthConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("very-secret-token"), "{err}");
}

/// An identity provider: an EC P-256 key and its JWKS on a local listener.
struct Idp {
    key: EncodingKey,
    jwks_url: String,
}

const ISSUER: &str = "https://idp.example/realms/shasta";
const AUDIENCE: &str = "etcd-repopulator";
const KID: &str = "test-key";

impl Idp {
    async fn start() -> Idp {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(KID.to_owned());
        let jwks = json!({ "keys": [jwk] });
        let router = axum::Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_url = format!("http://{}/certs", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Idp { key, jwks_url }
    }

    fn token(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn claims(sub: &str, roles: &[&str], aud: &str, exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": aud,
        "iat": now,
        "exp": now + exp_in,
        "realm_access": {"roles": roles},
    })
}

#[tokio::test]
async fn jwt_mode_verifies_against_the_jwks() {
    let idp = Idp::start().await;
    let mut auth = AuthConfig {
        mode: AuthMode::Jwt,
        ..AuthConfig::default()
    };
    auth.jwt.jwks_url = Some(idp.jwks_url.clone());
    auth.jwt.issuer = Some(ISSUER.to_owned());
    auth.jwt.audience = Some(AUDIENCE.to_owned());
    auth.jwt.roles_claim = "realm_access.roles".to_owned();
    auth.jwt.read_roles = vec!["reader".to_owned()];
    auth.jwt.write_roles = vec!["admin".to_owned()];
    auth.jwt.recover_roles = vec!["etcd-recover".to_owned()];
    let app = start_with(
        SimOptions::default(),
        Config {
            auth,
            ..Config::default()
        },
    )
    .await;
    let post = |token: String| {
        app.http
            .post(app.url("/repopulations"))
            .bearer_auth(token)
            .json(&json!({"services": ["reds"], "dry_run": true}))
            .send()
    };

    let resp = post(idp.token(claims("alice", &["admin"], AUDIENCE, 300)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["requested_by"], "alice");

    // A reader reads but may not start runs.
    let reader = idp.token(claims("bob", &["reader"], AUDIENCE, 300));
    let resp = app
        .http
        .get(app.url("/services"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    problem(post(reader).await.unwrap(), StatusCode::FORBIDDEN).await;
    // Authenticated without any known role: 403 as well.
    let nobody = idp.token(claims("carol", &["other"], AUDIENCE, 300));
    problem(post(nobody).await.unwrap(), StatusCode::FORBIDDEN).await;

    // A real run that may rebuild or restore an etcd cluster needs recover_roles; write may
    // start it as a dry run.
    let recover = |token: String, dry_run: bool| {
        app.http
            .post(app.url("/repopulations"))
            .bearer_auth(token)
            .json(&json!({"services": ["meds"], "etcd": "auto", "dry_run": dry_run}))
            .send()
    };
    let admin = idp.token(claims("alice", &["admin"], AUDIENCE, 300));
    needs_recover(
        recover(admin.clone(), false).await.unwrap(),
        "alice",
        "start a real etcd auto run",
    )
    .await;
    let resp = recover(admin, true).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let dry: Value = resp.json().await.unwrap();
    tokio::time::timeout(
        crate::common::WAIT,
        app.runner
            .wait_inactive(dry["id"].as_str().unwrap().parse().unwrap()),
    )
    .await
    .unwrap();
    let oncall = idp.token(claims("dave", &["reader", "etcd-recover"], AUDIENCE, 300));
    let resp = recover(oncall, false).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["requested_by"], "dave");
    assert_eq!(run["etcd"], "auto");

    // Another audience, expired (beyond the leeway), tampered, or another key: 401.
    let wrong_aud = idp.token(claims("alice", &["admin"], "someone-else", 300));
    let resp = post(wrong_aud).await.unwrap();
    assert_bearer_challenge(&resp);
    let p = problem(resp, StatusCode::UNAUTHORIZED).await;
    assert!(p["detail"].as_str().unwrap().contains("audience"), "{p}");
    let expired = idp.token(claims("alice", &["admin"], AUDIENCE, -3600));
    let p = problem(post(expired).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    let good = idp.token(claims("alice", &["admin"], AUDIENCE, 300));
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_claims = base64_url(&claims("mallory", &["admin"], AUDIENCE, 300));
    problem(
        post(format!("{head}.{forged_claims}.{sig}")).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let other_idp = Idp::start().await;
    problem(
        post(other_idp.token(claims("alice", &["admin"], AUDIENCE, 300)))
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn with_tokens_the_served_openapi_document_asks_for_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_token_mode(dir.path()).await;
    let resp = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    let create = &doc["paths"]["/repopulations"]["post"];
    assert!(create["responses"]["401"].is_object(), "{create}");
    // Open paths say so.
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    // The committed document is the one a service with authentication serves.
    assert_eq!(
        doc,
        serde_json::to_value(etcd_repopulator::api::openapi()).unwrap()
    );
}

/// The etcd clusters' endpoint where nothing listens (each request bounded by `etcd_timeout`),
/// and `[recovery] timeout` at `recovery_timeout`.
fn etcd_down(etcd_timeout: Duration, recovery_timeout: Duration) -> Config {
    Config {
        etcd: EtcdConfig {
            enabled: true,
            endpoint: format!("http://127.0.0.1:{}", crate::common::free_port()),
            timeout: etcd_timeout,
            ..EtcdConfig::default()
        },
        recovery: etcd_repopulator::config::RecoveryConfig {
            timeout: recovery_timeout,
            ..Default::default()
        },
        ..Config::default()
    }
}

#[tokio::test]
async fn a_real_recovery_run_and_its_resume_need_the_recover_role() {
    // The etcd cluster is down (nothing listens on the port), so the run fails and can be
    // resumed: the rebuild (CSM 1.0, etcd-operator) waits for it to answer for as long as
    // `[recovery] timeout` lets it.
    let config = etcd_down(Duration::from_secs(5), Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let app = start_token_mode_with(dir.path(), config).await;
    let post = |token: &'static str, body: Value| {
        app.http
            .post(app.url("/repopulations"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let real = json!({"services": ["bss"], "etcd": "rebuild", "confirm": ["cray-bss-etcd"]});

    // write: 403 for the real run, whether or not it confirms, before anything else is said.
    let write = "w-0123456789abcdef";
    needs_recover(
        post(write, real.clone()).await.unwrap(),
        "ops",
        "start a real etcd rebuild run",
    )
    .await;
    needs_recover(
        post(write, json!({"services": ["bss"], "etcd": "restore"}))
            .await
            .unwrap(),
        "ops",
        "start a real etcd restore run",
    )
    .await;
    // A repair that confirms its cluster may replace members (deleting their PVCs): recover.
    needs_recover(
        post(
            write,
            json!({"services": ["bss"], "etcd": "repair", "confirm": ["cray-bss-etcd"]}),
        )
        .await
        .unwrap(),
        "ops",
        "start a real etcd repair run",
    )
    .await;
    // read: 403 naming write (the method's role), as for any POST.
    let p = problem(
        post("r-0123456789abcdef", real.clone()).await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(p["required_role"], "write", "{p}");
    // write may start a recovery run as a dry run, and check runs. (A restore: with no backup
    // anywhere its plan fails, so it can be resumed below; the plan of a rebuild of an
    // unreachable cluster is sound, and succeeds.)
    let dry = json!({"services": ["bss"], "etcd": "restore", "dry_run": true});
    let resp = post(write, dry).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let dry: Value = resp.json().await.unwrap();
    let id: uuid::Uuid = dry["id"].as_str().unwrap().parse().unwrap();
    tokio::time::timeout(crate::common::WAIT, app.runner.wait_inactive(id))
        .await
        .unwrap();

    // recover may: the run records who.
    let resp = post("x-0123456789abcdef", real).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["requested_by"], "oncall");
    assert_eq!(run["etcd"], "rebuild");
    let id = run["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(
        crate::common::WAIT,
        app.runner.wait_inactive(id.parse().unwrap()),
    )
    .await
    .unwrap();
    let resume = |token: &'static str, id: String| {
        app.http
            .post(app.url(&format!("/repopulations/{id}/resume")))
            .bearer_auth(token)
            .send()
    };
    let ended: Value = app
        .http
        .get(app.url(&format!("/repopulations/{id}")))
        .bearer_auth(write)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ended["state"], "failed", "{ended:#}");

    // Resuming it continues a destructive run: recover only.
    needs_recover(
        resume(write, id.clone()).await.unwrap(),
        "ops",
        &format!("resume run {id}: it is a real etcd rebuild run"),
    )
    .await;
    let resp = resume("x-0123456789abcdef", id.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::timeout(
        crate::common::WAIT,
        app.runner.wait_inactive(id.parse().unwrap()),
    )
    .await
    .unwrap();

    // The failed dry run resumes with write.
    let dry_id = dry["id"].as_str().unwrap().to_owned();
    let resp = resume(write, dry_id).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        resp.text().await
    );
}

/// POSTs `body` as the caller with `token`; returns the run's id (asserting 202).
async fn start_as(app: &TestApp, token: &str, body: Value) -> String {
    let resp = app
        .http
        .post(app.url("/repopulations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// POST `/repopulations/{id}/cancel` as the caller with `token`.
async fn cancel_as(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/repopulations/{id}/cancel")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn run_state(app: &TestApp, token: &str, id: &str) -> String {
    let run: Value = app
        .http
        .get(app.url(&format!("/repopulations/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["state"].as_str().unwrap().to_owned()
}

/// Cancelling a real recovery run decides what state its etcd cluster is left in: like
/// starting and resuming one, it needs the `recover` role; a dry one, `write`.
#[tokio::test]
async fn cancelling_a_real_recovery_run_needs_the_recover_role() {
    // The etcd cluster is down (nothing listens on the port): the rebuild (CSM 1.0,
    // etcd-operator) waits for it to answer, running, for as long as `[recovery] timeout`.
    let config = etcd_down(Duration::from_secs(2), Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let app = start_token_mode_with(dir.path(), config).await;
    let (write, recover) = ("w-0123456789abcdef", "x-0123456789abcdef");

    let real = json!({"services": ["bss"], "etcd": "rebuild", "confirm": ["cray-bss-etcd"]});
    let id = start_as(&app, recover, real).await;
    crate::common::until("the rebuild to run", async || {
        (run_state(&app, write, &id).await == "running").then_some(())
    })
    .await;
    needs_recover(
        cancel_as(&app, write, &id).await,
        "ops",
        &format!("cancel run {id}: it is a real etcd rebuild run"),
    )
    .await;
    assert_eq!(
        run_state(&app, write, &id).await,
        "running",
        "refused: the run goes on"
    );
    let resp = cancel_as(&app, recover, &id).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::timeout(
        crate::common::WAIT,
        app.runner.wait_inactive(id.parse().unwrap()),
    )
    .await
    .unwrap();

    // A dry run of the same: write may cancel it (whether it still runs or already ended).
    let dry = json!({"services": ["bss"], "etcd": "rebuild", "dry_run": true});
    let dry = start_as(&app, write, dry).await;
    let resp = cancel_as(&app, write, &dry).await;
    assert_ne!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "{:?}",
        resp.text().await
    );
}
