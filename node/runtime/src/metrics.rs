//! The engine's Prometheus metrics: pool sizes, presign and sign durations, session failures and
//! blamed peers.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;
use strongroom_api::Metrics;

/// Labels of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PoolLabels {
    /// Key id.
    pub key_id: String,
    /// Canonical signer set.
    pub signer_set: String,
    /// `available`, `reserved` or `consumed`.
    pub state: String,
}

/// Labels of a failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    /// Protocol or step: `aux_info`, `keygen`, `presign`, `sign`, `interactive_sign`.
    pub protocol: String,
    /// The blamed peer, or `none` when no peer was blamed.
    pub culprit: String,
}

/// Labels of a signing duration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SignLabels {
    /// `pool` or `interactive`.
    pub mode: String,
}

/// The engine's metrics; clones share values with the registry.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Presignatures per pool and state, as this node holds them.
    pub pool: Family<PoolLabels, Gauge>,
    /// Pool target per key (the leader's configuration).
    pub pool_target: Gauge,
    /// Presign session durations (this node's part).
    pub presign_seconds: Histogram,
    /// Signing durations as the coordinator saw them.
    pub sign_seconds: Family<SignLabels, Histogram>,
    /// Failed protocol sessions by protocol and blamed peer.
    pub session_failures: Family<FailureLabels, Counter>,
    /// Presignatures discarded after a rollback check or a failed signing.
    pub presignatures_discarded: Counter,
    /// Presign sessions in progress (leader).
    pub presign_in_flight: Gauge,
}

impl EngineMetrics {
    /// Creates the metrics and registers them.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            pool: Family::default(),
            pool_target: Gauge::default(),
            presign_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            sign_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            session_failures: Family::default(),
            presignatures_discarded: Counter::default(),
            presign_in_flight: Gauge::default(),
        };
        metrics.register(
            "presignatures",
            "Presignatures this node holds, by key, signer set and state",
            m.pool.clone(),
        );
        metrics.register(
            "presignature_pool_target",
            "Configured presignature pool target per (key, signer set)",
            m.pool_target.clone(),
        );
        metrics.register_with_unit(
            "presign_duration",
            "Duration of this node's part in presign sessions",
            Unit::Seconds,
            m.presign_seconds.clone(),
        );
        metrics.register_with_unit(
            "sign_duration",
            "Duration of signings this node coordinated (partials, combine, verify, durable consumption)",
            Unit::Seconds,
            m.sign_seconds.clone(),
        );
        metrics.register(
            "session_failures",
            "Failed protocol sessions by protocol and blamed peer",
            m.session_failures.clone(),
        );
        metrics.register(
            "presignatures_discarded",
            "Presignatures discarded (failed signings, rollback checks)",
            m.presignatures_discarded.clone(),
        );
        metrics.register(
            "presign_sessions_in_flight",
            "Presign sessions the leader has running",
            m.presign_in_flight.clone(),
        );
        m
    }

    /// Counts a failed session, once per blamed peer (or once with `none`).
    pub fn failure(&self, protocol: &str, culprits: &[String]) {
        if culprits.is_empty() {
            self.session_failures
                .get_or_create(&FailureLabels {
                    protocol: protocol.to_owned(),
                    culprit: "none".to_owned(),
                })
                .inc();
        }
        for c in culprits {
            self.session_failures
                .get_or_create(&FailureLabels {
                    protocol: protocol.to_owned(),
                    culprit: c.clone(),
                })
                .inc();
        }
    }

    /// Records a signing duration.
    pub fn signed(&self, mode: &str, took: Duration) {
        self.sign_seconds
            .get_or_create(&SignLabels {
                mode: mode.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}
