//! What recovers an etcd cluster. `space`: maintenance instead of deletion, for a cluster
//! whose database is full.

pub mod space;
