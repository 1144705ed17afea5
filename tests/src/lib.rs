//! Integration tests and the harness that runs real SoftHSM tokens, PostgreSQL, etcd and node
//! processes on loopback, each in a fresh temporary directory with free ports, torn down on drop.
//!
//! Tests run under `cargo nextest` (one process per test), so each test may point the PKCS#11
//! module at its own SoftHSM configuration.

pub mod etcd;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod softhsm;
