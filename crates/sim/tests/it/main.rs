//! The simulated cluster's own tests, driven through the real kube-rs client over HTTP: the
//! fake API server and its controllers (`kube`), and the real etcd processes of its etcd
//! clusters (`etcd`: CSM's procedures on the Bitnami layout; `members`: one etcd per member,
//! and the ways a member breaks). One test target, sharing `common`.

mod common;

mod etcd;
mod kube;
mod members;
mod statefulset;
