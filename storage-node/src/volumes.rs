//! Small objects appended to volume files, so that concurrent writes share
//! one `fdatasync` (Haystack's and SeaweedFS's design, Bitcask's merge).
//!
//! A file per object costs four block writes and two fsyncs (the data, its
//! inode, the folder's block and inode): most of a small PUT's time. Here
//! an object of up to [`SMALL_MAX`] bytes is one record appended to the
//! active volume, and a write is answered once an `fdatasync` that began
//! after it returned: the writes that arrive while one runs share the next.
//! One blocking thread at a time appends the writes that wait and then
//! syncs them, taking the next batch while it runs: concurrent writes cost
//! one trip off the async threads per batch, not one each.
//!
//! A record is `TFV1`, the CRC32C of the rest, its kind (put or delete),
//! the lengths of the bucket, key, metadata (JSON) and body, then those
//! bytes. The in-memory map from bucket and key to the newest record is
//! rebuilt at start from every volume in order (later records win, a
//! delete record removes the key). A volume no hint describes is read
//! whole: a record that does not check (a crash's torn tail) ends its
//! scan, and every start writes to a new volume, so nothing is ever
//! appended after damage. What the scan found is then written as the
//! volume's hint (Bitcask's hint files: each record's kind, place, bucket
//! and key, CRC32C-checked), which later starts read instead of the
//! volume: a start reads ~50 bytes per small object, not the object. Reads
//! check each record's CRC; a record that does not (damaged on disk) is
//! forgotten and its key reads as missing, which the gateway's audits
//! repair.
//!
//! Overwritten and deleted records are dead bytes until a merge: when they
//! outweigh the live ones, the live records of every sealed volume are
//! copied to one new volume (ordered before the active one), which is made
//! durable (with its hint) before the old volumes are removed, oldest
//! first, each hint before its volume, so a crash at any point leaves the
//! newest record of each key readable and no deleted key comes back. A
//! reader holding a removed volume keeps reading it.
//! Volumes are made by the first write to them: a node holding no small
//! object (a drained one, or one whose objects were all deleted and merged
//! away) holds no volume file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::disk_store::{ObjectMeta, blocking};
use crate::file_reads::read_exact_at;

/// Largest body stored in a volume; larger objects get a file each.
pub const SMALL_MAX: u64 = 128 * 1024;
/// Magic number opening every record.
const MAGIC: &[u8; 4] = b"TFV1";
/// Bytes of a record before its bucket name.
const HEADER_LEN: usize = 21;
/// Record kinds.
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Longest metadata a record may hold (a sanity bound for the scan).
const META_MAX: usize = 1 << 20;
/// Suffix of volume file names.
const VOLUME_SUFFIX: &str = ".vol";
/// Suffix of hint file names: a sealed volume's records listed without
/// their metadata and bodies, read at start instead of the whole volume.
const HINT_SUFFIX: &str = ".hint";
/// Suffix of a hint being written.
const TMP_SUFFIX: &str = ".tmp";
/// Magic number opening every hint.
const HINT_MAGIC: &[u8; 4] = b"TFH1";
/// Zeros written ahead of the records of the active volume, so that an
/// `fdatasync` finds the file's size and blocks already on disk and writes
/// the records' block alone (0.13 ms here against 0.2 ms when each append
/// grows the file).
const PREALLOCATE: u64 = 1 << 20;
/// The zeros written ahead: one static buffer, rather than one allocated
/// and cleared for each stretch of the volume.
static ZEROS: [u8; PREALLOCATE as usize] = [0; PREALLOCATE as usize];

/// Where the newest record of a key lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    volume: u64,
    offset: u64,
    len: u32,
}

/// One volume file and its group `fdatasync`.
#[derive(Debug)]
struct Volume {
    id: u64,
    /// Shared with reads that finish on a blocking thread.
    file: Arc<File>,
    syncs: Mutex<SyncState>,
}

#[derive(Debug, Default)]
struct SyncState {
    waiting: Vec<oneshot::Sender<Result<(), (std::io::ErrorKind, String)>>>,
    running: bool,
}

/// A put waiting to be appended: runs on the thread writing the batch, and
/// returns the volume it appended to (its sync awaited there), if any.
type Append = Box<dyn FnOnce(&Volumes) -> Option<Arc<Volume>> + Send>;

/// The puts waiting for the appending thread, and whether one runs.
#[derive(Default)]
struct Appends {
    waiting: Vec<Append>,
    running: bool,
}

impl std::fmt::Debug for Appends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appends")
            .field("waiting", &self.waiting.len())
            .field("running", &self.running)
            .finish()
    }
}

/// A volume's bytes: its records (the end of the last), those of live
/// records, and the file's length (records and the zeros after them).
#[derive(Debug)]
struct VolumeUse {
    volume: Arc<Volume>,
    size: u64,
    live: u64,
    allocated: u64,
}

#[derive(Debug)]
struct State {
    keys: HashMap<String, BTreeMap<String, Loc>>,
    volumes: BTreeMap<u64, VolumeUse>,
    active: u64,
}

/// A record read back, checked.
#[derive(Debug)]
pub struct Record {
    pub meta: ObjectMeta,
    /// The object's bytes.
    pub body: Bytes,
}

/// The small-object volumes of a store.
#[derive(Debug)]
pub struct Volumes {
    dir: PathBuf,
    state: Mutex<State>,
    /// Dead bytes below which no merge starts.
    merge_floor: u64,
    /// One merge at a time.
    merge_lock: tokio::sync::Mutex<()>,
    /// Whether a background merge is queued (so that a burst of deletes
    /// queues one, not one each).
    merge_queued: AtomicBool,
    /// Bytes of records in all volumes (what the volumes count against
    /// the node's capacity), kept beside the lock for cheap reads.
    bytes: AtomicU64,
    fsync_seconds: prometheus::Histogram,
    /// Puts waiting for the appending thread.
    appends: Mutex<Appends>,
}

impl Volumes {
    /// Opens the volumes in `dir` (blocking): reads every record; the next
    /// write starts a new active volume.
    ///
    /// # Errors
    /// Fails when the folder or a volume cannot be read.
    pub fn open(
        dir: &Path,
        merge_floor: u64,
        fsync_seconds: prometheus::Histogram,
    ) -> std::io::Result<Self> {
        crate::disk_store::create_dirs(dir)?;
        let (mut ids, mut hints) = (Vec::new(), Vec::new());
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let id_of = |suffix| {
                name.strip_suffix(suffix)
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
            };
            if let Some(id) = id_of(VOLUME_SUFFIX) {
                ids.push(id);
            } else if let Some(id) = id_of(HINT_SUFFIX) {
                hints.push(id);
            } else if name.ends_with(TMP_SUFFIX) {
                // A hint a crash cut short.
                std::fs::remove_file(dir.join(name))?;
            }
        }
        ids.sort_unstable();
        hints.sort_unstable();
        for orphan in hints.iter().filter(|h| ids.binary_search(h).is_err()) {
            // Its volume was merged away before the hint went.
            std::fs::remove_file(hint_path(dir, *orphan))?;
        }
        let mut state = State {
            keys: HashMap::new(),
            volumes: BTreeMap::new(),
            // The next volume is created by the first write to it: a node
            // holding no small object keeps no volume file.
            active: ids.last().map_or(1, |id| id + 1),
        };
        let mut total = 0;
        for &id in &ids {
            let path = volume_path(dir, id);
            let file = File::options().read(true).write(true).open(&path)?;
            let allocated = file.metadata()?.len();
            state
                .volumes
                .insert(id, VolumeUse::new(Arc::new(Volume::new(id, file))));
            let hinted = hints
                .binary_search(&id)
                .is_ok()
                .then(|| read_hint(dir, id, allocated))
                .flatten();
            let from_hint = hinted.is_some();
            let (entries, end, clean) = match hinted {
                Some((end, entries)) => (entries, end, true),
                None => scan(&path)?,
            };
            if end == 0 && clean {
                // Nothing but zeros (a volume nothing was written to):
                // nothing to keep.
                state.volumes.remove(&id);
                remove_hint(dir, id)?;
                std::fs::remove_file(&path)?;
                continue;
            }
            for entry in &entries {
                state.apply(id, entry);
            }
            if let Some(v) = state.volumes.get_mut(&id) {
                v.size = end;
                v.allocated = allocated;
            }
            total += end;
            if !from_hint {
                // Sealed now (writes go to a new volume): the next start
                // reads its hint instead of the whole volume.
                if let Err(e) = write_hint(dir, id, end, &entries) {
                    tracing::warn!(volume = id, error = %e, "volume hint not written");
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            merge_floor,
            merge_lock: tokio::sync::Mutex::new(()),
            merge_queued: AtomicBool::new(false),
            bytes: AtomicU64::new(total),
            fsync_seconds,
            appends: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates volume `id` and makes its name durable (blocking).
    fn create_volume(&self, id: u64) -> std::io::Result<Arc<Volume>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(volume_path(&self.dir, id))?;
        crate::disk_store::sync_dir(&self.dir)?;
        Ok(Arc::new(Volume::new(id, file)))
    }

    /// Appends a put record ([`encode_put`]) and waits until it is durable.
    /// `before` runs first, on the same trip to a blocking thread (checks
    /// the caller needs of the disk): when it fails nothing is appended.
    /// `appended` runs as soon as the record is written and counted in
    /// [`Self::bytes`] (before the sync), so the caller can give back the
    /// room it held for it without counting it twice meanwhile. Returns the
    /// bytes of the record it replaced (0 if none: they are dead until a
    /// merge) and what `before` returned.
    ///
    /// # Errors
    /// `before`'s error, or a disk error; then the key keeps its previous
    /// record.
    pub async fn put<R, E>(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        record: Vec<u8>,
        before: impl FnOnce() -> Result<R, E> + Send + 'static,
        appended: impl FnOnce() + Send + 'static,
    ) -> Result<(u64, R), E>
    where
        R: Send + 'static,
        E: From<std::io::Error> + Send + 'static,
    {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let (done, answer) = oneshot::channel();
        self.queue_append(Box::new(move |this: &Volumes| {
            let appended = (|| {
                let checked = before()?;
                let mut state = this.state();
                let (volume, loc) = this.append_locked(&mut state, &record)?;
                appended();
                let old = state
                    .keys
                    .entry(bucket.clone())
                    .or_default()
                    .insert(key.clone(), loc);
                if let Some(old) = old {
                    state.mark_dead(old);
                }
                drop(state);
                Ok::<_, E>((volume, loc, (bucket, key, old), checked))
            })();
            match appended {
                Ok((volume, loc, old, checked)) => {
                    let synced = volume.wait_for_sync();
                    let _ = done.send(Ok((loc, old, checked, synced)));
                    Some(volume)
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                    None
                }
            }
        }));
        let (loc, old, checked, synced) = answer
            .await
            .map_err(|_| E::from(std::io::Error::other("volume append task ended")))??;
        let (bucket, key, old) = old;
        if let Err(e) = synced.await_sync().await {
            // Not durable: the key goes back to what it was, unless a later
            // write replaced it meanwhile.
            // (A write that did counted this record dead already.)
            let mut state = self.state();
            if state.keys.get(&bucket).and_then(|k| k.get(&key)) == Some(&loc) {
                state.remove_key(&bucket, &key);
                if let Some(old) = old {
                    state.keys.entry(bucket).or_default().insert(key, old);
                    if let Some(v) = state.volumes.get_mut(&old.volume) {
                        v.live += u64::from(old.len);
                    }
                }
            }
            return Err(e.into());
        }
        Ok((old.map_or(0, |o| u64::from(o.len)), checked))
    }

    /// Appends a delete record for `bucket`/`key` if it has a record, and
    /// waits until it is durable (a large object written over a small one
    /// relies on it). `false` when the key had no record.
    ///
    /// # Errors
    /// A disk error.
    pub async fn delete(self: &Arc<Self>, bucket: &str, key: &str) -> std::io::Result<bool> {
        let had = self.delete_many(bucket, &[key.to_owned()]).await?;
        Ok(had.first().copied().unwrap_or(false))
    }

    /// Appends a delete record for each of `keys` in `bucket` that has a
    /// record, all under one hold of the lock, and waits until they are
    /// durable: one sync of each volume they went to. Whether each key
    /// had a record.
    ///
    /// # Errors
    /// A disk error. The records appended before it are synced first; the
    /// keys they deleted then have no record, so deleting them again finds
    /// nothing to do.
    pub async fn delete_many(
        self: &Arc<Self>,
        bucket: &str,
        keys: &[String],
    ) -> std::io::Result<Vec<bool>> {
        // A key too long for a record has none.
        let records: Vec<Option<Vec<u8>>> = keys
            .iter()
            .map(|key| encode(DELETE, bucket, key, &[], &[]).ok())
            .collect();
        let this = Arc::clone(self);
        let (bucket, keys) = (bucket.to_owned(), keys.to_vec());
        let (had, syncs, failed) = blocking(move || {
            let mut state = this.state();
            let mut had = Vec::with_capacity(keys.len());
            let mut appended: Vec<Arc<Volume>> = Vec::new();
            let mut failed = None;
            for (key, record) in keys.iter().zip(&records) {
                let Some(record) = record else {
                    had.push(false);
                    continue;
                };
                if state.keys.get(&bucket).is_none_or(|k| !k.contains_key(key)) {
                    had.push(false);
                    continue;
                }
                match this.append_locked(&mut state, record) {
                    Ok((volume, tombstone)) => {
                        state.mark_dead(tombstone);
                        state.remove_key(&bucket, key);
                        if !appended.iter().any(|v| v.id == volume.id) {
                            appended.push(volume);
                        }
                        had.push(true);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            drop(state);
            let syncs: Vec<SyncAnswer> = appended
                .iter()
                .map(|volume| this.sync_on_this_thread(volume))
                .collect();
            Ok::<_, std::io::Error>((had, syncs, failed))
        })
        .await?;
        for synced in syncs {
            synced.await_sync().await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(had),
        }
    }

    /// Queues `append` for the appending thread, starting one when none
    /// runs.
    fn queue_append(self: &Arc<Self>, append: Append) {
        let start = {
            let mut appends = self.appends();
            appends.waiting.push(append);
            !std::mem::replace(&mut appends.running, true)
        };
        if start {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.write_appends());
        }
    }

    fn appends(&self) -> MutexGuard<'_, Appends> {
        self.appends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The appending thread: appends what waits, syncs the volumes it
    /// appended to, and goes on with what came meanwhile until nothing
    /// waits.
    fn write_appends(&self) {
        let mut turn = AppendTurn {
            volumes: self,
            unsynced: Vec::new(),
            finished: false,
        };
        loop {
            let batch = {
                let mut appends = self.appends();
                if appends.waiting.is_empty() {
                    appends.running = false;
                    turn.finished = true;
                    return;
                }
                std::mem::take(&mut appends.waiting)
            };
            for append in batch {
                if let Some(volume) = append(self)
                    && !turn.unsynced.iter().any(|v| Arc::ptr_eq(v, &volume))
                {
                    turn.unsynced.push(volume);
                }
            }
            while let Some(volume) = turn.unsynced.pop() {
                self.lead_syncs(&volume);
            }
        }
    }

    /// Runs `volume`'s sync rounds on this thread until nobody waits,
    /// unless a round runs elsewhere already (it serves those who wait).
    fn lead_syncs(&self, volume: &Volume) {
        let lead = {
            let mut syncs = volume.syncs();
            !syncs.waiting.is_empty() && !std::mem::replace(&mut syncs.running, true)
        };
        if lead {
            while volume.sync_round(&self.fsync_seconds) {}
        }
    }

    /// Writes `record` at the end of the active volume (blocking, under the
    /// lock, so records land in the order the map sees them).
    fn append_locked(
        &self,
        state: &mut State,
        record: &[u8],
    ) -> std::io::Result<(Arc<Volume>, Loc)> {
        if !state.volumes.contains_key(&state.active) {
            let volume = self.create_volume(state.active)?;
            state.volumes.insert(state.active, VolumeUse::new(volume));
        }
        let active = state
            .volumes
            .get_mut(&state.active)
            .ok_or_else(|| std::io::Error::other("no active volume"))?;
        let offset = active.size;
        let len = u32::try_from(record.len()).map_err(std::io::Error::other)?;
        let end = offset + u64::from(len);
        if end > active.allocated {
            let until = active.allocated + PREALLOCATE.max(end - active.allocated);
            while active.allocated < until {
                let n = ZEROS
                    .len()
                    .min(usize::try_from(until - active.allocated).unwrap_or(usize::MAX));
                active
                    .volume
                    .file
                    .write_all_at(&ZEROS[..n], active.allocated)?;
                active.allocated += n as u64;
            }
        }
        active.volume.file.write_all_at(record, offset)?;
        active.size += u64::from(len);
        active.live += u64::from(len);
        self.bytes.fetch_add(u64::from(len), Ordering::AcqRel);
        let loc = Loc {
            volume: active.volume.id,
            offset,
            len,
        };
        Ok((Arc::clone(&active.volume), loc))
    }

    /// Asks for an `fdatasync` of `volume` that starts after this call
    /// (the writes waiting together share one), from a blocking thread:
    /// when no sync round runs, the first runs here, so that a lone
    /// write's append and sync take one trip off the async threads, not
    /// two; rounds for those who came meanwhile go on another thread.
    fn sync_on_this_thread(&self, volume: &Arc<Volume>) -> SyncAnswer {
        let (done, answer) = oneshot::channel();
        let lead = {
            let mut syncs = volume.syncs();
            syncs.waiting.push(done);
            !std::mem::replace(&mut syncs.running, true)
        };
        if lead && volume.sync_round(&self.fsync_seconds) {
            let volume = Arc::clone(volume);
            let histogram = self.fsync_seconds.clone();
            tokio::task::spawn_blocking(move || while volume.sync_round(&histogram) {});
        }
        SyncAnswer(answer)
    }

    /// The record of `bucket`/`key`, if it has one in a volume. A record
    /// that does not check (damaged on disk) is forgotten, logged, and the
    /// key reads as missing: the gateway's reads and audits then find the
    /// replica missing and write it again. A record the page cache holds
    /// whole is read here, on the request's thread; only one that needs
    /// the disk takes a trip to a blocking thread.
    ///
    /// # Errors
    /// A disk error.
    pub async fn get(&self, bucket: &str, key: &str) -> std::io::Result<Option<Record>> {
        let found = {
            let state = self.state();
            state
                .keys
                .get(bucket)
                .and_then(|k| k.get(key))
                .and_then(|loc| {
                    let volume = &state.volumes.get(&loc.volume)?.volume;
                    Some((Arc::clone(volume), *loc))
                })
        };
        let Some((volume, loc)) = found else {
            return Ok(None);
        };
        let len = usize::try_from(loc.len).map_err(std::io::Error::other)?;
        let record =
            Bytes::from(read_exact_at(Arc::clone(&volume.file), vec![0; len], loc.offset).await?);
        let checked = decode(&record).filter(|d| d.kind == PUT).and_then(|d| {
            let meta: ObjectMeta = serde_json::from_slice(d.meta).ok()?;
            Some((meta, record.slice_ref(d.body)))
        });
        let Some((meta, body)) = checked else {
            tracing::error!(
                error = %corrupt(&self.dir, loc),
                bucket,
                key,
                "volume record damaged: the key is forgotten"
            );
            self.forget(bucket, key, loc);
            return Ok(None);
        };
        Ok(Some(Record { meta, body }))
    }

    /// The metadata of the records of `keys` in `bucket` (`None` for a key
    /// without one), from one trip to a blocking thread, reading each
    /// record's head (header, names, metadata) and not its body: a listing
    /// or a HEAD costs the same whatever the objects' sizes, as a file's
    /// trailer does. The head is checked against the key's location and
    /// name; one that does not check is read whole, as by [`Self::get`]
    /// (a damaged record is forgotten).
    ///
    /// # Errors
    /// A disk error.
    pub async fn metas(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> std::io::Result<Vec<Option<ObjectMeta>>> {
        let found: Vec<_> = {
            let state = self.state();
            let in_bucket = state.keys.get(bucket);
            keys.iter()
                .map(|key| {
                    let loc = *in_bucket?.get(key)?;
                    let volume = &state.volumes.get(&loc.volume)?.volume;
                    Some((Arc::clone(volume), loc))
                })
                .collect()
        };
        if found.iter().all(Option::is_none) {
            return Ok(found.into_iter().map(|_| None).collect());
        }
        let heads = blocking(move || {
            found
                .into_iter()
                .map(|f| {
                    f.map(|(volume, loc)| Ok((loc, read_head(&volume.file, loc)?)))
                        .transpose()
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await?;
        let mut metas = Vec::with_capacity(keys.len());
        for (key, head) in keys.iter().zip(heads) {
            metas.push(match head {
                None => None,
                Some((loc, head)) => match head_meta(&head, loc, bucket, key) {
                    Some(meta) => Some(meta),
                    None => self.get(bucket, key).await?.map(|r| r.meta),
                },
            });
        }
        Ok(metas)
    }

    /// Removes `bucket`/`key` from the map if its record is still the one
    /// at `loc`, counting that record dead.
    fn forget(&self, bucket: &str, key: &str, loc: Loc) {
        let mut state = self.state();
        if state.keys.get(bucket).and_then(|k| k.get(key)) == Some(&loc) {
            state.remove_key(bucket, key);
        }
    }

    /// Whether `bucket`/`key` has a record in a volume.
    pub fn contains(&self, bucket: &str, key: &str) -> bool {
        self.state()
            .keys
            .get(bucket)
            .is_some_and(|k| k.contains_key(key))
    }

    /// Whether any key of `bucket` lives in a volume.
    pub fn has_keys(&self, bucket: &str) -> bool {
        self.state().keys.contains_key(bucket)
    }

    /// The keys of `bucket` in volumes that start with `prefix` and sort
    /// after `after`, in order.
    pub fn keys(&self, bucket: &str, prefix: &str, after: Option<&str>) -> Vec<String> {
        let state = self.state();
        let Some(keys) = state.keys.get(bucket) else {
            return Vec::new();
        };
        let from = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_owned()),
            _ => std::ops::Bound::Included(prefix.to_owned()),
        };
        keys.range((from, std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Bytes of records (live and dead) in all volumes: what the volumes
    /// take of the node's capacity (the zeros written ahead of the active
    /// one and torn tails are not counted).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Bytes of overwritten and deleted records.
    pub fn dead_bytes(&self) -> u64 {
        self.state().volumes.values().map(|v| v.size - v.live).sum()
    }

    /// Whether dead bytes reach half the live ones (and the floor): a merge
    /// then copies at most two live bytes per dead byte it frees. With
    /// nothing live, any dead byte is worth a merge (it copies nothing).
    pub fn merge_due(&self) -> bool {
        let state = self.state();
        let (size, live) = state
            .volumes
            .values()
            .fold((0, 0), |(s, l), v| (s + v.size, l + v.live));
        let dead = size - live;
        dead > 0 && (live == 0 || dead >= (live / 2).max(self.merge_floor))
    }

    /// Queues a merge in the background if one is due and none is queued.
    pub fn merge_if_due(self: &Arc<Self>) {
        if !self.merge_due() || self.merge_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _turn = this.merge_lock.lock().await;
            this.merge_queued.store(false, Ordering::Release);
            if !this.merge_due() {
                return;
            }
            let merging = Arc::clone(&this);
            if let Err(e) = blocking(move || merging.merge_blocking()).await {
                tracing::error!(error = %e, "volume merge failed");
            }
        });
    }

    /// Copies the live records of every sealed volume (and the active one,
    /// which a new volume replaces) to one new volume, makes it durable,
    /// then removes the old ones, oldest first. Returns the bytes freed.
    /// Waits for a merge in progress first; does nothing unless at least
    /// `at_least` bytes (and one) are dead.
    ///
    /// # Errors
    /// A disk error; the old volumes then stay, and every record with them.
    pub async fn merge(self: &Arc<Self>, at_least: u64) -> std::io::Result<u64> {
        let _turn = self.merge_lock.lock().await;
        if self.dead_bytes() < at_least.max(1) {
            return Ok(0);
        }
        let this = Arc::clone(self);
        blocking(move || this.merge_blocking()).await
    }

    fn merge_blocking(&self) -> std::io::Result<u64> {
        let (sources, output) = {
            let mut state = self.state();
            let output = state.active + 1;
            // Writes from now on go to a new volume, after the merge's.
            state.active += 2;
            let sources: Vec<u64> = state.volumes.keys().copied().collect();
            (sources, output)
        };
        let (written, entries) = self.copy_live(&sources, output)?;
        if !entries.is_empty()
            && let Err(e) = write_hint(&self.dir, output, written, &entries)
        {
            tracing::warn!(volume = output, error = %e, "volume hint not written");
        }
        let removed = {
            let mut state = self.state();
            let mut removed: Vec<VolumeUse> = sources
                .iter()
                .filter_map(|id| state.volumes.remove(id))
                .collect();
            if entries.is_empty() {
                // Nothing was copied: the merge's volume, if made, goes too.
                removed.extend(state.volumes.remove(&output));
            }
            removed
        };
        let mut freed = 0;
        for gone in removed {
            // Oldest first, each removal durable before the next: a crash
            // between two leaves only newer volumes, whose delete records
            // still hide what they deleted. A hint goes before its volume
            // (a volume without one is read whole).
            remove_hint(&self.dir, gone.volume.id)?;
            std::fs::remove_file(volume_path(&self.dir, gone.volume.id))?;
            crate::disk_store::sync_dir(&self.dir)?;
            freed += gone.size;
            self.bytes.fetch_sub(gone.size, Ordering::AcqRel);
        }
        let freed = freed.saturating_sub(written);
        tracing::info!(freed, written, "volumes merged");
        Ok(freed)
    }

    /// Copies each live record of `sources` to volume `output` and points
    /// the key at its copy (unless a write replaced it meanwhile), then
    /// makes `output` durable. A record that does not check is forgotten,
    /// not copied. Returns the bytes written and the records, as a hint
    /// lists them.
    fn copy_live(&self, sources: &[u64], output: u64) -> std::io::Result<(u64, Vec<Entry>)> {
        let live: Vec<(String, String, Loc, Arc<Volume>)> = {
            let state = self.state();
            state
                .keys
                .iter()
                .flat_map(|(bucket, keys)| {
                    keys.iter()
                        .filter(|(_, loc)| sources.contains(&loc.volume))
                        .filter_map(|(key, loc)| {
                            let volume = &state.volumes.get(&loc.volume)?.volume;
                            Some((bucket.clone(), key.clone(), *loc, Arc::clone(volume)))
                        })
                })
                .collect()
        };
        let mut entries = Vec::new();
        if live.is_empty() {
            // Nothing to keep: no volume is made for it.
            return Ok((0, entries));
        }
        let out = self.create_volume(output)?;
        self.state()
            .volumes
            .insert(output, VolumeUse::new(Arc::clone(&out)));
        let mut written = 0u64;
        for (bucket, key, loc, volume) in live {
            let record = read_record(&volume.file, loc)?;
            if decode(&record).is_none() {
                tracing::error!(error = %corrupt(&self.dir, loc), bucket, key, "volume record damaged: the key is forgotten");
                self.forget(&bucket, &key, loc);
                continue;
            }
            out.file.write_all_at(&record, written)?;
            let copy = Loc {
                volume: output,
                offset: written,
                len: loc.len,
            };
            written += u64::from(loc.len);
            self.bytes.fetch_add(u64::from(loc.len), Ordering::AcqRel);
            let mut state = self.state();
            if let Some(out_use) = state.volumes.get_mut(&output) {
                out_use.size = written;
                out_use.allocated = written;
            }
            let current = state.keys.get_mut(&bucket).and_then(|k| k.get_mut(&key));
            match current {
                Some(current) if *current == loc => {
                    *current = copy;
                    state.mark_dead(loc);
                    if let Some(out_use) = state.volumes.get_mut(&output) {
                        out_use.live += u64::from(loc.len);
                    }
                }
                // Replaced or deleted meanwhile: the copy is dead.
                _ => {}
            }
            drop(state);
            entries.push(Entry {
                kind: PUT,
                bucket,
                key,
                offset: copy.offset,
                len: copy.len,
            });
        }
        out.file.sync_data()?;
        Ok((written, entries))
    }
}

impl VolumeUse {
    /// A new, empty volume's use.
    fn new(volume: Arc<Volume>) -> Self {
        Self {
            volume,
            size: 0,
            live: 0,
            allocated: 0,
        }
    }
}

impl State {
    /// Applies a record of volume `volume` read at start (scanned or from
    /// its hint): a put points its key at it, a delete removes the key.
    fn apply(&mut self, volume: u64, entry: &Entry) {
        let loc = Loc {
            volume,
            offset: entry.offset,
            len: entry.len,
        };
        if entry.kind != PUT {
            self.remove_key(&entry.bucket, &entry.key);
            return;
        }
        let old = self
            .keys
            .entry(entry.bucket.clone())
            .or_default()
            .insert(entry.key.clone(), loc);
        if let Some(v) = self.volumes.get_mut(&volume) {
            v.live += u64::from(entry.len);
        }
        if let Some(old) = old {
            self.mark_dead(old);
        }
    }

    /// Removes `bucket`/`key` from the map (and the bucket once it has no
    /// key left), counting its record dead.
    fn remove_key(&mut self, bucket: &str, key: &str) {
        let Some(keys) = self.keys.get_mut(bucket) else {
            return;
        };
        let old = keys.remove(key);
        if keys.is_empty() {
            self.keys.remove(bucket);
        }
        if let Some(old) = old {
            self.mark_dead(old);
        }
    }

    /// Counts the record at `loc` as dead.
    fn mark_dead(&mut self, loc: Loc) {
        if let Some(v) = self.volumes.get_mut(&loc.volume) {
            v.live = v.live.saturating_sub(u64::from(loc.len));
        }
    }
}

impl Volume {
    fn new(id: u64, file: File) -> Self {
        Self {
            id,
            file: Arc::new(file),
            syncs: Mutex::default(),
        }
    }

    fn syncs(&self) -> MutexGuard<'_, SyncState> {
        self.syncs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for an `fdatasync` that starts after this call, led by
    /// whoever leads the next round (see [`Volumes::lead_syncs`]).
    fn wait_for_sync(&self) -> SyncAnswer {
        let (done, answer) = oneshot::channel();
        self.syncs().waiting.push(done);
        SyncAnswer(answer)
    }

    /// One sync round (on a blocking thread that holds the turn): one
    /// `fdatasync` for all who wait. `true` when others wait for the next
    /// round (the turn is still held); `false` when nobody does, and the
    /// turn is handed back.
    fn sync_round(&self, histogram: &prometheus::Histogram) -> bool {
        let mut turn = SyncTurn {
            volume: self,
            finished: false,
        };
        let round = std::mem::take(&mut self.syncs().waiting);
        let started = std::time::Instant::now();
        let result = self.file.sync_data();
        histogram.observe(started.elapsed().as_secs_f64());
        let answer = result.map_err(|e| (e.kind(), e.to_string()));
        for waiting in round {
            let _ = waiting.send(answer.clone());
        }
        turn.finished = true;
        let mut syncs = self.syncs();
        if syncs.waiting.is_empty() {
            syncs.running = false;
            false
        } else {
            true
        }
    }
}

/// The answer to a wait for a volume's sync.
struct SyncAnswer(oneshot::Receiver<Result<(), (std::io::ErrorKind, String)>>);

impl SyncAnswer {
    async fn await_sync(self) -> std::io::Result<()> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((kind, msg))) => Err(std::io::Error::new(kind, msg)),
            Err(_) => Err(std::io::Error::other("volume sync task ended")),
        }
    }
}

/// Ends the appending thread's turn if it ends other than by finding
/// nothing to append (a panic): the puts waiting to be appended, and those
/// appended but not yet synced, fail rather than wait on a thread gone, and
/// the next put starts another.
struct AppendTurn<'a> {
    volumes: &'a Volumes,
    unsynced: Vec<Arc<Volume>>,
    finished: bool,
}

impl Drop for AppendTurn<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for volume in &self.unsynced {
            let mut syncs = volume.syncs();
            if !syncs.running {
                syncs.waiting.clear();
            }
        }
        let mut appends = self.volumes.appends();
        appends.running = false;
        appends.waiting.clear();
    }
}

/// Ends a sync round's turn if the round ends other than by answering (a
/// panic), failing those who wait, so that the next write starts another
/// rather than waiting on one gone.
struct SyncTurn<'a> {
    volume: &'a Volume,
    finished: bool,
}

impl Drop for SyncTurn<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut syncs = self.volume.syncs();
            syncs.running = false;
            syncs.waiting.clear();
        }
    }
}

fn volume_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{VOLUME_SUFFIX}"))
}

fn corrupt(dir: &Path, loc: Loc) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "record at {} offset {} does not check",
            volume_path(dir, loc.volume).display(),
            loc.offset
        ),
    )
}

/// The record of a put of `body` at `bucket`/`key`.
///
/// # Errors
/// When a field is too long for the record format.
pub fn encode_put(
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    body: &[Bytes],
) -> std::io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    encode(PUT, bucket, key, &meta, body)
}

/// A record's bytes.
fn encode(
    kind: u8,
    bucket: &str,
    key: &str,
    meta: &[u8],
    body: &[Bytes],
) -> std::io::Result<Vec<u8>> {
    let body_len: usize = body.iter().map(Bytes::len).sum();
    let too_long = |_| std::io::Error::other("record field too long");
    let mut record =
        Vec::with_capacity(HEADER_LEN + bucket.len() + key.len() + meta.len() + body_len);
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(&[0; 4]);
    record.push(kind);
    record.extend_from_slice(&u16::try_from(bucket.len()).map_err(too_long)?.to_le_bytes());
    record.extend_from_slice(&u16::try_from(key.len()).map_err(too_long)?.to_le_bytes());
    record.extend_from_slice(&u32::try_from(meta.len()).map_err(too_long)?.to_le_bytes());
    record.extend_from_slice(&u32::try_from(body_len).map_err(too_long)?.to_le_bytes());
    record.extend_from_slice(bucket.as_bytes());
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(meta);
    for chunk in body {
        record.extend_from_slice(chunk);
    }
    let crc = crc32c(&record[8..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

fn crc32c(bytes: &[u8]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(bytes);
    u32::try_from(digest.finalize()).unwrap_or_default()
}

/// The lengths a record's header gives: bucket, key, metadata, body.
fn header_lengths(header: &[u8]) -> Option<(usize, usize, usize, usize)> {
    if header.len() < HEADER_LEN || &header[..4] != MAGIC || !matches!(header[8], PUT | DELETE) {
        return None;
    }
    let u16_at = |i: usize| usize::from(u16::from_le_bytes([header[i], header[i + 1]]));
    let u32_at = |i: usize| {
        usize::try_from(u32::from_le_bytes([
            header[i],
            header[i + 1],
            header[i + 2],
            header[i + 3],
        ]))
        .ok()
    };
    let (meta, body) = (u32_at(13)?, u32_at(17)?);
    let small = usize::try_from(SMALL_MAX).ok()?;
    (meta <= META_MAX && body <= small).then_some((u16_at(9), u16_at(11), meta, body))
}

/// A record's parts.
struct Decoded<'a> {
    kind: u8,
    bucket: &'a [u8],
    key: &'a [u8],
    meta: &'a [u8],
    body: &'a [u8],
}

/// Splits and checks a whole record; `None` when it does not check.
fn decode(record: &[u8]) -> Option<Decoded<'_>> {
    let (b, k, m, n) = header_lengths(record)?;
    if record.len() != HEADER_LEN + b + k + m + n {
        return None;
    }
    let crc = u32::from_le_bytes([record[4], record[5], record[6], record[7]]);
    if crc32c(&record[8..]) != crc {
        return None;
    }
    let (bucket, rest) = record[HEADER_LEN..].split_at(b);
    let (key, rest) = rest.split_at(k);
    let (meta, body) = rest.split_at(m);
    Some(Decoded {
        kind: record[8],
        bucket,
        key,
        meta,
        body,
    })
}

/// Bytes read at once for a record's head: its header, names and
/// metadata fit in them but for long user metadata (then read again).
const HEAD_READ: u32 = 4096;

/// The head of the record at `loc`: at least its header, names and
/// metadata when the header's lengths are sane (see [`head_meta`]).
fn read_head(file: &File, loc: Loc) -> std::io::Result<Vec<u8>> {
    let mut head =
        vec![0u8; usize::try_from(loc.len.min(HEAD_READ)).map_err(std::io::Error::other)?];
    file.read_exact_at(&mut head, loc.offset)?;
    if let Some((b, k, m, _)) = header_lengths(&head) {
        let want = HEADER_LEN + b + k + m;
        if want > head.len() && want <= usize::try_from(loc.len).unwrap_or(usize::MAX) {
            head.resize(want, 0);
            file.read_exact_at(&mut head, loc.offset)?;
        }
    }
    Ok(head)
}

/// The metadata a record's head gives, if the head is that of a put of
/// `bucket`/`key` as long as `loc` says, with metadata that parses and
/// gives the body's length. (The CRC, over the body too, is not checked:
/// reads check it.)
fn head_meta(head: &[u8], loc: Loc, bucket: &str, key: &str) -> Option<ObjectMeta> {
    let (b, k, m, n) = header_lengths(head)?;
    let names = HEADER_LEN + b + k;
    if head[8] != PUT
        || HEADER_LEN + b + k + m + n != usize::try_from(loc.len).ok()?
        || head.len() < names + m
        || &head[HEADER_LEN..HEADER_LEN + b] != bucket.as_bytes()
        || &head[HEADER_LEN + b..names] != key.as_bytes()
    {
        return None;
    }
    let meta: ObjectMeta = serde_json::from_slice(&head[names..names + m]).ok()?;
    (meta.size == n as u64).then_some(meta)
}

/// The bytes of the record at `loc` (blocking).
fn read_record(file: &File, loc: Loc) -> std::io::Result<Bytes> {
    let mut record = vec![0u8; usize::try_from(loc.len).map_err(std::io::Error::other)?];
    file.read_exact_at(&mut record, loc.offset)?;
    Ok(Bytes::from(record))
}

/// Reads a volume record by record (blocking); returns its records, where
/// they end, and whether only zeros follow them. Zeros (written ahead) end
/// the scan, and so does a record that does not check (a torn tail, or
/// damage: what follows is lost, and the gateway's audits find it missing).
fn scan(path: &Path) -> std::io::Result<(Vec<Entry>, u64, bool)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut record = Vec::new();
    let mut clean = true;
    loop {
        record.resize(HEADER_LEN, 0);
        match reader.read_exact(&mut record) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if record.iter().all(|&b| b == 0) {
            break;
        }
        clean = false;
        let Some((b, k, m, n)) = header_lengths(&record) else {
            tracing::warn!(volume = %path.display(), offset, "volume record header does not check: scan ends here");
            break;
        };
        record.resize(HEADER_LEN + b + k + m + n, 0);
        match reader.read_exact(&mut record[HEADER_LEN..]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::warn!(volume = %path.display(), offset, "volume ends in a torn record");
                break;
            }
            Err(e) => return Err(e),
        }
        let Some(decoded) = decode(&record) else {
            tracing::warn!(volume = %path.display(), offset, "volume record does not check: scan ends here");
            break;
        };
        let (Ok(bucket), Ok(key)) = (
            std::str::from_utf8(decoded.bucket),
            std::str::from_utf8(decoded.key),
        ) else {
            break;
        };
        let len = u32::try_from(record.len()).map_err(std::io::Error::other)?;
        entries.push(Entry {
            kind: decoded.kind,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            offset,
            len,
        });
        offset += u64::from(len);
        clean = true;
    }
    Ok((entries, offset, clean))
}

/// A record as a scan or a hint finds it: enough to rebuild the map.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: u8,
    bucket: String,
    key: String,
    offset: u64,
    len: u32,
}

fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{HINT_SUFFIX}"))
}

/// Removes volume `id`'s hint, if it has one (blocking).
fn remove_hint(dir: &Path, id: u64) -> std::io::Result<()> {
    match std::fs::remove_file(hint_path(dir, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A hint's bytes: `TFH1`, the CRC32C of the rest, where the volume's
/// records end, their number, then each record's kind, offset, length,
/// bucket and key.
fn encode_hint(end: u64, entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let too_long = |_| std::io::Error::other("hint field too long");
    let mut hint = Vec::with_capacity(20 + entries.len() * 64);
    hint.extend_from_slice(HINT_MAGIC);
    hint.extend_from_slice(&[0; 4]);
    hint.extend_from_slice(&end.to_le_bytes());
    hint.extend_from_slice(
        &u32::try_from(entries.len())
            .map_err(too_long)?
            .to_le_bytes(),
    );
    for e in entries {
        hint.push(e.kind);
        hint.extend_from_slice(&e.offset.to_le_bytes());
        hint.extend_from_slice(&e.len.to_le_bytes());
        hint.extend_from_slice(
            &u16::try_from(e.bucket.len())
                .map_err(too_long)?
                .to_le_bytes(),
        );
        hint.extend_from_slice(&u16::try_from(e.key.len()).map_err(too_long)?.to_le_bytes());
        hint.extend_from_slice(e.bucket.as_bytes());
        hint.extend_from_slice(e.key.as_bytes());
    }
    let crc = crc32c(&hint[8..]);
    hint[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(hint)
}

/// Parses a hint of a volume of `file_len` bytes; `None` unless it checks
/// whole and every record it lists lies within the volume, in order.
fn decode_hint(hint: &[u8], file_len: u64) -> Option<(u64, Vec<Entry>)> {
    fn take<'a>(at: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (at.len() >= n).then(|| at.split_at(n))?;
        *at = rest;
        Some(head)
    }
    fn array<const N: usize>(at: &mut &[u8]) -> Option<[u8; N]> {
        take(at, N)?.try_into().ok()
    }
    let mut at = hint;
    if take(&mut at, 4)? != HINT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(array(&mut at)?);
    if crc32c(at) != crc {
        return None;
    }
    let end = u64::from_le_bytes(array(&mut at)?);
    let count = u32::from_le_bytes(array(&mut at)?);
    if end > file_len {
        return None;
    }
    let mut entries = Vec::with_capacity(usize::try_from(count).ok()?.min(at.len() / 17));
    let mut next = 0u64;
    for _ in 0..count {
        let kind = take(&mut at, 1)?[0];
        let offset = u64::from_le_bytes(array(&mut at)?);
        let len = u32::from_le_bytes(array(&mut at)?);
        let b = usize::from(u16::from_le_bytes(array(&mut at)?));
        let k = usize::from(u16::from_le_bytes(array(&mut at)?));
        let bucket = std::str::from_utf8(take(&mut at, b)?).ok()?.to_owned();
        let key = std::str::from_utf8(take(&mut at, k)?).ok()?.to_owned();
        if !matches!(kind, PUT | DELETE) || offset != next {
            return None;
        }
        next = offset.checked_add(u64::from(len))?;
        entries.push(Entry {
            kind,
            bucket,
            key,
            offset,
            len,
        });
    }
    (at.is_empty() && next == end).then_some((end, entries))
}

/// Volume `id`'s hint, if it has a valid one (blocking).
fn read_hint(dir: &Path, id: u64, file_len: u64) -> Option<(u64, Vec<Entry>)> {
    let hint = std::fs::read(hint_path(dir, id)).ok()?;
    let decoded = decode_hint(&hint, file_len);
    if decoded.is_none() {
        tracing::warn!(
            volume = id,
            "volume hint does not check: the volume is read whole"
        );
    }
    decoded
}

/// Writes volume `id`'s hint durably, through a temporary file (blocking).
fn write_hint(dir: &Path, id: u64, end: u64, entries: &[Entry]) -> std::io::Result<()> {
    let hint = encode_hint(end, entries)?;
    let tmp = dir.join(format!("{id:016x}{HINT_SUFFIX}{TMP_SUFFIX}"));
    let mut file = File::create(&tmp)?;
    std::io::Write::write_all(&mut file, &hint)?;
    file.sync_all()?;
    std::fs::rename(&tmp, hint_path(dir, id))?;
    crate::disk_store::sync_dir(dir)
}
