//! SSH fan-out executor (pdsh-like: hostlist expressions, fan-out limit, per-host results).

pub mod hostlist;
