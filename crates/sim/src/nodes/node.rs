//! What a simulated node does with a command sent to it over SSH, and the guard that keeps its
//! sshd no longer than the service that started it. Both run as subcommands of the service's
//! binary (`sim-node`, `sim-node-guard`), which sshd and the service start.

use std::{path::PathBuf, process::ExitCode, process::Stdio, time::Duration};

use serde_json::{Value, json};

/// The agent ORCA subscribes with and the port it listens on for notifications (as the
/// simulated HMNFD's own seed has them).
const ORCA_AGENT: &str = "cray-dvs-orca";
const ORCA_SCN_PORT: u16 = 7801;
/// The states ORCA asks HMNFD to be told about.
const ORCA_STATES: [&str; 5] = ["Ready", "Off", "Standby", "Halt", "Empty"];

/// One node, and the simulated services it reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCommand {
    /// The node's host name.
    pub host: String,
    /// The node's xname, when HSM knows it (ORCA subscribes under it).
    pub xname: Option<String>,
    /// The simulated HMNFD (v2) base URL.
    pub hmnfd_url: String,
    /// The simulated HSM (v2) base URL.
    pub hsm_url: String,
    /// The systemd unit of ORCA on the release the node runs (`cray-dvs-orca` on CSM 1.0,
    /// `cray-orca` from 1.2).
    pub orca_unit: String,
    /// The command, as sshd's `ForceCommand` left it in `SSH_ORIGINAL_COMMAND` (or given).
    pub command: String,
}

impl NodeCommand {
    /// The arguments of `sim-node` that make this node (less the command, which sshd passes in
    /// `SSH_ORIGINAL_COMMAND`).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "sim-node".to_owned(),
            "--host".to_owned(),
            self.host.clone(),
            "--hmnfd-url".to_owned(),
            self.hmnfd_url.clone(),
            "--hsm-url".to_owned(),
            self.hsm_url.clone(),
            "--orca-unit".to_owned(),
            self.orca_unit.clone(),
        ];
        if let Some(xname) = &self.xname {
            args.extend(["--xname".to_owned(), xname.clone()]);
        }
        args
    }
}

/// Runs the node's command as its shell would, and returns its exit status. `systemctl` knows
/// the release's ORCA unit only: asked for another, it answers as systemd does for a unit that
/// does not exist.
pub async fn run(node: &NodeCommand) -> ExitCode {
    let words: Vec<&str> = node.command.split_whitespace().collect();
    let unit = node.orca_unit.as_str();
    let is_orca = |name: &str| name == unit || name.strip_suffix(".service") == Some(unit);
    match words.as_slice() {
        [] | ["true"] => ExitCode::SUCCESS,
        ["hostname"] => {
            println!("{}", node.host);
            ExitCode::SUCCESS
        }
        ["systemctl", "restart" | "start", name] if is_orca(name) => {
            match restart_orca(node).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("{}: {unit} did not subscribe to HMNFD: {err}", node.host);
                    ExitCode::FAILURE
                }
            }
        }
        ["systemctl", "status" | "is-active", name] if is_orca(name) => {
            println!("active");
            ExitCode::SUCCESS
        }
        // systemctl's answers and exit statuses for a unit it does not have.
        ["systemctl", "restart" | "start" | "stop", name] => {
            let verb = words[1];
            eprintln!(
                "Failed to {verb} {}: Unit {} not found.",
                unit_name(name),
                unit_name(name)
            );
            ExitCode::from(5)
        }
        ["systemctl", "status", name] => {
            eprintln!("Unit {} could not be found.", unit_name(name));
            ExitCode::from(4)
        }
        ["systemctl", "is-active", _] => {
            println!("inactive");
            ExitCode::from(3)
        }
        _ => {
            eprintln!(
                "{}: {}: not simulated (a simulated node runs `systemctl restart|status {unit}`, \
                 `hostname` and `true`)",
                node.host, node.command
            );
            ExitCode::from(127)
        }
    }
}

/// `cray-orca` -> `cray-orca.service`, as systemctl names units in its messages.
fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// What ORCA does when it starts: subscribe its node to state changes of every compute node.
async fn restart_orca(node: &NodeCommand) -> Result<(), String> {
    let Some(xname) = &node.xname else {
        // A node HSM does not know: ORCA restarts, but has nothing to subscribe as.
        return Ok(());
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}/State/Components?type=Node&role=Compute",
        node.hsm_url.trim_end_matches('/')
    );
    let components: Value = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let computes: Vec<&str> = components["Components"]
        .as_array()
        .map(|list| list.iter().filter_map(|c| c["ID"].as_str()).collect())
        .unwrap_or_default();
    let url = format!(
        "{}/subscriptions/{xname}/agents/{ORCA_AGENT}",
        node.hmnfd_url.trim_end_matches('/')
    );
    http.post(&url)
        .json(&json!({
            "Components": computes,
            "Enabled": true,
            "States": ORCA_STATES,
            "Url": format!("http://{xname}:{ORCA_SCN_PORT}/scn"),
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("POST {url}: {e}"))?;
    Ok(())
}

/// `sim-node-guard [--remove-dir DIR] PROGRAM ARGS...`: runs `command` until it exits or this
/// process's stdin closes (the service that started it stopped), then stops it and removes
/// `remove_dir`.
pub async fn guard(remove_dir: Option<PathBuf>, command: &[String]) -> ExitCode {
    use tokio::io::AsyncReadExt;
    let Some((program, rest)) = command.split_first() else {
        return ExitCode::FAILURE;
    };
    let mut child = match tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("sim-node-guard: cannot start {program}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    tokio::select! {
        status = child.wait() => match status.ok().and_then(|s| s.code()) {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        _ = stdin.read_to_end(&mut sink) => {
            let _ = child.kill().await;
            if let Some(dir) = &remove_dir {
                // Every guard of the service may try; whoever comes last finds nothing.
                let _ = std::fs::remove_dir_all(dir);
            }
            ExitCode::SUCCESS
        }
    }
}
