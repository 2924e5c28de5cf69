//! `auth.mode = "jwt"`: bearer tokens are JWTs, verified against the identity provider's JWKS
//! (fetched and cached), with the caller's role taken from a claim.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind, jwk::JwkSet,
};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::{
    error::{AuthError, AuthSetupError},
    principal::Principal,
    role::Role,
};
use crate::config::JwtConfig;

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

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
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
        let role = if has(&self.config.recover_roles) {
            Some(Role::Recover)
        } else if has(&self.config.write_roles) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
