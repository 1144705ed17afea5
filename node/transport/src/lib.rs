//! QUIC transport between nodes with mTLS identities from the cluster CA, and the multiplexed protocol session layer.
