//! Errors as people read them.

/// An error and its sources, `: `-separated, leaving out a source whose text the error's own
/// already contains (reqwest says "error sending request for url (...)"; what went wrong, e.g.
/// "Connection refused" or "invalid peer certificate", is a few sources down).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
