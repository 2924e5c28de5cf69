//! A Bitnami etcd container's start, as the image does it (`setup.sh` -> `etcd_initialize` of
//! `libetcd.sh`, then `run.sh`), with the real etcd and etcdctl:
//!
//! - **No data** (`ETCD_DATA_DIR` empty), several initial members: `is_new_etcd_cluster` asks
//!   the members the headless Service names (`<sts>-0..n-1` for the n addresses it has) for
//!   `endpoint status --cluster`; when that fails (nobody answers, or a listed member does
//!   not), the member bootstraps: it waits until the headless Service has an address per
//!   initial member and starts etcd with the env's `ETCD_INITIAL_CLUSTER_STATE` (unset:
//!   `new`). When every listed member answers, it joins: `remove_old_member_if_exist` (its peer
//!   URL in `member list` -> `etcdctl member remove`), then `add_self_to_cluster` (waits until
//!   the other members are healthy, `etcdctl member add` through them, its output saved in
//!   `$ETCD_DATA_DIR/new_member_envs`). Then, with `ETCD_START_FROM_SNAPSHOT=yes`,
//!   `etcdctl snapshot restore` of `$ETCD_INIT_SNAPSHOTS_DIR/$ETCD_INIT_SNAPSHOT_FILENAME` with
//!   the member's name, initial cluster, token and peer URL, so that every member restores
//!   into the same cluster; no such file: "There was no snapshot to restore!", exit 1.
//! - **Data**, several initial members: when fewer of the other members than a majority of the
//!   headless Service's addresses answer `endpoint health`, "Cluster not responding!", and with
//!   `ETCD_DISASTER_RECOVERY=yes` (as cray-etcd-base sets it) the newest `/snapshots/db-*` is
//!   restored, or, there being none (CSM's snapshotter writes `/snapshots/<sts>/db-*`), the
//!   container exits 1; without it, etcd starts and the cluster "will try to recover on its
//!   own". When the cluster is healthy, `is_membership_intact` starts etcd and reads its log:
//!   a member removed from the cluster ("the member has been permanently removed", "ID
//!   mismatch") has its data deleted, is removed and added again (`member add`), and starts as
//!   a new member. (etcd leaves `member/snap/db` behind when it fails to start, so a member
//!   whose first start failed has "data" from then on.)
//! - `run.sh` loads `new_member_envs` when it exists (the initial cluster and
//!   `ETCD_INITIAL_CLUSTER_STATE=existing` that `member add` printed) and execs etcd, whose
//!   flags are the container's `ETCD_*` variables.
//!
//! Not simulated: the `.disaster_recovery` file the scripts keep under `/snapshots` (whatever
//! it holds, an unhealthy cluster ends the same way there), RBAC (`ETCD_ROOT_PASSWORD`), TLS,
//! and the 10 s sleeps between tries (1 s here). The prestop hook removes the member from the
//! cluster when a pod stops, unless `ETCD_DISABLE_PRESTOP=yes`, which cray-etcd-base sets (so
//! does the simulated cluster: it never removes a member when a pod stops).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::net::Ipv4Addr;

use super::env::Dns;
use super::process::{CLIENT_PORT, Gateway, ListedMember, LogSince, etcdctl};

/// `retry_while`'s default: 12 tries, 5 s apart.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long `is_membership_intact` reads etcd's log before taking the member as intact.
const MEMBERSHIP_CHECK: Duration = Duration::from_secs(30);
/// The file `member add`'s output is saved in (`ETCD_NEW_MEMBERS_ENV_FILE`).
const NEW_MEMBER_ENVS: &str = "new_member_envs";

/// What the container's scripts need of the kubelet that runs them.
pub(super) trait Runtime {
    /// Appends a Bitnami-style line (`level` `INFO `, `WARN `, `ERROR`) to the pod's log.
    fn pod_log(&self, level: &str, message: &str);
    fn gateway(&self) -> &Gateway;
    /// The cluster DNS of the pod's namespace, now.
    fn dns(&self) -> Dns;
    /// The address a StatefulSet pod of the namespace has (or will have).
    fn stable_ip(&self, pod: &str) -> Option<Ipv4Addr>;
    /// Waits, or fails when the container is stopped meanwhile.
    async fn pause(&self, d: Duration) -> Result<(), String>;
    /// Starts etcd with `env` as its whole environment; where its log starts.
    fn spawn_etcd_with_log(
        &self,
        env: &BTreeMap<String, String>,
    ) -> Result<(tokio::process::Child, LogSince), String>;
    /// Why the process that ended with `status` ended, from its log.
    fn exit_message(&self, status: &str) -> String;
}

/// What the container's scripts work with.
pub(super) struct Container<'a, R: Runtime> {
    pub task: &'a R,
    /// The environment as the kubelet makes it (cluster DNS names not resolved).
    pub raw: BTreeMap<String, String>,
    /// etcd's environment: `raw` with the names in its URLs resolved, paths on volumes.
    pub env: BTreeMap<String, String>,
    /// `ETCD_DATA_DIR`, here.
    pub data: PathBuf,
    /// `$ETCD_INIT_SNAPSHOTS_DIR/$ETCD_INIT_SNAPSHOT_FILENAME` in the pod and here (None: on
    /// no volume, so not in the container).
    pub init_snapshot: (String, Option<PathBuf>),
    /// `/snapshots`, here (the disaster recovery's directory).
    pub snapshots: Option<PathBuf>,
}

fn is_yes(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "yes" | "true" | "1")
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// The `host` and `port` of a URL (`parse_uri`).
fn host_port(url: &str) -> Option<(String, u16)> {
    let parsed = reqwest::Url::parse(url.trim()).ok()?;
    Some((
        parsed.host_str()?.to_owned(),
        parsed.port().unwrap_or(CLIENT_PORT),
    ))
}

/// The `ETCD_*` lines of `member add`'s output (`ETCD_NAME="x"`), as name -> value.
fn member_add_vars(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .map(|l| l.trim().trim_start_matches("export ").trim())
        .filter(|l| l.starts_with("ETCD_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

impl<R: Runtime> Container<'_, R> {
    fn get(&self, key: &str) -> &str {
        self.env.get(key).map_or("", String::as_str)
    }

    fn yes(&self, key: &str) -> bool {
        is_yes(self.get(key))
    }

    fn info(&self, message: &str) {
        self.task.pod_log("INFO ", message);
    }

    fn warn(&self, message: &str) {
        self.task.pod_log("WARN ", message);
    }

    fn initial_members(&self) -> usize {
        self.get("ETCD_INITIAL_CLUSTER")
            .split([',', ';'])
            .filter(|m| !m.trim().is_empty())
            .count()
    }

    fn peer_url(&self) -> String {
        self.get("ETCD_INITIAL_ADVERTISE_PEER_URLS").to_owned()
    }

    fn dns(&self) -> Dns {
        self.task.dns()
    }

    /// `etcdctl_get_endpoints`: `<MY_STS_NAME>-<i>.<domain>:<port>` for each address the
    /// headless Service's domain has (`getent ahosts`), resolved; `only_others` leaves this
    /// pod out.
    fn endpoints(&self, only_others: bool) -> Vec<String> {
        let advertised = self
            .raw
            .get("ETCD_ADVERTISE_CLIENT_URLS")
            .map_or("", String::as_str);
        let first = advertised.split([',', ';']).next().unwrap_or_default();
        let Some((host, port)) = host_port(first) else {
            return Vec::new();
        };
        let name = self.raw.get("ETCD_NAME").map_or("", String::as_str);
        let domain = match self
            .raw
            .get("ETCD_CLUSTER_DOMAIN")
            .filter(|d| !d.is_empty())
        {
            Some(domain) => domain.clone(),
            None => host
                .strip_prefix(&format!("{name}."))
                .unwrap_or(&host)
                .to_owned(),
        };
        let dns = self.dns();
        let count = dns.lookup(&domain).len();
        let sts = self.raw.get("MY_STS_NAME").map_or("", String::as_str);
        let own = self.raw.get("MY_POD_NAME").map_or(name, String::as_str);
        (0..count)
            .map(|i| format!("{sts}-{i}"))
            .filter(|pod| !(only_others && pod == own))
            .filter_map(|pod| {
                let ip = dns.resolve(&format!("{pod}.{domain}"), &|p| self.task.stable_ip(p))?;
                Some(format!("{ip}:{port}"))
            })
            .collect()
    }

    /// `is_new_etcd_cluster`: `etcdctl endpoint status --cluster` fails.
    async fn is_new_cluster(&self) -> bool {
        let gateway = self.task.gateway();
        let Ok(members) = gateway.member_list(&self.endpoints(false)).await else {
            return true;
        };
        for url in members.iter().flat_map(|m| &m.client_urls) {
            if gateway.status(url).await.is_err() {
                return true;
            }
        }
        false
    }

    /// `setup_etcd_active_endpoints` + `is_healthy_etcd_cluster`: the other members that
    /// answer `endpoint health`, and whether they are at least half the headless Service's
    /// addresses (rounded up).
    async fn healthy_cluster(&self) -> (bool, Vec<String>) {
        let all = self.endpoints(false);
        let own = self
            .get("ETCD_ADVERTISE_CLIENT_URLS")
            .split([',', ';'])
            .next()
            .and_then(host_port)
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap_or_default();
        let gateway = self.task.gateway();
        let mut active = Vec::new();
        for endpoint in all.iter().filter(|e| **e != own) {
            if gateway.healthy(endpoint).await {
                active.push(endpoint.clone());
            }
        }
        (active.len() >= all.len().div_ceil(2), active)
    }

    async fn member_list(&self) -> Result<Vec<ListedMember>, String> {
        self.task
            .gateway()
            .member_list(&self.endpoints(false))
            .await
    }

    /// `get_member_id`: the member whose peer URLs include this pod's.
    async fn member_id(&self) -> Option<String> {
        let peer = self.peer_url();
        let id = self
            .member_list()
            .await
            .ok()?
            .into_iter()
            .find(|m| m.peer_urls.contains(&peer))
            .map(|m| m.id);
        match &id {
            Some(id) => self.info(&format!("member id: {id}")),
            None => self.info("No member id found"),
        }
        id
    }

    /// `remove_old_member_if_exist`.
    async fn remove_old_member_if_exist(&self) -> Result<(), String> {
        if let Some(id) = self.member_id().await {
            self.info(&format!("Removing old member {id}"));
            let endpoints = self.endpoints(false).join(",");
            etcdctl(Some(&endpoints), &["member", "remove", &id]).await?;
        }
        Ok(())
    }

    /// `etcdctl member add` through `endpoints`, its `ETCD_*` lines saved in
    /// `new_member_envs` (`add_new_member`, and the add of `add_self_to_cluster`).
    async fn member_add(&self, endpoints: &[String]) -> Result<(), String> {
        let name = self.get("ETCD_NAME").to_owned();
        let peer = format!("--peer-urls={}", self.peer_url());
        let out = etcdctl(Some(&endpoints.join(",")), &["member", "add", &name, &peer]).await?;
        let vars = member_add_vars(&out);
        if vars.is_empty() {
            return Err(format!(
                "etcdctl member add printed no ETCD_ variables: {out}"
            ));
        }
        std::fs::create_dir_all(&self.data).map_err(|e| e.to_string())?;
        let text: String = vars
            .iter()
            .map(|(k, v)| format!("export {k}=\"{v}\"\n"))
            .collect();
        std::fs::write(self.data.join(NEW_MEMBER_ENVS), text).map_err(|e| e.to_string())
    }

    /// `add_self_to_cluster`.
    async fn add_self_to_cluster(&self) -> Result<(), String> {
        let active = loop {
            let (healthy, active) = self.healthy_cluster().await;
            if healthy {
                break active;
            }
            if self.yes("ETCD_DISASTER_RECOVERY") {
                // The disaster-recovery branch of is_healthy_etcd_cluster ends the script.
                return Err("Cluster not healthy, cannot add self to cluster".into());
            }
            self.warn("Cluster not healthy, not adding self to cluster for now, keeping trying...");
            self.task.pause(Duration::from_secs(1)).await?;
        };
        if self.member_id().await.is_none() {
            while let Err(e) = self.member_add(&active).await {
                self.warn(&format!(
                    "Failed to add self to cluster, keeping trying... ({e})"
                ));
                self.task.pause(Duration::from_secs(1)).await?;
            }
        } else {
            self.info("Node already in cluster");
        }
        self.info("Loading env vars of existing cluster");
        if !self.data.join(NEW_MEMBER_ENVS).is_file() {
            return Err(format!(
                "{}: No such file or directory",
                self.raw
                    .get("ETCD_DATA_DIR")
                    .map_or("/bitnami/etcd/data".into(), |d| format!(
                        "{d}/{NEW_MEMBER_ENVS}"
                    ))
            ));
        }
        Ok(())
    }

    /// `etcdctl snapshot restore file`, into the data directory (which must not exist yet).
    async fn restore(&self, file: &Path, members: usize) -> Result<(), String> {
        // A fresh volume has no data directory; the one an empty volume shows is not data.
        if dir_is_empty(&self.data) {
            let _ = std::fs::remove_dir(&self.data);
        }
        let (file, data) = (
            file.to_string_lossy().into_owned(),
            self.data.to_string_lossy().into_owned(),
        );
        let mut args = vec!["snapshot", "restore", &file, "--data-dir", &data];
        let (name, cluster, token, peer) = (
            self.get("ETCD_NAME"),
            self.get("ETCD_INITIAL_CLUSTER"),
            self.get("ETCD_INITIAL_CLUSTER_TOKEN"),
            self.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"),
        );
        if members > 1 {
            args.extend([
                "--name",
                name,
                "--initial-cluster",
                cluster,
                "--initial-cluster-token",
                token,
                "--initial-advertise-peer-urls",
                peer,
            ]);
        }
        etcdctl(None, &args).await.map(drop).inspect_err(|_| {
            // What a failed restore left is not data: the next start finds the volume empty.
            let _ = std::fs::remove_dir_all(&self.data);
        })
    }

    /// The newest `db-*` file directly in `/snapshots` (`find /snapshots/ -maxdepth 1`).
    fn latest_disaster_snapshot(&self) -> Option<PathBuf> {
        let dir = self.snapshots.as_ref()?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("db-"))
            })
            .collect();
        files.sort();
        files.pop()
    }

    /// `etcd_initialize` and `run.sh`: the running etcd, or why the container exits.
    pub async fn start(mut self) -> Result<tokio::process::Child, String> {
        self.info("Initializing etcd");
        let members = self.initial_members();
        let mut state_existing = false;
        if dir_is_empty(&self.data) {
            self.info("There is no data from previous deployments");
            if members > 1 {
                if self.is_new_cluster().await {
                    self.info("Bootstrapping a new cluster");
                    self.wait_for_an_address_per_member(members).await?;
                } else {
                    self.remove_old_member_if_exist().await?;
                    self.info("Adding new member to existing cluster");
                    std::fs::create_dir_all(&self.data).map_err(|e| e.to_string())?;
                    self.add_self_to_cluster().await?;
                    self.load_new_member_envs();
                }
            }
            if self.yes("ETCD_START_FROM_SNAPSHOT") {
                let (path, file) = self.init_snapshot.clone();
                let Some(file) = file.filter(|f| f.is_file()) else {
                    return Err(format!("There was no snapshot to restore! ({path})"));
                };
                self.info("Restoring snapshot before initializing etcd cluster");
                self.restore(&file, members).await?;
            }
        } else {
            self.info("Detected data from previous deployments");
            if members > 1 {
                let _ = self.member_id().await;
                if !self.healthy_cluster().await.0 {
                    self.warn("Cluster not responding!");
                    if self.yes("ETCD_DISASTER_RECOVERY") {
                        let Some(file) = self.latest_disaster_snapshot() else {
                            return Err("There was no snapshot to restore!".into());
                        };
                        self.info("Restoring etcd cluster from snapshot");
                        let _ = std::fs::remove_dir_all(&self.data);
                        self.restore(&file, members).await?;
                    } else {
                        self.warn(
                            "Disaster recovery is disabled, the cluster will try to recover on it's own",
                        );
                    }
                } else {
                    self.info("Cluster is healthy");
                    state_existing = true;
                    if let Some(child) = self.membership_intact().await? {
                        self.info("** Starting etcd **");
                        return Ok(child);
                    }
                    let _ = std::fs::remove_dir_all(&self.data);
                    self.remove_old_member_if_exist().await?;
                    self.info("Adding new member to existing cluster");
                    self.member_add(&self.endpoints(false)).await?;
                }
            }
        }
        // run.sh
        self.load_new_member_envs();
        if state_existing {
            self.env
                .insert("ETCD_INITIAL_CLUSTER_STATE".into(), "existing".into());
        }
        self.info("** Starting etcd **");
        self.task
            .spawn_etcd_with_log(&self.env)
            .map(|(child, _)| child)
    }

    /// `hostname_has_N_ips`, retried as `retry_while` does.
    async fn wait_for_an_address_per_member(&self, members: usize) -> Result<(), String> {
        let domain = self.get("ETCD_CLUSTER_DOMAIN").to_owned();
        if domain.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let n = self.dns().lookup(&domain).len();
            if n >= members && n.is_multiple_of(members) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    "Headless service domain does not have an IP per initial member in the cluster"
                        .into(),
                );
            }
            self.task.pause(Duration::from_millis(200)).await?;
        }
    }

    /// run.sh: `. $ETCD_NEW_MEMBERS_ENV_FILE` when it exists.
    fn load_new_member_envs(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.data.join(NEW_MEMBER_ENVS)) {
            self.env.extend(member_add_vars(&text));
        }
    }

    /// `is_membership_intact`: etcd started on the data with the container's env, its log
    /// read until it connects to a peer (intact: the process is kept, where the script stops
    /// it and starts it again) or learns it was removed (None: the process is stopped). When
    /// etcd ends without saying either (e.g. "member ... has already been bootstrapped"), the
    /// script would wait for ever, until the liveness probe restarts the container (not
    /// simulated): here the container fails at once.
    async fn membership_intact(&self) -> Result<Option<tokio::process::Child>, String> {
        let (mut child, log) = self.task.spawn_etcd_with_log(&self.env)?;
        let deadline = Instant::now() + MEMBERSHIP_CHECK;
        loop {
            let text = log.read_new();
            let removed = text.contains("the member has been permanently removed from the cluster")
                || text.contains("ignored streaming request; ID mismatch")
                || text.contains("\"error\":\"cluster ID mismatch\"");
            if removed {
                let _ = child.start_kill();
                let _ = child.wait().await;
                self.info("The remote member ID is different from the local member ID");
                return Ok(None);
            }
            if text.contains("established TCP streaming connection with remote peer")
                || Instant::now() > deadline
            {
                self.info("The member is still part of the cluster");
                return Ok(Some(child));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.task.exit_message(&status.to_string()));
            }
            if let Err(e) = self.task.pause(Duration::from_millis(100)).await {
                let _ = child.start_kill();
                return Err(e);
            }
        }
    }
}

/// A Bitnami-style log line (`etcd 12:00:00.00 ERROR ==> ...`).
pub(super) fn bitnami_line(level: &str, message: &str) -> String {
    let mut time = chrono::Utc::now().format("%H:%M:%S%.3f").to_string();
    time.pop();
    format!("etcd {time} {level} ==> {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_add_output_gives_the_variables_run_sh_loads() {
        let out = "Member 8e9e05c52164694d added to cluster ef37ad9dc622a7c4\n\n\
                   ETCD_NAME=\"m2\"\n\
                   ETCD_INITIAL_CLUSTER=\"m0=http://127.76.0.2:2380,m2=http://127.76.0.4:2380\"\n\
                   ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.76.0.4:2380\"\n\
                   ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n";
        let vars = member_add_vars(out);
        assert_eq!(vars["ETCD_NAME"], "m2");
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_STATE"], "existing");
        assert_eq!(vars.len(), 4);
        // What new_member_envs holds reads back the same.
        let file: String = vars
            .iter()
            .map(|(k, v)| format!("export {k}=\"{v}\"\n"))
            .collect();
        assert_eq!(member_add_vars(&file), vars);
    }
}
