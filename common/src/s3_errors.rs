//! S3 errors the gateway and the node answer alike, beyond the codes `s3s`
//! knows by name.

use s3s::{Body, S3Error, S3ErrorCode};

use crate::http_server::{BodyError, plain_response};

/// The S3 error code for a full node or a gateway whose nodes cannot hold
/// an upload: the name MinIO-like clients and the Tenfold balancer
/// recognise, answered with 507 Insufficient Storage.
pub const INSUFFICIENT_STORAGE: &str = "InsufficientStorage";

/// An S3 error with `code` (one `s3s` may not know) and HTTP `status`.
pub fn with_status(code: &str, status: http::StatusCode, message: String) -> S3Error {
    let mut err =
        S3Error::with_message(code.parse().unwrap_or(S3ErrorCode::InternalError), message);
    err.set_status_code(status);
    err
}

/// `InsufficientStorage` (507).
pub fn insufficient_storage(message: String) -> S3Error {
    with_status(
        INSUFFICIENT_STORAGE,
        http::StatusCode::INSUFFICIENT_STORAGE,
        message,
    )
}

/// The S3 code for a body that could not be read: `RequestTimeout` when
/// the client went quiet, `IncompleteBody` otherwise.
pub fn body_error_code(error: &BodyError) -> S3ErrorCode {
    match error {
        BodyError::Idle(_) => S3ErrorCode::RequestTimeout,
        BodyError::Transport(_) => S3ErrorCode::IncompleteBody,
    }
}

/// The XML error document S3 clients expect for `error`, for answers
/// given outside `s3s`.
pub fn error_response(error: S3Error) -> http::Response<Body> {
    error.to_http_response().unwrap_or_else(|e| {
        tracing::error!(error = ?e, "error response not serialised");
        plain_response(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}
