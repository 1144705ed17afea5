//! Integration tests of strongroom. The harness (SoftHSM tokens, PostgreSQL, etcd and node
//! processes on loopback) lives in `strongroom-devenv` and is re-exported here.
//!
//! Tests run under `cargo nextest` (one process per test), so each test may point the PKCS#11
//! module at its own SoftHSM configuration.

pub use strongroom_devenv::{cluster, etcd, ports, postgres, process, softhsm};

pub mod psbt;
pub mod support;
