//! Attestation evidence of what a node runs, and its verification against a firmware profile.
