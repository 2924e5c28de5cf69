//! Fake Kubernetes API server (subset used by the handlers, with the real server's semantics).
