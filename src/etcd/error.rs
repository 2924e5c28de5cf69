//! What a request to etcd could not do.

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
