//! The policy model and the pure evaluate() that decides which transactions a node votes for.
