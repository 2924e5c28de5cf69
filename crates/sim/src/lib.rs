//! The simulated cluster: a fake Kubernetes API server (`kube`) and fake CSM services (`csm`),
//! served on one HTTP listener so that `serve --simulate` and the tests exercise the real
//! kube-rs and HTTP client code paths; and the simulated nodes (`nodes`), a real sshd on
//! loopback answering for every node a run contacts over SSH.

pub mod csm;
pub mod kube;
pub mod nodes;
pub mod s3;
pub mod testing;

pub use kube::{KubeVersion, SimCluster, SimOptions};
