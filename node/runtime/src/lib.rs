//! The strongroom node runtime.
//!
//! [`run`] wires one node together: the token (keystore), the database (store), etcd
//! (coord), the peer transport, the threshold-ECDSA engine and the HTTPS API. The engine keeps
//! every secret sealed by the token and every state change in one database transaction:
//!
//! - [`engine`]: a node's part in aux info, key generation, presigning and signing;
//! - [`leader`]: what the elected leader drives (aux info once per cluster, pool refills);
//! - [`requests`]: policy-gated signing requests, from a client's PSBT to a signed PSBT;
//! - [`signing`]: online signing from the pool, with the interactive fallback;
//! - [`admission`]: the firmware profile, attestation evidence and which peers may take part;
//! - [`control`]: the messages nodes exchange over the transport;
//! - [`bounds`]: the bounds every field of a peer's message is held to before it is handled;
//! - [`votes`]: signed policy votes and their verification against the voter's certificate;
//! - [`config`]: the node configuration file.

pub mod admission;
pub mod audit;
pub mod bounds;
pub mod config;
pub mod control;
pub mod engine;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod requests;
pub mod routes;
pub mod run;
pub mod session_ids;
pub mod signing;
pub mod tpm;
pub mod votes;

pub use config::{Config, ConfigError};
pub use run::{NodeError, run};
