//! What a simulated cluster is told when it starts: the delays of its actors, the Kubernetes
//! version it behaves as, whether its etcd clusters run for real. Every part of the
//! simulation reads these; they import nothing of it.

use std::time::Duration;

/// The real Job controller's first pod failure back-off (`DefaultJobPodFailureBackOff`).
pub const JOB_BACKOFF: Duration = Duration::from_secs(10);

/// The Kubernetes version the simulated API server behaves as, where versions differ (the
/// labels the Job API generates; `/version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    /// The newest Kubernetes of the CSM releases 1.0 to 1.6 (and the one whose behaviour is
    /// recorded in OBSERVED.md): before 1.27, so Job pods carry only `controller-uid` and
    /// `job-name`.
    pub const CSM: KubeVersion = KubeVersion::new(1, 26);

    pub const fn new(major: u32, minor: u32) -> Self {
        KubeVersion { major, minor }
    }

    /// Whether the Job API also writes the `batch.kubernetes.io/`-prefixed `controller-uid`
    /// and `job-name` labels, and selects by the prefixed `controller-uid` (1.27 and later).
    pub fn prefixed_job_labels(self) -> bool {
        self >= KubeVersion::new(1, 27)
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        KubeVersion::CSM
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Delays of the simulated cluster's actors, and the Kubernetes version it behaves as.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The Kubernetes version to behave as (default: what CSM runs, see [`KubeVersion::CSM`]).
    pub kubernetes_version: KubeVersion,
    /// Pod created -> Running and Ready.
    pub kubelet_ready_delay: Duration,
    /// Deleted pod with a grace period -> gone.
    pub pod_termination_delay: Duration,
    /// Job pod Running -> Succeeded/Failed.
    pub job_run_duration: Duration,
    /// EtcdCluster created -> status Running.
    pub etcd_operator_delay: Duration,
    /// The first back-off after a Job's pod fails: the Job controller creates the next pod
    /// (`restartPolicy: Never`), or the kubelet restarts the container (`OnFailure`), after
    /// it, doubling with every failure up to 36 times it (the real controller's 10 s -> 6 min;
    /// the kubelet's cap is 30 times, 5 min). The real value is 10 s; tests use a tiny one so
    /// that a Job with `backoffLimit: 6` still fails within a second or two.
    pub job_backoff: Duration,
    /// Run a real `etcd` (Debian's etcd-server) for every etcd cluster whose member pods run,
    /// on the cluster IP of its client Service (see `controllers::etcd_member`). Off by default
    /// (tests that need it turn it on); starting a cluster with it on and no `etcd` installed
    /// is an error.
    pub real_etcd: bool,
    /// With [`SimOptions::real_etcd`], the etcd clusters (`cray-bss-bitnami-etcd`,
    /// `cray-bss-etcd`) that run for real; None: all of them. The pods of the others are Ready
    /// as soon as they run, and nothing answers at their Services. CSM 1.6 has four Bitnami
    /// clusters of three members: twelve processes, which tests that use one cluster spare.
    pub real_etcd_clusters: Option<Vec<String>>,
    /// The heartbeat interval and election timeout of the real Bitnami members, in place of
    /// what the StatefulSet's env says (CSM's 4.2 s and 21 s: a new leader takes 21-42 s to be
    /// elected, and a request without quorum 47 s to fail). None: the env's.
    pub etcd_raft_timing: Option<(Duration, Duration)>,
    /// `ETCD_QUOTA_BACKEND_BYTES` of the seeded Bitnami StatefulSets (CSM: 2 GiB); a small one
    /// makes a cluster reach its quota (`NOSPACE`) with a few writes. None: CSM's.
    pub etcd_quota_backend_bytes: Option<u64>,
    /// Run a real S3 server (`s3s-fs`) on loopback with CSM's bucket `etcd-backup`, and seed
    /// the Secret `etcd-backup-s3-credentials` with its keys (see [`crate::s3`]). Off by
    /// default (tests that need it turn it on); on in `serve --simulate`.
    pub s3: bool,
}

impl Default for SimOptions {
    /// Fast, for tests.
    fn default() -> Self {
        Self {
            kubernetes_version: KubeVersion::default(),
            kubelet_ready_delay: Duration::from_millis(50),
            pod_termination_delay: Duration::from_millis(50),
            job_run_duration: Duration::from_millis(100),
            etcd_operator_delay: Duration::from_millis(100),
            job_backoff: Duration::from_millis(1),
            real_etcd: false,
            real_etcd_clusters: None,
            // etcd's own defaults are 100 ms and 1 s; a little slower holds on a busy machine.
            etcd_raft_timing: Some((Duration::from_millis(250), Duration::from_millis(2500))),
            etcd_quota_backend_bytes: None,
            s3: false,
        }
    }
}

impl SimOptions {
    /// Slow enough to watch things happen, for `serve --simulate`; real etcd clusters when
    /// `etcd` is installed.
    pub fn interactive() -> Self {
        Self {
            kubernetes_version: KubeVersion::default(),
            kubelet_ready_delay: Duration::from_secs(1),
            pod_termination_delay: Duration::from_secs(2),
            job_run_duration: Duration::from_secs(3),
            etcd_operator_delay: Duration::from_secs(3),
            job_backoff: JOB_BACKOFF,
            real_etcd: etcd_installed(),
            real_etcd_clusters: None,
            etcd_raft_timing: None,
            etcd_quota_backend_bytes: None,
            s3: true,
        }
    }
}

/// The etcd command (Debian: etcd-server).
pub const ETCD_BINARY: &str = "etcd";

/// Whether `etcd` is on the PATH.
pub fn etcd_installed() -> bool {
    on_path(ETCD_BINARY)
}

/// Whether `command` is a file in a directory of the PATH.
pub fn on_path(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| std::fs::metadata(dir.join(command)).is_ok_and(|m| m.is_file()))
    })
}
