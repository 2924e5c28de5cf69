//! Test-only crash points: when `ETCD_REPOPULATOR_FAILPOINT` names a point, the process aborts
//! there, as a crash would (no destructors, no graceful shutdown). The crash-safety tests use it
//! to stop the service between "delete" and "create". Compiled in only with the cargo feature
//! `failpoints` (which only the crash tests enable); without it [`hit`] does nothing and the
//! variable is ignored.

pub const ENV: &str = "ETCD_REPOPULATOR_FAILPOINT";

/// Aborts the process if the failpoint `name` is armed.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|armed| armed == name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}

/// Without the feature `failpoints`: nothing (the calls compile away).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
