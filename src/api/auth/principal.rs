//! The authenticated caller, and what the handlers ask of it.

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{error::AuthError, role::Role};
use crate::api::problem::ApiError;

/// The authenticated caller, as recorded in `requested_by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, or the JWT's `sub`.
    pub name: String,
    /// `None`: authenticated, but holding no role this service knows.
    pub role: Option<Role>,
}

impl Principal {
    pub(in crate::api) fn require(self, required: Role) -> Result<Principal, AuthError> {
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
