//! The upload path: stream a body into segments, compress and fragment
//! each, have the balancer place every fragment, then commit to the index
//! in one transaction: a whole object for a PUT, one part for UploadPart.
//! A failed upload removes what it wrote.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use tenfold_balancer::Replica;
use tenfold_balancer::placement::PlacementFailure;
use tracing::Instrument;

use crate::crypto::{DataKey, WrappedKey};
use crate::error::GatewayError;
use crate::fragment::node_key;
use crate::index::{
    FragmentRow, ObjectHeaders, ObjectRow, SegmentRow, StoredData, Tags, UploadRow, WriteCondition,
    now_ms,
};
use crate::integrity::{ChecksumExpectation, Checksums};
use crate::object_store::{
    ObjectStore, UPLOAD_BUDGET_BYTES, budget_units, new_object_id, run_codec,
};
use crate::s3_api::MAX_UPLOAD_SIZE;
use crate::write_intents::WriteIntent;

/// Segments compressed and placed at once per upload, besides the one being
/// read: bounds memory to a few segments whatever the object size.
const PIPELINE: usize = 4;

/// A stream of object bytes: a request body, or an object read back for a
/// copy or a zip entry.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send>>;

/// What the client announced about a body, checked once it is read.
#[derive(Debug, Clone, Default)]
pub struct BodyChecks {
    pub content_length: Option<u64>,
    pub content_md5: Option<[u8; 16]>,
    pub checksums: ChecksumExpectation,
}

/// What a client sent with its PUT.
#[derive(Debug, Clone, Default)]
pub struct PutRequest {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    pub headers: ObjectHeaders,
    pub checks: BodyChecks,
    /// What must hold of the object at the key (`If-None-Match: *`,
    /// `If-Match`).
    pub condition: WriteCondition,
    /// The object's tags.
    pub tags: Tags,
}

/// Cuts a body stream into segments of a fixed plaintext size.
struct SegmentReader {
    body: BodyStream,
    segment_size: usize,
    leftover: Bytes,
    done: bool,
    /// Body bytes still to come, when the client said how many.
    remaining: Option<u64>,
}

impl SegmentReader {
    async fn next_segment(&mut self) -> Result<Option<Bytes>, GatewayError> {
        let mut buf = BytesMut::new();
        loop {
            if !self.leftover.is_empty() {
                let take = (self.segment_size - buf.len()).min(self.leftover.len());
                let piece = self.leftover.split_to(take);
                self.remaining = self.remaining.map(|r| r.saturating_sub(piece.len() as u64));
                if buf.is_empty() && piece.len() == self.segment_size {
                    return Ok(Some(piece));
                }
                if buf.is_empty() {
                    // Room for the whole segment at once, not grown (and
                    // copied) chunk by chunk.
                    let more = self
                        .remaining
                        .map_or(0, |r| usize::try_from(r).unwrap_or(usize::MAX));
                    buf.reserve(piece.len().saturating_add(more).min(self.segment_size));
                }
                buf.extend_from_slice(&piece);
            }
            if buf.len() == self.segment_size {
                return Ok(Some(buf.freeze()));
            }
            if self.done {
                return Ok((!buf.is_empty()).then(|| buf.freeze()));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.leftover = chunk,
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
    }
}

/// A segment that could not be placed, with the replicas it wrote anyway.
struct SegmentFailure {
    error: GatewayError,
    written: Vec<Replica>,
}

impl ObjectStore {
    /// Stores an object and makes it visible, replacing any object at the key.
    ///
    /// # Errors
    /// `NoSuchBucket`, digest and length errors, `InsufficientStorage` when
    /// the nodes cannot hold it.
    pub async fn put_object(
        self: &Arc<Self>,
        req: PutRequest,
        body: BodyStream,
    ) -> Result<ObjectRow, GatewayError> {
        if !self.known_buckets.contains(&req.bucket) {
            self.index.require_bucket(&req.bucket).await?;
            self.known_buckets.found(&req.bucket);
        }
        self.detached(move |store| async move {
            let (data, _writing) = store.ingest(body, req.checks).await?;
            let row = ObjectRow {
                // A single PUT's object id is its data's.
                id: data.data_id.clone(),
                bucket: req.bucket,
                key: req.key,
                size: data.size,
                etag: hex::encode(data.md5),
                checksums: data.checksums.clone(),
                content_type: req.content_type,
                metadata: req.metadata,
                headers: req.headers,
                last_modified: now_ms(),
                parts_count: None,
                tags: req.tags,
            };
            let committed = store
                .commit_or_discard(
                    &data,
                    store.index.commit_object(&row, &data, &req.condition),
                )
                .await;
            if let Err(GatewayError::NoSuchBucket(bucket)) = &committed {
                store.known_buckets.forget(bucket);
            }
            committed?;
            tracing::info!(object = %row.id, size = row.size, "object stored");
            Ok(row)
        })
        .await
    }

    /// Stores one part of a multipart upload; returns its ETag (hex MD5).
    ///
    /// # Errors
    /// `NoSuchUpload`, digest and length errors, `InsufficientStorage`.
    pub async fn upload_part(
        self: &Arc<Self>,
        upload: UploadRow,
        part_number: u32,
        checks: BodyChecks,
        body: BodyStream,
    ) -> Result<(String, Checksums), GatewayError> {
        let mut checks = checks;
        if checks.checksums.algorithm.is_none() {
            // Every part of an upload created with an algorithm gets its
            // checksum, for the object's composite one.
            checks
                .checksums
                .algorithm
                .clone_from(&upload.checksum_algorithm);
        }
        self.detached(move |store| async move {
            let (data, _writing) = store.ingest(body, checks).await?;
            store
                .commit_or_discard(
                    &data,
                    store.index.commit_part(&upload.id, part_number, &data),
                )
                .await?;
            tracing::info!(upload = %upload.id, part_number, size = data.size, "part stored");
            Ok((hex::encode(data.md5), data.checksums))
        })
        .await
    }

    /// Runs `work` in its own task, so that a client that hangs up
    /// mid-upload still has its partial fragments cleaned up.
    async fn detached<T, F, Fut>(self: &Arc<Self>, work: F) -> Result<T, GatewayError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>> + Send + 'static,
    {
        tokio::spawn(work(Arc::clone(self)).in_current_span()).await?
    }

    /// Commits placed data, or deletes its replicas when the commit fails.
    ///
    /// An index error may be a lost answer to a COMMIT that happened (the
    /// connection cut, a failover): the replicas go only once the index says
    /// nothing references their data. Committed, the upload succeeded after
    /// all; when the index cannot tell, they stay (referenced by nothing if
    /// the commit did not happen, but never deleted from under an object).
    async fn commit_or_discard(
        &self,
        data: &StoredData,
        commit: impl Future<Output = Result<(), GatewayError>>,
    ) -> Result<(), GatewayError> {
        let error = match commit.await {
            Ok(()) => {
                // Whatever the commit replaced was queued for the collector.
                self.garbage_released();
                return Ok(());
            }
            Err(e) => e,
        };
        if let GatewayError::Index(_) = error {
            match self.index.data_committed(&data.data_id).await {
                Ok(true) => {
                    tracing::warn!(data = %data.data_id, %error, "the commit's answer was lost, but it happened");
                    self.garbage_released();
                    return Ok(());
                }
                Ok(false) => {}
                Err(check) => {
                    tracing::error!(data = %data.data_id, %error, %check, "commit uncertain: its replicas are kept");
                    return Err(error);
                }
            }
        }
        self.discard_replicas(data.replicas()).await;
        Err(error)
    }

    /// Reads a body to its end, placing every segment; on failure removes
    /// every replica it wrote. The write intent it returns keeps the orphan
    /// sweep away from the replicas until the caller has committed them.
    async fn ingest(
        self: &Arc<Self>,
        body: BodyStream,
        checks: BodyChecks,
    ) -> Result<(StoredData, WriteIntent), GatewayError> {
        // A fresh id is never held by the sweep; should it be, take another.
        let intent = loop {
            if let Some(intent) = self.write_intents.begin(&new_object_id()) {
                break intent;
            }
        };
        let data_id = intent.data_id().to_owned();
        let (key, wrapped) = self.keyring.new_data_key()?;
        let mut written = Vec::new();
        let result = self
            .place_segments(&data_id, (key, wrapped), body, checks, &mut written)
            .await;
        if let Err(e) = &result {
            tracing::warn!(data = %data_id, error = %e, replicas = written.len(), "upload failed, removing its replicas");
            self.discard_replicas(written).await;
        }
        result.map(|data| (data, intent))
    }

    async fn place_segments(
        self: &Arc<Self>,
        data_id: &str,
        (key, wrapped): (DataKey, WrappedKey),
        body: BodyStream,
        checks: BodyChecks,
        written: &mut Vec<Replica>,
    ) -> Result<StoredData, GatewayError> {
        let mut reader = SegmentReader {
            body,
            segment_size: self.segment_size,
            leftover: Bytes::new(),
            done: false,
            remaining: checks.content_length,
        };
        let mut md5 = Md5::new();
        let mut checksums = checks.checksums.hasher();
        let mut inflight = VecDeque::new();
        let mut segments = Vec::new();
        let mut first_error = None;
        let mut offset = 0u64;
        let mut seq = 0u32;
        while first_error.is_none() {
            let plain = match reader.next_segment().await {
                Ok(Some(plain)) => plain,
                Ok(None) => break,
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            };
            // A body of unknown length stops at S3's largest upload.
            if offset + plain.len() as u64 > MAX_UPLOAD_SIZE {
                first_error = Some(GatewayError::EntityTooLarge(offset + plain.len() as u64));
                break;
            }
            // The segment waits here for its turn to be compressed and placed.
            let units = budget_units(plain.len() as u64, UPLOAD_BUDGET_BYTES);
            let slot = Arc::clone(&self.segment_budget)
                .acquire_many_owned(units)
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            md5.update(&plain);
            checksums.update(&plain);
            let len = plain.len() as u64;
            let this = Arc::clone(self);
            let id = data_id.to_owned();
            let keys = (key.clone(), wrapped.clone());
            inflight.push_back(tokio::spawn(
                async move {
                    let stored = this.store_segment(id, keys, seq, offset, plain).await;
                    drop(slot);
                    stored
                }
                .in_current_span(),
            ));
            offset += len;
            seq += 1;
            while inflight.len() > PIPELINE {
                if let Some(task) = inflight.pop_front() {
                    collect(task.await, &mut segments, written, &mut first_error);
                }
            }
        }
        // Wait for every segment in flight, even after an error, so that
        // everything written is known and can be removed.
        while let Some(task) = inflight.pop_front() {
            collect(task.await, &mut segments, written, &mut first_error);
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(expected) = checks.content_length
            && expected != offset
        {
            return Err(GatewayError::IncompleteBody {
                got: offset,
                expected,
            });
        }
        let md5: [u8; 16] = md5.finalize().into();
        if checks.content_md5.is_some_and(|m| m != md5) {
            return Err(GatewayError::BadDigest);
        }
        let checksums = checks.checksums.verify(checksums)?;
        let policy = self.balancer.policy();
        let short = segments
            .iter()
            .flat_map(|s| {
                s.fragments
                    .iter()
                    .filter(|f| !policy.is_met(&f.placements))
                    .map(|f| (s.seq, f.index))
            })
            .collect();
        Ok(StoredData {
            data_id: data_id.to_owned(),
            size: offset,
            md5,
            checksums,
            key: Some(wrapped),
            segments,
            short,
        })
    }

    #[tracing::instrument(skip(self, keys, plain), fields(len = plain.len()))]
    async fn store_segment(
        self: Arc<Self>,
        data_id: String,
        keys: (DataKey, WrappedKey),
        seq: u32,
        offset: u64,
        plain: Bytes,
    ) -> Result<SegmentRow, SegmentFailure> {
        let plain_size = plain.len() as u64;
        let codec = self.codec;
        let (key, wrapped) = keys;
        let encoded = run_codec(plain.len(), move || codec.encode(seq, &plain, Some(&key)))
            .await
            .and_then(|r| r.map_err(GatewayError::from));
        let (fragments, frames) = encoded.map_err(|error| SegmentFailure {
            error,
            written: Vec::new(),
        })?;
        let balancer = &self.balancer;
        let data_id = &data_id;
        let placed = futures::future::join_all(fragments.iter().map(|f| async move {
            let key = node_key(data_id, seq, f.index);
            balancer.place(&key, f.bytes.clone(), f.md5).await
        }))
        .await;
        let mut rows = Vec::with_capacity(fragments.len());
        let mut failure: Option<SegmentFailure> = None;
        for (f, result) in fragments.iter().zip(placed) {
            match result {
                Ok(placements) => rows.push(FragmentRow {
                    index: f.index,
                    size: f.bytes.len() as u64,
                    md5: f.md5,
                    placements,
                }),
                Err(PlacementFailure { error, written }) => {
                    let key = node_key(data_id, seq, f.index);
                    let fail = failure.get_or_insert_with(|| SegmentFailure {
                        error: GatewayError::InsufficientStorage(error),
                        written: Vec::new(),
                    });
                    fail.written
                        .extend(written.into_iter().map(|placement| Replica {
                            key: key.clone(),
                            placement,
                        }));
                }
            }
        }
        let segment = SegmentRow {
            data_id: data_id.clone(),
            seq,
            plain_offset: offset,
            plain_size,
            frames: Some(frames),
            key: Some(wrapped),
            fragments: rows,
        };
        match failure {
            None => Ok(segment),
            Some(mut fail) => {
                fail.written.extend(segment.replicas());
                Err(fail)
            }
        }
    }
}

fn collect(
    joined: Result<Result<SegmentRow, SegmentFailure>, tokio::task::JoinError>,
    segments: &mut Vec<SegmentRow>,
    written: &mut Vec<Replica>,
    first_error: &mut Option<GatewayError>,
) {
    match joined {
        Ok(Ok(segment)) => {
            written.extend(segment.replicas());
            segments.push(segment);
        }
        Ok(Err(fail)) => {
            written.extend(fail.written);
            first_error.get_or_insert(fail.error);
        }
        Err(e) => {
            first_error.get_or_insert(GatewayError::from(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use tenfold_balancer::{Balancer, Check, Network, ReplicaPolicy};

    use super::*;
    use crate::config::{DurabilityPolicy, StoragePolicy};
    use crate::crypto::{Keyring, MasterKey};
    use crate::data_dir::DataDir;
    use crate::index::{Index, Owner};

    /// A commit whose answer is lost (an index error) after it happened
    /// keeps its replicas and succeeds; one that did not happen has its
    /// replicas deleted. A real node holds them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_answer_was_lost_keeps_its_replicas_if_it_happened() {
        let dir = std::env::temp_dir().join(format!("tenfold-lost-commit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        crate::dev_cluster::spawn_node(
            listener,
            dir.join("node"),
            1 << 30,
            ("k".into(), "s".into()),
        );
        let keyring = Keyring::new(
            MasterKey::parse(&MasterKey::generate()).unwrap(),
            Vec::new(),
        );
        let index = Index::open(&DataDir::new(&dir).index_url())
            .await
            .unwrap()
            .with_keyring(keyring.clone());
        index.create_bucket("b", &Owner::Admin).await.unwrap();
        let node = crate::index::NewNode {
            name: "n".into(),
            endpoint,
            network: Network::Mainnet,
            capacity: 1 << 30,
            access_key: "k".into(),
            secret_key: "s".into(),
            bucket: "tenfold".into(),
        };
        let node_id = index.add_node(&node).await.unwrap();
        let balancer = Arc::new(Balancer::new(ReplicaPolicy {
            mainnet: 1,
            testnet: 0,
        }));
        balancer.set_nodes(index.nodes().await.unwrap());
        let store = ObjectStore::new(
            index,
            Arc::clone(&balancer),
            &StoragePolicy::default(),
            &DurabilityPolicy::default(),
            keyring,
        );
        for (name, committed) in [("kept", true), ("gone", false)] {
            let bytes = Bytes::from(vec![7u8; 1000]);
            let md5: [u8; 16] = Md5::digest(&bytes).into();
            let key = node_key(name, 0, 0);
            let placements = balancer.place(&key, bytes.clone(), md5).await.unwrap();
            let data = StoredData {
                data_id: name.into(),
                size: 1000,
                md5,
                checksums: Checksums::default(),
                key: None,
                segments: vec![SegmentRow {
                    data_id: name.into(),
                    seq: 0,
                    plain_offset: 0,
                    plain_size: 1000,
                    frames: None,
                    key: None,
                    fragments: vec![FragmentRow {
                        index: 0,
                        size: 1000,
                        md5,
                        placements,
                    }],
                }],
                short: Vec::new(),
            };
            let object = ObjectRow {
                id: format!("object-{name}"),
                bucket: "b".into(),
                key: name.into(),
                size: 1000,
                etag: hex::encode(md5),
                content_type: None,
                metadata: HashMap::new(),
                headers: ObjectHeaders::default(),
                checksums: Checksums::default(),
                last_modified: now_ms(),
                parts_count: None,
                tags: Vec::new(),
            };
            if committed {
                store
                    .index
                    .commit_object(&object, &data, &WriteCondition::Always)
                    .await
                    .unwrap();
            }
            let lost = async {
                Err(GatewayError::Index(sqlx::Error::Io(std::io::Error::other(
                    "connection reset before the answer to COMMIT",
                ))))
            };
            let result = store.commit_or_discard(&data, lost).await;
            assert_eq!(result.is_ok(), committed, "{name}: {result:?}");
            let read = balancer
                .read_nodes(&key, 1000, &[node_id], Check::Md5(md5))
                .await;
            assert_eq!(
                read.is_ok(),
                committed,
                "{name}: the replica {}",
                if committed { "was deleted" } else { "stayed" }
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
