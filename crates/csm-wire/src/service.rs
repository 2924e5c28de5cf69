use std::fmt;

/// The CSM services this crate talks to; names as in the runbook and `cray` CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CsmService {
    Bos,
    Bss,
    Cps,
    Crus,
    Fas,
    Hmnfd,
    Hsm,
}

impl CsmService {
    pub const ALL: [CsmService; 7] = [
        Self::Bos,
        Self::Bss,
        Self::Cps,
        Self::Crus,
        Self::Fas,
        Self::Hmnfd,
        Self::Hsm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bos => "bos",
            Self::Bss => "bss",
            Self::Cps => "cps",
            Self::Crus => "crus",
            Self::Fas => "fas",
            Self::Hmnfd => "hmnfd",
            Self::Hsm => "hsm",
        }
    }

    /// Inverse of [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for CsmService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
