//! The node's Prometheus metrics, at `GET /metrics` beside `/health`:
//! requests by method and status class, bytes received and sent, the
//! space used and left, and how long the fsyncs of each write take.

use http::{Method, StatusCode};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use s3s::Body;
use tenfold_common::metrics::{counting, status_class, text_response};

use crate::disk_store::DiskStore;

/// Buckets of fsync times, in seconds: 100 µs to ~6.5 s.
const FSYNC_BUCKETS: [f64; 17] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];

/// A histogram of fsync times, for the store to record into.
pub fn fsync_histogram() -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "tenfold_node_fsync_duration_seconds",
            "Time to fsync a written object file and its folder, or a volume (shared by the writes waiting).",
        )
        .buckets(FSYNC_BUCKETS.to_vec()),
    )
    .expect("valid metric")
}

/// A node's metrics.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    requests: IntCounterVec,
    received: IntCounter,
    sent: IntCounter,
    capacity: IntGauge,
    used: IntGauge,
    free: IntGauge,
    dead: IntGauge,
    objects_read: IntGauge,
}

impl NodeMetrics {
    /// Every metric, registered, with the store's fsync histogram.
    pub fn new(store: &DiskStore) -> Self {
        let registry = Registry::new();
        let register = |m: Box<dyn prometheus::core::Collector>| {
            registry.register(m).expect("metric registered once");
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "tenfold_node_http_requests_total",
                "Requests answered, by method and status class.",
            ),
            &["method", "status"],
        )
        .expect("valid metric");
        register(Box::new(requests.clone()));
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        register(Box::new(store.fsync_seconds().clone()));
        Self {
            requests,
            received: counter(
                "tenfold_node_received_bytes_total",
                "Request body bytes received.",
            ),
            sent: counter("tenfold_node_sent_bytes_total", "Response body bytes sent."),
            capacity: gauge(
                "tenfold_node_capacity_bytes",
                "The capacity the node offers.",
            ),
            used: gauge(
                "tenfold_node_used_bytes",
                "Bytes stored, writes in progress included.",
            ),
            free: gauge("tenfold_node_free_bytes", "Capacity left."),
            dead: gauge(
                "tenfold_node_volume_dead_bytes",
                "Bytes of overwritten and deleted small objects in volumes, until a merge reclaims them (counted in used).",
            ),
            objects_read: gauge(
                "tenfold_node_objects_read",
                "Objects opened for reading since the node started.",
            ),
            registry,
        }
    }

    /// `body`, counting its bytes as received.
    pub fn count_received(&self, body: Body) -> Body {
        counting(body, self.received.clone())
    }

    /// `body`, counting its bytes as sent.
    pub fn count_sent(&self, body: Body) -> Body {
        counting(body, self.sent.clone())
    }

    /// Counts a request answered with `status`.
    pub fn observe(&self, method: &Method, status: StatusCode) {
        self.requests
            .with_label_values(&[method.as_str(), status_class(status)])
            .inc();
    }

    /// Every metric in Prometheus's text format, the store's figures read
    /// now.
    pub fn render(&self, store: &DiskStore) -> http::Response<Body> {
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.capacity.set(count(store.capacity()));
        self.used.set(count(store.used()));
        self.free
            .set(count(store.capacity().saturating_sub(store.used())));
        self.dead.set(count(store.dead_bytes()));
        self.objects_read.set(count(store.reads()));
        text_response(&self.registry)
    }
}
