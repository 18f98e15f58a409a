//! The storage node's error type and its one mapping onto S3 errors.

use s3s::{S3Error, S3ErrorCode};

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
    #[error("Content-MD5 does not match the body")]
    BadDigest,
    #[error("invalid Content-MD5 header")]
    InvalidDigest,
    #[error("body ended after {got} of {expected} bytes")]
    IncompleteBody { got: u64, expected: u64 },
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("corrupt object file {0}")]
    Corrupt(String),
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    /// Bad start-up settings (a certificate that does not load).
    #[error("{0}")]
    Config(String),
}

/// The S3 error code for a full node: the name MinIO-like clients and the
/// Tenfold balancer recognise, answered with 507 Insufficient Storage.
pub const INSUFFICIENT_STORAGE: &str = "InsufficientStorage";

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
            StoreError::InsufficientStorage { .. } => {
                let mut err = S3Error::with_message(
                    INSUFFICIENT_STORAGE
                        .parse()
                        .unwrap_or(S3ErrorCode::InternalError),
                    msg,
                );
                err.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
                return err;
            }
            StoreError::BadDigest => S3ErrorCode::BadDigest,
            StoreError::InvalidDigest => S3ErrorCode::InvalidDigest,
            StoreError::IncompleteBody { .. } | StoreError::Body(_) => S3ErrorCode::IncompleteBody,
            StoreError::Corrupt(_) | StoreError::Io(_) | StoreError::Config(_) => {
                tracing::error!(error = %e, "storage node internal error");
                S3ErrorCode::InternalError
            }
        };
        S3Error::with_message(code, msg)
    }
}
