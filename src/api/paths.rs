//! Where the routes that other code names are served.

/// Where Alertmanager delivers its notifications (`webhooks::alertmanager`).
pub const ALERTMANAGER_PATH: &str = "/webhooks/alertmanager";
/// Where other automation starts runs with a signed request (`webhooks::generic`).
pub const GENERIC_PATH: &str = "/webhooks/generic";

/// Paths anyone may call: probes, metrics, the API description, and the generic webhook
/// (it authenticates by an HMAC signature of its body instead, see `webhooks`).
pub const OPEN_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    GENERIC_PATH,
];
