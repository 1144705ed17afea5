//! In-process tests with real quinn on loopback and software keys.

mod connect;
mod identity;
mod keygen;
mod refusal;
mod requests;
mod sessions;
mod util;
