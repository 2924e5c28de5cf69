//! Who may call the API. A middleware in front of every route authenticates the bearer token
//! (static tokens from a file, or JWTs verified against a JWKS), checks the role the method
//! needs (GET: `read`, anything else: `write`) and leaves the caller in the request's
//! extensions for handlers that record who started a run, and that ask for `recover` where a
//! request may rebuild or restore etcd clusters (see [`Principal::require_to`]). Being in front of every route means
//! a new route is protected without anyone remembering to ask for it; only the paths in
//! [`OPEN_PATHS`] are not.

mod jwt;
mod tokens;

use std::fmt;

use super::{
    ALERTMANAGER_PATH, GENERIC_PATH, SharedState,
    problem::{ApiError, Refusal},
};
use crate::{
    config::{AuthConfig, AuthMode},
    metrics::WebhookOutcome,
};
use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
pub use jwt::JwtVerifier;
pub use tokens::TokenSet;

/// Paths anyone may call: probes, metrics, the API description, and the generic webhook
/// (it authenticates by an HMAC signature of its body instead, see `webhooks`).
pub const OPEN_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    GENERIC_PATH,
];

const REALM: &str = "etcd-repopulator";

/// What a caller may do; each role includes those before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read runs, services, clusters and snapshots.
    Read,
    /// Start (dry or `check`) runs, cancel and resume them, take snapshots.
    Write,
    /// Also start, resume and cancel real runs that rebuild or restore etcd clusters (`etcd`
    /// `restore`, `rebuild` or `auto`).
    Recover,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Recover];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Recover => "recover",
        }
    }

    /// What a request with `method` needs: reading is safe, everything else changes runs.
    pub fn required_for(method: &Method) -> Role {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Role::Read
        } else {
            Role::Write
        }
    }
}

/// The authenticated caller, as recorded in `requested_by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, or the JWT's `sub`.
    pub name: String,
    /// `None`: authenticated, but holding no role this service knows.
    pub role: Option<Role>,
}

impl Principal {
    fn require(self, required: Role) -> Result<Principal, AuthError> {
        self.require_to(required, "do this")?;
        Ok(self)
    }

    /// Whether the caller holds `required` (or a role above it); the 403 says it may not
    /// `action` and which role that needs.
    pub fn require_to(&self, required: Role, action: &str) -> Result<(), AuthError> {
        match self.role {
            Some(role) if role >= required => Ok(()),
            _ => Err(AuthError::Forbidden {
                name: self.name.clone(),
                required,
                action: action.to_owned(),
            }),
        }
    }
}

/// Handlers take the caller as an argument; the middleware put it there.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::Internal("the authorization middleware is not in front of this route".into())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an `Authorization: Bearer <token>` header")]
    Missing,
    #[error("the bearer token is not valid: {0}")]
    Invalid(String),
    #[error("{name} may not {action}: it needs the {} role", required.as_str())]
    Forbidden {
        name: String,
        required: Role,
        action: String,
    },
    #[error("tokens cannot be verified right now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The status, problem kind and title of the refusal, and its `WWW-Authenticate` challenge
    /// (empty: none).
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            AuthError::Missing => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
                format!("Bearer realm=\"{REALM}\""),
            ),
            AuthError::Invalid(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            ),
            AuthError::Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\""),
            ),
            AuthError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth-unavailable",
                "Authentication unavailable",
                String::new(),
            ),
        }
    }
}

/// The refusal as a problem (naming the role needed, for a 403) with its challenge.
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        let (status, kind, title, challenge) = err.parts();
        let required_role = match &err {
            AuthError::Forbidden { required, .. } => Some(required.as_str()),
            _ => None,
        };
        ApiError::Refused(Box::new(Refusal {
            status,
            kind,
            title,
            detail: err.to_string(),
            required_role,
            challenge: HeaderValue::from_str(&challenge)
                .ok()
                .filter(|_| !challenge.is_empty()),
        }))
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// A problem while setting up authentication at start (the service does not start).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot read the token file {path} (auth.tokens_file): {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("creating the HTTP client for the JWKS: {0}")]
    Client(reqwest::Error),
}

/// Authenticates requests according to `[auth]`.
pub enum Authenticator {
    Open,
    Tokens(TokenSet),
    Jwt(Box<JwtVerifier>),
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authenticator::Open => f.write_str("Authenticator::Open"),
            Authenticator::Tokens(set) => write!(f, "Authenticator::Tokens({set:?})"),
            Authenticator::Jwt(_) => f.write_str("Authenticator::Jwt"),
        }
    }
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, AuthSetupError> {
        Ok(match config.mode {
            AuthMode::None => Authenticator::Open,
            AuthMode::Token => {
                let set = TokenSet::load(&config.tokens_file)?;
                if set.is_empty() {
                    tracing::warn!(path = %config.tokens_file.display(), "auth.mode = \"token\" but the token file has no tokens: every API call will be refused");
                }
                Authenticator::Tokens(set)
            }
            AuthMode::Jwt => Authenticator::Jwt(Box::new(JwtVerifier::new(config.jwt.clone())?)),
        })
    }

    pub fn mode(&self) -> AuthMode {
        match self {
            Authenticator::Open => AuthMode::None,
            Authenticator::Tokens(_) => AuthMode::Token,
            Authenticator::Jwt(_) => AuthMode::Jwt,
        }
    }

    /// Who is calling, from the `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        if let Authenticator::Open = self {
            return Ok(Principal {
                name: "anonymous".to_owned(),
                role: Some(Role::Recover),
            });
        }
        let token = bearer_token(headers)?;
        match self {
            Authenticator::Open => unreachable!("handled above"),
            Authenticator::Tokens(set) => set.verify(token),
            Authenticator::Jwt(verifier) => verifier.verify(token).await,
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// The middleware in front of every route: see the module documentation.
pub async fn authorize(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) {
        return next.run(request).await;
    }
    let is_alertmanager = path == ALERTMANAGER_PATH;
    let required = Role::required_for(request.method());
    let result = state
        .auth
        .authenticate(request.headers())
        .await
        .and_then(|principal| principal.require(required));
    match result {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            if is_alertmanager {
                state
                    .runner
                    .metrics()
                    .webhook_delivery("alertmanager", WebhookOutcome::Unauthorized);
            }
            err.into_response()
        }
    }
}

/// Documents how callers authenticate in `mode`. Always the signature the generic webhook
/// declares itself; with authentication on, bearer tokens for the whole API (with 401, 403 and
/// 503 responses on every protected operation) and none on [`OPEN_PATHS`]. With
/// `auth.mode = "none"` nothing else: no operation asks for credentials it would not check.
pub fn document_security(openapi: &mut utoipa::openapi::OpenApi, mode: AuthMode) {
    use utoipa::openapi::{
        Content, Ref, ResponseBuilder,
        security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        },
    };
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "hmac_signature",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Signature-256",
            "sha256=<hex HMAC-SHA256 of `<X-Signature-Timestamp>.<raw body>`>",
        ))),
    );
    if mode == AuthMode::None {
        return;
    }
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A static token (auth.mode = token) or a JWT from the configured identity \
                     provider (auth.mode = jwt). GET needs the read role, everything else write; \
                     a real run with etcd restore, rebuild or auto (and its resume and \
                     cancel) needs recover, which includes write.",
                ))
                .build(),
        ),
    );
    openapi.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                super::problem::PROBLEM,
                Content::new(Some(Ref::from_schema_name("Problem"))),
            )
            .build()
    };
    for (path, item) in &mut openapi.paths.paths {
        let open = OPEN_PATHS.contains(&path.as_str());
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
        ];
        for operation in operations.into_iter().flatten() {
            if open {
                // An empty requirement overrides the document's: no credentials.
                operation
                    .security
                    .get_or_insert_with(|| vec![SecurityRequirement::default()]);
                continue;
            }
            let responses = &mut operation.responses.responses;
            responses.entry("401".to_owned()).or_insert_with(|| {
                problem("Missing or invalid bearer token (`WWW-Authenticate: Bearer`)").into()
            });
            responses
                .entry("403".to_owned())
                .or_insert_with(|| problem("The caller lacks the role this needs").into());
            responses.entry("503".to_owned()).or_insert_with(|| {
                problem("Tokens cannot be verified (identity provider unreachable)").into()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_roles() {
        assert_eq!(Role::required_for(&Method::GET), Role::Read);
        assert_eq!(Role::required_for(&Method::POST), Role::Write);
        assert!(Role::Write > Role::Read);
        assert!(Role::Recover > Role::Write);
    }
}
