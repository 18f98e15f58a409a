//! The object pipeline's shared state: the index, the balancer, the
//! segment codec and the master keys. Uploads live in [`crate::upload`], downloads in
//! [`crate::download`], replica clean-up in [`crate::garbage`] and [`crate::orphans`].

use std::sync::Arc;
use std::time::Duration;

use tenfold_balancer::Balancer;
use tokio::sync::{Notify, Semaphore};

use crate::config::{DurabilityPolicy, StoragePolicy};
use crate::crypto::Keyring;
use crate::fragment::SegmentCodec;
use crate::index::Index;
use crate::known_buckets::KnownBuckets;
use crate::orphans::OrphanSweep;
use crate::read_leases::ReadLeases;
use crate::scrub::Scrub;
use crate::write_intents::WriteIntents;

/// Everything the S3 API needs to store and fetch objects.
#[derive(Debug)]
pub struct ObjectStore {
    pub index: Index,
    pub balancer: Arc<Balancer>,
    pub codec: SegmentCodec,
    /// The master keys: wrap each new piece of data's key, unwrap stored ones.
    pub keyring: Keyring,
    /// Plaintext bytes per segment.
    pub segment_size: usize,
    /// Wakes the garbage collector when replicas it may remove at once were
    /// queued.
    pub garbage_ready: Notify,
    /// Age at which an unfinished multipart upload is aborted.
    pub abandoned_after: Duration,
    /// How long replicas released by a commit stay before they are removed.
    pub gc_delay: Duration,
    /// The data this gateway is reading now: its replicas stay.
    pub read_leases: Arc<ReadLeases>,
    /// The data this gateway is writing now: not orphans.
    pub write_intents: Arc<WriteIntents>,
    /// The sweep of replicas nothing names.
    pub orphan_sweep: OrphanSweep,
    /// Fragments repaired at once.
    pub repair_concurrency: usize,
    /// The scrub's settings.
    pub scrub: Scrub,
    /// Plaintext bytes being compressed and placed, across all uploads, in
    /// [`BUDGET_UNIT`]s.
    pub segment_budget: Arc<Semaphore>,
    /// Plaintext bytes being fetched and decoded, across all downloads.
    pub fetch_budget: Arc<Semaphore>,
    /// Buckets found a moment ago, for a PUT's look before its body.
    pub known_buckets: KnownBuckets,
}

/// Plaintext compressed and placed at once across every upload of a
/// gateway: six full segments. Each segment in flight also holds its
/// compressed form and fragments (about three times its size); an upload
/// waiting for a turn holds one segment read ahead. So upload memory is
/// bounded by this plus one segment per concurrent upload, however the
/// client splits its work, while small objects (one unit each) still go
/// through hundreds at a time.
pub const UPLOAD_BUDGET_BYTES: usize = 48 << 20;

/// Plaintext fetched and decoded at once across every download (a segment
/// holds its fragments and its plaintext while it decodes): ten concurrent
/// ranged GETs of `aws s3 cp` queue here instead of all decoding at once.
pub const DOWNLOAD_BUDGET_BYTES: usize = 48 << 20;

/// The granularity of the budgets.
pub const BUDGET_UNIT: usize = 64 << 10;

/// Budget units for a segment of `len` plaintext bytes (at least one, at
/// most the whole budget, so that no segment can wait forever).
pub fn budget_units(len: u64, budget_bytes: usize) -> u32 {
    let units = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .div_ceil(BUDGET_UNIT);
    u32::try_from(units.clamp(1, budget_bytes / BUDGET_UNIT)).unwrap_or(1)
}

impl ObjectStore {
    /// Builds the pipeline for `policy`.
    pub fn new(
        index: Index,
        balancer: Arc<Balancer>,
        policy: &StoragePolicy,
        durability: &DurabilityPolicy,
        keyring: Keyring,
    ) -> Self {
        Self {
            index,
            balancer,
            codec: policy.codec(),
            keyring,
            segment_size: usize::try_from(policy.segment_size).unwrap_or(usize::MAX),
            garbage_ready: Notify::new(),
            abandoned_after: policy.abandoned_upload,
            gc_delay: durability.gc_delay,
            read_leases: Arc::default(),
            write_intents: Arc::default(),
            orphan_sweep: OrphanSweep::new(durability.orphan_grace),
            repair_concurrency: durability.repair_concurrency,
            scrub: Scrub::new(
                durability.scrub_every,
                durability.scrub_rate,
                durability.spot_audit_every,
            ),
            segment_budget: Arc::new(Semaphore::new(UPLOAD_BUDGET_BYTES / BUDGET_UNIT)),
            fetch_budget: Arc::new(Semaphore::new(DOWNLOAD_BUDGET_BYTES / BUDGET_UNIT)),
            known_buckets: KnownBuckets::default(),
        }
    }
}

/// A fresh, unguessable object id: names the object's fragments on the nodes.
pub fn new_object_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Work on at most this many bytes (encoding or decoding a small segment)
/// runs on the async thread that has them: a few tens of microseconds,
/// less than the hand-off to a blocking thread.
const INLINE_CODEC_BYTES: usize = 64 * 1024;

/// Runs CPU-bound codec `work` on `bytes` bytes: inline when small, on a
/// blocking thread otherwise.
///
/// # Errors
/// [`GatewayError::Internal`](crate::error::GatewayError::Internal) when the blocking task panicked.
pub async fn run_codec<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, crate::error::GatewayError> {
    if bytes <= INLINE_CODEC_BYTES {
        return Ok(work());
    }
    Ok(tokio::task::spawn_blocking(work).await?)
}
