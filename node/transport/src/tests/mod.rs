//! In-process tests with real quinn on loopback and software keys.

mod connect;
mod identity;
mod keygen;
mod refusal;
mod sessions;
mod util;
