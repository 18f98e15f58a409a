//! Plain-S3 access to one node, over a connection pool shared by all nodes.

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedHttpClient, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::node::NodeSpec;

/// How long a node may take to accept a connection before it counts as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one fragment transfer may take before the node counts as
/// stalled: fragments are about a MiB (an 8 MiB segment in ten pieces), so
/// even a slow link moves one in well under this.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one request to a node failed.
#[derive(Debug)]
pub enum NodeFailure {
    /// The node says it has no room (507, `InsufficientStorage`, MinIO's
    /// `XMinioStorageFull`).
    Full(String),
    /// The object is not on the node.
    Missing,
    /// The node answered with bytes that do not match the checksum.
    Corrupt,
    /// Anything else: connection refused, time-out, 5xx, bad signature.
    Other(String),
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFailure::Full(m) => write!(f, "full: {m}"),
            NodeFailure::Missing => f.write_str("fragment missing"),
            NodeFailure::Corrupt => f.write_str("checksum mismatch"),
            NodeFailure::Other(m) => f.write_str(m),
        }
    }
}

fn classify<E, R>(err: &SdkError<E, R>, status: Option<u16>) -> NodeFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let code = err.code().unwrap_or_default();
    if status == Some(507)
        || matches!(
            code,
            "InsufficientStorage" | "XMinioStorageFull" | "StorageFull"
        )
    {
        return NodeFailure::Full(err.message().unwrap_or(code).to_owned());
    }
    if status == Some(404) || matches!(code, "NoSuchKey" | "NotFound") {
        return NodeFailure::Missing;
    }
    let detail = match err {
        SdkError::ServiceError(_) => format!("{code} {}", err.message().unwrap_or_default()),
        other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
    };
    NodeFailure::Other(detail)
}

fn status_of<E, R: HasStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(HasStatus::status)
}

trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// An S3 client for one node. Retries are off: the balancer fails over to
/// another node instead of hammering a failing one.
pub fn node_s3_client(spec: &NodeSpec, http: SharedHttpClient) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(spec.endpoint.trim_end_matches('/'))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            spec.access_key.clone(),
            spec.secret_key.clone(),
            None,
            None,
            "tenfold-index",
        ))
        .force_path_style(true)
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(TRANSFER_TIMEOUT)
                .build(),
        )
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

/// Stores `data` under `key`, sending Content-MD5 and checking the ETag the
/// node answers, so a replica only counts once the node has the right bytes.
///
/// The payload is not signed (`UNSIGNED-PAYLOAD`): the Content-MD5 header
/// is, and the node checks the body against it, so the body is as well
/// protected without a SHA-256 of every replica (the dearest step of a
/// large PUT after compression).
///
/// # Errors
/// A [`NodeFailure`] saying why the node did not take the replica.
pub async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    data: Bytes,
    md5: [u8; 16],
) -> Result<(), NodeFailure> {
    let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let out = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_length(len)
        .content_md5(base64_simd::STANDARD.encode_to_string(md5))
        .body(ByteStream::from(data))
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| classify(&e, status_of(&e)))?;
    let expected = hex::encode(md5);
    match out.e_tag() {
        Some(etag) if etag.trim_matches('"').eq_ignore_ascii_case(&expected) => Ok(()),
        other => Err(NodeFailure::Other(format!(
            "node answered ETag {other:?}, expected {expected}"
        ))),
    }
}

/// Reads a whole object from a node.
///
/// # Errors
/// A [`NodeFailure`] saying why the read failed.
pub async fn get(client: &Client, bucket: &str, key: &str) -> Result<Fetched, NodeFailure> {
    let started = Instant::now();
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(&e, status_of(&e)))?;
    let first_byte = started.elapsed();
    let data = out
        .body
        .collect()
        .await
        .map(aws_sdk_s3::primitives::AggregatedBytes::into_bytes)
        .map_err(|e| NodeFailure::Other(format!("reading body: {e}")))?;
    Ok(Fetched {
        data,
        first_byte,
        total: started.elapsed(),
    })
}

/// A fragment read from a node, with how long it took.
#[derive(Debug)]
pub struct Fetched {
    pub data: Bytes,
    /// Time until the response headers arrived.
    pub first_byte: Duration,
    /// Time until the whole body arrived.
    pub total: Duration,
}

/// Deletes an object from a node (deleting a missing object succeeds).
///
/// # Errors
/// A [`NodeFailure`] when the node did not confirm.
pub async fn delete(client: &Client, bucket: &str, key: &str) -> Result<(), NodeFailure> {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify(&e, status_of(&e)))
}

/// Makes sure the fragment bucket exists on a node.
///
/// # Errors
/// A [`NodeFailure`] when the node is unreachable or refuses.
pub async fn ensure_bucket(client: &Client, bucket: &str) -> Result<(), NodeFailure> {
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.code(),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(classify(&e, status_of(&e))),
    }
}
