//! Manifests stored by the steps that delete an object and create it again, looked up across
//! runs: an object deleted by a run that stopped before creating it again (a crash, a failure)
//! is created by any later run from what that run stored.

use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, rows};

/// What an earlier step stored about an object it deleted (or was about to delete).
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub run_id: Uuid,
    pub step: String,
    /// The step's data: `manifest`, `original_uid`, ...
    pub data: Value,
}

impl Store {
    /// The newest data, of any run, of a step that re-creates the object `kind`/`name`
    /// (`api_version`) and stored its manifest; `namespace` must match the manifest's.
    pub async fn newest_stored_manifest(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Option<StoredManifest>> {
        let row: Option<(String, String, Json<Value>)> = sqlx::query_as(
            "SELECT run_id, name, data FROM steps \
             WHERE json_extract(spec, '$.action') = 'recreate' \
               AND json_extract(spec, '$.object.api_version') = ?1 \
               AND json_extract(spec, '$.object.kind') = ?2 \
               AND json_extract(spec, '$.object.name') = ?3 \
               AND json_extract(data, '$.manifest') IS NOT NULL \
               AND COALESCE(json_extract(data, '$.manifest.metadata.namespace'), ?4) = ?4 \
             ORDER BY started_at DESC, run_id DESC LIMIT 1",
        )
        .bind(api_version)
        .bind(kind)
        .bind(name)
        .bind(namespace)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(run_id, step, data)| {
            Ok(StoredManifest {
                run_id: rows::parse_uuid(&run_id)?,
                step,
                data: data.0,
            })
        })
        .transpose()
    }
}
