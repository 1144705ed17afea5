//! Coordination through etcd: membership leases and leader election, trusted for liveness only.
