//! CRUS upgrade sessions (`crus.json`: `GET /session`).

use super::http::Endpoint;
use csm_wire::CrusSession;

use super::error::CsmError;

#[derive(Clone, Debug)]
pub struct CrusClient {
    endpoint: Endpoint,
}

impl CrusClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /session`: all upgrade sessions.
    pub async fn list_sessions(&self) -> Result<Vec<CrusSession>, CsmError> {
        self.endpoint.get_json(&["session"], &[]).await
    }

    /// `GET /session/{upgrade_id}`; `None` when CRUS answers 404.
    pub async fn get_session(&self, upgrade_id: &str) -> Result<Option<CrusSession>, CsmError> {
        self.endpoint
            .get_json_optional(&["session", upgrade_id])
            .await
    }
}
