//! The registry of storage nodes: health, capacity and latency, refreshed by
//! periodic probes and by every transfer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tenfold_overflow::OverflowStore;

use crate::node::{Network, NodeSpec, NodeState};
use crate::node_client::{CONNECT_TIMEOUT, HttpClient, NodeClient, NodeFailure};
use crate::placement::ReplicaPolicy;
use crate::trust::NodeTrust;
use crate::write_batch::WriteQueue;

/// How long a node that failed a request is skipped (a successful probe
/// brings it back sooner).
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// How long a node that returned corrupt bytes is read last, whatever its
/// probes say.
pub const DEMOTED_FOR: Duration = Duration::from_secs(300);
/// How long a node that said it is full gets no new replicas, unless its
/// health report shows free space again.
pub const FULL_FOR: Duration = Duration::from_secs(30);
/// How long an idle connection to a node is kept for the next request:
/// less than the 30 s after which a `tenfold-node` closes one, so that a
/// request is never sent down a connection the node is closing at that
/// moment (which fails it, and marks the node down). The pool's timer
/// closes a connection once it has been idle this long, so a burst of
/// requests leaves no descriptors behind.
const POOL_IDLE: Duration = Duration::from_secs(20);
/// Requests in flight to one node at most.
pub const NODE_CONCURRENCY: usize = 16;
/// Bytes of fragment reads in flight to one node at most (at least one read
/// is, however large): the rest wait in the gateway, in the order they were
/// asked. A node shares its uplink among the reads it serves, so with every
/// read of a large GET in flight at once the segment the client waits for
/// arrives no sooner than those fetched ahead of it, and the download
/// proceeds in waves with nodes idle between them. A few MiB keep a
/// wide-area link busy (its bandwidth times its round trip) while reads are
/// served nearly first come, first served; small reads hardly count.
pub const READ_WINDOW_BYTES: u64 = 4 << 20;
/// The granularity of [`READ_WINDOW_BYTES`].
const READ_WINDOW_UNIT: u64 = 64 << 10;
const WINDOW_UNITS: u64 = READ_WINDOW_BYTES / READ_WINDOW_UNIT;
/// Most bytes of a node's `/health` report read (a report is ~1 KiB).
pub const HEALTH_BODY_LIMIT: usize = 64 << 10;
/// Time allowed for a health probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Recent fragment reads kept per node for the hedging percentile: enough
/// for a stable 95th percentile, few enough to follow a node that slows down.
pub const LATENCY_SAMPLES: usize = 64;
/// Shortest wait before a read is hedged to the next replica: below this,
/// loopback jitter alone would double the reads.
pub const HEDGE_FLOOR: Duration = Duration::from_millis(15);
/// Longest wait before hedging, whatever a node's history says.
pub const HEDGE_CEILING: Duration = Duration::from_secs(2);
/// Throughput assumed of a node not yet read from (bytes per second), so
/// that reads already queued on it still count against it.
const UNKNOWN_THROUGHPUT: f64 = 100.0 * 1024.0 * 1024.0;
/// Weight of a new observation in the moving averages.
const EWMA_WEIGHT: f64 = 0.2;

#[derive(Debug, Default)]
struct LiveState {
    /// Capacity and usage the node reported on `/health` (Tenfold nodes).
    reported: Option<(u64, u64)>,
    /// Bytes placed on the node since its usage was last known.
    placed_since: u64,
    down_until: Option<Instant>,
    demoted_until: Option<Instant>,
    full_until: Option<Instant>,
    bucket_ready: bool,
    /// Moving average of time to first byte (reads and probes), in ms.
    latency_ms: Option<f64>,
    /// Moving average of read throughput once the first byte arrived, in
    /// bytes per second.
    throughput: Option<f64>,
    /// Whole-read times of the latest fragment reads, in ms, including
    /// reads abandoned because another replica answered first (as the time
    /// they had taken so far: a lower bound).
    read_ms: VecDeque<f64>,
    /// Failed requests since the node was registered.
    errors: u64,
    last_error: Option<String>,
    /// Reads asked of the node while it was demoted, because every other
    /// replica had failed.
    last_resort_reads: u64,
    /// Since when every probe of the node has failed (none since the last
    /// one that reached it).
    unreachable_since: Option<Instant>,
    /// Fragment reads asked of it, and how many of them were hedges (asked
    /// because another replica was slow).
    reads: u64,
    hedged_reads: u64,
    /// Times it was demoted for returning corrupt bytes.
    demotions: u64,
    /// Batches of small replicas it answered, and the replicas in them.
    batches: u64,
    batched_replicas: u64,
}

impl LiveState {
    fn push_read(&mut self, ms: f64) {
        if self.read_ms.len() == LATENCY_SAMPLES {
            self.read_ms.pop_front();
        }
        self.read_ms.push_back(ms);
    }

    /// The `q` quantile of recent read times, if there are any.
    fn read_quantile(&self, q: f64) -> Option<f64> {
        if self.read_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.read_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let at = ((sorted.len() - 1) as f64 * q).round() as usize;
        Some(sorted[at])
    }

    /// Milliseconds to read `bytes` from the node: time to first byte plus
    /// the bytes at its throughput. Unknown figures count as a fast node's,
    /// so new nodes get tried.
    fn expected_ms(&self, bytes: u64) -> f64 {
        let first_byte = self.latency_ms.unwrap_or(0.0).max(0.0);
        #[allow(clippy::cast_precision_loss)]
        let transfer = bytes as f64 / self.throughput.unwrap_or(UNKNOWN_THROUGHPUT) * 1000.0;
        first_byte + transfer
    }
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    old.map_or(sample, |m| (1.0 - EWMA_WEIGHT) * m + EWMA_WEIGHT * sample)
}

/// One node: its registration, its S3 client and its live state.
#[derive(Debug)]
pub struct NodeHandle {
    pub spec: NodeSpec,
    pub(crate) client: NodeClient,
    state: Mutex<LiveState>,
    /// What is asked of the node right now; kept when the registration's
    /// recorded usage changes and the handle is replaced.
    pub(crate) load: Arc<NodeLoad>,
}

/// The requests in flight to one node.
#[derive(Debug)]
pub(crate) struct NodeLoad {
    /// Bounds the requests in flight to this node, so a burst queues here
    /// instead of timing out at the node and marking it down.
    pub(crate) slots: tokio::sync::Semaphore,
    /// Bounds the bytes of fragment reads in flight to this node, in
    /// [`READ_WINDOW_UNIT`]s: see [`READ_WINDOW_BYTES`].
    read_window: tokio::sync::Semaphore,
    /// Bytes of the fragment reads asked of the node and not finished,
    /// queued ones too.
    reading_bytes: AtomicU64,
    /// Bytes of the replicas being written to the node, queued ones too:
    /// counted as used until they are placed or fail.
    writing_bytes: AtomicU64,
    /// Time the node spent sending fragments, for its throughput.
    clock: Mutex<TransferClock>,
    /// Small replicas waiting to go to the node in a batch.
    pub(crate) writes: WriteQueue,
}

impl NodeLoad {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            slots: tokio::sync::Semaphore::new(NODE_CONCURRENCY),
            read_window: tokio::sync::Semaphore::new(WINDOW_UNITS as usize),
            reading_bytes: AtomicU64::new(0),
            writing_bytes: AtomicU64::new(0),
            clock: Mutex::new(TransferClock::default()),
            writes: WriteQueue::default(),
        })
    }

    /// Waits for room in the node's read window for a read of `len` bytes,
    /// then for a request slot; the read may go once both are held.
    pub(crate) async fn read_turn(
        &self,
        len: u64,
    ) -> (
        tokio::sync::SemaphorePermit<'_>,
        tokio::sync::SemaphorePermit<'_>,
    ) {
        #[allow(clippy::cast_possible_truncation)]
        let units = len.div_ceil(READ_WINDOW_UNIT).clamp(1, WINDOW_UNITS) as u32;
        let window = self
            .read_window
            .acquire_many(units)
            .await
            .expect("the read window is never closed");
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the request slots are never closed");
        (window, slot)
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, TransferClock> {
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A node's throughput is the bytes it sent over the time it was sending
/// any: concurrent reads share the node, so one read's own rate says little.
#[derive(Debug, Default)]
struct TransferClock {
    /// Reads transferring now.
    active: u32,
    /// Since when some read has been transferring.
    busy_since: Option<Instant>,
    /// Bytes read and busy time not yet turned into a sample.
    bytes: u64,
    busy: Duration,
}

/// Least busy time and bytes that make a throughput sample.
const SAMPLE_BUSY: Duration = Duration::from_millis(50);
const SAMPLE_BYTES: u64 = 256 << 10;

impl TransferClock {
    fn begin(&mut self, now: Instant) {
        if self.active == 0 {
            self.busy_since = Some(now);
        }
        self.active += 1;
    }

    /// A read that began ends having moved `bytes`; a throughput sample
    /// (bytes per second) once enough has been timed.
    fn end(&mut self, now: Instant, bytes: u64) -> Option<f64> {
        self.active = self.active.saturating_sub(1);
        self.bytes += bytes;
        let running = self
            .busy_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let busy = self.busy + running;
        if self.active == 0 {
            self.busy = busy;
            self.busy_since = None;
        }
        if busy < SAMPLE_BUSY || self.bytes < SAMPLE_BYTES {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let bps = self.bytes as f64 / busy.as_secs_f64();
        self.bytes = 0;
        self.busy = Duration::ZERO;
        if self.active > 0 {
            self.busy_since = Some(now);
        }
        Some(bps)
    }
}

/// A fragment read counted in its node's load until dropped.
pub(crate) struct Reading {
    load: Arc<NodeLoad>,
    len: u64,
    /// Whether its transfer began and has not ended.
    transferring: bool,
}

impl Reading {
    /// The read got its slot: the node is sending from now on.
    pub(crate) fn begin(&mut self) {
        self.load.clock().begin(Instant::now());
        self.transferring = true;
    }

    /// The read ends having moved `bytes`; a throughput sample if due.
    fn end(&mut self, bytes: u64) -> Option<f64> {
        if !std::mem::take(&mut self.transferring) {
            return None;
        }
        self.load.clock().end(Instant::now(), bytes)
    }
}

/// A replica write counted in its node's load while it lasts.
#[must_use = "the write stays counted only while the guard lives"]
pub(crate) struct Writing {
    load: Arc<NodeLoad>,
    len: u64,
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.load
            .writing_bytes
            .fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.end(0);
        self.load
            .reading_bytes
            .fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// A node's state as shown by `tenfold nodes list` and `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub id: i64,
    pub name: String,
    pub endpoint: String,
    pub network: Network,
    pub healthy: bool,
    pub capacity: u64,
    pub used: u64,
    /// Moving average of time to first byte.
    pub latency_ms: Option<f64>,
    /// 95th percentile of recent fragment reads.
    pub read_p95_ms: Option<f64>,
    /// Moving average of read throughput, bytes per second.
    pub throughput: Option<f64>,
    /// Whether the node returned corrupt bytes lately (read only when
    /// every other replica has failed).
    pub demoted: bool,
    /// Reads asked of it while demoted (every other replica had failed).
    pub last_resort_reads: u64,
    /// Fragment reads asked of it since the gateway started.
    pub reads: u64,
    /// Of those, reads asked because another replica was slow.
    pub hedged_reads: u64,
    /// Times it was demoted for returning corrupt bytes.
    pub demotions: u64,
    /// Batches of small replicas it answered since the gateway started
    /// (none from a node that takes no batches).
    pub batches: u64,
    /// The replicas in those batches.
    pub batched_replicas: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Its place in the node lifecycle, as the index records it.
    pub state: NodeState,
    /// How long every probe of it has failed, when the last one did.
    #[serde(skip)]
    pub unreachable_for: Option<Duration>,
}

fn still(until: Option<Instant>, now: Instant) -> bool {
    until.is_some_and(|t| t > now)
}

impl NodeHandle {
    fn state(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Capacity and bytes used as best known now, replicas being written
    /// included.
    pub fn usage(&self) -> (u64, u64) {
        let writing = self.load.writing_bytes.load(Ordering::Relaxed);
        let st = self.state();
        let (cap, used) = match st.reported {
            Some((cap, used)) => (cap.min(self.spec.capacity), used),
            None => (self.spec.capacity, self.spec.stored_bytes),
        };
        (cap, used + st.placed_since + writing)
    }

    /// Its fill, as a share of its capacity, once it took `len` bytes more.
    pub fn fill_after(&self, len: u64) -> f64 {
        let (cap, used) = self.usage();
        #[allow(clippy::cast_precision_loss)]
        let fill = used.saturating_add(len) as f64 / cap.max(1) as f64;
        fill
    }

    /// Whether the node may take a new replica of `len` bytes: `None` when
    /// it is full (or said so lately), else whether it is up (a node that
    /// failed lately is only a last resort).
    pub fn placement_choice(&self, len: u64) -> Option<bool> {
        if self.spec.state != NodeState::Active {
            return None;
        }
        let now = Instant::now();
        let down = {
            let st = self.state();
            if still(st.full_until, now) {
                return None;
            }
            still(st.down_until, now)
        };
        let (cap, used) = self.usage();
        (used.saturating_add(len) <= cap).then_some(!down)
    }

    /// Sort key for reading `len` bytes: healthy nodes first, then nodes
    /// that failed lately, then demoted ones (which [`Balancer::read_nodes`]
    /// asks only once every other replica has failed), then by the expected
    /// time of the read: time to first byte plus `len`, after the bytes
    /// already being read from the node, at the node's throughput. The
    /// queue term is what spreads a large GET's fragment reads over every
    /// node that holds them instead of piling them on the fastest.
    pub(crate) fn read_rank(&self, len: u64) -> (u8, u64) {
        let now = Instant::now();
        let queued = self.load.reading_bytes.load(Ordering::Relaxed);
        let st = self.state();
        let demoted = still(st.demoted_until, now) || self.spec.state == NodeState::Disqualified;
        let penalty = u8::from(demoted) * 2 + u8::from(still(st.down_until, now));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (penalty, (st.expected_ms(queued + len) * 1000.0) as u64)
    }

    /// Whether the node returned corrupt bytes lately.
    pub(crate) fn is_demoted(&self) -> bool {
        self.spec.state == NodeState::Disqualified
            || still(self.state().demoted_until, Instant::now())
    }

    /// A demoted node is asked for a fragment because every other replica
    /// failed.
    pub(crate) fn record_last_resort(&self) {
        self.state().last_resort_reads += 1;
    }

    /// A fragment read is asked of the node; `hedge`: because the replica
    /// asked before was slow.
    pub(crate) fn record_asked(&self, hedge: bool) {
        let mut st = self.state();
        st.reads += 1;
        st.hedged_reads += u64::from(hedge);
    }

    /// How long a read just asked of this node may take before the next
    /// replica is asked too: the 95th percentile of its recent reads, or
    /// twice the time the reads queued on it (this one included) should
    /// take if that is longer, so that a node busy with a large GET is not
    /// hedged away from for being busy; within [`HEDGE_FLOOR`] and
    /// [`HEDGE_CEILING`].
    pub(crate) fn hedge_delay(&self) -> Duration {
        let queued = self.load.reading_bytes.load(Ordering::Relaxed);
        let st = self.state();
        let p95 = st.read_quantile(0.95).unwrap_or(0.0);
        let ms = if st.latency_ms.is_none() && p95 == 0.0 {
            (HEDGE_FLOOR * 4).as_secs_f64() * 1000.0
        } else {
            p95.max(2.0 * st.expected_ms(queued))
        };
        Duration::from_secs_f64(ms / 1000.0).clamp(HEDGE_FLOOR, HEDGE_CEILING)
    }

    /// A probe or request answered after `started`.
    pub(crate) fn record_success(&self, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut st = self.state();
        st.latency_ms = Some(ewma(st.latency_ms, ms));
        st.down_until = None;
    }

    /// Counts a replica write of `len` bytes as used room (and load) until
    /// the returned guard is dropped: concurrent placements do not overshoot
    /// a node's room, and of two nodes equally full the one with less
    /// queued is drawn.
    pub(crate) fn start_write(&self, len: u64) -> Writing {
        self.load.writing_bytes.fetch_add(len, Ordering::Relaxed);
        Writing {
            load: Arc::clone(&self.load),
            len,
        }
    }

    /// Counts a read of `len` bytes in the node's load until the returned
    /// guard is dropped.
    pub(crate) fn start_read(&self, len: u64) -> Reading {
        self.load.reading_bytes.fetch_add(len, Ordering::Relaxed);
        Reading {
            load: Arc::clone(&self.load),
            len,
            transferring: false,
        }
    }

    /// A batch of `replicas` small replicas the node answered.
    pub(crate) fn record_batch(&self, replicas: usize) {
        let mut st = self.state();
        st.batches += 1;
        st.batched_replicas += replicas as u64;
    }

    /// A fragment read that completed; `reading` is its load guard.
    pub(crate) fn record_read(
        &self,
        reading: &mut Reading,
        len: usize,
        first_byte: Duration,
        total: Duration,
    ) {
        let sample = reading.end(len as u64);
        let mut st = self.state();
        st.latency_ms = Some(ewma(st.latency_ms, first_byte.as_secs_f64() * 1000.0));
        if let Some(bps) = sample {
            st.throughput = Some(ewma(st.throughput, bps));
        }
        st.push_read(total.as_secs_f64() * 1000.0);
        st.down_until = None;
    }

    /// A read abandoned after `elapsed` because another replica answered
    /// first: the node was at least this slow.
    pub(crate) fn record_abandoned(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let mut st = self.state();
        // It had not finished after `ms`: a sample of its latency at least
        // that long. Averaged in, not taken whole: a node that lost one race
        // while busy is not ranked out of every read after it, while one
        // that stalls loses rank with each read hedged away from it.
        st.latency_ms = Some(ewma(st.latency_ms, ms));
        st.push_read(ms);
    }

    pub(crate) fn record_placed(&self, len: u64) {
        self.state().placed_since += len;
    }

    pub(crate) fn record_failure(&self, failure: &NodeFailure) {
        let now = Instant::now();
        let mut st = self.state();
        st.errors += 1;
        st.last_error = Some(failure.to_string());
        match failure {
            NodeFailure::Full(_) => st.full_until = Some(now + FULL_FOR),
            NodeFailure::Corrupt => {
                tracing::warn!(node = self.spec.id, "node returned corrupt bytes: demoted");
                st.demoted_until = Some(now + DEMOTED_FOR);
                st.demotions += 1;
            }
            NodeFailure::Missing => {}
            NodeFailure::Other(_) => st.down_until = Some(now + DOWN_FOR),
        }
    }

    pub(crate) async fn ensure_bucket(&self) -> Result<(), NodeFailure> {
        let ready = self.state().bucket_ready;
        if ready {
            return Ok(());
        }
        self.client.ensure_bucket(&self.spec.bucket).await?;
        self.state().bucket_ready = true;
        Ok(())
    }

    fn status(&self) -> NodeStatus {
        let (capacity, used) = self.usage();
        let now = Instant::now();
        let st = self.state();
        NodeStatus {
            id: self.spec.id,
            name: self.spec.name.clone(),
            endpoint: self.spec.endpoint.clone(),
            network: self.spec.network,
            healthy: !still(st.down_until, now),
            capacity,
            used,
            latency_ms: st.latency_ms,
            read_p95_ms: st.read_quantile(0.95),
            throughput: st.throughput,
            demoted: still(st.demoted_until, now),
            last_resort_reads: st.last_resort_reads,
            reads: st.reads,
            hedged_reads: st.hedged_reads,
            demotions: st.demotions,
            batches: st.batches,
            batched_replicas: st.batched_replicas,
            errors: st.errors,
            last_error: st.last_error.clone(),
            state: self.spec.state,
            unreachable_for: st
                .unreachable_since
                .map(|t| now.saturating_duration_since(t)),
        }
    }
}

/// The node balancer: shared by every request of a gateway.
#[derive(Debug)]
pub struct Balancer {
    /// The connection pool of every request to nodes, probes included.
    http: HttpClient,
    nodes: RwLock<BTreeMap<i64, Arc<NodeHandle>>>,
    /// The same nodes by network (mainnet, testnet), for placement to draw
    /// from without copying the set.
    by_network: RwLock<[Arc<Vec<Arc<NodeHandle>>>; 2]>,
    pub(crate) policy: ReplicaPolicy,
    /// The write quorum (see [`Balancer::min_copies`]).
    pub(crate) min_copies: usize,
    /// Where fragments go when the nodes cannot hold them.
    pub(crate) overflow: Option<Arc<dyn OverflowStore>>,
}

impl Balancer {
    /// A balancer with no nodes yet.
    pub fn new(policy: ReplicaPolicy) -> Self {
        Self::with_trust(policy, &NodeTrust::default())
    }

    /// A balancer with no nodes yet that verifies https nodes against
    /// `trust`.
    pub fn with_trust(policy: ReplicaPolicy, trust: &NodeTrust) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(false);
        Self {
            http: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_timer(TokioTimer::new())
                .build(trust.connector(connector)),
            nodes: RwLock::new(BTreeMap::new()),
            by_network: RwLock::default(),
            policy,
            min_copies: policy.total(),
            overflow: None,
        }
    }

    /// Acknowledges a fragment once it has `copies` copies (by default,
    /// every copy the policy asks for).
    #[must_use]
    pub fn with_min_copies(mut self, copies: usize) -> Self {
        self.min_copies = copies;
        self
    }

    /// Sends fragments the nodes cannot hold to `store`.
    #[must_use]
    pub fn with_overflow(mut self, store: Arc<dyn OverflowStore>) -> Self {
        self.overflow = Some(store);
        self
    }

    /// The overflow store, if one is configured.
    pub fn overflow(&self) -> Option<&Arc<dyn OverflowStore>> {
        self.overflow.as_ref()
    }

    /// The replica policy in force.
    pub fn policy(&self) -> ReplicaPolicy {
        self.policy
    }

    /// Replaces the node set with what the index lists, keeping the live
    /// state of nodes whose registration did not change.
    pub fn set_nodes(&self, specs: Vec<NodeSpec>) {
        let mut nodes = self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = BTreeMap::new();
        for spec in specs {
            let handle = match nodes.remove(&spec.id) {
                Some(old) if old.spec == spec => old,
                Some(old) if same_endpoint(&old.spec, &spec) => {
                    // Only the recorded usage changed: keep the live state.
                    let mut state = std::mem::take(&mut *old.state());
                    if state.reported.is_none() {
                        state.placed_since = 0;
                    }
                    Arc::new(NodeHandle {
                        client: old.client.clone(),
                        spec,
                        state: Mutex::new(state),
                        load: Arc::clone(&old.load),
                    })
                }
                _ => {
                    tracing::info!(node = spec.id, endpoint = %spec.endpoint, network = %spec.network, "node joined the registry");
                    Arc::new(NodeHandle {
                        client: NodeClient::new(&spec, self.http.clone()),
                        spec,
                        state: Mutex::new(LiveState::default()),
                        load: NodeLoad::new(),
                    })
                }
            };
            next.insert(handle.spec.id, handle);
        }
        for gone in nodes.keys() {
            if !next.contains_key(gone) {
                tracing::info!(node = gone, "node left the registry");
            }
        }
        let of = |network| {
            Arc::new(
                next.values()
                    .filter(|n| n.spec.network == network)
                    .cloned()
                    .collect(),
            )
        };
        *self
            .by_network
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            [of(Network::Mainnet), of(Network::Testnet)];
        *nodes = next;
    }

    /// The node with this id.
    ///
    /// # Errors
    /// [`crate::BalancerError::UnknownNode`] when it is not registered.
    pub fn node(&self, id: i64) -> Result<Arc<NodeHandle>, crate::BalancerError> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
            .ok_or(crate::BalancerError::UnknownNode(id))
    }

    pub(crate) fn nodes_in(&self, network: Network) -> Arc<Vec<Arc<NodeHandle>>> {
        let by_network = self
            .by_network
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&by_network[usize::from(network == Network::Testnet)])
    }

    /// Whether node `id` failed lately (or is not registered): a request to
    /// it now would most likely fail too.
    pub fn is_down(&self, id: i64) -> bool {
        self.node(id)
            .is_ok_and(|n| still(n.state().down_until, Instant::now()))
    }

    /// Every node's live status.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|n| n.status())
            .collect()
    }

    /// Probes every node once, concurrently: `/health` for usage where the
    /// node offers it, and the fragment bucket for plain S3 nodes.
    pub async fn probe_all(&self) {
        let nodes: Vec<_> = self
            .nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        futures::future::join_all(nodes.iter().map(|n| self.probe(n))).await;
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node = node.spec.id))]
    async fn probe(&self, node: &NodeHandle) {
        let started = Instant::now();
        let report = tokio::time::timeout(PROBE_TIMEOUT, self.health_report(&node.spec)).await;
        let result = match report {
            Ok(Err(failure)) => Err(failure),
            Ok(Ok(Some(usage))) => {
                {
                    let mut st = node.state();
                    st.reported = Some(usage);
                    st.placed_since = 0;
                    if usage.0 > usage.1 {
                        st.full_until = None;
                    }
                }
                tokio::time::timeout(PROBE_TIMEOUT, node.ensure_bucket())
                    .await
                    .unwrap_or_else(|_| Err(NodeFailure::Other("probe timed out".into())))
            }
            // No /health: a plain S3 node, alive if its bucket answers.
            Ok(Ok(None)) => {
                node.state().bucket_ready = false;
                tokio::time::timeout(PROBE_TIMEOUT, node.ensure_bucket())
                    .await
                    .unwrap_or_else(|_| Err(NodeFailure::Other("probe timed out".into())))
            }
            Err(_) => Err(NodeFailure::Other("health probe timed out".into())),
        };
        match result {
            Ok(()) => {
                node.record_success(started);
                node.state().unreachable_since = None;
            }
            Err(failure) => {
                tracing::warn!(node = node.spec.id, %failure, "node probe failed");
                node.record_failure(&NodeFailure::Other(failure.to_string()));
                node.state().unreachable_since.get_or_insert(started);
            }
        }
    }

    /// Reads a Tenfold node's `/health` report: `(capacity, used)`, or
    /// `None` when the node has no such report (a plain S3 server). A
    /// report larger than [`HEALTH_BODY_LIMIT`] is a failure: nodes are run
    /// by outside operators, and what they send is not trusted.
    async fn health_report(&self, spec: &NodeSpec) -> Result<Option<(u64, u64)>, NodeFailure> {
        let Ok(uri) =
            format!("{}/health", spec.endpoint.trim_end_matches('/')).parse::<http::Uri>()
        else {
            return Ok(None);
        };
        let Ok(request) = http::Request::get(uri).body(Full::new(Bytes::new())) else {
            return Ok(None);
        };
        let Ok(resp) = self.http.request(request).await else {
            return Ok(None);
        };
        if !resp.status().is_success() {
            return Ok(None);
        }
        let body = match http_body_util::Limited::new(resp.into_body(), HEALTH_BODY_LIMIT)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(NodeFailure::Other(format!(
                    "health report larger than {HEALTH_BODY_LIMIT} bytes"
                )));
            }
            Err(_) => return Ok(None),
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Ok(None);
        };
        let field = |name: &str| json.get(name).and_then(serde_json::Value::as_u64);
        Ok(field("capacity").zip(field("used")))
    }
}

fn same_endpoint(a: &NodeSpec, b: &NodeSpec) -> bool {
    a.endpoint == b.endpoint
        && a.access_key == b.access_key
        && a.secret_key == b.secret_key
        && a.bucket == b.bucket
        && a.network == b.network
}

impl crate::choice::Candidate for NodeHandle {
    fn id(&self) -> i64 {
        self.spec.id
    }
    fn placement_choice(&self, len: u64) -> Option<bool> {
        NodeHandle::placement_choice(self, len)
    }
    fn fill_after(&self, len: u64) -> f64 {
        NodeHandle::fill_after(self, len)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn spec(id: i64) -> NodeSpec {
        NodeSpec {
            id,
            name: format!("n{id}"),
            endpoint: format!("http://127.0.0.1:{}", 1 + id),
            network: Network::Mainnet,
            capacity: 1 << 30,
            stored_bytes: 0,
            access_key: "k".into(),
            secret_key: "s".into(),
            bucket: "b".into(),
            state: NodeState::Active,
        }
    }

    /// Four 1 MB reads always in flight, each taking 80 ms: the node moves
    /// 50 MB/s, although each read alone sees 12.5 MB/s.
    #[test]
    fn throughput_is_the_nodes_not_one_reads() {
        let mut clock = TransferClock::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut samples = Vec::new();
        for i in 0..4 {
            clock.begin(ms(i * 20));
        }
        for i in 4..200 {
            samples.extend(clock.end(ms(i * 20), 1_000_000));
            clock.begin(ms(i * 20));
        }
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((45e6..55e6).contains(&mean), "{mean} from {samples:?}");
    }

    /// Equal nodes: the one with reads queued ranks after the idle one.
    #[test]
    fn queued_reads_rank_a_node_later() {
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![spec(1), spec(2)]);
        let (one, two) = (balancer.node(1).unwrap(), balancer.node(2).unwrap());
        assert_eq!(one.read_rank(800_000), two.read_rank(800_000));
        let reading = one.start_read(4_000_000);
        assert!(one.read_rank(800_000) > two.read_rank(800_000));
        // Kept when the registration's usage changes and the handle is new.
        balancer.set_nodes(vec![
            NodeSpec {
                stored_bytes: 1,
                ..spec(1)
            },
            spec(2),
        ]);
        let one = balancer.node(1).unwrap();
        assert!(one.read_rank(800_000) > two.read_rank(800_000));
        drop(reading);
        assert_eq!(one.read_rank(800_000), two.read_rank(800_000));
    }

    /// Fragment reads take turns within the node's read window, first come
    /// first served: 1 MiB reads fill it four at a time, a small read asked
    /// after a waiting one waits behind it, and a read larger than the whole
    /// window still goes, alone.
    #[tokio::test]
    async fn reads_wait_their_turn_in_the_window() {
        use futures::FutureExt;
        let load = NodeLoad::new();
        let mib = 1 << 20;
        let fits = READ_WINDOW_BYTES / mib;
        let mut held: Vec<_> = Vec::new();
        for _ in 0..fits {
            held.push(
                load.read_turn(mib)
                    .now_or_never()
                    .expect("room in the window"),
            );
        }
        let mut big = Box::pin(load.read_turn(mib));
        assert!((&mut big).now_or_never().is_none(), "the window is full");
        let mut small = Box::pin(load.read_turn(4096));
        assert!(
            (&mut small).now_or_never().is_none(),
            "a later small read went before a waiting one"
        );
        held.truncate(fits as usize - 2);
        let big = big.now_or_never().expect("reads ended: the next one goes");
        let small = small.now_or_never().expect("room for the small one too");
        drop((held, big, small));
        let huge = load.read_turn(4 * READ_WINDOW_BYTES).now_or_never();
        assert!(
            huge.is_some(),
            "a read larger than the window waited forever"
        );
    }

    /// Replicas being written count as used: equal nodes, the one with
    /// writes queued is the fuller, and a node whose room they take is
    /// offered no more until they end.
    #[test]
    fn queued_writes_take_room_until_they_end() {
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![spec(1), spec(2)]);
        let (one, two) = (balancer.node(1).unwrap(), balancer.node(2).unwrap());
        assert_eq!(one.fill_after(1000), two.fill_after(1000));
        let writing = one.start_write(1 << 29);
        assert!(one.fill_after(1000) > two.fill_after(1000));
        assert_eq!(one.placement_choice(1 << 29), Some(true));
        let more = one.start_write(1 << 29);
        assert_eq!(one.placement_choice(1), None, "no room left");
        assert_eq!(one.status().used, 1 << 30);
        drop((writing, more));
        assert_eq!(one.fill_after(1000), two.fill_after(1000));
        assert_eq!(one.placement_choice(1 << 30), Some(true));
    }

    /// A node whose `/health` answer never ends is marked down after the
    /// first 64 KiB, instead of being read into memory.
    #[tokio::test]
    async fn an_endless_health_report_marks_the_node_down() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = conn.read(&mut request).await;
                    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                    if conn.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
                    while conn.write_all(chunk.as_bytes()).await.is_ok() {
                        counter.fetch_add(0x4000, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![NodeSpec {
            id: 1,
            name: "endless".into(),
            endpoint,
            network: Network::Mainnet,
            capacity: 1 << 30,
            stored_bytes: 0,
            access_key: "k".into(),
            secret_key: "s".into(),
            bucket: "tenfold".into(),
            state: NodeState::Active,
        }]);
        balancer.probe_all().await;
        let status = &balancer.status()[0];
        assert!(!status.healthy, "{status:?}");
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("larger than")),
            "{status:?}"
        );
        // What the node sent beyond the limit sat in socket buffers at most.
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            sent < 64 << 20,
            "{sent} bytes were sent: the report was read on"
        );
    }
}
