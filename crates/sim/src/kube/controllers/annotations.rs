//! The annotations that steer the simulated controllers (set by tests and the seed).

/// Annotation (on a pod, pod template or EtcdCluster) that keeps it from ever becoming ready.
pub const NEVER_READY: &str = "sim.etcd-repopulator.io/never-ready";
/// Annotation on a Job's pod template that makes its pod fail.
pub const FAIL: &str = "sim.etcd-repopulator.io/fail";
/// Annotation on a Bitnami etcd StatefulSet: Helm upgraded its release (cray-etcd-base, CSM
/// 1.7) to this revision, whose pre-upgrade Job (`charts/cray-etcd-base/templates/
/// upgrade-job.yaml`) put a snapshot of the cluster in S3 as
/// `etcd-backup/<service>/<service>_etcd_upgrade.snapshot-<revision>.db`. The simulated cluster
/// makes that object, a real snapshot, the first time the cluster is healthy (with S3 on).
pub const UPGRADED_AT_REVISION: &str = "sim.etcd-repopulator.io/upgraded-at-helm-revision";
/// Annotation with newline-separated log lines for a Job's pod.
pub const LOG: &str = "sim.etcd-repopulator.io/log";
/// Annotation on a Job's pod template: what its pod does to the fake CSM services when it
/// succeeds (the work of the real Job's container).
pub const EFFECT: &str = "sim.etcd-repopulator.io/effect";
/// `cray-reds-init`: BSS gets its boot parameters back.
pub const EFFECT_REPOPULATE_BSS: &str = "repopulate-bss";
/// `cray-fas-loader`: FAS gets its firmware images back.
pub const EFFECT_RELOAD_FAS_IMAGES: &str = "reload-fas-images";
