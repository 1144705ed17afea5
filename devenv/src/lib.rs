//! Local clusters on loopback: real SoftHSM tokens, PostgreSQL, etcd and `strongroom` node
//! processes, each in a fresh temporary directory with free ports, torn down on drop; or, for
//! the dev cluster, in a directory that persists, with processes that outlive the program
//! ([`cluster::TestCluster::provision_in`], [`detached`]).
//!
//! The integration tests, the benchmarks (`strongroom bench presign|sign`) and the dev cluster
//! use it. Everything runs from the system's binaries (`softhsm2-util`, `initdb`/`postgres`,
//! `etcd`); nothing here stands in for a real part.

pub mod cluster;
pub mod detached;
pub mod etcd;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod softhsm;
pub mod swtpm;
