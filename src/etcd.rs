//! The runbook's prerequisite, checked: "A etcd cluster was rebuilt" — and healthy — before its
//! service is repopulated. Talks to the cluster's client service through etcd's own JSON
//! gateway (`/health`, `/v3/maintenance/status`, `/v3/kv/range`), which every etcd 3.4+ serves
//! on the client port, so no gRPC stack is needed for three read-only calls.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

pub mod backup_check;
pub mod backup_drill;
pub mod backups;
pub mod layout;
pub mod quota;
mod recovery_config;
pub mod restore_tool;
pub mod snapshot_db;

pub use recovery_config::{InvalidSetting, RecoveryConfig};

/// Where the etcd clusters are and whether to check them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Check each service's etcd cluster before repopulating it (and count its keys after).
    pub enabled: bool,
    /// Client URL of every cluster, overriding discovery: `{cluster}` is the cluster's name
    /// (`cray-bss-etcd`, `cray-bss-bitnami-etcd`) and `{namespace}` the services' namespace.
    /// Empty (the default): the client Service of the cluster's layout (`<cluster>-client` for
    /// etcd-operator, `<cluster>` for Bitnami), found in the cluster (see `etcd::layout`).
    pub endpoint: String,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM CA bundle that signed the clusters' server certificates (`https://` endpoints);
    /// without it, public CA roots are used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for clusters that require client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            enabled: true,
            endpoint: String::new(),
            timeout: Duration::from_secs(10),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl EtcdConfig {
    /// The client URL of `cluster` from the `endpoint` template; `None` when endpoints are
    /// discovered.
    pub fn endpoint_of(&self, cluster: &str, namespace: &str) -> Option<String> {
        (!self.endpoint.trim().is_empty()).then(|| {
            self.endpoint
                .replace("{cluster}", cluster)
                .replace("{namespace}", namespace)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd TLS setup: {0} (see [etcd] ca_file, cert_file, key_file)")]
    Tls(String),
    #[error("etcd at {url} is unreachable: {}", crate::errors::error_chain(.source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("etcd at {url} is not healthy: {reason}")]
    Unhealthy { url: String, reason: String },
    #[error("etcd at {url} answered {what} that cannot be read: {detail}")]
    Invalid {
        url: String,
        what: &'static str,
        detail: String,
    },
}

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

/// A member as `member/list` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EtcdMember {
    pub id: String,
    /// Empty for a member added but not started yet.
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
}

/// An alarm raised by a member: `NOSPACE` (the backend quota is full: writes are refused) or
/// `CORRUPT` (the member's data differs from the others').
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EtcdAlarm {
    pub member_id: String,
    pub alarm: String,
}

/// One member's own status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub member_id: String,
    pub version: String,
    pub leader: Option<String>,
    pub db_size: u64,
    /// The part of `db_size` in use (the rest is free pages a defragmentation returns).
    pub db_size_in_use: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    /// The revision of this member's own store: what it holds, whether or not the cluster has
    /// a quorum (a member answers its maintenance status alone).
    pub revision: i64,
    pub errors: Vec<String>,
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

fn strings(value: &Value) -> Vec<String> {
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
    http: reqwest::Client,
    base: String,
}

/// The data of one message of the gateway's snapshot stream (nothing for a blank line).
fn snapshot_message(line: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let message: Value =
        serde_json::from_slice(line).map_err(|e| format!("a message that is not JSON: {e}"))?;
    let error = &message["error"];
    if !error.is_null() {
        let text = error["message"].as_str().unwrap_or_default();
        return Err(format!("etcd stopped the snapshot: {text} ({error})"));
    }
    let blob = message["result"]["blob"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("a blob that is not base64: {e}"))
}

/// The store revision in a response's header.
fn revision(body: &Value) -> i64 {
    i64::try_from(int(&body["header"], "revision")).unwrap_or(i64::MAX)
}

/// The gateway encodes 64-bit integers as JSON strings and leaves out zero values.
fn int(value: &Value, key: &str) -> u64 {
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

    async fn call(&self, path: &str, body: Option<Value>) -> Result<(u16, Value), EtcdError> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.http.post(&url).json(&body),
            None => self.http.get(&url),
        };
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

    /// `/v3/cluster/member/list`: every member with its client URLs, as the cluster knows them.
    pub async fn members(&self) -> Result<Vec<EtcdMember>, EtcdError> {
        let (code, body) = self
            .call("/v3/cluster/member/list", Some(json!({})))
            .await?;
        self.expect_ok(code, &body, "a member list")?;
        let empty = Vec::new();
        let members = body["members"].as_array().unwrap_or(&empty);
        Ok(members
            .iter()
            .map(|m| EtcdMember {
                id: int(m, "ID").to_string(),
                name: m["name"].as_str().unwrap_or_default().to_owned(),
                client_urls: strings(&m["clientURLs"]),
                peer_urls: strings(&m["peerURLs"]),
                is_learner: m["isLearner"].as_bool().unwrap_or(false),
            })
            .collect())
    }

    /// `/v3/maintenance/alarm` (GET): the alarms raised in the cluster (`NOSPACE`, `CORRUPT`).
    pub async fn alarms(&self) -> Result<Vec<EtcdAlarm>, EtcdError> {
        let (code, body) = self
            .call("/v3/maintenance/alarm", Some(json!({ "action": "GET" })))
            .await?;
        self.expect_ok(code, &body, "the alarms")?;
        let empty = Vec::new();
        let alarms = body["alarms"].as_array().unwrap_or(&empty);
        Ok(alarms
            .iter()
            .map(|a| EtcdAlarm {
                member_id: int(a, "memberID").to_string(),
                alarm: match &a["alarm"] {
                    Value::String(name) => name.clone(),
                    Value::Number(n) if n.as_u64() == Some(1) => "NOSPACE".to_owned(),
                    Value::Number(n) if n.as_u64() == Some(2) => "CORRUPT".to_owned(),
                    other => other.to_string(),
                },
            })
            .filter(|a| a.alarm != "NONE")
            .collect())
    }

    /// `/v3/maintenance/status` of the member answering (not the whole cluster).
    pub async fn member_status(&self) -> Result<MemberStatus, EtcdError> {
        let (code, status) = self.call("/v3/maintenance/status", Some(json!({}))).await?;
        self.expect_ok(code, &status, "a status")?;
        let leader = int(&status, "leader");
        Ok(MemberStatus {
            member_id: int(&status["header"], "member_id").to_string(),
            version: status["version"].as_str().unwrap_or_default().to_owned(),
            leader: (leader != 0).then(|| leader.to_string()),
            db_size: int(&status, "dbSize"),
            db_size_in_use: int(&status, "dbSizeInUse"),
            raft_index: int(&status, "raftIndex"),
            raft_term: int(&status, "raftTerm"),
            revision: revision(&status),
            errors: strings(&status["errors"]),
        })
    }

    /// `/v3/maintenance/snapshot`: the member's whole backend, streamed into `out`, as
    /// `etcdctl snapshot save` writes it (the database, then the SHA-256 of it that etcd
    /// appends). The gateway streams one JSON object a line, each `{"result": {"blob":
    /// <base64>, ...}}` or `{"error": {...}}`. `timeout` bounds the whole transfer (the
    /// client's per-request timeout is for small answers). Returns the bytes written.
    pub async fn snapshot<W>(&self, out: &mut W, timeout: Duration) -> Result<u64, EtcdError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use futures::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;

        let url = format!("{}/v3/maintenance/snapshot", self.base);
        let unreachable = |source| EtcdError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let invalid = |detail: String| EtcdError::Invalid {
            url: self.base.clone(),
            what: "a snapshot",
            detail,
        };
        let response = self
            .http
            .post(&url)
            .timeout(timeout)
            .json(&json!({}))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            return Err(invalid(format!("HTTP {status}: {text:.200}")));
        }
        let mut stream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut written = 0u64;
        loop {
            let chunk = stream.next().await.transpose().map_err(unreachable)?;
            let finished = chunk.is_none();
            pending.extend_from_slice(chunk.as_deref().unwrap_or_default());
            // Every complete line; at the end, what is left too (it may lack its newline).
            while let Some(end) = pending
                .iter()
                .position(|&b| b == b'\n')
                .or((finished && !pending.is_empty()).then_some(pending.len()))
            {
                let line: Vec<u8> = pending.drain(..end).collect();
                if !pending.is_empty() {
                    pending.remove(0);
                }
                let data = snapshot_message(&line).map_err(invalid)?;
                out.write_all(&data)
                    .await
                    .map_err(|e| invalid(format!("writing it: {e}")))?;
                written += data.len() as u64;
            }
            if finished {
                break;
            }
        }
        out.flush()
            .await
            .map_err(|e| invalid(format!("writing it: {e}")))?;
        if written == 0 {
            return Err(invalid("an empty stream".to_owned()));
        }
        Ok(written)
    }

    fn expect_ok(&self, code: u16, body: &Value, what: &'static str) -> Result<(), EtcdError> {
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
    fn the_endpoint_template_names_the_cluster_and_namespace() {
        assert_eq!(
            EtcdConfig::default().endpoint_of("cray-bss-etcd", "services"),
            None
        );
        let config = EtcdConfig {
            endpoint: "http://{cluster}-client.{namespace}.svc:2379".to_owned(),
            ..EtcdConfig::default()
        };
        assert_eq!(
            config.endpoint_of("cray-bss-etcd", "services").as_deref(),
            Some("http://cray-bss-etcd-client.services.svc:2379")
        );
    }

    #[test]
    fn gateway_integers_are_strings_and_zero_is_absent() {
        let body = json!({ "count": "42", "dbSize": 7 });
        assert_eq!(int(&body, "count"), 42);
        assert_eq!(int(&body, "dbSize"), 7);
        assert_eq!(int(&body, "raftIndex"), 0);
    }
}
