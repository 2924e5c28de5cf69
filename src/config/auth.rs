//! `[auth]`: who may call the API (the API's `auth` module authenticates by it).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// How the API authenticates its callers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everyone may do everything: for `serve --simulate` and tests only.
    #[default]
    None,
    /// Static bearer tokens from `tokens_file`.
    Token,
    /// JWTs verified against a JWKS (e.g. CSM's Keycloak).
    Jwt,
}

/// `[auth]` in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Token mode: the file of tokens, one `name:role:token` per line (`role` is `read`,
    /// `write` or `recover`; `#` starts a comment). The Helm chart mounts its Secret's `tokens` key here.
    pub tokens_file: PathBuf,
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            tokens_file: PathBuf::from("/etc/etcd-repopulator/auth/tokens"),
            jwt: JwtConfig::default(),
        }
    }
}

/// `[auth.jwt]`: where the signing keys are and what a token must say.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The JWKS document, e.g. Keycloak's
    /// `.../realms/shasta/protocol/openid-connect/certs`.
    pub jwks_url: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences).
    pub audience: Option<String>,
    /// Dotted path of the claim holding the caller's roles (a list of strings, or one
    /// space-separated string such as `scope`).
    pub roles_claim: String,
    /// Role values that grant `read`.
    pub read_roles: Vec<String>,
    /// Role values that grant `write` (which includes `read`).
    pub write_roles: Vec<String>,
    /// Role values that grant `recover` (which includes `write`): real runs that rebuild or
    /// restore etcd clusters. Empty by default: nobody may, until a role is named here.
    pub recover_roles: Vec<String>,
    /// How long fetched keys are used before they are fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        // CSM's Keycloak puts the roles of the `shasta` client in resource_access; `admin` is
        // the administrators' role there, `user` and `monitor-ro` the read-only ones.
        JwtConfig {
            jwks_url: None,
            issuer: None,
            audience: None,
            roles_claim: "resource_access.shasta.roles".to_owned(),
            read_roles: vec!["user".to_owned(), "monitor-ro".to_owned()],
            write_roles: vec!["admin".to_owned()],
            recover_roles: Vec::new(),
            jwks_refresh: Duration::from_secs(600),
            leeway: Duration::from_secs(60),
        }
    }
}

impl AuthConfig {
    /// Checks what can be checked without reading files or the network; the error names the
    /// key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode != AuthMode::Jwt {
            return Ok(());
        }
        let missing = |key: &str| {
            ConfigError::invalid(
                format!("auth.jwt.{key}"),
                "required when auth.mode = \"jwt\"",
            )
        };
        let jwt = &self.jwt;
        let url = jwt.jwks_url.as_deref().ok_or_else(|| missing("jwks_url"))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "auth.jwt.jwks_url",
                "must be an http(s) URL",
            ));
        }
        jwt.issuer.as_deref().ok_or_else(|| missing("issuer"))?;
        jwt.audience.as_deref().ok_or_else(|| missing("audience"))?;
        if jwt.roles_claim.split('.').any(str::is_empty) {
            return Err(ConfigError::invalid(
                "auth.jwt.roles_claim",
                "must be a dotted claim path such as realm_access.roles",
            ));
        }
        if jwt.read_roles.is_empty() && jwt.write_roles.is_empty() && jwt.recover_roles.is_empty() {
            return Err(ConfigError::invalid(
                "auth.jwt.write_roles",
                "read_roles, write_roles and recover_roles are all empty: nobody could call the API",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(config: &AuthConfig) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn jwt_mode_needs_its_keys() {
        let mut config = AuthConfig {
            mode: AuthMode::Jwt,
            ..AuthConfig::default()
        };
        assert_eq!(invalid_key(&config), "auth.jwt.jwks_url");
        config.jwt.jwks_url = Some("https://idp/certs".into());
        config.jwt.issuer = Some("https://idp".into());
        assert_eq!(invalid_key(&config), "auth.jwt.audience");
        config.jwt.audience = Some("etcd-repopulator".into());
        config.validate().unwrap();
    }
}
