//! Manifests stored by the steps that delete an object and create it again, looked up across
//! runs: an object deleted by a run that stopped before creating it again (a crash, a failure)
//! is created by any later run from what that run stored.

use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{error::Result, handle::Store, rows};

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
        // A `recreate` step's own data, or the data a rebuild of an etcd-operator cluster
        // keeps of the re-create it does (under `recreate`, with the object it names).
        let row: Option<(String, String, Json<Value>)> = sqlx::query_as(
            "SELECT run_id, name, data FROM ( \
               SELECT run_id, name, started_at, data FROM steps \
               WHERE json_extract(spec, '$.action') = 'recreate' \
                 AND json_extract(spec, '$.object.api_version') = ?1 \
                 AND json_extract(spec, '$.object.kind') = ?2 \
                 AND json_extract(spec, '$.object.name') = ?3 \
               UNION ALL \
               SELECT run_id, name, started_at, json_extract(data, '$.recreate') AS data \
               FROM steps \
               WHERE json_extract(data, '$.recreate.object.api_version') = ?1 \
                 AND json_extract(data, '$.recreate.object.kind') = ?2 \
                 AND json_extract(data, '$.recreate.object.name') = ?3 \
             ) \
             WHERE json_extract(data, '$.manifest') IS NOT NULL \
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use crate::{
        model::{Service, new_run_id},
        store::{NewRun, NewStep, NewTask, StepKey, Store},
    };

    /// A run of BSS with one step `spec` that stored `data`.
    async fn run_with(
        store: &Store,
        spec: serde_json::Value,
        data: serde_json::Value,
    ) -> uuid::Uuid {
        let id = new_run_id();
        let new = NewRun {
            id,
            reason: None,
            dry_run: false,
            requested_by: "test".to_owned(),
            idempotency: None,
            csm_release: None,
            etcd: Default::default(),
            backup: None,
            confirm: Vec::new(),
            discard_newer: false,
            tasks: vec![NewTask {
                service: Service::Bss,
                steps: vec![NewStep {
                    name: "etcd-recover".to_owned(),
                    spec,
                }],
            }],
        };
        store.create_run(new, Utc::now()).await.unwrap();
        let key = StepKey {
            run_id: id,
            service: Service::Bss,
            ordinal: 0,
        };
        store.start_step(key, Utc::now()).await.unwrap();
        store.save_step_data(key, &data).await.unwrap();
        id
    }

    #[tokio::test]
    async fn the_manifest_a_rebuild_stored_of_its_re_create_is_found_by_later_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("runs.db").to_str().unwrap())
            .await
            .unwrap();
        let object = json!({
            "api_version": "etcd.database.coreos.com/v1beta2",
            "kind": "EtcdCluster",
            "plural": "etcdclusters",
            "name": "cray-bss-etcd",
        });
        let manifest = json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2",
            "kind": "EtcdCluster",
            "metadata": { "name": "cray-bss-etcd" },
            "spec": { "size": 3 },
        });
        let id = run_with(
            &store,
            json!({ "action": "rebuild_operator_cluster", "cluster": "cray-bss-etcd" }),
            json!({
                "cluster": "cray-bss-etcd",
                "deployment": { "name": "cray-bss", "replicas": 1 },
                "recreate": { "object": object, "manifest": manifest, "original_uid": "u1" },
            }),
        )
        .await;
        let found = store
            .newest_stored_manifest(
                "etcd.database.coreos.com/v1beta2",
                "EtcdCluster",
                "cray-bss-etcd",
                "services",
            )
            .await
            .unwrap()
            .expect("found");
        assert_eq!(found.run_id, id);
        assert_eq!(found.data["manifest"], manifest);
        assert_eq!(found.data["original_uid"], "u1");
        // Another object's is not.
        let other = store
            .newest_stored_manifest(
                "etcd.database.coreos.com/v1beta2",
                "EtcdCluster",
                "cray-bos-etcd",
                "services",
            )
            .await
            .unwrap();
        assert!(other.is_none());
    }
}
