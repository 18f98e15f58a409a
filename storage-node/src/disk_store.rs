//! On-disk layout of a storage node: one folder per bucket, one file per
//! object, except small objects, which are records in volume files
//! ([`crate::volumes`]).
//!
//! An object key is hex-encoded and cut into path components of at most
//! [`COMPONENT_HEX`] characters, so no key (`../x`, `/abs`, NUL bytes, 1 KiB
//! long) can name anything outside its bucket folder. Each object file holds
//! the data followed by a JSON trailer with its metadata, then the trailer's
//! length and a magic number: one file, written to `tmp/`, fsynced and renamed
//! into place, so a crash never leaves a half-written object visible.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tenfold_common::http_server::BodyError;
use tokio::fs;

use crate::error::StoreError;
use crate::file_reads::{BufferPool, open_cached, read_cached, read_exact_at};
use crate::volumes::{self, SMALL_MAX, Volumes};

/// Hex characters per path component: well under the 255-byte file name limit.
const COMPONENT_HEX: usize = 200;
/// Suffix of object files, so that a key never collides with a folder.
const OBJECT_SUFFIX: &str = ".obj";
/// Magic number closing every object file.
const MAGIC: &[u8; 4] = b"TFN1";
/// Body bytes gathered before they are written out (one blocking call).
const WRITE_BATCH: usize = 1 << 20;
/// Most bytes of a file read in one call (and sent as one piece).
const READ_CHUNK: u64 = 256 * 1024;
/// Idle read buffers a node keeps for reuse (4 MiB): enough for the
/// chunks of a few streams in flight at once.
const IDLE_READ_BUFFERS: usize = 16;
/// Longest S3 object key, in bytes.
const MAX_KEY_LEN: usize = 1024;
/// Dead volume bytes below which no merge starts on its own (a full node
/// merges whatever it has).
const MERGE_FLOOR: u64 = 64 << 20;

/// What a node knows about one stored object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub size: u64,
    /// Hex MD5 of the data, the S3 ETag of a single PUT: computed, or the
    /// Content-MD5 sent with an `x-amz-checksum-crc32c` the data matched.
    pub etag: String,
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Seconds since the Unix epoch.
    pub last_modified: i64,
}

/// Attributes a client sets on PUT.
#[derive(Debug, Default, Clone)]
pub struct PutAttributes {
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    /// The Content-Length the client announced, checked against the body.
    pub content_length: Option<u64>,
    /// The Content-MD5 the client sent, checked against the body.
    pub content_md5: Option<[u8; 16]>,
    /// The `x-amz-checksum-crc32c` the client sent, checked against the
    /// body. Sent with a Content-MD5 (as the gateway does), the body is
    /// checked by its CRC32C alone and the Content-MD5 is its ETag: MD5
    /// runs at ~0.5 GB/s, CRC32C an order of magnitude faster, and the
    /// gateway never trusts a node's ETag (it checks what it reads back
    /// against its own MD5).
    pub crc32c: Option<u32>,
}

/// A PUT body's checks, computed as it arrives.
struct BodyDigest {
    /// Where the ETag (hex MD5) comes from.
    etag: EtagSource,
    /// The CRC32C so far, and the one the client sent.
    crc32c: Option<(crc_fast::Digest, u32)>,
}

enum EtagSource {
    /// MD5 computed over the body, checked against a Content-MD5 if sent.
    Computed(Md5, Option<[u8; 16]>),
    /// The Content-MD5 sent, vouched for by the CRC32C sent with it.
    Vouched([u8; 16]),
}

impl BodyDigest {
    fn new(attrs: &PutAttributes) -> Self {
        let etag = match (attrs.content_md5, attrs.crc32c) {
            (Some(md5), Some(_)) => EtagSource::Vouched(md5),
            (expected, _) => EtagSource::Computed(Md5::new(), expected),
        };
        Self {
            etag,
            crc32c: attrs.crc32c.map(|sent| {
                (
                    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi),
                    sent,
                )
            }),
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        if let EtagSource::Computed(md5, _) = &mut self.etag {
            md5.update(chunk);
        }
        if let Some((crc, _)) = &mut self.crc32c {
            crc.update(chunk);
        }
    }

    /// The body's ETag (hex MD5), once every digest the client sent matches.
    fn etag(self) -> Result<String, StoreError> {
        if let Some((crc, sent)) = &self.crc32c
            && crc.finalize() != u64::from(*sent)
        {
            return Err(StoreError::BadDigest("x-amz-checksum-crc32c"));
        }
        let md5: [u8; 16] = match self.etag {
            EtagSource::Computed(md5, expected) => {
                let digest: [u8; 16] = md5.finalize().into();
                if expected.is_some_and(|e| e != digest) {
                    return Err(StoreError::BadDigest("Content-MD5"));
                }
                digest
            }
            EtagSource::Vouched(md5) => md5,
        };
        Ok(hex::encode(md5))
    }
}

/// An object opened for reading.
#[derive(Debug)]
pub struct OpenObject {
    pub meta: ObjectMeta,
    source: Source,
}

/// Where an open object's bytes are.
#[derive(Debug)]
enum Source {
    /// Its own file (the data first), and the node's read buffers.
    File(std::fs::File, Arc<BufferPool>),
    /// A volume record, already read and checked.
    Volume(Bytes),
}

impl OpenObject {
    /// The metadata, and the bytes of `range` (within the data) as a
    /// stream of [`READ_CHUNK`] pieces, each read by one `pread` straight
    /// into the buffer that is sent (on a blocking thread only when the
    /// page cache does not hold it). The first piece is read
    /// before this returns, so a small read is done (or has failed) before
    /// any answer goes out.
    ///
    /// # Errors
    /// A disk error.
    pub async fn read(
        self,
        range: std::ops::Range<u64>,
    ) -> Result<
        (
            ObjectMeta,
            impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
        ),
        StoreError,
    > {
        let (file, buffers) = match self.source {
            Source::Volume(body) => {
                let len = body.len() as u64;
                let (start, end) = (range.start.min(len), range.end.min(len));
                let piece = body.slice(to_usize(start)?..to_usize(end.max(start))?);
                let once = futures::stream::once(futures::future::ready(Ok(piece)));
                return Ok((self.meta, futures::future::Either::Left(once)));
            }
            Source::File(file, buffers) => (Arc::new(file), buffers),
        };
        let end = range.end;
        let first = read_chunk(&file, &buffers, range.start, end).await?;
        let next = range.start + first.len() as u64;
        let rest = futures::stream::try_unfold(
            (file, buffers, next),
            move |(file, buffers, at)| async move {
                if at >= end {
                    return Ok(None);
                }
                let chunk = read_chunk(&file, &buffers, at, end).await?;
                let at = at + chunk.len() as u64;
                Ok(Some((chunk, (file, buffers, at))))
            },
        );
        let body = futures::stream::once(futures::future::ready(Ok(first))).chain(rest);
        Ok((self.meta, futures::future::Either::Right(body)))
    }
}

fn to_usize(n: u64) -> std::io::Result<usize> {
    usize::try_from(n).map_err(std::io::Error::other)
}

/// Bytes `at..end` of `file`, at most [`READ_CHUNK`] of them, read into a
/// buffer of `buffers` (on this thread when the page cache holds them; see
/// [`crate::file_reads`]).
async fn read_chunk(
    file: &Arc<std::fs::File>,
    buffers: &Arc<BufferPool>,
    at: u64,
    end: u64,
) -> std::io::Result<Bytes> {
    let len = to_usize(end.saturating_sub(at).min(READ_CHUNK))?;
    let buf = read_exact_at(Arc::clone(file), buffers.take(len), at).await?;
    Ok(buf.into_bytes())
}

/// A node's object store on local disk, with a capacity limit.
#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    capacity: u64,
    /// Bytes of object files and of writes in progress (the volumes count
    /// their records themselves).
    in_files: Arc<AtomicU64>,
    reads: AtomicU64,
    volumes: Arc<Volumes>,
    /// How long each write's fsyncs take.
    fsync_seconds: prometheus::Histogram,
    /// Buffers that object files are read into, [`READ_CHUNK`] each.
    read_buffers: Arc<BufferPool>,
}

/// Room held in a [`DiskStore`]'s count of bytes in files, given back
/// when dropped.
struct Held {
    counter: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        release(&self.counter, self.bytes);
    }
}

/// Takes `n` bytes off a count of bytes in use.
fn release(counter: &AtomicU64, n: u64) {
    // Saturating, so a miscount can never wrap the counter.
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
        Some(u.saturating_sub(n))
    });
}

impl DiskStore {
    /// Opens (or creates) a store under `root`, removing temporary files a
    /// crash left behind and measuring the bytes in use.
    ///
    /// # Errors
    /// Fails when the folders cannot be created or read.
    pub async fn open(root: &Path, capacity: u64) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("buckets")).await?;
        let tmp = root.join("tmp");
        if fs::try_exists(&tmp).await? {
            fs::remove_dir_all(&tmp).await?;
        }
        fs::create_dir_all(&tmp).await?;
        let buckets = root.join("buckets");
        let fsync_seconds = crate::metrics::fsync_histogram();
        let (volumes_dir, histogram) = (root.join("volumes"), fsync_seconds.clone());
        let (in_files, volumes) = blocking(move || {
            let volumes = Volumes::open(&volumes_dir, MERGE_FLOOR, histogram)?;
            Ok::<_, std::io::Error>((disk_usage(&buckets)?, volumes))
        })
        .await?;
        let store = Self {
            root: root.to_path_buf(),
            capacity,
            in_files: Arc::new(AtomicU64::new(in_files)),
            reads: AtomicU64::new(0),
            volumes: Arc::new(volumes),
            fsync_seconds,
            read_buffers: BufferPool::new(to_usize(READ_CHUNK)?, IDLE_READ_BUFFERS),
        };
        store.merge_if_due();
        Ok(store)
    }

    /// Starts a merge of the volumes in the background if their dead bytes
    /// call for one.
    fn merge_if_due(&self) {
        self.volumes.merge_if_due();
    }

    /// Merges the volumes now (after any merge in progress) if they hold
    /// at least `needed` dead bytes: a full node's last resort before
    /// refusing a write of that much more than fits, which must not cost a
    /// rewrite of every volume when it would not make room.
    async fn merge_now(&self, needed: u64) {
        if let Err(e) = self.volumes.merge(needed).await {
            tracing::error!(error = %e, "volume merge failed");
        }
    }

    /// The histogram of each write's fsync times.
    pub fn fsync_seconds(&self) -> &prometheus::Histogram {
        &self.fsync_seconds
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes currently stored (including writes in progress).
    pub fn used(&self) -> u64 {
        self.in_files.load(Ordering::Acquire) + self.volumes.bytes()
    }

    /// Bytes of overwritten and deleted volume records, until a merge.
    pub fn dead_bytes(&self) -> u64 {
        self.volumes.dead_bytes()
    }

    /// Objects opened for reading since the node started.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join("buckets").join(bucket)
    }

    async fn existing_bucket_dir(&self, bucket: &str) -> Result<PathBuf, StoreError> {
        let dir = self.bucket_dir(bucket);
        if fs::try_exists(&dir).await? {
            Ok(dir)
        } else {
            Err(StoreError::NoSuchBucket(bucket.to_owned()))
        }
    }

    /// Creates a bucket.
    ///
    /// # Errors
    /// [`StoreError::BucketExists`] when it is already there.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let buckets = self.root.join("buckets");
        match fs::create_dir(self.bucket_dir(bucket)).await {
            // The new folder's entry is durable before the bucket is.
            Ok(()) => Ok(blocking(move || sync_dir(&buckets)).await?),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::BucketExists(bucket.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks that a bucket exists.
    ///
    /// # Errors
    /// [`StoreError::NoSuchBucket`] when it does not.
    pub async fn head_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.existing_bucket_dir(bucket).await.map(|_| ())
    }

    /// Deletes an empty bucket.
    ///
    /// # Errors
    /// [`StoreError::BucketNotEmpty`] when it holds objects.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let dir = self.existing_bucket_dir(bucket).await?;
        if self.volumes.has_keys(bucket) || fs::read_dir(&dir).await?.next_entry().await?.is_some()
        {
            return Err(StoreError::BucketNotEmpty(bucket.to_owned()));
        }
        fs::remove_dir(&dir).await?;
        Ok(())
    }

    /// Lists buckets with their creation times, sorted by name.
    ///
    /// # Errors
    /// Fails when the folder cannot be read.
    pub async fn list_buckets(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let mut out = Vec::new();
        let mut dir = fs::read_dir(self.root.join("buckets")).await?;
        while let Some(entry) = dir.next_entry().await? {
            if let Ok(name) = entry.file_name().into_string() {
                let created = entry.metadata().await?.modified()?;
                out.push((name, created));
            }
        }
        out.sort();
        Ok(out)
    }

    fn object_path(&self, bucket: &str, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.bucket_dir(bucket).join(key_to_relative_path(key)?))
    }

    /// Reserves `n` bytes of capacity, or reports the node full.
    fn reserve(&self, n: u64) -> Result<(), StoreError> {
        let in_volumes = self.volumes.bytes();
        self.in_files
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n)
                    .filter(|&total| total + in_volumes <= self.capacity)
            })
            .map(|_| ())
            .map_err(|used| StoreError::InsufficientStorage {
                needed: n,
                available: self.capacity.saturating_sub(used + in_volumes),
            })
    }

    /// [`Self::reserve`], merging the volumes' dead records away first
    /// when the room is not there (or held by a merge's copies, counted
    /// until it removes what they replace).
    async fn reserve_merging(&self, n: u64) -> Result<(), StoreError> {
        if self.reserve(n).is_ok() {
            return Ok(());
        }
        let short = (self.used() + n).saturating_sub(self.capacity);
        self.merge_now(short).await;
        self.reserve(n)
    }

    fn release(&self, n: u64) {
        release(&self.in_files, n);
    }

    /// Stores an object from a body stream, atomically and durably.
    ///
    /// Capacity is reserved before each chunk is written, so a write that
    /// would pass the limit is refused and leaves nothing behind.
    ///
    /// # Errors
    /// [`StoreError::InsufficientStorage`] when the node is full, digest and
    /// length errors when the body does not match what the client announced.
    pub async fn put_object<S>(
        &self,
        bucket: &str,
        key: &str,
        attrs: PutAttributes,
        body: S,
    ) -> Result<ObjectMeta, StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let path = self.object_path(bucket, key)?;
        let small = attrs.content_length.is_some_and(|len| len <= SMALL_MAX);
        if !small {
            // (A small write checks its bucket on its one trip to the disk.)
            self.existing_bucket_dir(bucket).await?;
        }
        if let Some(len) = attrs.content_length {
            // Refuse early, before reading a byte of the body; dead volume
            // bytes are merged away first.
            if len > self.capacity.saturating_sub(self.used()) {
                self.merge_now(len - self.capacity.saturating_sub(self.used()))
                    .await;
            }
            let available = self.capacity.saturating_sub(self.used());
            if len > available {
                return Err(StoreError::InsufficientStorage {
                    needed: len,
                    available,
                });
            }
        }
        let mut reserved = 0u64;
        if small {
            let written = self
                .put_small(bucket, key, &path, &attrs, body, &mut reserved)
                .await;
            if written.is_err() {
                self.release(reserved);
            }
            return written;
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:032x}", rand::random::<u128>()));
        match self
            .write_object(&tmp, &path, &attrs, body, &mut reserved)
            .await
        {
            Ok((meta, replaced)) => {
                self.release(replaced);
                // The file is durable; a small object of the same key, now
                // older, goes (durably, or it would hide the file).
                if self.volumes.delete(bucket, key).await? {
                    self.merge_if_due();
                }
                Ok(meta)
            }
            Err(e) => {
                self.release(reserved);
                let _ = fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Stores an object of at most [`SMALL_MAX`] bytes as a volume record,
    /// durably, then removes a file of the same key (durably too, as the
    /// record alone decides the key once it exists).
    async fn put_small<S>(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        attrs: &PutAttributes,
        mut body: S,
        reserved: &mut u64,
    ) -> Result<ObjectMeta, StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let expected = attrs.content_length.unwrap_or(SMALL_MAX);
        let mut digest = BodyDigest::new(attrs);
        let mut chunks = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > expected {
                return Err(StoreError::IncompleteBody {
                    got: size,
                    expected,
                });
            }
            self.reserve_merging(chunk.len() as u64).await?;
            *reserved += chunk.len() as u64;
            digest.update(&chunk);
            chunks.push(chunk);
        }
        let meta = object_meta(digest, attrs, size)?;
        let record = volumes::encode_put(bucket, key, &meta, &chunks)?;
        let overhead = record.len() as u64 - size;
        self.reserve_merging(overhead).await?;
        *reserved += overhead;
        let (bucket_dir, file) = (self.bucket_dir(bucket), path.to_path_buf());
        let missing_bucket = bucket.to_owned();
        let held = Held {
            counter: Arc::clone(&self.in_files),
            bytes: std::mem::take(reserved),
        };
        let written = self
            .volumes
            .put(
                bucket,
                key,
                record,
                move || {
                    // The bucket is checked, and a file of the same key (a
                    // large object the record replaces) looked for, on the
                    // append's own trip to a blocking thread.
                    if !bucket_dir.try_exists()? {
                        return Err(StoreError::NoSuchBucket(missing_bucket));
                    }
                    match std::fs::metadata(&file) {
                        Ok(_) => Ok(true),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                        Err(e) => Err(e.into()),
                    }
                },
                // The volume counts the record from its append on (even
                // when its sync fails): the room held for it goes back at
                // once, not after the sync, or concurrent writes near the
                // capacity would be refused for room counted twice. (When
                // nothing is appended, the closure is dropped unrun and
                // gives it back all the same.)
                move || drop(held),
            )
            .await;
        let (replaced, shadowed_file) = written?;
        if replaced > 0 {
            self.merge_if_due();
        }
        if shadowed_file {
            // The record is durable: the older file goes, durably too, as
            // the record alone decides the key once it exists.
            let path = path.to_path_buf();
            let removed = blocking(move || match std::fs::metadata(&path) {
                Ok(file) => {
                    std::fs::remove_file(&path)?;
                    sync_dir(path.parent().unwrap_or(&path))?;
                    Ok(file.len())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            })
            .await?;
            self.release(removed);
        }
        Ok(meta)
    }

    /// Writes the body and its trailer to `tmp`, fsyncs it and renames it
    /// to `path` (fsyncing the folder). Returns the metadata and the size of
    /// the object it replaced (0 if none).
    ///
    /// The body is written in batches of [`WRITE_BATCH`] bytes, each one
    /// blocking call, and the last batch, fsyncs and rename in one more: a
    /// small object costs a single trip to the blocking thread pool.
    async fn write_object<S>(
        &self,
        tmp: &Path,
        path: &Path,
        attrs: &PutAttributes,
        mut body: S,
        reserved: &mut u64,
    ) -> Result<(ObjectMeta, u64), StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let mut file = None;
        let mut batch = Vec::new();
        let mut batched = 0usize;
        let mut digest = BodyDigest::new(attrs);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            self.reserve(chunk.len() as u64)?;
            *reserved += chunk.len() as u64;
            digest.update(&chunk);
            size += chunk.len() as u64;
            batched += chunk.len();
            batch.push(chunk);
            if batched >= WRITE_BATCH {
                let chunks = std::mem::take(&mut batch);
                let tmp = tmp.to_path_buf();
                file = Some(blocking(move || append(file, &tmp, &chunks)).await?);
                batched = 0;
            }
        }
        let meta = object_meta(digest, attrs, size)?;
        let mut trailer = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        let trailer_len = u32::try_from(trailer.len()).map_err(std::io::Error::other)?;
        trailer.extend_from_slice(&trailer_len.to_le_bytes());
        trailer.extend_from_slice(MAGIC);
        self.reserve(trailer.len() as u64)?;
        *reserved += trailer.len() as u64;
        batch.push(Bytes::from(trailer));
        let (tmp, path) = (tmp.to_path_buf(), path.to_path_buf());
        let fsync_seconds = self.fsync_seconds.clone();
        let replaced = blocking(move || {
            let file = append(file, &tmp, &batch)?;
            let started = std::time::Instant::now();
            file.sync_all()?;
            let mut synced = started.elapsed();
            let replaced = std::fs::metadata(&path).map_or(0, |m| m.len());
            let parent = path.parent().unwrap_or(&path);
            create_dirs(parent)?;
            std::fs::rename(&tmp, &path)?;
            let started = std::time::Instant::now();
            sync_dir(parent)?;
            synced += started.elapsed();
            fsync_seconds.observe(synced.as_secs_f64());
            Ok::<_, std::io::Error>(replaced)
        })
        .await?;
        Ok((meta, replaced))
    }

    /// Opens an object for reading, its metadata read from the trailer:
    /// one trip to the blocking thread pool.
    ///
    /// # Errors
    /// [`StoreError::NoSuchKey`] or [`StoreError::NoSuchBucket`].
    pub async fn open_object(&self, bucket: &str, key: &str) -> Result<OpenObject, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.open_uncounted(bucket, key).await
    }

    /// An object's metadata as a HEAD answers it: [`Self::object_meta`],
    /// counted as a read.
    ///
    /// # Errors
    /// [`StoreError::NoSuchKey`] or [`StoreError::NoSuchBucket`].
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.object_meta(bucket, key).await
    }

    /// An object's metadata (size, ETag and date), without counting as a
    /// read. A small object's body is not read (see [`Volumes::metas`]).
    ///
    /// # Errors
    /// [`StoreError::NoSuchKey`] or [`StoreError::NoSuchBucket`].
    pub async fn object_meta(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let keys = [key.to_owned()];
        if let Some(Some(meta)) = self.volumes.metas(bucket, &keys).await?.pop() {
            return Ok(meta);
        }
        Ok(self.open_file(bucket, key).await?.meta)
    }

    /// The metadata of a listing page's objects (`None` for a key deleted
    /// meanwhile), without counting as reads: the small objects' in one
    /// trip to the disk, without their bodies.
    ///
    /// # Errors
    /// [`StoreError::NoSuchBucket`] or a disk error.
    pub async fn object_metas(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<ObjectMeta>>, StoreError> {
        let from_volumes = self.volumes.metas(bucket, keys).await?;
        let mut metas = Vec::with_capacity(keys.len());
        for (key, meta) in keys.iter().zip(from_volumes) {
            metas.push(match meta {
                Some(meta) => Some(meta),
                None => match self.open_file(bucket, key).await {
                    Ok(object) => Some(object.meta),
                    Err(StoreError::NoSuchKey { .. }) => None,
                    Err(e) => return Err(e),
                },
            });
        }
        Ok(metas)
    }

    async fn open_uncounted(&self, bucket: &str, key: &str) -> Result<OpenObject, StoreError> {
        if let Some(record) = self.volumes.get(bucket, key).await? {
            return Ok(OpenObject {
                meta: record.meta,
                source: Source::Volume(record.body),
            });
        }
        self.open_file(bucket, key).await
    }

    /// Opens an object stored as a file, its metadata read from the trailer:
    /// on this thread when the kernel's caches hold its path and trailer,
    /// on a blocking thread otherwise ([`crate::file_reads`]).
    async fn open_file(&self, bucket: &str, key: &str) -> Result<OpenObject, StoreError> {
        let path = self.object_path(bucket, key)?;
        let opened = match open_cached(&path) {
            Ok(Some(file)) => match cached_trailer(&file, &path) {
                Ok(Some(meta)) => Ok((file, meta)),
                Ok(None) => blocking(move || read_trailer(&file, &path).map(|m| (file, m))).await,
                Err(e) => Err(e),
            },
            Ok(None) => {
                blocking(move || {
                    let file = std::fs::File::open(&path)?;
                    read_trailer(&file, &path).map(|m| (file, m))
                })
                .await
            }
            Err(e) => Err(e.into()),
        };
        match opened {
            Ok((file, meta)) => Ok(OpenObject {
                meta,
                source: Source::File(file, Arc::clone(&self.read_buffers)),
            }),
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.existing_bucket_dir(bucket).await?;
                Err(StoreError::NoSuchKey {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes an object; deleting a missing key succeeds, as in S3.
    ///
    /// # Errors
    /// [`StoreError::NoSuchBucket`] or a disk error.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let mut answers = self.delete_objects(bucket, &[key.to_owned()]).await?;
        answers.pop().unwrap_or(Ok(()))
    }

    /// Deletes the objects at `keys` (what a DeleteObjects names): the
    /// records of those in volumes in one append and one sync, then the
    /// files of the others. Each key's answer; deleting a missing key
    /// succeeds, as in S3.
    ///
    /// # Errors
    /// [`StoreError::NoSuchBucket`], or a disk error that failed them all.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let bucket_dir = self.existing_bucket_dir(bucket).await?;
        let had = self.volumes.delete_many(bucket, keys).await?;
        if had.contains(&true) {
            self.merge_if_due();
        }
        let mut answers = Vec::with_capacity(keys.len());
        for (key, had_record) in keys.iter().zip(had) {
            answers.push(self.delete_file(&bucket_dir, bucket, key, had_record).await);
        }
        Ok(answers)
    }

    /// Deletes the file of `bucket`/`key`, if it has one; `had_record`
    /// says whether a record of the key was just deleted.
    async fn delete_file(
        &self,
        bucket_dir: &Path,
        bucket: &str,
        key: &str,
        had_record: bool,
    ) -> Result<(), StoreError> {
        let path = self.object_path(bucket, key)?;
        let len = match fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match fs::remove_file(&path).await {
            Ok(()) => self.release(len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if had_record {
            // A file a crash left beside the key's newer record (before the
            // small write could remove it): its removal is made durable, or
            // a crash now would bring that older object back once the
            // record's delete hides the record.
            let parent = path.parent().unwrap_or(&path).to_path_buf();
            blocking(move || sync_dir(&parent)).await?;
        }
        // Prune the folders the key's hex components made, up to the bucket.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == bucket_dir || fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    /// The keys in a bucket that start with `prefix` and sort after
    /// `after`, in byte order. Only the folders are read: a page's metadata
    /// is read by [`Self::object_meta`] for the keys it shows.
    ///
    /// # Errors
    /// [`StoreError::NoSuchBucket`] or an I/O error.
    pub async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let dir = self.existing_bucket_dir(bucket).await?;
        let keys = blocking(move || {
            let mut keys = Vec::new();
            walk_keys(&dir, String::new(), &mut keys)?;
            Ok::<_, std::io::Error>(keys)
        })
        .await?;
        let mut keys: Vec<String> = keys
            .into_iter()
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .chain(self.volumes.keys(bucket, prefix, after))
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Maps a key to its path below the bucket folder.
fn key_to_relative_path(key: &str) -> Result<PathBuf, StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("empty key"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong);
    }
    let hex = hex::encode(key.as_bytes());
    let mut path = PathBuf::new();
    let chunks: Vec<&[u8]> = hex.as_bytes().chunks(COMPONENT_HEX).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let part = std::str::from_utf8(chunk).unwrap_or_default();
        if i + 1 == chunks.len() {
            path.push(format!("{part}{OBJECT_SUFFIX}"));
        } else {
            path.push(part);
        }
    }
    Ok(path)
}

/// Collects the keys of every object file below `dir` (blocking).
fn walk_keys(dir: &Path, hex_prefix: String, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            walk_keys(&entry.path(), format!("{hex_prefix}{name}"), out)?;
        } else if let Some(stem) = name.strip_suffix(OBJECT_SUFFIX)
            && let Ok(bytes) = hex::decode(format!("{hex_prefix}{stem}"))
            && let Ok(key) = String::from_utf8(bytes)
        {
            out.push(key);
        }
    }
    Ok(())
}

/// Sums the sizes of all files below `dir` (blocking).
fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_usage(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The metadata of a body of `size` bytes, once it checked against what
/// the client announced.
fn object_meta(
    digest: BodyDigest,
    attrs: &PutAttributes,
    size: u64,
) -> Result<ObjectMeta, StoreError> {
    if let Some(expected) = attrs.content_length
        && expected != size
    {
        return Err(StoreError::IncompleteBody {
            got: size,
            expected,
        });
    }
    Ok(ObjectMeta {
        size,
        etag: digest.etag()?,
        content_type: attrs.content_type.clone(),
        metadata: attrs.metadata.clone(),
        last_modified: time::OffsetDateTime::now_utc().unix_timestamp(),
    })
}

/// Runs blocking file work on the blocking thread pool.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<std::io::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| E::from(std::io::Error::other(e)))?
}

/// Makes the entries of folder `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing folders above it (a long key's hex
/// components), each made durable by an fsync of the folder holding it,
/// so that an acknowledged object never sits in a folder a crash forgets.
pub(crate) fn create_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent folder"))?;
    create_dirs(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends `chunks` to `file`, or to a new file at `path` if there is none
/// yet.
fn append(
    file: Option<std::fs::File>,
    path: &Path,
    chunks: &[Bytes],
) -> std::io::Result<std::fs::File> {
    use std::io::Write as _;
    let mut file = match file {
        Some(file) => file,
        None => std::fs::File::create(path)?,
    };
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    Ok(file)
}

/// The metadata in an object file's trailer (blocking).
fn read_trailer(file: &std::fs::File, path: &Path) -> Result<ObjectMeta, StoreError> {
    use std::os::unix::fs::FileExt as _;
    trailer_from(file, path, |buf, at| file.read_exact_at(buf, at))
}

/// [`read_trailer`] from the page cache alone, on this thread: `None` when
/// the cache does not hold the trailer.
fn cached_trailer(file: &std::fs::File, path: &Path) -> Result<Option<ObjectMeta>, StoreError> {
    let cached = trailer_from(file, path, |buf, at| {
        if read_cached(file, buf, at) == buf.len() {
            Ok(())
        } else {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    });
    match cached {
        Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        other => other.map(Some),
    }
}

/// The metadata in the trailer of `file`, whose bytes `read_at` reads.
fn trailer_from(
    file: &std::fs::File,
    path: &Path,
    mut read_at: impl FnMut(&mut [u8], u64) -> std::io::Result<()>,
) -> Result<ObjectMeta, StoreError> {
    let corrupt = || StoreError::Corrupt(path.display().to_string());
    let len = file.metadata()?.len();
    if len < 8 {
        return Err(corrupt());
    }
    let mut tail = [0u8; 8];
    read_at(&mut tail, len - 8)?;
    if &tail[4..] != MAGIC {
        return Err(corrupt());
    }
    let trailer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if trailer_len + 8 > len {
        return Err(corrupt());
    }
    let mut trailer = vec![0u8; usize::try_from(trailer_len).map_err(|_| corrupt())?];
    read_at(&mut trailer, len - 8 - trailer_len)?;
    let meta: ObjectMeta = serde_json::from_slice(&trailer).map_err(|_| corrupt())?;
    if meta.size + trailer_len + 8 != len {
        return Err(corrupt());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, BodyError>> + Unpin {
        futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    }

    /// The metadata and the bytes in `range` of an object (all of it when
    /// `None`).
    async fn read(
        store: &DiskStore,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> (ObjectMeta, Vec<u8>) {
        let object = store.open_object("b", key).await.unwrap();
        let range = range.unwrap_or(0..object.meta.size);
        let (meta, body) = object.read(range).await.unwrap();
        let chunks: Vec<Bytes> = body.map(Result::unwrap).collect().await;
        (meta, chunks.concat())
    }

    #[test]
    fn hostile_keys_stay_inside_the_bucket() {
        for key in ["../../x", "/etc/passwd", "a/../../b", "..", "\0", "a\\b"] {
            let p = key_to_relative_path(key).unwrap();
            assert_eq!(p.components().count(), 1, "{key}");
            let s = p.to_str().unwrap();
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '.' || c.is_ascii_alphabetic())
            );
            assert!(!s.starts_with('.'));
        }
        let long = "k".repeat(1024);
        assert_eq!(
            key_to_relative_path(&long).unwrap().components().count(),
            11
        );
        assert!(matches!(
            key_to_relative_path(&"k".repeat(1025)),
            Err(StoreError::KeyTooLong)
        ));
        assert!(key_to_relative_path("").is_err());
    }

    #[tokio::test]
    async fn put_get_list_delete_and_capacity() {
        let dir = std::env::temp_dir().join(format!("tfnode-{:x}", rand::random::<u64>()));
        let store = DiskStore::open(&dir, 4096).await.unwrap();
        store.create_bucket("b").await.unwrap();
        assert!(matches!(
            store.create_bucket("b").await,
            Err(StoreError::BucketExists(_))
        ));
        let meta = store
            .put_object(
                "b",
                "a/../x",
                PutAttributes::default(),
                body(&[b"hello ", b"world"]),
            )
            .await
            .unwrap();
        assert_eq!(meta.size, 11);
        assert_eq!(meta.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        let (m, data) = read(&store, "a/../x", None).await;
        assert_eq!(m.size, 11);
        assert_eq!(data, b"hello world");
        assert_eq!(read(&store, "a/../x", Some(6..9)).await.1, b"wor");
        let used = store.used();
        assert!(used > 11);

        // Too big: refused up front, and nothing is left behind.
        let attrs = PutAttributes {
            content_length: Some(5000),
            ..Default::default()
        };
        let big: &'static [u8] = Box::leak(vec![7u8; 5000].into_boxed_slice());
        let err = store
            .put_object("b", "big", attrs, body(&[big]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InsufficientStorage { .. }));
        // Too big without a length: refused while streaming.
        let err = store
            .put_object("b", "big", PutAttributes::default(), body(&[big]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InsufficientStorage { .. }));
        assert_eq!(store.used(), used);
        assert!(matches!(
            store.open_object("b", "big").await,
            Err(StoreError::NoSuchKey { .. })
        ));

        // A wrong Content-MD5 stores nothing.
        let attrs = PutAttributes {
            content_md5: Some([0; 16]),
            ..Default::default()
        };
        let err = store
            .put_object("b", "md5", attrs, body(&[b"x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BadDigest("Content-MD5")));

        // A CRC32C sent with a Content-MD5 checks the body alone, and the
        // Content-MD5 becomes the ETag; a wrong one stores nothing.
        let crc = |data: &[u8]| {
            u32::try_from(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data)).unwrap()
        };
        let md5: [u8; 16] = Md5::digest(b"vouched").into();
        let vouched = |crc32c| PutAttributes {
            content_md5: Some(md5),
            crc32c: Some(crc32c),
            ..Default::default()
        };
        let meta = store
            .put_object(
                "b",
                "crc",
                vouched(crc(b"vouched")),
                body(&[b"vouch", b"ed"]),
            )
            .await
            .unwrap();
        assert_eq!(meta.etag, hex::encode(md5));
        store.delete_object("b", "crc").await.unwrap();
        let err = store
            .put_object(
                "b",
                "crc",
                vouched(crc(b"vouched") ^ 1),
                body(&[b"vouched"]),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::BadDigest("x-amz-checksum-crc32c")
        ));
        // Without a Content-MD5 the CRC32C is checked and the MD5 computed.
        let crc_only = |crc32c| PutAttributes {
            crc32c: Some(crc32c),
            ..Default::default()
        };
        let meta = store
            .put_object("b", "crc", crc_only(crc(b"x")), body(&[b"x"]))
            .await
            .unwrap();
        assert_eq!(meta.etag, hex::encode(Md5::digest(b"x")));
        store.delete_object("b", "crc").await.unwrap();
        let err = store
            .put_object("b", "crc", crc_only(0), body(&[b"x"]))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::BadDigest("x-amz-checksum-crc32c")
        ));
        assert!(matches!(
            store.open_object("b", "crc").await,
            Err(StoreError::NoSuchKey { .. })
        ));

        // A long key lives in folders of its own, created on the way in
        // and pruned on the way out.
        let long = "l".repeat(300);
        store
            .put_object("b", &long, PutAttributes::default(), body(&[b"long"]))
            .await
            .unwrap();
        let path = store.object_path("b", &long).unwrap();
        assert!(path.parent().unwrap() != store.bucket_dir("b"));
        assert_eq!(read(&store, &long, None).await.1, b"long");
        store.delete_object("b", &long).await.unwrap();
        assert!(!path.parent().unwrap().exists(), "its folders are pruned");

        let reads = store.reads();
        let listed = store.list_keys("b", "", None).await.unwrap();
        assert_eq!(listed, ["a/../x"]);
        assert_eq!(store.object_meta("b", "a/../x").await.unwrap().size, 11);
        assert_eq!(store.reads(), reads, "a listing is not a read");
        assert!(matches!(
            store.delete_bucket("b").await,
            Err(StoreError::BucketNotEmpty(_))
        ));
        store.delete_object("b", "a/../x").await.unwrap();
        store.delete_object("b", "a/../x").await.unwrap();
        assert_eq!(store.used(), 0);
        store.delete_bucket("b").await.unwrap();

        // Reopening measures what is on disk.
        drop(store);
        let store = DiskStore::open(&dir, 4096).await.unwrap();
        assert_eq!(store.used(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Bodies larger than a write batch are written in several batches;
    /// an overwrite frees the old object's room; a body that fails half-way
    /// (after a batch was written) leaves no file and no reservation.
    #[tokio::test]
    async fn large_bodies_overwrites_and_broken_bodies() {
        let dir = std::env::temp_dir().join(format!("tfnode-{:x}", rand::random::<u64>()));
        let store = DiskStore::open(&dir, 64 << 20).await.unwrap();
        store.create_bucket("b").await.unwrap();
        let data: Vec<u8> = (0..(3 * WRITE_BATCH + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let chunks = |data: &[u8]| -> Vec<Result<Bytes, BodyError>> {
            data.chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect()
        };
        let put = |body: Vec<Result<Bytes, BodyError>>| {
            store.put_object(
                "b",
                "k",
                PutAttributes::default(),
                futures::stream::iter(body),
            )
        };
        let meta = put(chunks(&data)).await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.etag, hex::encode(Md5::digest(&data)));
        let (_, back) = read(&store, "k", None).await;
        assert!(back == data, "the object did not read back");
        // Ranges of many pieces, of exactly one, of one piece and a byte.
        for range in [
            1000..(2 * WRITE_BATCH as u64 + 7),
            5..(5 + READ_CHUNK),
            5..(6 + READ_CHUNK),
        ] {
            let (_, back) = read(&store, "k", Some(range.clone())).await;
            let (start, end) = (range.start as usize, range.end as usize);
            assert!(back == data[start..end], "range {range:?}");
        }
        let file_len = std::fs::metadata(store.object_path("b", "k").unwrap())
            .unwrap()
            .len();
        assert_eq!(store.used(), file_len);

        let small = put(chunks(b"small")).await.unwrap();
        assert_eq!(small.size, 5);
        let file_len = std::fs::metadata(store.object_path("b", "k").unwrap())
            .unwrap()
            .len();
        assert_eq!(store.used(), file_len, "the overwritten object's room");

        let mut broken = chunks(&data[..2 * WRITE_BATCH]);
        broken.push(Err(BodyError::Transport("connection reset".into())));
        let err = put(broken).await.unwrap_err();
        assert!(matches!(err, StoreError::Body(_)), "{err:?}");
        assert_eq!(store.used(), file_len);
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        let (m, _) = read(&store, "k", None).await;
        assert_eq!(m.size, 5, "a failed write replaced the object");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Stores `data` at `key` in bucket `b` with its length announced (as
    /// the gateway does), so a small one goes to a volume.
    async fn put_sized(
        store: &DiskStore,
        key: &str,
        data: &[u8],
    ) -> Result<ObjectMeta, StoreError> {
        let attrs = PutAttributes {
            content_length: Some(data.len() as u64),
            ..Default::default()
        };
        let data: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
        store.put_object("b", key, attrs, body(&[data])).await
    }

    /// The files in the volumes folder whose names end in `suffix`.
    fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files
    }

    /// Files named `*suffix` anywhere under `dir`.
    fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(files_under(&path, suffix));
            } else if path.to_string_lossy().ends_with(suffix) {
                files.push(path);
            }
        }
        files
    }

    fn volume_files(dir: &Path) -> Vec<PathBuf> {
        files_ending(dir, ".vol")
    }

    fn hint_files(dir: &Path) -> Vec<PathBuf> {
        files_ending(dir, ".hint")
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("tfnode-{:x}", rand::random::<u64>()))
    }

    #[tokio::test]
    async fn small_objects_live_in_volumes_and_survive_a_restart() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        let meta = put_sized(&store, "k1", b"hello world").await.unwrap();
        assert_eq!(meta.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        put_sized(&store, "k2", &[2u8; 5000]).await.unwrap();
        put_sized(&store, "gone", b"x").await.unwrap();
        // No object file: the three are records.
        assert!(walk(&dir.join("buckets/b")).is_empty());
        assert_eq!(read(&store, "k1", Some(6..9)).await.1, b"wor");
        put_sized(&store, "k1", b"second").await.unwrap();
        store.delete_object("b", "gone").await.unwrap();
        // The first k1, "gone" and its delete record wait for a merge.
        assert!(store.dead_bytes() > 11 + 1, "{}", store.dead_bytes());
        assert_eq!(store.list_keys("b", "", None).await.unwrap(), ["k1", "k2"]);
        assert_eq!(store.list_keys("b", "k", Some("k1")).await.unwrap(), ["k2"]);
        assert!(matches!(
            store.delete_bucket("b").await,
            Err(StoreError::BucketNotEmpty(_))
        ));
        let used = store.used();
        drop(store);

        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(store.used(), used);
        let (m, data) = read(&store, "k1", None).await;
        assert_eq!((m.size, data.as_slice()), (6, &b"second"[..]));
        assert_eq!(read(&store, "k2", None).await.1, vec![2u8; 5000]);
        assert!(matches!(
            store.open_object("b", "gone").await,
            Err(StoreError::NoSuchKey { .. })
        ));
        // A start makes no volume until something is written; then each
        // start writes to a volume of its own.
        assert_eq!(volume_files(&dir).len(), 1);
        put_sized(&store, "k3", b"after").await.unwrap();
        assert_eq!(volume_files(&dir).len(), 2);
        for key in ["k1", "k2", "k3"] {
            store.delete_object("b", key).await.unwrap();
        }
        // With nothing live, a merge leaves no volume file behind (a
        // drained node holds no file at all).
        store.merge_now(0).await;
        assert!(
            files_ending(&dir, "").is_empty(),
            "{:?}",
            files_ending(&dir, "")
        );
        assert_eq!(store.used(), 0);
        store.delete_bucket("b").await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Objects read back whole whether their bytes are in the page cache
    /// (read on the calling thread) or only on disk (read on a blocking
    /// thread): a small one from its volume record, large ones from their
    /// files in chunks whose buffers are used again, so a chunk must never
    /// show what an earlier read left in its buffer.
    #[tokio::test]
    async fn objects_read_from_the_page_cache_or_the_disk() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        put_sized(&store, "k", &data).await.unwrap();
        let big: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
        put_sized(&store, "big", &big).await.unwrap();
        let other: Vec<u8> = (0..600_000u32).map(|i| (i % 239) as u8 ^ 0x55).collect();
        put_sized(&store, "other", &other).await.unwrap();
        let check = async || {
            assert_eq!(read(&store, "k", None).await.1, data);
            assert_eq!(
                read(&store, "k", Some(69_990..70_000)).await.1,
                &data[69_990..]
            );
            assert_eq!(read(&store, "big", None).await.1, big);
            assert_eq!(read(&store, "other", None).await.1, other);
            let across = (READ_CHUNK as usize - 3)..(2 * READ_CHUNK as usize + 5);
            let range = across.start as u64..across.end as u64;
            assert_eq!(read(&store, "other", Some(range)).await.1, &other[across]);
        };
        check().await;
        // Evict the (clean, synced) pages of the volumes and the object
        // files: the next reads find nothing cached and go to the disk.
        let objects = files_under(&dir.join("buckets"), OBJECT_SUFFIX);
        assert_eq!(objects.len(), 2, "the large objects have files");
        for path in volume_files(&dir).into_iter().chain(objects) {
            let file = std::fs::File::open(path).unwrap();
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            let mut head = [0u8; 4096];
            assert_eq!(
                crate::file_reads::read_cached(&file, &mut head, 0),
                0,
                "still cached"
            );
        }
        check().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut keys = Vec::new();
        walk_keys(dir, String::new(), &mut keys).unwrap();
        keys
    }

    /// A DeleteObjects deletes records and files alike, a missing or
    /// repeated key without error, and what it deleted stays deleted when
    /// the node starts again (its records' deletions were synced).
    #[tokio::test]
    async fn objects_deleted_together_stay_deleted_after_a_restart() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        let big = vec![3u8; SMALL_MAX as usize + 1];
        for (key, data) in [("a", &b"small a"[..]), ("kept", b"kept"), ("big", &big)] {
            put_sized(&store, key, data).await.unwrap();
        }
        let before = store.used();
        let keys = ["a", "big", "missing", "a"].map(String::from);
        let answers = store.delete_objects("b", &keys).await.unwrap();
        assert_eq!(answers.len(), 4);
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert!(
            store.used() <= before - big.len() as u64,
            "big's file was freed"
        );
        drop(store);
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        for key in ["a", "big", "missing"] {
            let gone = store.open_object("b", key).await;
            assert!(
                matches!(gone, Err(StoreError::NoSuchKey { .. })),
                "{key}: {:?}",
                gone.map(|o| o.meta)
            );
        }
        assert_eq!(read(&store, "kept", None).await.1, b"kept");
        assert!(matches!(
            store.delete_objects("none", &keys).await,
            Err(StoreError::NoSuchBucket(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn writes_to_a_missing_bucket_are_refused_and_store_nothing() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        for size in [10, SMALL_MAX as usize + 1] {
            let refused = put_sized(&store, "k", &vec![1u8; size]).await;
            assert!(
                matches!(refused, Err(StoreError::NoSuchBucket(ref b)) if b == "b"),
                "{size} bytes: {refused:?}"
            );
        }
        assert_eq!(store.used(), 0);
        assert!(volume_files(&dir).is_empty());
        // Once the bucket exists, the same writes succeed.
        store.create_bucket("b").await.unwrap();
        put_sized(&store, "k", b"small").await.unwrap();
        assert_eq!(read(&store, "k", None).await.1, b"small");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_or_corrupt_volume_record_loses_only_what_follows_it() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        put_sized(&store, "kept", b"acknowledged").await.unwrap();
        put_sized(&store, "torn", &[9u8; 3000]).await.unwrap();
        // Nothing but the two records: they end where the bytes in use do.
        let end = store.used();
        drop(store);
        // A crash halfway through the second record's write: its last
        // blocks never reached the disk, and read as the zeros written
        // ahead of it.
        let volume = volume_files(&dir).pop().unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&volume)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[0; 1500], end - 1500).unwrap();
        drop(file);

        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(read(&store, "kept", None).await.1, b"acknowledged");
        assert!(matches!(
            store.open_object("b", "torn").await,
            Err(StoreError::NoSuchKey { .. })
        ));
        // Writes after the restart go to a new volume, past the damage.
        put_sized(&store, "after", b"later").await.unwrap();
        drop(store);

        // A bit flipped in a record's body: the record is refused on read
        // and forgotten (the key reads as missing), at the next start too.
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(read(&store, "after", None).await.1, b"later");
        let newest = volume_files(&dir)[1].clone();
        let mut bytes = std::fs::read(&newest).unwrap();
        let at = bytes.iter().rposition(|&b| b != 0).unwrap();
        bytes[at] ^= 1;
        std::fs::write(&newest, &bytes).unwrap();
        assert!(store.open_object("b", "after").await.is_err());
        drop(store);
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert!(matches!(
            store.open_object("b", "after").await,
            Err(StoreError::NoSuchKey { .. })
        ));
        assert_eq!(read(&store, "kept", None).await.1, b"acknowledged");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn listings_and_heads_read_a_records_head_alone() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        put_sized(&store, "alpha", &[5u8; 5000]).await.unwrap();
        put_sized(&store, "gamma", &[7u8; 5000]).await.unwrap();
        // User metadata longer than a head's first read.
        let long = "m".repeat(6000);
        let attrs = PutAttributes {
            content_length: Some(3),
            metadata: HashMap::from([("note".to_owned(), long.clone())]),
            ..Default::default()
        };
        store
            .put_object("b", "beta", attrs, body(&[b"abc"]))
            .await
            .unwrap();
        let large = vec![1u8; usize::try_from(SMALL_MAX).unwrap() + 1];
        put_sized(&store, "file", &large).await.unwrap();
        let keys: Vec<String> = ["alpha", "beta", "file", "missing", "gamma"]
            .map(String::from)
            .to_vec();
        let metas = store.object_metas("b", &keys).await.unwrap();
        for (key, meta) in keys.iter().zip(&metas) {
            if key == "missing" {
                assert!(meta.is_none());
                continue;
            }
            let (whole, data) = read(&store, key, None).await;
            let meta = meta.as_ref().unwrap();
            assert_eq!(
                (meta.size, &meta.etag),
                (data.len() as u64, &whole.etag),
                "{key}"
            );
        }
        let beta = store.object_meta("b", "beta").await.unwrap();
        assert_eq!(beta.metadata["note"], long);

        // A bit flipped in gamma's body goes unseen by its head (the body
        // is not read), and is caught by a read. A head that does not check
        // (alpha's metadata no longer parses) is read whole, and the record,
        // damaged, forgotten.
        let volume = volume_files(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&volume).unwrap();
        let at = bytes.windows(16).position(|w| w == [7u8; 16]).unwrap();
        bytes[at + 100] ^= 1;
        let at = bytes.windows(6).position(|w| w == b"alpha{").unwrap();
        bytes[at + 5] = b'[';
        std::fs::write(&volume, &bytes).unwrap();
        let metas = store.object_metas("b", &keys).await.unwrap();
        assert!(metas[0].is_none(), "alpha is damaged");
        assert_eq!(metas[4].as_ref().unwrap().size, 5000);
        assert!(store.open_object("b", "gamma").await.is_err());
        assert!(matches!(
            store.object_meta("b", "alpha").await,
            Err(StoreError::NoSuchKey { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn hints_stand_in_for_sealed_volumes_and_damage_loses_only_its_record() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        put_sized(&store, "k1", b"one").await.unwrap();
        put_sized(&store, "k2", &[2u8; 3000]).await.unwrap();
        put_sized(&store, "k3", b"three").await.unwrap();
        put_sized(&store, "gone", b"x").await.unwrap();
        store.delete_object("b", "gone").await.unwrap();
        drop(store);
        let check = |store: DiskStore, k2: bool| async move {
            assert_eq!(read(&store, "k1", None).await.1, b"one");
            assert_eq!(read(&store, "k3", None).await.1, b"three");
            let got = store.open_object("b", "k2").await;
            if k2 {
                assert_eq!(read(&store, "k2", None).await.1, vec![2u8; 3000]);
            } else {
                assert!(matches!(got, Err(StoreError::NoSuchKey { .. })));
            }
            assert!(matches!(
                store.open_object("b", "gone").await,
                Err(StoreError::NoSuchKey { .. })
            ));
            store
        };

        // The start after the writes reads the volume whole and leaves a
        // hint of it, which the next start reads instead.
        let store = check(DiskStore::open(&dir, 1 << 30).await.unwrap(), true).await;
        drop(store);
        let hints = hint_files(&dir);
        assert_eq!(hints.len(), 1);
        let hint = std::fs::read(&hints[0]).unwrap();

        // A hint that does not check is ignored and written again.
        let mut damaged = hint.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        std::fs::write(&hints[0], &damaged).unwrap();
        drop(check(DiskStore::open(&dir, 1 << 30).await.unwrap(), true).await);
        assert_eq!(std::fs::read(&hints[0]).unwrap(), hint);

        // Damage in k2's body: a whole read would end at k2 and lose k3;
        // with the hint only k2 is lost, and it reads as missing.
        let volume = volume_files(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&volume).unwrap();
        let at = bytes
            .windows(3000)
            .position(|w| w.iter().all(|&b| b == 2))
            .unwrap();
        bytes[at + 1500] ^= 1;
        std::fs::write(&volume, &bytes).unwrap();
        let store = check(DiskStore::open(&dir, 1 << 30).await.unwrap(), false).await;

        // A merge copies the records that check to a volume with its own
        // hint, and removes the old volume and hint.
        store.merge_now(0).await;
        assert_eq!(volume_files(&dir).len(), 1);
        assert_ne!(volume_files(&dir)[0], volume);
        assert_eq!(hint_files(&dir).len(), 1);
        drop(store);
        drop(check(DiskStore::open(&dir, 1 << 30).await.unwrap(), false).await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn merges_free_dead_bytes_and_never_bring_back_a_deleted_key() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        for i in 0..50u8 {
            put_sized(&store, &format!("k{i:02}"), &[i; 2000])
                .await
                .unwrap();
        }
        // A restart seals that volume: the deletes land in the next.
        drop(store);
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        for i in 0..40u8 {
            store.delete_object("b", &format!("k{i:02}")).await.unwrap();
        }
        put_sized(&store, "k45", b"rewritten").await.unwrap();
        drop(store);
        let before_merge: Vec<(PathBuf, Vec<u8>)> = volume_files(&dir)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        assert_eq!(before_merge.len(), 2);

        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        let used = store.used();
        assert!(store.volumes.dead_bytes() > 40 * 2000);
        store.merge_now(0).await;
        assert!(
            store.used() < used - 40 * 2000,
            "{} of {used}",
            store.used()
        );
        assert_eq!(store.volumes.dead_bytes(), 0);
        let live: Vec<String> = (40..50).map(|i| format!("k{i:02}")).collect();
        assert_eq!(store.list_keys("b", "", None).await.unwrap(), live);
        assert_eq!(read(&store, "k45", None).await.1, b"rewritten");
        assert_eq!(read(&store, "k41", None).await.1, vec![41u8; 2000]);
        drop(store);

        // A crash after the merged volume was made durable and the oldest
        // source removed, before the others were: nothing deleted returns,
        // no newer write is undone.
        let (first, _) = &before_merge[0];
        assert!(!first.exists());
        for (path, bytes) in &before_merge[1..] {
            std::fs::write(path, bytes).unwrap();
        }
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(store.list_keys("b", "", None).await.unwrap(), live);
        assert_eq!(read(&store, "k45", None).await.1, b"rewritten");
        assert_eq!(read(&store, "k49", None).await.1, vec![49u8; 2000]);
        drop(store);
        // And once the merge's own volume is gone too (a crash before it
        // was durable), the sources alone still say the same.
        for path in volume_files(&dir) {
            if !before_merge.iter().any(|(p, _)| *p == path) {
                std::fs::remove_file(path).unwrap();
            }
        }
        std::fs::write(&before_merge[0].0, &before_merge[0].1).unwrap();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(store.list_keys("b", "", None).await.unwrap(), live);
        assert_eq!(read(&store, "k45", None).await.1, b"rewritten");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn small_and_large_writes_of_one_key_replace_each_other() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        store.create_bucket("b").await.unwrap();
        let large = vec![5u8; usize::try_from(SMALL_MAX).unwrap() + 1];
        put_sized(&store, "k", b"small").await.unwrap();
        put_sized(&store, "k", &large).await.unwrap();
        assert_eq!(read(&store, "k", None).await.1, large);
        assert_eq!(walk(&dir.join("buckets/b")), ["k"]);
        // The small record is dead: wait for its merge (started in the
        // background) before another store opens the folder.
        store.merge_now(0).await;
        drop(store);
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(read(&store, "k", None).await.1.len(), large.len());
        put_sized(&store, "k", b"small again").await.unwrap();
        assert!(walk(&dir.join("buckets/b")).is_empty());
        store.merge_now(0).await;
        drop(store);
        let store = DiskStore::open(&dir, 1 << 30).await.unwrap();
        assert_eq!(read(&store, "k", None).await.1, b"small again");
        assert_eq!(store.list_keys("b", "", None).await.unwrap(), ["k"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writes that fit together are all taken when they come at once: a
    /// record is counted once, not by the volume and by the room held for
    /// it until its sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_small_writes_that_fit_are_all_taken() {
        let probe_dir = temp_dir();
        let probe = DiskStore::open(&probe_dir, 1 << 30).await.unwrap();
        probe.create_bucket("b").await.unwrap();
        put_sized(&probe, "k0", &[0; 100_000]).await.unwrap();
        let record = probe.used();
        let _ = std::fs::remove_dir_all(&probe_dir);

        let dir = temp_dir();
        let store = Arc::new(
            DiskStore::open(&dir, 8 * record + record / 2)
                .await
                .unwrap(),
        );
        store.create_bucket("b").await.unwrap();
        let writes = (0..8u8).map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { put_sized(&store, &format!("k{i}"), &[i; 100_000]).await })
        });
        for (i, written) in futures::future::join_all(writes)
            .await
            .into_iter()
            .enumerate()
        {
            let written = written.unwrap();
            assert!(written.is_ok(), "write {i}: {written:?}");
        }
        assert_eq!(store.used(), 8 * record);
        // The ninth does not fit.
        assert!(matches!(
            put_sized(&store, "k8", &[8; 100_000]).await,
            Err(StoreError::InsufficientStorage { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_full_node_merges_its_dead_bytes_before_refusing_a_write() {
        let dir = temp_dir();
        let store = DiskStore::open(&dir, 64 * 1024).await.unwrap();
        store.create_bucket("b").await.unwrap();
        for round in 0..10u8 {
            // 40 KiB written and deleted each round: 400 KiB through a
            // 64 KiB node.
            for i in 0..4u8 {
                put_sized(&store, &format!("k{i}"), &[round; 10_000])
                    .await
                    .unwrap();
            }
            for i in 0..4u8 {
                store.delete_object("b", &format!("k{i}")).await.unwrap();
            }
        }
        assert!(store.used() <= 64 * 1024);
        put_sized(&store, "last", &[1; 10_000]).await.unwrap();
        assert_eq!(read(&store, "last", None).await.1, vec![1u8; 10_000]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
