//! The rows the index hands out and takes in.

use std::collections::HashMap;

use tenfold_balancer::{Network, NodeState, Placement, Replica};

use crate::crypto::WrappedKey;
use crate::error::GatewayError;
use crate::fragment::{FrameIndex, node_key};
use crate::integrity::Checksums;

/// The standard headers an object keeps and returns on GET and HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectHeaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `Expires`, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// A visible object.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Hex MD5 for a PUT, `md5-of-part-md5s-N` for a multipart object.
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    pub headers: ObjectHeaders,
    /// The `x-amz-checksum-*` values computed when it was stored.
    pub checksums: Checksums,
    /// Milliseconds since the Unix epoch.
    pub last_modified: i64,
    /// Number of parts of a multipart object.
    pub parts_count: Option<u32>,
    /// Its tags, in the order they were given.
    pub tags: Tags,
}

/// One fragment of a segment, with its replicas.
#[derive(Debug, Clone)]
pub struct FragmentRow {
    pub index: u16,
    pub size: u64,
    pub md5: [u8; 16],
    pub placements: Vec<Placement>,
}

/// One segment, with its fragments in index order.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    /// The stored data the segment belongs to (names its fragments).
    pub data_id: String,
    pub seq: u32,
    /// Offset of the segment's first byte: within its data when stored,
    /// within the whole object in a [`Index::layout`](super::Index::layout).
    pub plain_offset: u64,
    pub plain_size: u64,
    /// Where its zstd frames are (unknown for segments stored before the
    /// index kept it).
    pub frames: Option<FrameIndex>,
    /// The wrapped key of the data it belongs to (none for data stored
    /// before encryption).
    pub key: Option<WrappedKey>,
    pub fragments: Vec<FragmentRow>,
}

/// A fragment that may be below its redundancy target: one of its copies
/// is on a node that is not active, or in the overflow store, or it was
/// queued for repair. Every copy comes with the state of the node holding
/// it (`None` for the overflow store's).
#[derive(Debug, Clone)]
pub struct RepairCandidate {
    pub data_id: String,
    pub seq: u32,
    pub index: u16,
    pub size: u64,
    pub md5: [u8; 16],
    pub copies: Vec<(Placement, Option<NodeState>)>,
    /// Failed repairs so far.
    pub attempts: u32,
}

impl RepairCandidate {
    /// The fragment's key on nodes.
    pub fn key(&self) -> String {
        node_key(&self.data_id, self.seq, self.index)
    }

    /// `(data_id, seq, index)`.
    pub fn id(&self) -> (&str, u32, u16) {
        (&self.data_id, self.seq, self.index)
    }
}

/// The bytes of one PUT or one part, fully placed, not yet referenced.
#[derive(Debug, Clone)]
pub struct StoredData {
    pub data_id: String,
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: Checksums,
    /// Its data key, wrapped.
    pub key: Option<WrappedKey>,
    pub segments: Vec<SegmentRow>,
    /// The fragments (segment, index) placed short of the replica policy,
    /// queued for repair when the data is committed.
    pub short: Vec<(u32, u16)>,
}

impl SegmentRow {
    /// Every copy of this segment's fragments.
    pub fn replicas(&self) -> impl Iterator<Item = Replica> + '_ {
        self.fragments.iter().flat_map(move |f| {
            f.placements.iter().map(move |p| Replica {
                key: node_key(&self.data_id, self.seq, f.index),
                placement: p.clone(),
            })
        })
    }
}

impl StoredData {
    /// Every copy of this data's fragments.
    pub fn replicas(&self) -> Vec<Replica> {
        self.segments
            .iter()
            .flat_map(SegmentRow::replicas)
            .collect()
    }
}

/// A share link as recorded in the index.
#[derive(Debug, Clone)]
pub struct ShareRow {
    pub bucket: String,
    pub prefix: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    pub revoked: bool,
    /// For an upload link, what it may still take; `None` for a link that
    /// gives files.
    pub upload: Option<UploadAllowance>,
}

/// What an upload link may take in all, and has taken (reserved) so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadAllowance {
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
    pub used_bytes: u64,
    pub used_files: u64,
}

impl UploadAllowance {
    /// Whether nothing more fits.
    pub fn is_full(&self) -> bool {
        self.max_bytes.is_some_and(|m| self.used_bytes >= m)
            || self.max_files.is_some_and(|m| self.used_files >= m)
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct UploadRow {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    pub headers: ObjectHeaders,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The checksum algorithm (uppercase) every part is given, and the
    /// object a composite of.
    pub checksum_algorithm: Option<String>,
    /// `FULL_OBJECT` when the object's checksum is to be of its whole
    /// content rather than a composite of its parts'.
    pub checksum_type: Option<String>,
    /// The object's tags.
    pub tags: Tags,
}

/// An object's tags: `(key, value)` pairs, in the order they were given.
pub type Tags = Vec<(String, String)>;

/// One uploaded part.
#[derive(Debug, Clone)]
pub struct PartRow {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    pub checksums: Checksums,
    /// Milliseconds since the Unix epoch.
    pub last_modified: i64,
}

/// A replica in the garbage queue, claimed for removal.
#[derive(Debug, Clone)]
pub struct QueuedReplica {
    /// Its place in the queue.
    pub id: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    pub replica: Replica,
}

/// A claimed replica put back in the garbage queue
/// ([`Index::settle_garbage`](super::Index::settle_garbage)).
#[derive(Debug, Clone)]
pub struct GarbageRetry {
    /// Its place in the queue.
    pub id: i64,
    /// When it is due again (ms since the Unix epoch).
    pub at: i64,
    /// Why its removal failed; `None` when it was held back for another
    /// reason (a read still going), which is not a failed attempt.
    pub failure: Option<String>,
}

/// A part of a multipart upload as the index keeps it.
#[derive(Debug, Clone)]
pub struct StoredPart {
    pub number: u32,
    pub data_id: String,
    pub size: u64,
    /// The part's MD5, in hex.
    pub etag: String,
    pub checksums: Checksums,
}

/// What completing an upload makes: the object, and the stored parts it is
/// made of, in order.
#[derive(Debug, Clone)]
pub struct Assembly {
    pub object: ObjectRow,
    pub parts: Vec<StoredPart>,
}

/// A node registration as given to `tenfold nodes add`.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub name: String,
    pub endpoint: String,
    pub network: Network,
    pub capacity: u64,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

/// What must hold of the object at a key for a write to replace it, checked
/// in the write's own transaction (S3's conditional writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteCondition {
    /// Whatever is there.
    #[default]
    Always,
    /// `If-None-Match: *`: nothing is there.
    IfAbsent,
    /// `If-Match: *`: something is there.
    IfPresent,
    /// `If-Match: ETAG`: the object there has this ETag.
    IfMatch(String),
}

impl WriteCondition {
    /// Checks the condition against the ETag of the object at the key now
    /// (`None`: no object).
    ///
    /// # Errors
    /// [`GatewayError::PreconditionFailed`] (412), or
    /// [`GatewayError::NoSuchKey`] (404) for an `If-Match` on no object, as
    /// S3 answers.
    pub fn check(&self, key: &str, current: Option<&str>) -> Result<(), GatewayError> {
        match (self, current) {
            (Self::Always, _) | (Self::IfAbsent, None) | (Self::IfPresent, Some(_)) => Ok(()),
            (Self::IfAbsent, Some(_)) => Err(GatewayError::PreconditionFailed),
            (Self::IfPresent | Self::IfMatch(_), None) => {
                Err(GatewayError::NoSuchKey(key.to_owned()))
            }
            (Self::IfMatch(want), Some(etag)) => {
                if want.trim_matches('"') == etag {
                    Ok(())
                } else {
                    Err(GatewayError::PreconditionFailed)
                }
            }
        }
    }
}
