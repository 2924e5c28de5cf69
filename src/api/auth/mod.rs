//! Who may call the API. A middleware in front of every route authenticates the bearer token
//! (static tokens from a file, or JWTs verified against a JWKS), checks the role the method
//! needs (GET: `read`, anything else: `write`) and leaves the caller in the request's
//! extensions for handlers that record who started a run, and that ask for `recover` where a
//! request may rebuild or restore etcd clusters (see [`Principal::require_to`]). Being in front of every route means
//! a new route is protected without anyone remembering to ask for it; only the paths in
//! [`OPEN_PATHS`] are not.

mod error;
mod jwt;
mod principal;
mod role;
mod tokens;

use std::fmt;

use axum::http::{HeaderMap, header};

use super::paths::OPEN_PATHS;
use crate::config::{AuthConfig, AuthMode};
pub use error::{AuthError, AuthSetupError};
pub use jwt::JwtVerifier;
pub use principal::Principal;
pub use role::Role;
pub use tokens::TokenSet;

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
