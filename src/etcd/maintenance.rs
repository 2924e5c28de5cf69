//! What one member says of itself and does on its own (`/v3/maintenance/*`): its status,
//! which it answers alone (without a quorum), the cluster's alarms, and its snapshot.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    client::{EtcdClient, int, revision, strings},
    error::EtcdError,
};

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

impl EtcdClient {
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

    /// `/v3/maintenance/alarm` (DEACTIVATE) of `alarm`: the member may take writes again (as
    /// far as the alarm goes: a `NOSPACE` comes back at the next write unless space was
    /// freed first, by a compaction and a defragmentation).
    pub async fn disarm(&self, alarm: &EtcdAlarm) -> Result<(), EtcdError> {
        let request = json!({
            "action": "DEACTIVATE",
            "memberID": alarm.member_id,
            "alarm": alarm.alarm,
        });
        let (code, body) = self.call("/v3/maintenance/alarm", Some(request)).await?;
        self.expect_ok(code, &body, "an alarm disarm")
    }

    /// Every alarm raised, disarmed (what `etcdctl alarm disarm` does): the alarms that were.
    pub async fn disarm_all(&self) -> Result<Vec<EtcdAlarm>, EtcdError> {
        let alarms = self.alarms().await?;
        for alarm in &alarms {
            self.disarm(alarm).await?;
        }
        Ok(alarms)
    }

    /// `/v3/maintenance/defragment` of the member answering (this client's endpoint is one
    /// member's own address): its backend rewritten without the free pages, so that its
    /// database shrinks to what is in use. The member serves nothing while it runs, which takes
    /// as long as the database is large: `timeout` bounds it.
    pub async fn defragment(&self, timeout: Duration) -> Result<(), EtcdError> {
        let (code, body) = self
            .call_within("/v3/maintenance/defragment", Some(json!({})), Some(timeout))
            .await?;
        self.expect_ok(code, &body, "a defragmentation")
    }

    /// `/v3/maintenance/transfer-leadership` to the member `target` (a decimal member id):
    /// only the leader does it, so this client's endpoint is the leader's own address (any
    /// other member answers `not leader`). Answered once the target leads.
    pub async fn move_leader(&self, target: &str) -> Result<(), EtcdError> {
        let (code, body) = self
            .call(
                "/v3/maintenance/transfer-leadership",
                Some(json!({ "targetID": target })),
            )
            .await?;
        self.expect_ok(code, &body, "a leadership transfer")
    }

    /// [`EtcdClient::snapshot`] of the member answering into the file `path`, written beside it
    /// first (`<path>.part`) and renamed once whole and synced, so that `path` is never a
    /// partial snapshot. Returns the bytes written.
    pub async fn snapshot_to_file(&self, path: &Path, timeout: Duration) -> Result<u64, EtcdError> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let failed = |detail: String| EtcdError::Invalid {
            url: self.base.clone(),
            what: "a snapshot",
            detail,
        };
        let written = async {
            let mut file = tokio::fs::File::create(&part)
                .await
                .map_err(|e| failed(format!("creating {}: {e}", part.display())))?;
            let written = self.snapshot(&mut file, timeout).await?;
            file.sync_all()
                .await
                .map_err(|e| failed(format!("syncing {}: {e}", part.display())))?;
            tokio::fs::rename(&part, path)
                .await
                .map_err(|e| failed(format!("renaming it to {}: {e}", path.display())))?;
            Ok(written)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        written
    }
}
