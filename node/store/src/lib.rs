//! Each node's PostgreSQL storage: sealed objects, presignature states, requests, votes and the audit log.
