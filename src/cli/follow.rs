//! Following a run through its Server-Sent Events (`GET /repopulations/{id}/events`): `log`
//! lines, `run` (the whole run, first and whenever a state changed) and a final `end`. A
//! dropped connection is resumed with `Last-Event-ID`, so no log line is lost or repeated.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::{
    client::Client,
    error::ClientError,
    output::{RunView, duration, local_time},
};

/// Consecutive failed connections after which following gives up.
const MAX_RECONNECTS: u32 = 5;
/// Waits between reconnects: 1 s, 2 s, 4 s, ... (capped).
const RECONNECT_BASE: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// One message of the stream.
pub enum Message {
    Log(LogLine),
    Run(Value),
    End(Value),
}

/// What the handler of a message wants next.
#[derive(PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// One line of the run's log, as the `log` message carries it.
#[derive(Debug, Deserialize)]
pub struct LogLine {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub level: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub step: Option<String>,
    pub message: String,
}

impl LogLine {
    /// `2025-01-01 12:00:00 INFO  reds/restart-pods: deleted 3 pod(s)`.
    pub fn render(&self) -> String {
        let origin = match (&self.service, &self.step) {
            (Some(service), Some(step)) => format!("{service}/{step}: "),
            (Some(service), None) => format!("{service}: "),
            _ => String::new(),
        };
        format!(
            "{} {:<5} {origin}{}",
            local_time(self.at),
            self.level.to_uppercase(),
            self.message
        )
    }
}

/// Reads the run's stream and hands each message to `handle` until it answers `Stop`, the
/// stream's `end` was handled, or the connection cannot be made again.
pub async fn follow(
    client: &Client,
    id: &str,
    mut handle: impl FnMut(Message) -> Result<Flow, ClientError>,
) -> Result<(), ClientError> {
    let mut last_log: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let lost = match client.events(id, last_log).await {
            Ok(response) => {
                let mut stream = response.bytes_stream().eventsource();
                let mut lost = None;
                while let Some(event) = stream.next().await {
                    let event = match event {
                        Ok(event) => event,
                        Err(err) => {
                            lost = Some(err.to_string());
                            break;
                        }
                    };
                    failures = 0;
                    let data = || {
                        serde_json::from_str::<Value>(&event.data).map_err(|e| {
                            ClientError::InvalidResponse {
                                url: id.to_owned(),
                                reason: format!("event {:?} is not JSON: {e}", event.event),
                            }
                        })
                    };
                    let message = match event.event.as_str() {
                        "log" => {
                            let line: LogLine = serde_json::from_value(data()?).map_err(|e| {
                                ClientError::InvalidResponse {
                                    url: id.to_owned(),
                                    reason: format!("a log event: {e}"),
                                }
                            })?;
                            last_log = Some(line.id);
                            Message::Log(line)
                        }
                        "run" => Message::Run(data()?),
                        "end" => {
                            handle(Message::End(data()?))?;
                            return Ok(());
                        }
                        // Comments (keep-alives) and messages of later versions.
                        _ => continue,
                    };
                    if handle(message)? == Flow::Stop {
                        return Ok(());
                    }
                }
                lost.unwrap_or_else(|| "the stream closed before the run ended".to_owned())
            }
            // The service answered, and not with a stream: that will not change on a retry.
            Err(err @ ClientError::Problem { .. }) => return Err(err),
            Err(err) => err.to_string(),
        };
        failures += 1;
        if failures > MAX_RECONNECTS {
            return Err(ClientError::StreamLost {
                id: id.to_owned(),
                reason: lost,
            });
        }
        let wait = RECONNECT_BASE
            .saturating_mul(1 << (failures - 1).min(4))
            .min(RECONNECT_MAX);
        eprintln!(
            "etcd-repopulator: following run {id}: {lost}; reconnecting in {}s",
            wait.as_secs()
        );
        tokio::time::sleep(wait).await;
    }
}

/// Remembers the state of every step and reports the ones that changed.
#[derive(Default)]
pub struct StepTracker {
    seen: HashMap<(String, String), String>,
}

impl StepTracker {
    /// A line per step whose state differs from the last run seen:
    /// `12:00:01  reds  restart-pods  succeeded (1.2s): restarted 3 pod(s)`.
    pub fn changes(&mut self, run: &RunView) -> Vec<String> {
        let mut lines = Vec::new();
        for task in &run.services {
            for step in &task.steps {
                let key = (task.service.clone(), step.name.clone());
                if self.seen.get(&key) == Some(&step.state) {
                    continue;
                }
                // Steps still pending when first seen are not news.
                let first = !self.seen.contains_key(&key);
                self.seen.insert(key, step.state.clone());
                if first && step.state == "pending" {
                    continue;
                }
                let at = step
                    .finished_at
                    .or(step.started_at)
                    .unwrap_or_else(Utc::now);
                let mut line = format!(
                    "{}  {:<11}  {:<28}  {}",
                    at.with_timezone(&chrono::Local).format("%H:%M:%S"),
                    task.service,
                    step.name,
                    step.state
                );
                if step.finished_at.is_some() {
                    line.push_str(&format!(
                        " ({})",
                        duration(step.started_at, step.finished_at)
                    ));
                    if let Some(message) = &step.message {
                        line.push_str(": ");
                        line.push_str(message);
                    }
                }
                lines.push(line);
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;
    use serde_json::json;

    use super::*;

    #[test]
    fn only_changed_steps_make_lines() {
        let run = |first: &str, second: &str| {
            RunView::deserialize(json!({
                "id": "r", "state": "running",
                "services": [{"service": "reds", "state": "running", "steps": [
                    {"name": "restart-pods", "state": first, "started_at": "2025-01-01T00:00:00Z"},
                    {"name": "verify", "state": second}
                ]}]
            }))
            .unwrap()
        };
        let mut tracker = StepTracker::default();
        let lines = tracker.changes(&run("running", "pending"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("reds") && lines[0].contains("restart-pods"));
        assert!(lines[0].ends_with("running"), "{lines:?}");
        assert!(tracker.changes(&run("running", "pending")).is_empty());
        let lines = tracker.changes(&run("succeeded", "running"));
        assert_eq!(lines.len(), 2, "{lines:?}");
    }
}
