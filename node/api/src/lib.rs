//! The node's HTTPS API (axum, mTLS client authentication, RFC 9457 problem details).
