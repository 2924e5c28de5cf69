//! Whether a write is sent for real or as a server-side dry run.

/// Whether a write is sent for real or as a server-side dry run (validated by the API server,
/// admission and RBAC included, and not persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    Apply,
}

impl Mode {
    /// `DryRun` when `dry_run`.
    pub fn dry_run_if(dry_run: bool) -> Mode {
        if dry_run { Mode::DryRun } else { Mode::Apply }
    }

    pub fn is_dry_run(self) -> bool {
        self == Mode::DryRun
    }
}
