//! Test-only crash points: when `ETCD_REPOPULATOR_FAILPOINT` names a point, the process aborts
//! there, as a crash would (no destructors, no graceful shutdown). The crash-safety tests use it
//! to stop the service between "delete" and "create"; in production the variable is unset.

pub const ENV: &str = "ETCD_REPOPULATOR_FAILPOINT";

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|armed| armed == name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}
