//! Kubernetes Events on the objects a run touches (reason `Repopulation`, the run id in the
//! message), so `kubectl describe` on a restarted pod or a re-run Job says who did it and why.
//! Published as `events.k8s.io/v1` Events through kube-rs' [`Recorder`]; `kubectl describe`
//! reads the same Events through `core/v1`.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use uuid::Uuid;

use super::mode::Mode;

/// The `reason` of every Event the service publishes.
pub const REASON: &str = "Repopulation";

/// Who publishes: the controller name, and the pod it runs in when the chart tells it
/// (`POD_NAME` from the downward API).
fn reporter() -> Reporter {
    Reporter {
        controller: "etcd-repopulator".to_owned(),
        instance: std::env::var("POD_NAME")
            .ok()
            .filter(|name| !name.is_empty()),
    }
}

/// Publishes the Events of one step of one run. A dry run publishes nothing: it must not
/// change the cluster, and an Event saying "deleted" would be a lie. Each step has its own
/// recorder and publishes each (object, action) once, so the recorder never patches the series
/// of a repeated Event and the Role grants `create` only.
pub struct RunEvents {
    recorder: Option<Recorder>,
    context: String,
}

impl RunEvents {
    pub fn new(client: kube::Client, run_id: Uuid, service: &str, step: &str, mode: Mode) -> Self {
        RunEvents {
            recorder: (!mode.is_dry_run()).then(|| Recorder::new(client, reporter())),
            context: format!("etcd-repopulator run {run_id} (service {service}, step {step})"),
        }
    }

    /// Publishes a `Normal` (or, when `warning`, a `Warning`) Event on `regarding`. `action` is a
    /// short PascalCase verb (`Delete`, `Recreate`, ...); the message is the run's context
    /// followed by `what`. An Event that cannot be published is returned as the error, for the
    /// caller to note: Events are a courtesy and never stop a step.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        action: &str,
        what: &str,
    ) -> Result<(), kube::Error> {
        let Some(recorder) = &self.recorder else {
            return Ok(());
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: REASON.to_owned(),
            note: Some(note(&self.context, what)),
            action: action.to_owned(),
            secondary: None,
        };
        recorder.publish(&event, regarding).await
    }
}

/// The API server refuses notes over 1 kB; a long message is cut on a character boundary.
const NOTE_LIMIT: usize = 1024;

fn note(context: &str, what: &str) -> String {
    let mut note = format!("{context}: {what}");
    if note.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_to_what_the_server_accepts() {
        let what = "é".repeat(2000);
        let cut = note("ctx", &what);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.starts_with("ctx: é") && cut.ends_with('…'));
        assert_eq!(note("ctx", "short"), "ctx: short");
    }
}
