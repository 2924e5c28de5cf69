//! BOS v2 session templates (`bos.yaml`).

/// Properties of `V2SessionTemplate` that `bos.yaml` marks `readOnly`. The schema also says
/// `additionalProperties: false`, and BOS (connexion) rejects read-only properties in a request
/// body, so they must be stripped from a template read with GET before it is PUT back. The name
/// travels in the path instead.
pub const SESSION_TEMPLATE_READ_ONLY_FIELDS: [&str; 3] = ["name", "tenant", "links"];
