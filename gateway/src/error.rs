//! The gateway's error type and its one mapping onto S3 errors.

use s3s::{S3Error, S3ErrorCode};
use tenfold_balancer::BalancerError;
use tenfold_common::http_server::BodyError;
use tenfold_common::s3_errors::{body_error_code, insufficient_storage, with_status};

use crate::fragment::FragmentError;

/// Everything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("key {0:?} does not exist")]
    NoSuchKey(String),
    #[error("{0}")]
    InvalidTag(String),
    #[error("bucket {0:?} has no CORS configuration")]
    NoSuchCorsConfiguration(String),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("bucket {0:?} already exists and belongs to another access key")]
    BucketTaken(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("upload {0:?} does not exist (completed or aborted?)")]
    NoSuchUpload(String),
    #[error("part {0} was not uploaded or its ETag does not match")]
    InvalidPart(u32),
    #[error("the parts must be listed in ascending order of part number")]
    InvalidPartOrder,
    #[error("part {0} is smaller than the 5 MiB minimum of every part but the last")]
    EntityTooSmall(u32),
    #[error("malformed request: {0}")]
    MalformedXml(String),
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    #[error("not modified")]
    NotModified,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the object key is longer than 1024 bytes")]
    KeyTooLong,
    #[error("a body of {0} bytes is larger than the 5 GiB S3 allows in one request")]
    EntityTooLarge(u64),
    /// A form upload's file is larger than its policy allows.
    #[error("your proposed upload exceeds the {0} bytes the POST policy allows")]
    PostTooLarge(u64),
    /// A form upload's file is smaller than its policy requires.
    #[error("your proposed upload is smaller than the {0} bytes the POST policy requires")]
    PostTooSmall(u64),
    #[error("the body of your POST request is not well-formed multipart/form-data: {0}")]
    MalformedPost(String),
    #[error("user metadata of {0} bytes is larger than the 2 KB S3 allows")]
    MetadataTooLarge(usize),
    #[error("the requested part number is not satisfiable")]
    InvalidPartNumber,
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error("the Content-MD5 you specified did not match what was received")]
    BadDigest,
    #[error("the {0} you specified did not match the calculated checksum")]
    ChecksumMismatch(&'static str),
    #[error("the Content-MD5 you specified is not valid")]
    InvalidDigest,
    #[error("body ended after {got} of {expected} bytes")]
    IncompleteBody { got: u64, expected: u64 },
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A zip archive could not be written to its response.
    #[error("sending the archive: {0}")]
    ArchiveWrite(#[source] std::io::Error),
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    /// Not enough storage nodes took the object.
    #[error("not enough storage: {0}")]
    InsufficientStorage(BalancerError),
    /// The storage nodes (or the overflow store) failed a read, a deletion
    /// or an unpin.
    #[error("storage: {0}")]
    Storage(#[source] BalancerError),
    /// Stored data that was read back does not decode.
    #[error("object data unreadable: {0}")]
    Fragment(#[from] FragmentError),
    #[error("index: {0}")]
    Index(#[from] sqlx::Error),
    #[error("configuration: {0}")]
    Config(String),
    /// A data key could not be unwrapped with the configured master keys.
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for GatewayError {
    fn from(e: tokio::task::JoinError) -> Self {
        GatewayError::Internal(e.to_string())
    }
}

impl From<GatewayError> for S3Error {
    fn from(e: GatewayError) -> Self {
        let msg = e.to_string();
        let code = match e {
            GatewayError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
            GatewayError::NoSuchKey(_) => S3ErrorCode::NoSuchKey,
            GatewayError::NoSuchCorsConfiguration(_) => S3ErrorCode::NoSuchCORSConfiguration,
            GatewayError::InvalidTag(_) => S3ErrorCode::InvalidTag,
            GatewayError::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
            GatewayError::BucketTaken(_) => S3ErrorCode::BucketAlreadyExists,
            GatewayError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
            GatewayError::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
            GatewayError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
            GatewayError::InvalidPart(_) => S3ErrorCode::InvalidPart,
            GatewayError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
            GatewayError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
            GatewayError::MalformedXml(_) => S3ErrorCode::MalformedXML,
            GatewayError::PreconditionFailed => S3ErrorCode::PreconditionFailed,
            GatewayError::NotModified => S3ErrorCode::NotModified,
            GatewayError::InvalidRequest(_) => S3ErrorCode::InvalidRequest,
            GatewayError::KeyTooLong => S3ErrorCode::KeyTooLongError,
            GatewayError::EntityTooLarge(_) | GatewayError::PostTooLarge(_) => {
                S3ErrorCode::EntityTooLarge
            }
            GatewayError::PostTooSmall(_) => S3ErrorCode::EntityTooSmall,
            GatewayError::MalformedPost(_) => S3ErrorCode::MalformedPOSTRequest,
            GatewayError::MetadataTooLarge(_) => S3ErrorCode::MetadataTooLarge,
            GatewayError::InvalidPartNumber => {
                return with_status(
                    "InvalidPartNumber",
                    http::StatusCode::RANGE_NOT_SATISFIABLE,
                    msg,
                );
            }
            GatewayError::NotImplemented(_) => S3ErrorCode::NotImplemented,
            GatewayError::BadDigest | GatewayError::ChecksumMismatch(_) => S3ErrorCode::BadDigest,
            GatewayError::InvalidDigest => S3ErrorCode::InvalidDigest,
            GatewayError::Body(ref e) => body_error_code(e),
            GatewayError::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
            GatewayError::InvalidRange => S3ErrorCode::InvalidRange,
            // Nodes that did not answer: a 503 the client retries.
            GatewayError::InsufficientStorage(ref e) if e.nodes_unreachable() => {
                tracing::warn!(error = %msg, "refusing upload: nodes unreachable");
                S3ErrorCode::ServiceUnavailable
            }
            GatewayError::InsufficientStorage(_) => {
                tracing::warn!(error = %msg, "refusing upload");
                return insufficient_storage(msg);
            }
            // Postgres text cannot hold a NUL (22021): a key or prefix
            // with one is the client's to change.
            GatewayError::Index(sqlx::Error::Database(ref db))
                if db.code().as_deref() == Some("22021") =>
            {
                return S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    "keys and prefixes with a NUL character cannot be stored in the Postgres index",
                );
            }
            GatewayError::Storage(_) | GatewayError::Fragment(_) | GatewayError::Index(_) => {
                tracing::error!(error = %msg, "service unavailable");
                S3ErrorCode::ServiceUnavailable
            }
            GatewayError::Config(_)
            | GatewayError::Internal(_)
            | GatewayError::MasterKey(_)
            | GatewayError::ArchiveWrite(_) => {
                tracing::error!(error = %msg, "internal error");
                S3ErrorCode::InternalError
            }
        };
        S3Error::with_message(code, msg)
    }
}
