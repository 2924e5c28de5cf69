//! `GET /repopulations/{id}/events`: Server-Sent Events with the run's log and state changes,
//! live while it executes, ending when it stops; the stored log for a finished run.

use std::time::Duration;

use etcd_repopulator::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sim::SimOptions;

use crate::common::{TestApp, WAIT, problem, start, start_with};

/// One SSE message.
#[derive(Debug)]
struct Message {
    event: String,
    id: Option<i64>,
    data: Value,
}

/// Reads the whole stream (bounded by WAIT) and parses its messages; comments are skipped.
async fn read_stream(app: &TestApp, id: &str, last_event_id: Option<i64>) -> Vec<Message> {
    let mut request = app
        .http
        .get(app.url(&format!("/repopulations/{id}/events")));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut resp = resp;
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            bytes.extend_from_slice(&chunk);
        }
    })
    .await
    .expect("the stream ends when the run ends");
    let text = String::from_utf8(bytes).unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (!event.is_empty()).then(|| Message {
                event,
                id,
                data: serde_json::from_str(&data).unwrap(),
            })
        })
        .collect()
}

fn run_states(messages: &[Message]) -> Vec<String> {
    let mut states: Vec<String> = Vec::new();
    for m in messages.iter().filter(|m| m.event == "run") {
        let state = m.data["state"].as_str().unwrap().to_owned();
        if states.last() != Some(&state) {
            states.push(state);
        }
    }
    states
}

#[tokio::test]
async fn live_stream_has_the_log_and_state_changes_in_order_and_ends() {
    // Slow enough that the run is still executing when the stream starts.
    let options = SimOptions {
        kubelet_ready_delay: Duration::from_millis(400),
        pod_termination_delay: Duration::from_millis(200),
        ..SimOptions::default()
    };
    let app = start_with(options, Config::default()).await;
    let id = app
        .start_run(json!({"services": ["reds", "meds"], "reason": "sse"}))
        .await;
    let messages = read_stream(&app, &id, None).await;

    // Log lines: increasing ids, from "run created" to the run's final line.
    let log: Vec<&Message> = messages.iter().filter(|m| m.event == "log").collect();
    let ids: Vec<i64> = log.iter().map(|m| m.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        log[0].data["message"]
            .as_str()
            .unwrap()
            .starts_with("run created")
    );
    let last = log.last().unwrap();
    assert!(
        last.data["message"]
            .as_str()
            .unwrap()
            .starts_with("run succeeded"),
        "{last:?}"
    );
    for service in ["reds", "meds"] {
        assert!(
            log.iter().any(|m| m.data["service"] == service
                && m.data["message"].as_str().unwrap().starts_with("succeeded")),
            "{service}"
        );
    }

    // State changes: the run was followed while running and ended succeeded, in that order.
    let states = run_states(&messages);
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
    let allowed = ["pending", "running", "succeeded"];
    let positions: Vec<usize> = states
        .iter()
        .map(|s| allowed.iter().position(|a| a == s).expect("known state"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{states:?}");
    assert!(
        states.iter().any(|s| s == "running"),
        "seen live: {states:?}"
    );
    // Step states change too while running, so there are several `run` messages.
    assert!(messages.iter().filter(|m| m.event == "run").count() > 2);

    let end = messages.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["state"], "succeeded");
}

#[tokio::test]
async fn finished_run_streams_its_stored_log_and_resumes_after_last_event_id() {
    let app = start().await;
    let id = app.start_run(json!({"services": ["reds"]})).await;
    app.finished_run(&id).await;

    let messages = read_stream(&app, &id, None).await;
    let log_ids: Vec<i64> = messages
        .iter()
        .filter(|m| m.event == "log")
        .map(|m| m.id.unwrap())
        .collect();
    assert!(log_ids.len() >= 4, "{messages:?}");
    assert_eq!(run_states(&messages), ["succeeded"]);
    assert_eq!(messages.last().unwrap().event, "end");

    // Resume after the second line: the rest of the log only.
    let rest = read_stream(&app, &id, Some(log_ids[1])).await;
    let rest_ids: Vec<i64> = rest
        .iter()
        .filter(|m| m.event == "log")
        .map(|m| m.id.unwrap())
        .collect();
    assert_eq!(rest_ids, log_ids[2..]);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_problems() {
    let app = start().await;
    let get = |path: String| app.http.get(app.url(&path)).send();
    problem(
        get("/repopulations/not-a-uuid/events".into())
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        get(format!("/repopulations/{}/events", uuid::Uuid::now_v7()))
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let id = app
        .start_run(json!({"services": ["reds"], "dry_run": true}))
        .await;
    let resp = app
        .http
        .get(app.url(&format!("/repopulations/{id}/events")))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::BAD_REQUEST).await;
    app.finished_run(&id).await;
}
