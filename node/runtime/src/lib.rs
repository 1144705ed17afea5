//! The node runtime.
