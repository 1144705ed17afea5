//! The metrics registry served at `GET /metrics`, and the HTTP metrics the server records.
//!
//! Every metric is named with the `strongroom_` prefix. The node registers its own gauges,
//! counters and histograms (built with the re-exported [`prometheus_client`]) and keeps a
//! clone to update; a metric's handle shares its value with the registry.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "strongroom";

/// Media type of the exposition (OpenMetrics text, which Prometheus scrapes natively).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A shared metrics registry; clones refer to the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with the `strongroom_` prefix.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::with_prefix(METRIC_PREFIX))),
        }
    }

    /// Registers `metric` as `strongroom_<name>` with its help text. Counters get the
    /// `_total` suffix from the exposition format; do not add it to `name`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.with_registry(|r| r.register(name, help, metric));
    }

    /// Registers `metric` as `strongroom_<name>_<unit>`, e.g. durations in seconds.
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.with_registry(|r| r.register_with_unit(name, help, unit, metric));
    }

    /// Runs `f` on the registry, e.g. to add a sub-registry or a collector.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        // Registration cannot leave the registry half-updated, so a poisoned lock is usable.
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry)
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// Labels of the HTTP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    /// Request method.
    pub(crate) method: String,
    /// Route pattern (`/v1/keys/{key_id}`), or `unmatched`: never the raw path, whose
    /// values would make the label set unbounded.
    pub(crate) route: String,
    /// Response status code.
    pub(crate) status: u16,
}

type DurationFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics the server records for every request.
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    durations: DurationFamily,
}

impl HttpMetrics {
    /// Creates the HTTP metrics and registers them in `metrics`.
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        let durations = DurationFamily::new_with_constructor(duration_histogram);
        metrics.register(
            "http_requests",
            "API requests answered, by method, route and status",
            requests.clone(),
        );
        metrics.register_with_unit(
            "http_request_duration",
            "Time from a request's headers to its response, by method, route and status",
            Unit::Seconds,
            durations.clone(),
        );
        Self {
            requests,
            durations,
        }
    }

    pub(crate) fn record(&self, labels: &HttpLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.durations
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn node_metrics_and_http_metrics_share_the_registry() {
        let metrics = Metrics::new();
        let pool = Gauge::<i64>::default();
        metrics.register(
            "presignatures_available",
            "Presignatures ready",
            pool.clone(),
        );
        pool.set(42);
        let http = HttpMetrics::register(&metrics);
        let labels = HttpLabels {
            method: "GET".into(),
            route: "/v1/health".into(),
            status: 200,
        };
        http.record(&labels, Duration::from_millis(3));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("strongroom_presignatures_available 42"),
            "{text}"
        );
        assert!(
            text.contains(
                "strongroom_http_requests_total{method=\"GET\",route=\"/v1/health\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("strongroom_http_request_duration_seconds_count"),
            "{text}"
        );
    }
}
