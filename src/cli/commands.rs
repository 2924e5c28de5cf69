//! The client commands (`repopulations`, `services`, `snapshots`, `etcd-clusters`): call the
//! service's API and print the answer as a table (on a terminal), TOML (otherwise, like
//! `cray`) or JSON. Problems go to stderr and make the process exit non-zero.

use std::process::ExitCode;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ClientOptions, EtcdArg, EtcdClustersArgs, EtcdClustersCommand, Format, RepopulationsArgs,
    RepopulationsCommand, ServicesArgs, ServicesCommand, SnapshotsArgs, SnapshotsCommand,
    client::{Client, encode, run_path},
    error::ClientError,
    follow::{Flow, Message, StepTracker, follow},
    output::{self, RunView, View, emit},
};

/// The exit status of a command whose reader went away, as if SIGPIPE had ended it.
const EXIT_OUTPUT_CLOSED: u8 = 141;
/// How the runner logs a step's start and end (which `--wait` shows as step lines).
const STEP_LIFECYCLE: [&str; 6] = [
    "started",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "action required",
];
/// The exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
const EXIT_INTERRUPTED: u8 = 130;

/// Prints `result`'s error (if any) on stderr and turns it into the process's exit status. A
/// closed output ends the command quietly.
pub fn report(result: Result<ExitCode, ClientError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(ClientError::OutputClosed) => ExitCode::from(EXIT_OUTPUT_CLOSED),
        Err(err) => {
            eprintln!("etcd-repopulator: {err}");
            ExitCode::FAILURE
        }
    }
}

fn exit_for(run: &Value) -> ExitCode {
    if run.get("state").and_then(Value::as_str) == Some("succeeded") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn repopulations(
    options: &ClientOptions,
    args: RepopulationsArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let format = output::resolve(options.format);
    let (response, view) = match args.command {
        RepopulationsCommand::Create {
            services,
            dry_run,
            reason,
            etcd,
            backup,
            confirm,
            discard_newer,
            wait,
            yes,
        } => {
            if etcd.mode().is_destructive()
                && !dry_run
                && !yes
                && !approved(etcd, &confirm, &services)?
            {
                eprintln!("Not started.");
                return Ok(ExitCode::FAILURE);
            }
            let mut body = Map::new();
            body.insert("services".to_owned(), json!(services));
            if dry_run {
                body.insert("dry_run".to_owned(), Value::Bool(true));
            }
            if let Some(reason) = reason {
                body.insert("reason".to_owned(), Value::String(reason));
            }
            // Only what was asked for: the service applies the defaults (and says what is
            // wrong with a combination, e.g. --backup without --etcd restore).
            if etcd != EtcdArg::Check {
                body.insert("etcd".to_owned(), json!(etcd.mode()));
            }
            if let Some(backup) = backup {
                body.insert("backup".to_owned(), Value::String(backup));
            }
            if discard_newer {
                body.insert("discard_newer".to_owned(), Value::Bool(true));
            }
            if !confirm.is_empty() {
                body.insert("confirm".to_owned(), json!(confirm));
            }
            let run = client
                .call(
                    Method::POST,
                    "/repopulations",
                    &[],
                    Some(Value::Object(body)),
                )
                .await?;
            if wait {
                return wait_for_end(&client, &run, format).await;
            }
            if format == Format::Table
                && let Some(id) = run.get("id").and_then(Value::as_str)
            {
                output::print(&run, format, View::Run)?;
                emit(&format!(
                    "\nFollow it: etcd-repopulator repopulations logs {id} --follow"
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            (run, View::Run)
        }
        RepopulationsCommand::Describe { id } => (
            client
                .call(
                    Method::GET,
                    &run_path(&resolve_id(&client, &id).await?, ""),
                    &[],
                    None,
                )
                .await?,
            View::Run,
        ),
        RepopulationsCommand::List {
            state,
            service,
            limit,
            cursor,
            all,
        } => {
            let query: Vec<(&str, String)> = [
                ("state", state),
                ("service", service),
                ("limit", limit.map(|n| n.to_string())),
                ("cursor", cursor),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
            let list = if all {
                client.all_pages("/repopulations", query).await?
            } else {
                client
                    .call(Method::GET, "/repopulations", &query, None)
                    .await?
            };
            (list, View::RunList)
        }
        RepopulationsCommand::Logs { id, follow } => {
            let id = resolve_id(&client, &id).await?;
            return logs(&client, &id, follow, format).await;
        }
        RepopulationsCommand::Cancel { id } => (
            client
                .call(
                    Method::POST,
                    &run_path(&resolve_id(&client, &id).await?, "/cancel"),
                    &[],
                    None,
                )
                .await?,
            View::Run,
        ),
        RepopulationsCommand::Resume { id } => (
            client
                .call(
                    Method::POST,
                    &run_path(&resolve_id(&client, &id).await?, "/resume"),
                    &[],
                    None,
                )
                .await?,
            View::Run,
        ),
        RepopulationsCommand::Abandon { id } => (
            client
                .call(
                    Method::POST,
                    &run_path(&resolve_id(&client, &id).await?, "/abandon"),
                    &[],
                    None,
                )
                .await?,
            View::Run,
        ),
    };
    output::print(&response, format, view)?;
    Ok(ExitCode::SUCCESS)
}

/// From a terminal, a destructive run asks first, naming its clusters, as CSM's
/// `etcd_restore_rebuild.sh` does; scripts (stdin not a terminal) and `--yes` do not.
fn approved(etcd: EtcdArg, clusters: &[String], services: &[String]) -> Result<bool, ClientError> {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    let what = if clusters.is_empty() {
        format!("the etcd clusters of {}", services.join(", "))
    } else {
        clusters.join(", ")
    };
    eprint!(
        "etcd {} may DELETE the data of {what} (a safety snapshot is taken first; `--dry-run` \
         shows the plan).\nProceed? (yes/no) ",
        etcd.mode()
    );
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(ClientError::Output)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A run id, or a unique prefix of one (looked up in the history).
async fn resolve_id(client: &Client, id: &str) -> Result<String, ClientError> {
    let prefix = id.to_ascii_lowercase();
    let looks_like_prefix = (4..36).contains(&prefix.len())
        && prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if uuid::Uuid::parse_str(id).is_ok() || !looks_like_prefix {
        // A whole id, or something the service will name as not one.
        return Ok(id.to_owned());
    }
    let runs = client
        .all_pages("/repopulations", vec![("limit", "500".to_owned())])
        .await?;
    let matching: Vec<&str> = runs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| run.get("id").and_then(Value::as_str))
        .filter(|candidate| candidate.starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(ClientError::NoSuchRun {
            prefix: id.to_owned(),
        }),
        many => Err(ClientError::AmbiguousRun {
            prefix: id.to_owned(),
            ids: many.iter().map(|s| (*s).to_owned()).collect(),
        }),
    }
}

pub async fn services(
    options: &ClientOptions,
    args: ServicesArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let response = match args.command {
        ServicesCommand::List => client.call(Method::GET, "/services", &[], None).await?,
    };
    output::print(&response, output::resolve(options.format), View::Services)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(
    options: &ClientOptions,
    args: SnapshotsArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let (response, view) = match args.command {
        SnapshotsCommand::Create => (
            client.call(Method::POST, "/snapshots", &[], None).await?,
            View::Capture,
        ),
        SnapshotsCommand::List {
            source,
            content,
            limit,
        } => {
            let query: Vec<(&str, String)> = [
                ("source", source),
                ("content", content.then(|| "true".to_owned())),
                ("limit", limit.map(|n| n.to_string())),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
            (
                client.call(Method::GET, "/snapshots", &query, None).await?,
                View::Snapshots,
            )
        }
    };
    output::print(&response, output::resolve(options.format), view)?;
    Ok(ExitCode::SUCCESS)
}

/// `etcd-clusters list|describe|backups`.
pub async fn etcd_clusters(
    options: &ClientOptions,
    args: EtcdClustersArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let format = output::resolve(options.format);
    let (path, view) = match &args.command {
        EtcdClustersCommand::Drill {
            name,
            backup,
            no_wait,
        } => return drill(&client, name, backup.as_deref(), *no_wait, format).await,
        EtcdClustersCommand::Drills { name, limit } => {
            let query: Vec<(&str, String)> =
                limit.iter().map(|n| ("limit", n.to_string())).collect();
            let path = format!("/etcd-clusters/{}/drills", encode(name));
            let list = client.call(Method::GET, &path, &query, None).await?;
            output::print(&list, format, View::Drills)?;
            return Ok(ExitCode::SUCCESS);
        }
        EtcdClustersCommand::List => ("/etcd-clusters".to_owned(), View::EtcdClusters),
        EtcdClustersCommand::Describe { name } => (
            format!("/etcd-clusters/{}", encode(name)),
            View::EtcdCluster,
        ),
        EtcdClustersCommand::Backups { name } => (
            format!("/etcd-clusters/{}/backups", encode(name)),
            View::Backups,
        ),
    };
    let response = client.call(Method::GET, &path, &[], None).await?;
    output::print(&response, format, view)?;
    Ok(ExitCode::SUCCESS)
}

/// `etcd-clusters drill`: starts the drill, then (unless `no_wait`) asks for it once a second
/// until it has ended; prints it, and exits 0 only if it passed.
async fn drill(
    client: &Client,
    name: &str,
    backup: Option<&str>,
    no_wait: bool,
    format: Format,
) -> Result<ExitCode, ClientError> {
    let path = format!("/etcd-clusters/{}/drills", encode(name));
    let body = backup.map(|backup| json!({ "backup": backup }));
    let mut drill = client.call(Method::POST, &path, &[], body).await?;
    let id = drill
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::InvalidResponse {
            url: path.clone(),
            reason: "the started drill has no id".to_owned(),
        })?
        .to_owned();
    if !no_wait {
        if format != Format::Table {
            eprintln!("drill {id} started; waiting for its result");
        }
        let one = format!("{path}/{}", encode(&id));
        let waited = async {
            while drill.get("state").and_then(Value::as_str) == Some("running") {
                // The service has no event stream for drills: ask again in a second.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                drill = client.call(Method::GET, &one, &[], None).await?;
            }
            Ok::<_, ClientError>(())
        };
        tokio::select! {
            result = waited => result?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!(
                    "\nStopped waiting; drill {id} goes on. See it with \
                     `etcd-repopulator etcd-clusters drills {name}`."
                );
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
    }
    output::print(&drill, format, View::Drill)?;
    let state = drill.get("state").and_then(Value::as_str);
    Ok(if no_wait || state == Some("passed") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `create --wait`: the id at once, a line per step change, then the outcome. Progress goes
/// to stdout in the table format and to stderr otherwise (stdout is then the final run, as
/// `describe` prints it, for scripts).
async fn wait_for_end(
    client: &Client,
    created: &Value,
    format: Format,
) -> Result<ExitCode, ClientError> {
    let id = created
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::InvalidResponse {
            url: client.base().to_string(),
            reason: "the created run has no id".to_owned(),
        })?
        .to_owned();
    let progress = |line: &str| -> Result<(), ClientError> {
        if format == Format::Table {
            emit(line)
        } else {
            eprintln!("{line}");
            Ok(())
        }
    };
    progress(&format!(
        "run {id} started; following it (Ctrl-C stops following, the run goes on)"
    ))?;
    let mut tracker = StepTracker::default();
    let followed = follow(client, &id, |message| {
        match message {
            Message::Run(run) => {
                if let Ok(run) = RunView::deserialize(&run) {
                    for line in tracker.changes(&run) {
                        progress(&line)?;
                    }
                }
            }
            // The phases of an etcd recovery (the long, destructive part), as `logs
            // --follow` shows them; a step's start and end are the step lines already.
            Message::Log(line)
                if line.step.as_deref().is_some_and(|s| s.starts_with("etcd-"))
                    && !STEP_LIFECYCLE.iter().any(|w| line.message.starts_with(w)) =>
            {
                progress(&format!("  {}", line.render()))?;
            }
            _ => {}
        }
        Ok(Flow::Continue)
    });
    tokio::select! {
        result = followed => result?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nStopped following; run {id} goes on. Follow it again with \
                 `etcd-repopulator repopulations logs {id} --follow`, or see it with \
                 `etcd-repopulator repopulations describe {id}`."
            );
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
    }
    let run = client
        .call(Method::GET, &run_path(&id, ""), &[], None)
        .await?;
    if format == Format::Table {
        emit("")?;
    }
    output::print(&run, format, View::Run)?;
    Ok(exit_for(&run))
}

/// `logs`: the stored log (the stream sends it before the first `run`), or with `follow`
/// everything until the run stops. Lines as text, or with `--format json` one JSON object
/// per line.
async fn logs(
    client: &Client,
    id: &str,
    follow_on: bool,
    format: Format,
) -> Result<ExitCode, ClientError> {
    let mut end_state: Option<String> = None;
    follow(client, id, |message| match message {
        Message::Log(line) => {
            if format == Format::Json {
                emit(&serde_json::to_string(&json!({
                    "id": line.id, "at": line.at, "level": line.level,
                    "service": line.service, "step": line.step, "message": line.message,
                }))?)?;
            } else {
                emit(&line.render())?;
            }
            Ok(Flow::Continue)
        }
        Message::Run(_) if !follow_on => Ok(Flow::Stop),
        Message::Run(_) => Ok(Flow::Continue),
        Message::End(end) => {
            end_state = end.get("state").and_then(Value::as_str).map(str::to_owned);
            Ok(Flow::Stop)
        }
    })
    .await?;
    if let Some(state) = end_state
        && format != Format::Json
    {
        eprintln!("run {id} ended: {state}");
    }
    Ok(ExitCode::SUCCESS)
}
