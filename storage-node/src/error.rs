//! The storage node's error type and its one mapping onto S3 errors.

use s3s::{S3Error, S3ErrorCode};
use tenfold_common::http_server::BodyError;
use tenfold_common::s3_errors::{body_error_code, insufficient_storage};

/// Everything that can go wrong in the storage node.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("key {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("invalid object key: {0}")]
    InvalidKey(&'static str),
    #[error("object key is longer than 1024 bytes")]
    KeyTooLong,
    #[error("node is full: {needed} bytes needed, {available} available")]
    InsufficientStorage { needed: u64, available: u64 },
    #[error("the {0} sent does not match the body")]
    BadDigest(&'static str),
    #[error("invalid Content-MD5 header")]
    InvalidDigest,
    #[error("value for x-amz-checksum-crc32c header is invalid")]
    InvalidChecksum,
    #[error("body ended after {got} of {expected} bytes")]
    IncompleteBody { got: u64, expected: u64 },
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("corrupt object file {0}")]
    Corrupt(String),
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    /// Bad start-up settings (a certificate that does not load).
    #[error("{0}")]
    Config(String),
}

impl From<StoreError> for S3Error {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        let code = match &e {
            StoreError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
            StoreError::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
            StoreError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
            StoreError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
            StoreError::InvalidKey(_) => S3ErrorCode::InvalidArgument,
            StoreError::KeyTooLong => S3ErrorCode::KeyTooLongError,
            StoreError::InsufficientStorage { .. } => return insufficient_storage(msg),
            StoreError::BadDigest(_) => S3ErrorCode::BadDigest,
            StoreError::InvalidDigest => S3ErrorCode::InvalidDigest,
            StoreError::InvalidChecksum => S3ErrorCode::InvalidRequest,
            StoreError::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
            StoreError::Body(e) => body_error_code(e),
            StoreError::Corrupt(_) | StoreError::Io(_) | StoreError::Config(_) => {
                tracing::error!(error = %e, "storage node internal error");
                S3ErrorCode::InternalError
            }
        };
        S3Error::with_message(code, msg)
    }
}
