//! Who may call the API. A middleware in front of every route authenticates the bearer token
//! (static tokens from a file, or JWTs verified against a JWKS), checks the role the method
//! needs (GET: `read`, anything else: `write`) and leaves the caller in the request's
//! extensions for handlers that record who started a run. Being in front of every route means
//! a new route is protected without anyone remembering to ask for it; only the paths in
//! [`OPEN_PATHS`] are not.

use std::{
    fmt,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind, jwk::JwkSet,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, RwLock};

use super::{
    SharedState,
    problem::{ApiError, Problem, problem_response},
};
use crate::{
    config::{AuthConfig, AuthMode, JwtConfig},
    metrics::WebhookOutcome,
};

/// Paths anyone may call: probes, metrics, the API description, and the generic webhook
/// (it authenticates by an HMAC signature of its body instead, see `webhooks`).
pub const OPEN_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/webhooks/generic",
];

const REALM: &str = "etcd-repopulator";

/// What a caller may do; `Write` includes `Read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
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
        match self.role {
            Some(role) if role >= required => Ok(self),
            _ => Err(AuthError::Forbidden {
                name: self.name,
                required,
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
    #[error("{name} may not do this: it needs the {} role", required.as_str())]
    Forbidden { name: String, required: Role },
    #[error("tokens cannot be verified right now: {0}")]
    Unavailable(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, kind, title, challenge) = match &self {
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
            AuthError::Unavailable(cause) => {
                tracing::error!(%cause, "cannot verify bearer tokens");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth-unavailable",
                    "Authentication unavailable",
                    String::new(),
                )
            }
        };
        let problem = Problem::new(status, kind, title, self.to_string());
        let mut response = problem_response(status, &problem);
        if let Ok(value) = HeaderValue::from_str(&challenge)
            && !challenge.is_empty()
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
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
                role: Some(Role::Write),
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
    let is_alertmanager = path == super::webhooks::ALERTMANAGER_PATH;
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

/// Static tokens. Only SHA-256 digests are kept: comparing digests of equal length in constant
/// time does not reveal a token's length or prefix through timing, and a memory dump does not
/// reveal the tokens.
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

struct TokenEntry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and roles only: never the tokens, not even their digests.
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{}:{}", e.name, e.role.as_str())),
            )
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenSet {
    pub fn load(path: &Path) -> Result<TokenSet, AuthSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthSetupError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TokenSet::parse(&text).map_err(|(line, problem)| AuthSetupError::Line {
            path: path.display().to_string(),
            line,
            problem,
        })
    }

    /// Parses `name:role:token` lines; errors carry the line number and never the token.
    pub fn parse(text: &str) -> Result<TokenSet, (usize, String)> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let (Some(name), Some(role), Some(token)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err((number, "expected name:role:token".to_owned()));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err((number, "the name is empty".to_owned()));
            }
            let role = match role.trim() {
                "read" => Role::Read,
                "write" => Role::Write,
                other => {
                    return Err((number, format!("role {other:?} is neither read nor write")));
                }
            };
            let token = token.trim();
            if token.is_empty() {
                return Err((number, format!("the token of {name} is empty")));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err((number, format!("the name {name} is used twice")));
            }
            let digest = digest(token);
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&digest))) {
                return Err((
                    number,
                    format!("the token of {name} is also another name's token"),
                ));
            }
            entries.push(TokenEntry {
                name: name.to_owned(),
                role,
                digest,
            });
        }
        Ok(TokenSet { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let presented = digest(token);
        // Look at every entry, without stopping at a match, so the time taken does not say
        // which entry matched.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found
            .map(|entry| Principal {
                name: entry.name.clone(),
                role: Some(entry.role),
            })
            .ok_or_else(|| AuthError::Invalid("unknown token".to_owned()))
    }
}

/// Asymmetric algorithms only: a JWKS publishes public keys, and accepting HS* would let a
/// token "signed" with a public key as the HMAC secret through.
const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A key set fetched refreshes at most this often when a token names an unknown key (key
/// rotation), so that made-up key ids cannot make the service hammer the identity provider.
const MIN_REFETCH: Duration = Duration::from_secs(30);

struct FetchedKeys {
    keys: JwkSet,
    at: Instant,
}

/// Verifies JWTs against a JWKS fetched over HTTP and cached.
pub struct JwtVerifier {
    config: JwtConfig,
    http: reqwest::Client,
    keys: RwLock<Option<Arc<FetchedKeys>>>,
    /// When the last fetch was attempted; held while fetching so concurrent requests wait for
    /// one fetch instead of each starting their own.
    last_fetch: Mutex<Option<Instant>>,
}

impl JwtVerifier {
    pub fn new(config: JwtConfig) -> Result<JwtVerifier, AuthSetupError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(AuthSetupError::Client)?;
        Ok(JwtVerifier {
            config,
            http,
            keys: RwLock::new(None),
            last_fetch: Mutex::new(None),
        })
    }

    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header =
            decode_header(token).map_err(|_| AuthError::Invalid("not a JWT".to_owned()))?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = &self.config.audience {
            validation.set_audience(&[audience]);
        }
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|err| AuthError::Invalid(describe_jwt_error(err.kind())))?
            .claims;
        let name = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Invalid("the token has no subject".to_owned()))?
            .to_owned();
        let roles = roles_at(&claims, &self.config.roles_claim);
        let has = |wanted: &[String]| roles.iter().any(|r| wanted.contains(r));
        let role = if has(&self.config.write_roles) {
            Some(Role::Write)
        } else if has(&self.config.read_roles) {
            Some(Role::Read)
        } else {
            None
        };
        Ok(Principal { name, role })
    }

    /// The verification key named `kid`, from the cached key set, fetching it when the cache is
    /// empty, old, or does not know `kid` (the identity provider rotated its keys).
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let cached = self.keys.read().await.clone();
        let fresh = cached
            .as_ref()
            .is_some_and(|k| k.at.elapsed() < self.config.jwks_refresh);
        if fresh
            && let Some(keys) = &cached
            && let Some(key) = find_key(&keys.keys, kid, alg)?
        {
            return Ok(key);
        }
        let keys = self.refresh(cached, fresh).await?;
        find_key(&keys.keys, kid, alg)?
            .ok_or_else(|| AuthError::Invalid("signed with a key the JWKS does not have".into()))
    }

    async fn refresh(
        &self,
        cached: Option<Arc<FetchedKeys>>,
        fresh: bool,
    ) -> Result<Arc<FetchedKeys>, AuthError> {
        let mut last_fetch = self.last_fetch.lock().await;
        // Someone else may have fetched while this request waited for the lock.
        let current = self.keys.read().await.clone();
        if let (Some(now), Some(before)) = (&current, &cached)
            && !Arc::ptr_eq(now, before)
        {
            return Ok(now.clone());
        }
        if fresh
            && let (Some(keys), Some(at)) = (&current, *last_fetch)
            && at.elapsed() < MIN_REFETCH
        {
            return Ok(keys.clone());
        }
        *last_fetch = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(FetchedKeys {
                    keys,
                    at: Instant::now(),
                });
                *self.keys.write().await = Some(keys.clone());
                Ok(keys)
            }
            // Keys that are a bit old are better than refusing everyone while the identity
            // provider is briefly unreachable.
            Err(err) => match current {
                Some(keys) => {
                    tracing::warn!(error = %err, "fetching the JWKS failed; using the keys fetched before");
                    Ok(keys)
                }
                None => Err(AuthError::Unavailable(err)),
            },
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let url = self
            .config
            .jwks_url
            .as_deref()
            .ok_or_else(|| "auth.jwt.jwks_url is not set".to_owned())?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET {url}: {e}"))?;
        response
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("GET {url}: not a JWK set: {e}"))
    }
}

fn find_key(
    keys: &JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<DecodingKey>, AuthError> {
    let jwk = match kid {
        Some(kid) => keys.find(kid),
        // Without a key id, only an unambiguous set can be used.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => {
            return Err(AuthError::Invalid(
                "the token names no key (kid) and the JWKS has several".to_owned(),
            ));
        }
    };
    let Some(jwk) = jwk else {
        return Ok(None);
    };
    if let Some(key_alg) = jwk.common.key_algorithm
        && key_alg.to_string() != format!("{alg:?}")
    {
        return Err(AuthError::Invalid(format!(
            "the token's algorithm {alg:?} is not its key's {key_alg}"
        )));
    }
    DecodingKey::from_jwk(jwk)
        .map(Some)
        .map_err(|_| AuthError::Invalid("the JWKS key for this token is unusable".to_owned()))
}

fn describe_jwt_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        ErrorKind::InvalidAudience => "the token is for another audience".to_owned(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".to_owned(),
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm => "the algorithm does not match the key".to_owned(),
        _ => "malformed token".to_owned(),
    }
}

/// The values at the dotted `path` of the claims: a list of strings, or one string of
/// space-separated values (like `scope`).
fn roles_at(claims: &Value, path: &str) -> Vec<String> {
    let found = path
        .split('.')
        .try_fold(claims, |value, key| value.get(key));
    match found {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Documents the security schemes in the OpenAPI document: bearer tokens for the whole API
/// (with 401 and 403 responses on every protected operation), none on [`OPEN_PATHS`] except
/// the signature the generic webhook declares itself.
pub struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Content, Ref, ResponseBuilder,
            security::{
                ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement,
                SecurityScheme,
            },
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A static token (auth.mode = token) or a JWT from the configured identity \
                         provider (auth.mode = jwt). GET needs the read role, everything else write.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "hmac_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Signature-256",
                "sha256=<hex HMAC-SHA256 of `<X-Signature-Timestamp>.<raw body>`>",
            ))),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let set = TokenSet::parse(
            "# comment\n\nadmin:write:s3cret:with:colons\n  viewer : read : abc \n",
        )
        .unwrap();
        assert_eq!(
            set.verify("s3cret:with:colons").unwrap(),
            Principal {
                name: "admin".into(),
                role: Some(Role::Write)
            }
        );
        assert_eq!(set.verify("abc").unwrap().role, Some(Role::Read));
        assert!(matches!(set.verify("abd"), Err(AuthError::Invalid(_))));
        let debug = format!("{set:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("admin:write"),
            "{debug}"
        );

        let (line, problem) = TokenSet::parse("a:read:x\nb:admin:super-secret\n")
            .err()
            .unwrap();
        assert_eq!(line, 2);
        assert!(!problem.contains("super-secret"), "{problem}");
        assert_eq!(TokenSet::parse("a:read:x\na:write:y").err().unwrap().0, 2);
        assert_eq!(TokenSet::parse("a:read:x\nb:write:x").err().unwrap().0, 2);
        assert_eq!(TokenSet::parse("justatoken").err().unwrap().0, 1);
    }

    #[test]
    fn roles_from_a_dotted_claim() {
        let claims = serde_json::json!({
            "realm_access": {"roles": ["admin", "x"]},
            "scope": "openid repopulate:read",
        });
        assert_eq!(roles_at(&claims, "realm_access.roles"), ["admin", "x"]);
        assert_eq!(roles_at(&claims, "scope"), ["openid", "repopulate:read"]);
        assert!(roles_at(&claims, "resource_access.shasta.roles").is_empty());
    }

    #[test]
    fn methods_and_roles() {
        assert_eq!(Role::required_for(&Method::GET), Role::Read);
        assert_eq!(Role::required_for(&Method::POST), Role::Write);
        assert!(Role::Write > Role::Read);
    }
}
