//! The object pipeline's shared state: the index, the balancer and the
//! segment codec. Uploads live in [`crate::upload`], downloads in
//! [`crate::download`], replica clean-up in [`crate::garbage`].

use std::sync::Arc;
use std::time::Duration;

use tenfold_balancer::Balancer;
use tokio::sync::Notify;

use crate::config::StoragePolicy;
use crate::fragment::SegmentCodec;
use crate::index::Index;

/// Everything the S3 API needs to store and fetch objects.
#[derive(Debug)]
pub struct ObjectStore {
    pub index: Index,
    pub balancer: Arc<Balancer>,
    pub codec: SegmentCodec,
    /// Plaintext bytes per segment.
    pub segment_size: usize,
    /// Wakes the garbage collector when replicas were queued for deletion.
    pub garbage_ready: Notify,
    /// Age at which an unfinished multipart upload is aborted.
    pub abandoned_after: Duration,
}

impl ObjectStore {
    /// Builds the pipeline for `policy`.
    pub fn new(index: Index, balancer: Arc<Balancer>, policy: &StoragePolicy) -> Self {
        Self {
            index,
            balancer,
            codec: policy.codec(),
            segment_size: usize::try_from(policy.segment_size).unwrap_or(usize::MAX),
            garbage_ready: Notify::new(),
            abandoned_after: Duration::from_secs(policy.abandoned_upload_seconds),
        }
    }
}

/// A fresh, unguessable object id: names the object's fragments on the nodes.
pub fn new_object_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
