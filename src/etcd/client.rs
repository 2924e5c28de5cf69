//! The connection to one etcd endpoint (a client Service, or one member's own address)
//! through etcd's JSON gateway (`/health`, `/v3/maintenance/status`, `/v3/kv/range`), and the
//! key-value reads: no gRPC stack is needed, and every call is plain HTTP and JSON.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{config::EtcdConfig, error::EtcdError};

/// What the cluster says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdStatus {
    pub version: String,
    /// Member id of the leader; `None` when the cluster has none (no quorum).
    pub leader: Option<String>,
    pub db_size: u64,
    /// Bytes of the database in use (etcd ≥ 3.4; the rest is freed by a defrag).
    pub db_size_in_use: Option<u64>,
    pub raft_index: u64,
    /// The store's revision (the header of the count: a linearizable read).
    #[serde(default)]
    pub revision: i64,
    /// Keys in the whole keyspace.
    pub keys: u64,
}

/// A key as a keys-only range lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: u64,
}

/// One page of [`EtcdClient::key_page`].
#[derive(Clone, Debug)]
pub struct KeyPage {
    pub keys: Vec<KeyEntry>,
    /// The revision the page was read at.
    pub revision: u64,
    /// More keys follow the last one.
    pub more: bool,
}

pub(super) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub struct EtcdClient {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
}

/// The store revision in a response's header.
pub(super) fn revision(body: &Value) -> i64 {
    i64::try_from(int(&body["header"], "revision")).unwrap_or(i64::MAX)
}

/// The gateway encodes 64-bit integers as JSON strings and leaves out zero values.
pub(super) fn int(value: &Value, key: &str) -> u64 {
    match &value[key] {
        Value::String(text) => text.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

impl EtcdClient {
    /// A client for the cluster at `base`, with the TLS material `config` names.
    pub fn new(base: &str, config: &EtcdConfig) -> Result<Self, EtcdError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| EtcdError::Tls(format!("{}: {e}", path.display())))
        };
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)));
        if let Some(path) = &config.ca_file {
            let bundle = reqwest::Certificate::from_pem_bundle(&read(path)?)
                .map_err(|e| EtcdError::Tls(format!("{}: {e}", path.display())))?;
            for certificate in bundle {
                builder = builder.add_root_certificate(certificate);
            }
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| EtcdError::Tls(format!("{}: {e}", cert.display())))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(EtcdError::Tls(
                    "cert_file and key_file go together: set both or neither".to_owned(),
                ));
            }
        }
        Ok(EtcdClient {
            http: builder
                .build()
                .map_err(|e| EtcdError::Tls(format!("building the HTTP client: {e}")))?,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub(super) async fn call(
        &self,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), EtcdError> {
        self.call_within(path, body, None).await
    }

    /// [`EtcdClient::call`] bounded by `timeout` rather than the per-request timeout (for the
    /// calls that take as long as the database is large: a defragmentation).
    pub(super) async fn call_within(
        &self,
        path: &str,
        body: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), EtcdError> {
        let url = format!("{}{path}", self.base);
        let mut request = match body {
            Some(body) => self.http.post(&url).json(&body),
            None => self.http.get(&url),
        };
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let unreachable = |source| EtcdError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        let value = serde_json::from_str(&text).map_err(|e| EtcdError::Invalid {
            url: self.base.clone(),
            what: "a body",
            detail: format!("{e} (HTTP {status}: {text:.200})"),
        })?;
        Ok((status, value))
    }

    /// `/health`: healthy means a leader, and a quorum read that succeeded.
    pub async fn check_health(&self) -> Result<(), EtcdError> {
        let (status, body) = self.call("/health", None).await?;
        if status == 200 && body["health"] == "true" {
            return Ok(());
        }
        let reason = match body["reason"].as_str() {
            Some(reason) if !reason.is_empty() => reason.to_owned(),
            _ => format!("HTTP {status}, {body}"),
        };
        Err(EtcdError::Unhealthy {
            url: self.base.clone(),
            reason,
        })
    }

    /// Version, leader and size from the member answering, and the number of keys.
    pub async fn status(&self) -> Result<EtcdStatus, EtcdError> {
        let (code, status) = self.call("/v3/maintenance/status", Some(json!({}))).await?;
        self.expect_ok(code, &status, "a status")?;
        let (keys, revision) = self.key_count(false).await?;
        let leader = int(&status, "leader");
        Ok(EtcdStatus {
            version: status["version"].as_str().unwrap_or_default().to_owned(),
            leader: (leader != 0).then(|| leader.to_string()),
            db_size: int(&status, "dbSize"),
            db_size_in_use: status
                .get("dbSizeInUse")
                .map(|_| int(&status, "dbSizeInUse")),
            raft_index: int(&status, "raftIndex"),
            revision,
            keys,
        })
    }

    /// `/v3/kv/range` of the whole keyspace (from "\0" to "\0", base64 "AA=="), counted
    /// (`count_only`), not read: the number of keys and the revision the count is at.
    pub async fn count_keys(&self) -> Result<(u64, u64), EtcdError> {
        let (keys, revision) = self.key_count(false).await?;
        Ok((keys, u64::try_from(revision).unwrap_or(0)))
    }

    /// `/v3/kv/range` from `from` to the end of the keyspace, keys only, in key order, at most
    /// `limit` keys, at `revision` (the store as it was then; `None`: now). Read-only: a
    /// range never changes the cluster. The next page starts after the last key.
    pub async fn key_page(
        &self,
        from: &[u8],
        revision: Option<u64>,
        limit: u64,
    ) -> Result<KeyPage, EtcdError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        // The empty key is not a key: `\0` is the first there is.
        let from: &[u8] = if from.is_empty() { b"\0" } else { from };
        let mut range = json!({
            "key": b64.encode(from),
            "range_end": "AA==",
            "keys_only": true,
            "limit": limit,
        });
        if let Some(revision) = revision {
            range["revision"] = json!(revision);
        }
        let (code, body) = self.call("/v3/kv/range", Some(range)).await?;
        self.expect_ok(code, &body, "a key listing")?;
        let empty = Vec::new();
        let keys = body["kvs"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|kv| {
                let key = b64
                    .decode(kv["key"].as_str().unwrap_or_default())
                    .map_err(|e| EtcdError::Invalid {
                        url: self.base.clone(),
                        what: "a key listing",
                        detail: format!("a key that is not base64: {e}"),
                    })?;
                Ok(KeyEntry {
                    key,
                    mod_revision: int(kv, "mod_revision"),
                })
            })
            .collect::<Result<Vec<_>, EtcdError>>()?;
        Ok(KeyPage {
            keys,
            revision: int(&body["header"], "revision"),
            more: body["more"].as_bool().unwrap_or(false),
        })
    }

    /// The keys of the whole keyspace and the store's revision. `serializable`: read from the
    /// member answering, without a quorum (for a member of a cluster that lost it); otherwise a
    /// linearizable read.
    pub async fn key_count(&self, serializable: bool) -> Result<(u64, i64), EtcdError> {
        let range = json!({
            "key": "AA==",
            "range_end": "AA==",
            "count_only": true,
            "serializable": serializable,
        });
        let (code, count) = self.call("/v3/kv/range", Some(range)).await?;
        self.expect_ok(code, &count, "a key count")?;
        Ok((int(&count, "count"), self::revision(&count)))
    }

    /// The keys whose last change is newer than `revision` (their `mod_revision` is above it):
    /// what a restore of a backup at `revision` would take back; `serializable` as for
    /// [`EtcdClient::key_count`]. etcd applies the revision filters after it counts, so a
    /// count-only range would count every key: the keys (not their values) are listed.
    pub async fn changed_since(&self, revision: i64, serializable: bool) -> Result<u64, EtcdError> {
        let range = json!({
            "key": "AA==",
            "range_end": "AA==",
            "keys_only": true,
            "min_mod_revision": revision.saturating_add(1).to_string(),
            "serializable": serializable,
        });
        let (code, listed) = self.call("/v3/kv/range", Some(range)).await?;
        self.expect_ok(code, &listed, "a key listing")?;
        Ok(listed["kvs"].as_array().map_or(0, |kvs| kvs.len() as u64))
    }

    /// `/v3/kv/compaction` up to `revision` (the versions of keys older than it are dropped;
    /// the current value of every key stays), `physical`: answered once the compaction is
    /// applied to the backend, so that a defragmentation after it returns the freed space.
    /// A revision already compacted is an error (`required revision has been compacted`).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let request = json!({ "revision": revision.to_string(), "physical": true });
        let (code, body) = self.call("/v3/kv/compaction", Some(request)).await?;
        self.expect_ok(code, &body, "a compaction")
    }

    pub(super) fn expect_ok(
        &self,
        code: u16,
        body: &Value,
        what: &'static str,
    ) -> Result<(), EtcdError> {
        if code == 200 {
            Ok(())
        } else {
            Err(EtcdError::Invalid {
                url: self.base.clone(),
                what,
                detail: format!("HTTP {code}: {}", body["message"].as_str().unwrap_or("")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_integers_are_strings_and_zero_is_absent() {
        let body = json!({ "count": "42", "dbSize": 7 });
        assert_eq!(int(&body, "count"), 42);
        assert_eq!(int(&body, "dbSize"), 7);
        assert_eq!(int(&body, "raftIndex"), 0);
    }
}
