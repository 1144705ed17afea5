//! Command groups, one module each.

pub(crate) mod bench;
pub(crate) mod keystore;
