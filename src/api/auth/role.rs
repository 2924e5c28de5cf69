//! What a caller may do.

use axum::http::Method;

/// What a caller may do; each role includes those before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read runs, services, clusters and snapshots.
    Read,
    /// Start (dry or `check`) runs, cancel and resume them, take snapshots.
    Write,
    /// Also start, resume and cancel real runs that rebuild or restore etcd clusters (`etcd`
    /// `restore`, `rebuild` or `auto`).
    Recover,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Recover];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Recover => "recover",
        }
    }

    /// What a request with `method` needs: reading is safe, everything else changes runs.
    pub fn required_for(method: &Method) -> Role {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Role::Read
        } else {
            Role::Write
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_roles() {
        assert_eq!(Role::required_for(&Method::GET), Role::Read);
        assert_eq!(Role::required_for(&Method::POST), Role::Write);
        assert!(Role::Write > Role::Read);
        assert!(Role::Recover > Role::Write);
    }
}
