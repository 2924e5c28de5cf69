//! What the webhook handlers are set up with at start: the HMAC key of the generic webhook
//! (kept out of Debug output and logs) and its headers, the replay window, the clusters webhook
//! runs may recover, and Alertmanager's rules.

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use crate::{
    config::{AlertmanagerConfig, WebhooksConfig},
    model::EtcdMode,
};

pub const SIGNATURE_HEADER: &str = "x-signature-256";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// Keys shorter than this are refused at start: an HMAC key is only as strong as it is long.
const MIN_KEY_LEN: usize = 16;

/// The HMAC key, kept out of Debug output and logs.
#[derive(Clone)]
pub struct HmacKey(pub(in crate::api) Vec<u8>);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("cannot read the webhook HMAC key {path} (webhooks.hmac_key_file): {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the webhook HMAC key {path} (webhooks.hmac_key_file) is {len} bytes; use at least \
         {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { path: String, len: usize },
}

/// What the webhook handlers need, built once at start.
#[derive(Debug)]
pub struct Webhooks {
    pub key: Option<HmacKey>,
    pub replay_window: Duration,
    /// `webhooks.recover_clusters`: the etcd mode webhook runs may use on each cluster listed.
    pub recover_clusters: BTreeMap<String, EtcdMode>,
    pub alertmanager: AlertmanagerConfig,
}

impl Webhooks {
    pub fn from_config(config: &WebhooksConfig) -> Result<Webhooks, WebhookSetupError> {
        let key = config
            .hmac_key_file
            .as_deref()
            .map(load_key)
            .transpose()?
            .flatten();
        Ok(Webhooks {
            key,
            replay_window: config.replay_window,
            recover_clusters: config.recover_clusters.clone(),
            alertmanager: config.alertmanager.clone(),
        })
    }
}

fn load_key(path: &Path) -> Result<Option<HmacKey>, WebhookSetupError> {
    let mut bytes = std::fs::read(path).map_err(|source| WebhookSetupError::Read {
        path: path.display().to_string(),
        source,
    })?;
    // Secrets written with `echo` or an editor end with a newline nobody means as key.
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        tracing::warn!(path = %path.display(), "the webhook HMAC key file is empty: POST /webhooks/generic is disabled");
        return Ok(None);
    }
    if bytes.len() < MIN_KEY_LEN {
        return Err(WebhookSetupError::TooShort {
            path: path.display().to_string(),
            len: bytes.len(),
        });
    }
    Ok(Some(HmacKey(bytes)))
}
