//! What an operator watches: the gateway's Prometheus metrics and its
//! admin listener (`/metrics`, `/health`, `/ready`), apart from the S3
//! port.
//!
//! Requests are counted on the way through (a few atomic operations each);
//! everything else — the nodes as the balancer sees them, the queues and
//! redundancy as the index records them — is read when Prometheus scrapes,
//! the index's figures at most every [`INDEX_FIGURES_EVERY`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode, header};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use s3s::Body;
use tenfold_balancer::{Network, NodeState};
use tenfold_common::http_server::{HttpLimits, plain_response, serve_http, terminated};
use tenfold_common::metrics::{counting, status_class, text_response};
use tokio::net::TcpListener;

use crate::index::Redundancy;
use crate::object_store::{BUDGET_UNIT, ObjectStore};

/// How often the figures read from the index (queues, redundancy, audits)
/// are read again at most: they cost a scan of the placements.
pub const INDEX_FIGURES_EVERY: Duration = Duration::from_secs(10);

/// Latency buckets of S3 requests, in seconds: 1 ms to ~65 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384, 32.768, 65.536,
];

/// What a request turned out to be — its S3 operation and the access key
/// that signed it — filled in by the access check (which `s3s` runs once
/// it has resolved the route) for the request's metrics and log line.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts(Arc<(OnceLock<String>, OnceLock<String>)>);

impl RequestFacts {
    /// Records the operation's name.
    pub fn set_operation(&self, name: &str) {
        let _ = self.0.0.set(name.to_owned());
    }

    /// Records the name of the access key that signed the request.
    pub fn set_access_key(&self, key: &str) {
        let _ = self.0.1.set(key.to_owned());
    }

    /// The operation, if one was recorded.
    pub fn operation(&self) -> Option<&str> {
        self.0.0.get().map(String::as_str)
    }

    /// The access key, if the request was signed.
    pub fn access_key(&self) -> Option<&str> {
        self.0.1.get().map(String::as_str)
    }
}

/// A gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    received_bytes: IntCounter,
    sent_bytes: IntCounter,
    upload_budget: IntGauge,
    download_budget: IntGauge,
    alive_tasks: IntGauge,
    node_up: IntGaugeVec,
    node_state: IntGaugeVec,
    node_capacity: IntGaugeVec,
    node_stored: IntGaugeVec,
    node_ttfb: prometheus::GaugeVec,
    node_throughput: prometheus::GaugeVec,
    node_reads: IntCounterVec,
    node_hedged_reads: IntCounterVec,
    node_batches: IntCounterVec,
    node_batched_replicas: IntCounterVec,
    node_errors: IntCounterVec,
    node_demotions: IntCounterVec,
    node_audits: IntCounterVec,
    node_audit_failures: IntCounterVec,
    overflow_fragments: IntGauge,
    overflow_bytes: IntGauge,
    garbage_queue: IntGauge,
    repair_queue: IntGauge,
    below_target: IntGauge,
    by_copies: IntGaugeVec,
    index_up: IntGauge,
    /// Counts already exported of counters kept elsewhere (the balancer's,
    /// the index's), by metric and node: scrapes add what they gained.
    exported: Mutex<HashMap<(&'static str, String), u64>>,
    /// When the index's figures were last read.
    index_read_at: Mutex<Option<Instant>>,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn float_gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::GaugeVec {
    let metric = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

const NODE: &[&str] = &["node", "network"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Self {
        let r = Registry::new();
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tenfold_s3_request_duration_seconds",
                "Time from a request's headers to its response's headers, by operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        r.register(Box::new(request_seconds.clone()))
            .expect("metric registered once");
        Self {
            requests: counter_vec(
                &r,
                "tenfold_s3_requests_total",
                "Requests answered, by S3 operation (or share / upload link route) and status class.",
                &["operation", "status"],
            ),
            request_seconds,
            received_bytes: counter(
                &r,
                "tenfold_s3_received_bytes_total",
                "Request body bytes received from clients.",
            ),
            sent_bytes: counter(
                &r,
                "tenfold_s3_sent_bytes_total",
                "Response body bytes sent to clients.",
            ),
            upload_budget: gauge(
                &r,
                "tenfold_upload_budget_in_use_bytes",
                "Plaintext bytes of uploads being compressed and placed now (the upload budget in use).",
            ),
            download_budget: gauge(
                &r,
                "tenfold_download_budget_in_use_bytes",
                "Plaintext bytes of downloads being fetched and decoded now (the download budget in use).",
            ),
            alive_tasks: gauge(
                &r,
                "tenfold_runtime_alive_tasks",
                "Tasks alive in the gateway's runtime now: one per open connection and request, plus the background jobs (a leak shows as growth).",
            ),
            node_up: gauge_vec(
                &r,
                "tenfold_storage_node_up",
                "1 when the node answered lately, 0 when it is failing.",
                NODE,
            ),
            node_state: gauge_vec(
                &r,
                "tenfold_storage_node_state",
                "1 for the node's lifecycle state (active, draining, lost, disqualified).",
                &["node", "network", "state"],
            ),
            node_capacity: gauge_vec(
                &r,
                "tenfold_storage_node_capacity_bytes",
                "Capacity the node reports or was registered with.",
                NODE,
            ),
            node_stored: gauge_vec(
                &r,
                "tenfold_storage_node_stored_bytes",
                "Bytes stored on the node, as best known.",
                NODE,
            ),
            node_ttfb: float_gauge_vec(
                &r,
                "tenfold_storage_node_first_byte_seconds",
                "Moving average of the node's time to first byte.",
                NODE,
            ),
            node_throughput: float_gauge_vec(
                &r,
                "tenfold_storage_node_read_throughput_bytes_per_second",
                "Moving average of the node's read throughput.",
                NODE,
            ),
            node_reads: counter_vec(
                &r,
                "tenfold_storage_node_reads_total",
                "Fragment reads asked of the node.",
                NODE,
            ),
            node_hedged_reads: counter_vec(
                &r,
                "tenfold_storage_node_hedged_reads_total",
                "Fragment reads asked of the node because another replica was slow.",
                NODE,
            ),
            node_batches: counter_vec(
                &r,
                "tenfold_storage_node_write_batches_total",
                "Batches of small replicas the node answered (a node that takes none shows 0).",
                NODE,
            ),
            node_batched_replicas: counter_vec(
                &r,
                "tenfold_storage_node_batched_replicas_total",
                "Small replicas sent to the node in batches.",
                NODE,
            ),
            node_errors: counter_vec(
                &r,
                "tenfold_storage_node_errors_total",
                "Failed requests to the node.",
                NODE,
            ),
            node_demotions: counter_vec(
                &r,
                "tenfold_storage_node_demotions_total",
                "Times the node was demoted for returning corrupt bytes.",
                NODE,
            ),
            node_audits: counter_vec(
                &r,
                "tenfold_storage_node_audits_total",
                "Replicas of the node read back and checked by the scrub.",
                NODE,
            ),
            node_audit_failures: counter_vec(
                &r,
                "tenfold_storage_node_audit_failures_total",
                "Audited replicas the node had lost or corrupted.",
                NODE,
            ),
            overflow_fragments: gauge(
                &r,
                "tenfold_overflow_fragments",
                "Fragments held by the overflow store (IPFS).",
            ),
            overflow_bytes: gauge(
                &r,
                "tenfold_overflow_bytes",
                "Bytes held by the overflow store (IPFS).",
            ),
            garbage_queue: gauge(
                &r,
                "tenfold_garbage_queue_replicas",
                "Replicas waiting to be removed from nodes.",
            ),
            repair_queue: gauge(
                &r,
                "tenfold_repair_queue_fragments",
                "Fragments waiting for a repair.",
            ),
            below_target: gauge(
                &r,
                "tenfold_fragments_below_target",
                "Fragments with fewer copies on active nodes than the storage policy asks for.",
            ),
            by_copies: gauge_vec(
                &r,
                "tenfold_fragments_by_node_copies",
                "Fragments by their number of copies on active nodes.",
                &["copies"],
            ),
            index_up: gauge(
                &r,
                "tenfold_index_up",
                "1 when the index answered the last scrape's queries.",
            ),
            registry: r,
            exported: Mutex::new(HashMap::new()),
            index_read_at: Mutex::new(None),
        }
    }

    /// Counts a request answered with `status` after `elapsed`.
    pub fn observe_request(&self, operation: &str, status: StatusCode, elapsed: Duration) {
        self.requests
            .with_label_values(&[operation, status_class(status)])
            .inc();
        self.request_seconds
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
    }

    /// `body`, counting its bytes as received.
    pub fn count_received(&self, body: Body) -> Body {
        counting(body, self.received_bytes.clone())
    }

    /// `body`, counting its bytes as sent.
    pub fn count_sent(&self, body: Body) -> Body {
        counting(body, self.sent_bytes.clone())
    }

    /// Adds to `metric` what a counter kept elsewhere gained since the last
    /// scrape (nothing when it went back: it restarted with its node).
    fn catch_up(&self, metric: &IntCounterVec, name: &'static str, labels: [&str; 2], now: u64) {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = exported
            .entry((name, format!("{}/{}", labels[0], labels[1])))
            .or_insert(0);
        // Created at zero, so that every node's series exist from the start.
        let counter = metric.with_label_values(&labels);
        if now > *last {
            counter.inc_by(now - *last);
        }
        *last = now;
    }

    /// Reads what is measured elsewhere (the balancer's nodes, the budgets,
    /// and at most every [`INDEX_FIGURES_EVERY`] the index's figures) and
    /// answers every metric in Prometheus's text format.
    pub async fn render(&self, store: &ObjectStore) -> Response<Body> {
        self.read_nodes(store);
        let budget = |semaphore: &tokio::sync::Semaphore, total: usize| {
            let free = semaphore.available_permits() * BUDGET_UNIT;
            i64::try_from(total.saturating_sub(free)).unwrap_or(i64::MAX)
        };
        self.upload_budget.set(budget(
            &store.segment_budget,
            crate::object_store::UPLOAD_BUDGET_BYTES,
        ));
        self.download_budget.set(budget(
            &store.fetch_budget,
            crate::object_store::DOWNLOAD_BUDGET_BYTES,
        ));
        self.alive_tasks.set(
            i64::try_from(
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
            )
            .unwrap_or(i64::MAX),
        );
        let due = {
            let mut at = self
                .index_read_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = at.is_none_or(|t| t.elapsed() >= INDEX_FIGURES_EVERY);
            if due {
                *at = Some(Instant::now());
            }
            due
        };
        if due {
            let read = tokio::time::timeout(Duration::from_secs(5), self.read_index(store)).await;
            self.index_up.set(i64::from(matches!(read, Ok(Ok(())))));
            if let Ok(Err(e)) = &read {
                tracing::warn!(error = %e, "metrics: the index did not answer");
            }
        }
        text_response(&self.registry)
    }

    fn read_nodes(&self, store: &ObjectStore) {
        for metric in [
            &self.node_up,
            &self.node_state,
            &self.node_capacity,
            &self.node_stored,
        ] {
            metric.reset();
        }
        self.node_ttfb.reset();
        self.node_throughput.reset();
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for node in store.balancer.status() {
            let network = network_name(node.network);
            let labels = [node.name.as_str(), network];
            self.node_up
                .with_label_values(&labels)
                .set(i64::from(node.healthy));
            self.node_state
                .with_label_values(&[node.name.as_str(), network, state_name(node.state)])
                .set(1);
            self.node_capacity
                .with_label_values(&labels)
                .set(count(node.capacity));
            self.node_stored
                .with_label_values(&labels)
                .set(count(node.used));
            if let Some(ms) = node.latency_ms {
                self.node_ttfb.with_label_values(&labels).set(ms / 1000.0);
            }
            if let Some(bps) = node.throughput {
                self.node_throughput.with_label_values(&labels).set(bps);
            }
            self.catch_up(&self.node_reads, "reads", labels, node.reads);
            self.catch_up(&self.node_hedged_reads, "hedged", labels, node.hedged_reads);
            self.catch_up(&self.node_batches, "batches", labels, node.batches);
            self.catch_up(
                &self.node_batched_replicas,
                "batched",
                labels,
                node.batched_replicas,
            );
            self.catch_up(&self.node_errors, "errors", labels, node.errors);
            self.catch_up(&self.node_demotions, "demotions", labels, node.demotions);
        }
    }

    async fn read_index(&self, store: &ObjectStore) -> Result<(), crate::error::GatewayError> {
        let index = &store.index;
        let (fragments, bytes) = index.overflow_usage().await?;
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.overflow_fragments.set(count(fragments));
        self.overflow_bytes.set(count(bytes));
        self.garbage_queue.set(index.garbage_len().await?);
        let Redundancy {
            fragments_below_target,
            fragments_by_node_copies,
            repair_queue,
            ..
        } = index.redundancy().await?;
        self.below_target.set(count(fragments_below_target));
        self.repair_queue.set(count(repair_queue));
        self.by_copies.reset();
        for (copies, n) in fragments_by_node_copies {
            self.by_copies.with_label_values(&[&copies]).set(count(n));
        }
        let records = index.node_records().await?;
        for node in index.nodes().await? {
            if let Some(record) = records.get(&node.id) {
                let labels = [node.name.as_str(), network_name(node.network)];
                self.catch_up(&self.node_audits, "audits", labels, record.audits);
                self.catch_up(
                    &self.node_audit_failures,
                    "audit_failures",
                    labels,
                    record.audit_failures,
                );
            }
        }
        Ok(())
    }
}

fn network_name(network: Network) -> &'static str {
    match network {
        Network::Mainnet => "mainnet",
        Network::Testnet => "testnet",
    }
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Active => "active",
        NodeState::Draining => "draining",
        NodeState::Lost => "lost",
        NodeState::Disqualified => "disqualified",
    }
}

/// Where the admin listener serves and who may read its metrics.
#[derive(Debug)]
pub struct AdminSettings {
    pub listener: TcpListener,
    /// When set, `/metrics` asks for `Authorization: Bearer TOKEN`.
    pub metrics_token: Option<String>,
}

/// Where the admin listener goes when nothing says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9001";

/// Binds the admin listener: at `configured` (`off`: none), failing if it
/// cannot, or at [`DEFAULT_ADMIN_LISTEN`], skipped with a warning if that
/// is taken (another gateway or dev cluster on this machine).
///
/// # Errors
/// [`GatewayError::Config`](crate::error::GatewayError::Config) when a configured address cannot be bound.
pub async fn bind_admin(
    configured: Option<&str>,
    metrics_token: Option<String>,
) -> Result<Option<AdminSettings>, crate::error::GatewayError> {
    let addr = match configured {
        Some("off") => return Ok(None),
        Some(addr) => addr,
        None => DEFAULT_ADMIN_LISTEN,
    };
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(AdminSettings {
            listener,
            metrics_token,
        })),
        Err(e) if configured.is_none() => {
            tracing::warn!(%addr, error = %e, "no admin listener (metrics, health): its default address is taken; set admin_listen");
            Ok(None)
        }
        Err(e) => Err(crate::error::GatewayError::Config(format!(
            "cannot listen on {addr} (admin_listen): {e}"
        ))),
    }
}

impl Metrics {
    /// Exports the index's write-transaction figures too.
    pub fn watch_index(&self, stats: &crate::index::IndexStats) {
        for metric in [
            Box::new(stats.write_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stats.write_retries.clone()),
            Box::new(stats.commit_batch_objects.clone()),
            Box::new(stats.read_seconds.clone()),
        ] {
            if let Err(e) = self.registry.register(metric) {
                tracing::warn!(error = %e, "index metrics not registered");
            }
        }
    }
}

/// Serves `/metrics`, `/health` and `/ready` on the admin listener until
/// the process is told to stop.
pub async fn serve_admin(admin: AdminSettings, metrics: Arc<Metrics>, store: Arc<ObjectStore>) {
    tracing::info!(addr = ?admin.listener.local_addr().ok(), "admin listener (metrics, health, readiness)");
    let token = admin.metrics_token.map(Arc::<str>::from);
    serve_http(
        admin.listener,
        HttpLimits::default(),
        None,
        terminated(),
        move |req: Request<Body>| {
            let metrics = Arc::clone(&metrics);
            let store = Arc::clone(&store);
            let token = token.clone();
            async move {
                match req.uri().path() {
                    "/health" => plain_response(StatusCode::OK, "ok\n"),
                    "/ready" => match readiness(&store).await {
                        Ok(()) => plain_response(StatusCode::OK, "ready\n"),
                        Err(why) => {
                            plain_response(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n"))
                        }
                    },
                    "/metrics" => {
                        if !authorized(&req, token.as_deref()) {
                            let mut resp =
                                plain_response(StatusCode::UNAUTHORIZED, "bearer token required\n");
                            resp.headers_mut().insert(
                                header::WWW_AUTHENTICATE,
                                HeaderValue::from_static("Bearer"),
                            );
                            return resp;
                        }
                        metrics.render(&store).await
                    }
                    _ => plain_response(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
        },
    )
    .await;
}

fn authorized(req: &Request<Body>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether the gateway can serve a PUT now: the index answers, and enough
/// nodes are up and active on each network to place every replica.
async fn readiness(store: &ObjectStore) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), store.index.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the index does not answer: {e}")),
        Err(_) => return Err("the index does not answer within 2 s".into()),
    }
    let policy = store.balancer.policy();
    let nodes = store.balancer.status();
    for (network, wanted) in [
        (Network::Mainnet, policy.mainnet),
        (Network::Testnet, policy.testnet),
    ] {
        let up = nodes
            .iter()
            .filter(|n| {
                n.network == network
                    && n.healthy
                    && n.state == NodeState::Active
                    && n.used < n.capacity
            })
            .count();
        if up < wanted {
            return Err(format!(
                "{up} {} nodes up with room, {wanted} needed",
                network_name(network)
            ));
        }
    }
    Ok(())
}
