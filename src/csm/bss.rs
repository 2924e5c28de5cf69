//! BSS boot parameters (`bss.yaml`: `GET /boot/v1/bootparameters`).

use super::http::Endpoint;
use csm_wire::BootParams;

use super::error::CsmError;

#[derive(Clone, Debug)]
pub struct BssClient {
    endpoint: Endpoint,
}

impl BssClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /boot/v1/bootparameters` without filters: every entry BSS knows. After an etcd
    /// rebuild this is empty until the `cray-reds-init` Job has run again.
    pub async fn list_bootparameters(&self) -> Result<Vec<BootParams>, CsmError> {
        // Go services encode an empty slice as `null`; treat that as "no entries".
        let entries: Option<Vec<BootParams>> = self
            .endpoint
            .get_json(&["boot", "v1", "bootparameters"], &[])
            .await?;
        Ok(entries.unwrap_or_default())
    }
}
