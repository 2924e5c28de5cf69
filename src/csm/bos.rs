//! BOS v2 session templates (`bos.yaml`: `/v2/sessiontemplates`).
//!
//! Templates are kept as `serde_json::Value`: we store them verbatim in a snapshot and put them
//! back after a rebuild, and a typed struct would silently drop fields a newer BOS adds.

use serde_json::Value;

use super::http::Endpoint;
use csm_wire::SESSION_TEMPLATE_READ_ONLY_FIELDS;

use super::error::CsmError;

#[derive(Clone, Debug)]
pub struct BosClient {
    endpoint: Endpoint,
}

impl BosClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /v2/sessiontemplates`: every template, as BOS returns it (with `name`).
    pub async fn list_session_templates(&self) -> Result<Vec<Value>, CsmError> {
        self.endpoint
            .get_json(&["v2", "sessiontemplates"], &[])
            .await
    }

    /// `GET /v2/sessiontemplates/{session_template_id}`; `None` when BOS answers 404.
    pub async fn get_session_template(&self, name: &str) -> Result<Option<Value>, CsmError> {
        self.endpoint
            .get_json_optional(&["v2", "sessiontemplates", name])
            .await
    }

    /// `PUT /v2/sessiontemplates/{session_template_id}`: creates or replaces the template and
    /// returns it as stored. `template` may be exactly what GET returned: read-only fields are
    /// removed here (see [`SESSION_TEMPLATE_READ_ONLY_FIELDS`]), all others are sent untouched.
    pub async fn put_session_template(
        &self,
        name: &str,
        template: &Value,
    ) -> Result<Value, CsmError> {
        let Value::Object(fields) = template else {
            return Err(CsmError::InvalidRequest {
                service: self.endpoint.service(),
                reason: format!("session template {name:?} is not a JSON object"),
            });
        };
        let mut body = fields.clone();
        for field in SESSION_TEMPLATE_READ_ONLY_FIELDS {
            body.remove(field);
        }
        self.endpoint
            .put_json(&["v2", "sessiontemplates", name], &body)
            .await
    }
}
