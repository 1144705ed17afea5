//! HTTPS client for the node API.
