//! Command groups, one module each.

pub(crate) mod approve;
pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod bench_cluster;
pub(crate) mod cluster;
pub(crate) mod cluster_status;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod firmware_profile;
pub(crate) mod keys;
pub(crate) mod keystore;
pub(crate) mod node;
pub(crate) mod sign;
pub(crate) mod tpm;

/// The single-threaded async runtime a one-shot command runs its API calls on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
