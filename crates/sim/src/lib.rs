//! The simulated cluster: a fake Kubernetes API server (`kube`) and fake CSM services (`csm`),
//! served on one HTTP listener so that `serve --simulate` and the tests exercise the real
//! kube-rs and HTTP client code paths.

pub mod csm;
pub mod kube;
pub mod s3;
pub mod testing;

pub use kube::{KubeVersion, SimCluster, SimOptions};
