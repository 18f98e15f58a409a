//! Plain-S3 access to one node: SigV4-signed requests over the keep-alive
//! connection pool all nodes share.
//!
//! A node is asked seven things only (PUT, GET and DELETE of an object,
//! HEAD and PUT of the fragment bucket, a page of its keys, and a batch of
//! small replicas when it takes them), so the requests are built and
//! signed here with `aws-sigv4` rather than through the SDK's generic
//! orchestrator, whose per-request set-up cost more CPU than the rest of a
//! small replica write.

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use md5::{Digest, Md5};

use tenfold_common::replica_batch::{self, Record};

use crate::chunks::Chunks;
use crate::node::NodeSpec;

/// How long a node may take to accept a connection before it counts as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request, body included, may take before the node counts as
/// stalled: fragments are about a MiB (an 8 MiB segment in ten pieces), so
/// even a slow link moves one in well under this.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error answer read to find its S3 error code.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// Keys asked for per listing page (S3's maximum).
pub const LIST_PAGE_KEYS: usize = 1000;
/// Most bytes of a listing page read: a thousand keys with their sizes,
/// dates and ETags take about a third of this.
const LIST_BODY_LIMIT: usize = 4 << 20;
/// Hex SHA-256 of no bytes: the signed payload hash of bodiless requests.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The HTTP client every node request goes through: pooled keep-alive
/// connections, `http://` and `https://` alike.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why one request to a node failed.
#[derive(Debug, Clone)]
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

/// CRC32C (Castagnoli) of `data`: the `x-amz-checksum-crc32c` a replica
/// is sent with.
pub fn crc32c(data: &[u8]) -> u32 {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data);
    u32::try_from(crc).unwrap_or_default()
}

/// A fragment read from a node, with how long it took.
#[derive(Debug)]
pub struct Fetched {
    /// The body's chunks as they arrived.
    pub data: Chunks,
    /// Time until the response headers arrived.
    pub first_byte: Duration,
    /// Time until the whole body arrived.
    pub total: Duration,
}

/// One page of the keys in a node's bucket, in key order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// What a node answered to a batch of replicas.
#[derive(Debug)]
pub enum BatchAnswer {
    /// Each replica's outcome, in order.
    Stored(Vec<Result<(), NodeFailure>>),
    /// The node takes no batches (any S3 server but `tenfold-node`), and
    /// why it is thought so; it stored none of them.
    Refused(String),
}

/// Most bytes of a batch's answer read: a JSON outcome per record.
const BATCH_ANSWER_LIMIT: usize = 1 << 20;

/// An S3 client for one node. It never retries: the balancer fails over to
/// another node instead of hammering a failing one.
#[derive(Clone)]
pub struct NodeClient {
    http: HttpClient,
    /// The endpoint, without a trailing `/`.
    endpoint: String,
    identity: Identity,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// An answer's status and body.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    etag: Option<String>,
    body: hyper::body::Incoming,
    first_byte: Duration,
}

impl NodeClient {
    /// A client for the node `spec` describes, over `http`.
    pub fn new(spec: &NodeSpec, http: HttpClient) -> Self {
        let credentials = Credentials::new(
            spec.access_key.clone(),
            spec.secret_key.clone(),
            None,
            None,
            "tenfold-index",
        );
        Self {
            http,
            endpoint: spec.endpoint.trim_end_matches('/').to_owned(),
            identity: credentials.into(),
        }
    }

    /// Stores `data` under `key`, sending its Content-MD5 and
    /// `x-amz-checksum-crc32c` ([`crc32c`]) and checking the ETag the node
    /// answers, so a replica only counts once the node has the right bytes.
    ///
    /// The payload is not signed (`UNSIGNED-PAYLOAD`): the digest headers
    /// are, and the node checks the body against them, so the body is as
    /// well protected without a SHA-256 of every replica. A `tenfold-node`
    /// checks the CRC32C alone and answers the Content-MD5 as its ETag, so
    /// it does not compute MD5 again; any other S3 server checks both.
    ///
    /// # Errors
    /// A [`NodeFailure`] saying why the node did not take the replica.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        md5: [u8; 16],
        crc32c: u32,
    ) -> Result<(), NodeFailure> {
        let content_md5 = base64_simd::STANDARD.encode_to_string(md5);
        let checksum = base64_simd::STANDARD.encode_to_string(crc32c.to_be_bytes());
        let expected = hex::encode(md5);
        within_deadline(async {
            let answer = self
                .send(
                    Method::PUT,
                    &object_path(bucket, key),
                    &[
                        ("content-md5", &content_md5),
                        ("x-amz-checksum-crc32c", &checksum),
                    ],
                    data,
                )
                .await?;
            let answer = success(answer).await?;
            match answer.etag {
                Some(etag) if etag.trim_matches('"').eq_ignore_ascii_case(&expected) => Ok(()),
                other => Err(NodeFailure::Other(format!(
                    "node answered ETag {other:?}, expected {expected}"
                ))),
            }
        })
        .await
    }

    /// Stores several small replicas in one request
    /// ([`tenfold_common::replica_batch`]), each checked as [`Self::put`]
    /// checks one: by the node against its CRC32C, here against the MD5
    /// the node answers.
    ///
    /// # Errors
    /// A [`NodeFailure`] when the node did not answer the batch at all
    /// (unreachable, out of time, a server error).
    pub async fn put_batch(
        &self,
        bucket: &str,
        records: &[Record],
    ) -> Result<BatchAnswer, NodeFailure> {
        let body = replica_batch::encode(records);
        let count = records.len().to_string();
        let path = format!("/{}?{}", urlencoding::encode(bucket), replica_batch::QUERY);
        within_deadline(async {
            let answer = self
                .send(
                    Method::POST,
                    &path,
                    &[(replica_batch::COUNT_HEADER, &count)],
                    body,
                )
                .await?;
            if !answer.status.is_success() {
                let (status, code, message) = error_of(answer).await;
                let failure = classify(status, &code, &message);
                // A server error or a full node says nothing of batches.
                if (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
                    || matches!(failure, NodeFailure::Full(_))
                {
                    return Err(failure);
                }
                return Ok(BatchAnswer::Refused(failure.to_string()));
            }
            let counted = answer
                .headers
                .get(replica_batch::COUNT_HEADER)
                .is_some_and(|v| v.as_bytes() == count.as_bytes());
            if !counted {
                return Ok(BatchAnswer::Refused(format!(
                    "HTTP {} without {}",
                    answer.status,
                    replica_batch::COUNT_HEADER
                )));
            }
            let body = whole_body(answer, BATCH_ANSWER_LIMIT, "a batch answer").await?;
            batch_outcomes(&body, records).map(BatchAnswer::Stored)
        })
        .await
    }

    /// Reads a whole object from a node, refusing more than `max_len` bytes
    /// (as corrupt).
    ///
    /// # Errors
    /// A [`NodeFailure`] saying why the read failed.
    pub async fn get(&self, bucket: &str, key: &str, max_len: u64) -> Result<Fetched, NodeFailure> {
        let started = Instant::now();
        within_deadline(async {
            let answer = self
                .send(Method::GET, &object_path(bucket, key), &[], Bytes::new())
                .await?;
            let answer = success(answer).await?;
            let limit = usize::try_from(max_len).unwrap_or(usize::MAX);
            let mut body = Limited::new(answer.body, limit);
            let mut data = Chunks::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        NodeFailure::Corrupt
                    } else {
                        NodeFailure::Other(format!("reading body: {e}"))
                    }
                })?;
                if let Ok(chunk) = frame.into_data() {
                    data.push(chunk);
                }
            }
            Ok(Fetched {
                data,
                first_byte: answer.first_byte,
                total: started.elapsed(),
            })
        })
        .await
    }

    /// Deletes an object from a node (deleting a missing object succeeds).
    ///
    /// # Errors
    /// A [`NodeFailure`] when the node did not confirm.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), NodeFailure> {
        within_deadline(async {
            let answer = self
                .send(Method::DELETE, &object_path(bucket, key), &[], Bytes::new())
                .await?;
            match success(answer).await {
                Ok(_) | Err(NodeFailure::Missing) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Deletes `keys` (at most [`tenfold_common::MAX_DELETE_KEYS`]) from a
    /// node in one DeleteObjects: each key's outcome, in order. A key
    /// counts as deleted only when the answer names it deleted (or
    /// missing). `None` when the node does not take DeleteObjects.
    ///
    /// # Errors
    /// A [`NodeFailure`] when the node did not answer the request at all
    /// (unreachable, out of time, refused, an answer that is not one).
    pub async fn delete_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Option<Vec<Result<(), NodeFailure>>>, NodeFailure> {
        let body = delete_document(keys);
        let md5 = base64_simd::STANDARD.encode_to_string(<[u8; 16]>::from(Md5::digest(&body)));
        let path = format!("/{}?delete", urlencoding::encode(bucket));
        within_deadline(async {
            let answer = self
                .send(
                    Method::POST,
                    &path,
                    &[("content-md5", &md5)],
                    Bytes::from(body),
                )
                .await?;
            if !answer.status.is_success() {
                let (status, code, message) = error_of(answer).await;
                if status == StatusCode::NOT_IMPLEMENTED || code == "NotImplemented" {
                    return Ok(None);
                }
                return Err(classify(status, &code, &message));
            }
            let body = whole_body(answer, LIST_BODY_LIMIT, "a delete answer").await?;
            delete_outcomes(&body, keys).map(Some)
        })
        .await
    }

    /// Lists one page of the keys in `bucket` (ListObjectsV2), starting at
    /// the continuation token `after`. A bucket the node does not have is
    /// empty.
    ///
    /// # Errors
    /// A [`NodeFailure`] when the node is unreachable, refuses, or answers
    /// a page that is not a listing.
    pub async fn list(&self, bucket: &str, after: Option<&str>) -> Result<KeyPage, NodeFailure> {
        let mut path = format!(
            "/{}?list-type=2&max-keys={LIST_PAGE_KEYS}",
            urlencoding::encode(bucket)
        );
        if let Some(token) = after {
            path.push_str("&continuation-token=");
            path.push_str(&urlencoding::encode(token));
        }
        within_deadline(async {
            let answer = self.send(Method::GET, &path, &[], Bytes::new()).await?;
            if !answer.status.is_success() {
                let (status, code, message) = error_of(answer).await;
                if code == "NoSuchBucket" {
                    return Ok(KeyPage::default());
                }
                return Err(classify(status, &code, &message));
            }
            let body = whole_body(answer, LIST_BODY_LIMIT, "a listing").await?;
            key_page(&body)
        })
        .await
    }

    /// Makes sure the fragment bucket exists on a node.
    ///
    /// # Errors
    /// A [`NodeFailure`] when the node is unreachable or refuses.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), NodeFailure> {
        let path = format!("/{}", urlencoding::encode(bucket));
        within_deadline(async {
            let head = self.send(Method::HEAD, &path, &[], Bytes::new()).await?;
            if head.status.is_success() {
                return Ok(());
            }
            let created = self.send(Method::PUT, &path, &[], Bytes::new()).await?;
            if created.status.is_success() {
                return Ok(());
            }
            let (status, code, message) = error_of(created).await;
            if matches!(
                code.as_str(),
                "BucketAlreadyOwnedByYou" | "BucketAlreadyExists"
            ) {
                return Ok(());
            }
            Err(classify(status, &code, &message))
        })
        .await
    }

    /// Signs and sends one request; `path` is already percent-encoded.
    /// A body is sent as `UNSIGNED-PAYLOAD`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, NodeFailure> {
        let uri = format!("{}{path}", self.endpoint);
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| NodeFailure::Other(format!("signing: {e}")))?
            .into();
        let payload = if !body.is_empty() {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Precomputed(EMPTY_SHA256.to_owned())
        };
        let signable =
            SignableRequest::new(method.as_str(), &uri, headers.iter().copied(), payload)
                .map_err(|e| NodeFailure::Other(format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| NodeFailure::Other(format!("signing: {e}")))?
            .into_parts();
        let mut request = Request::builder().method(method).uri(&uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request
            .body(Full::new(body))
            .map_err(|e| NodeFailure::Other(format!("request: {e}")))?;
        instructions.apply_to_request_http1x(&mut request);
        let started = Instant::now();
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| NodeFailure::Other(describe(&e)))?;
        let (parts, body) = response.into_parts();
        let etag = parts
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            etag,
            body,
            first_byte: started.elapsed(),
        })
    }
}

/// The path of an object in path-style addressing, every character but
/// the unreserved ones and the key's `/` escaped, as S3 signs it.
fn object_path(bucket: &str, key: &str) -> String {
    let mut path = format!("/{}", urlencoding::encode(bucket));
    for segment in key.split('/') {
        path.push('/');
        path.push_str(&urlencoding::encode(segment));
    }
    path
}

/// Each record's outcome from a batch's JSON answer: stored when the node
/// answers the record's own MD5 as its ETag.
fn batch_outcomes(
    body: &[u8],
    records: &[Record],
) -> Result<Vec<Result<(), NodeFailure>>, NodeFailure> {
    let malformed =
        || NodeFailure::Other("a batch answer that is not one outcome per record".into());
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|_| malformed())?;
    if outcomes.len() != records.len() {
        return Err(malformed());
    }
    let field = |o: &serde_json::Value, name: &str| {
        o.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Ok(outcomes
        .iter()
        .zip(records)
        .map(|(outcome, record)| {
            let expected = hex::encode(record.md5);
            if let Some(etag) = field(outcome, "etag") {
                return if etag.eq_ignore_ascii_case(&expected) {
                    Ok(())
                } else {
                    Err(NodeFailure::Other(format!(
                        "node answered ETag {etag:?}, expected {expected}"
                    )))
                };
            }
            let code = field(outcome, "code").unwrap_or_default();
            let message = field(outcome, "message").unwrap_or_default();
            Err(classify(StatusCode::BAD_REQUEST, &code, &message))
        })
        .collect())
}

/// Runs a request under [`TRANSFER_TIMEOUT`].
async fn within_deadline<T>(
    request: impl Future<Output = Result<T, NodeFailure>>,
) -> Result<T, NodeFailure> {
    tokio::time::timeout(TRANSFER_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(NodeFailure::Other(format!(
                "no answer within {TRANSFER_TIMEOUT:?}"
            )))
        })
}

/// The answer when it is a success, else why not, from its status and the
/// S3 error code of its body.
async fn success(answer: Answer) -> Result<Answer, NodeFailure> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    let (status, code, message) = error_of(answer).await;
    Err(classify(status, &code, &message))
}

/// An answer's whole body, refused past `limit` bytes; `what` names it in
/// the failure.
async fn whole_body(answer: Answer, limit: usize, what: &str) -> Result<Bytes, NodeFailure> {
    Limited::new(answer.body, limit)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| NodeFailure::Other(format!("reading {what}: {e}")))
}

/// An error answer's status, and the S3 error code and message of its body
/// (empty when it has none).
async fn error_of(answer: Answer) -> (StatusCode, String, String) {
    let body = Limited::new(answer.body, ERROR_BODY_LIMIT)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let (code, message) = error_fields(&body);
    (answer.status, code, message)
}

/// A failure from an answer's status and its S3 error code and message.
fn classify(status: StatusCode, code: &str, message: &str) -> NodeFailure {
    if status == StatusCode::INSUFFICIENT_STORAGE
        || matches!(
            code,
            "InsufficientStorage" | "XMinioStorageFull" | "StorageFull"
        )
    {
        let detail = if message.is_empty() { code } else { message };
        return NodeFailure::Full(detail.to_owned());
    }
    if status == StatusCode::NOT_FOUND || matches!(code, "NoSuchKey" | "NotFound") {
        return NodeFailure::Missing;
    }
    if code.is_empty() {
        return NodeFailure::Other(format!("HTTP {status}"));
    }
    NodeFailure::Other(format!("{code} {message}").trim_end().to_owned())
}

/// Calls `visit` with the name of the innermost open element and each piece
/// of its text (entities resolved), then with `None` when it closes, for
/// every element of an XML document.
fn for_each_text(body: &[u8], mut visit: impl FnMut(&[u8], Option<&str>)) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut field: Option<Vec<u8>> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => field = Some(start.name().as_ref().to_vec()),
            Ok(Event::Text(t)) => {
                if let Some(name) = &field {
                    visit(name, Some(&t.xml10_content().unwrap_or_default()));
                }
            }
            Ok(Event::GeneralRef(entity)) => {
                let resolved = match entity.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => entity
                        .decode()
                        .ok()
                        .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name))
                        .unwrap_or_default()
                        .to_owned(),
                };
                if let Some(name) = &field {
                    visit(name, Some(&resolved));
                }
            }
            Ok(Event::End(end)) => {
                visit(end.name().as_ref(), None);
                field = None;
            }
            Ok(Event::Eof) => return Ok(()),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
    }
}

/// The `Code` and `Message` of an S3 error document (empty when absent).
fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let _ = for_each_text(body, |field, text| match (field, text) {
        (b"Code", Some(text)) => code.push_str(text),
        (b"Message", Some(text)) => message.push_str(text),
        _ => {}
    });
    (code, message)
}

/// The keys and continuation of a ListObjectsV2 answer.
fn key_page(body: &[u8]) -> Result<KeyPage, NodeFailure> {
    let mut keys = Vec::new();
    let (mut key, mut truncated, mut next) = (String::new(), String::new(), String::new());
    for_each_text(body, |field, text| match (field, text) {
        (b"Key", Some(text)) => key.push_str(text),
        (b"Key", None) => keys.push(std::mem::take(&mut key)),
        (b"IsTruncated", Some(text)) => truncated.push_str(text),
        (b"NextContinuationToken", Some(text)) => next.push_str(text),
        _ => {}
    })
    .map_err(|e| NodeFailure::Other(format!("a listing that is not XML: {e}")))?;
    let next = (truncated.trim() == "true").then_some(next);
    if next.as_ref().is_some_and(String::is_empty) {
        return Err(NodeFailure::Other(
            "a truncated listing without a continuation token".into(),
        ));
    }
    Ok(KeyPage { keys, next })
}

/// A DeleteObjects request's body naming `keys`.
fn delete_document(keys: &[String]) -> Vec<u8> {
    let mut doc = String::from("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for key in keys {
        doc.push_str("<Object><Key>");
        doc.push_str(&quick_xml::escape::escape(key.as_str()));
        doc.push_str("</Key></Object>");
    }
    doc.push_str("</Delete>");
    doc.into_bytes()
}

/// Each of `keys`' outcome from a DeleteObjects answer: deleted when the
/// answer names it deleted, or fails it as missing; failed when it fails
/// it otherwise or does not name it.
fn delete_outcomes(
    body: &[u8],
    keys: &[String],
) -> Result<Vec<Result<(), NodeFailure>>, NodeFailure> {
    let mut deleted = std::collections::HashSet::new();
    let mut failed = std::collections::HashMap::new();
    let (mut key, mut code, mut message) = (String::new(), String::new(), String::new());
    let (mut done_key, mut done_code, mut done_message) = (None, None, None);
    for_each_text(body, |field, text| match (field, text) {
        (b"Key", Some(text)) => key.push_str(text),
        (b"Code", Some(text)) => code.push_str(text),
        (b"Message", Some(text)) => message.push_str(text),
        (b"Key", None) => done_key = Some(std::mem::take(&mut key)),
        (b"Code", None) => done_code = Some(std::mem::take(&mut code)),
        (b"Message", None) => done_message = Some(std::mem::take(&mut message)),
        (b"Deleted", None) => {
            deleted.extend(done_key.take());
        }
        (b"Error", None) => {
            if let Some(key) = done_key.take() {
                let code = done_code.take().unwrap_or_default();
                let message = done_message.take().unwrap_or_default();
                failed.insert(key, classify(StatusCode::OK, &code, &message));
            }
        }
        _ => {}
    })
    .map_err(|e| NodeFailure::Other(format!("a delete answer that is not XML: {e}")))?;
    Ok(keys
        .iter()
        .map(|key| match failed.remove(key) {
            Some(NodeFailure::Missing) => Ok(()),
            Some(failure) => Err(failure),
            None if deleted.contains(key) => Ok(()),
            None => Err(NodeFailure::Other(format!(
                "the delete answer does not name {key}"
            ))),
        })
        .collect())
}

/// A transport error with its causes (hyper's own message is terse).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DeleteObjects answer counts a key as deleted only when it names
    /// it deleted or missing; a key it fails otherwise, or leaves out,
    /// fails. Keys are escaped in the request and unescaped in the answer.
    #[test]
    fn delete_answers_count_only_the_keys_they_name_deleted() {
        let keys = ["a&b", "missing", "refused", "left-out"].map(String::from);
        let doc = String::from_utf8(delete_document(&keys)).unwrap();
        assert!(doc.contains("<Object><Key>a&amp;b</Key></Object>"), "{doc}");
        let answer = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>\
            <Deleted><Key>a&amp;b</Key></Deleted>\
            <Error><Key>missing</Key><Code>NoSuchKey</Code><Message>gone</Message></Error>\
            <Error><Key>refused</Key><Code>AccessDenied</Code><Message>no</Message></Error>\
            </DeleteResult>";
        let outcomes = delete_outcomes(answer.as_bytes(), &keys).unwrap();
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
        assert!(
            matches!(&outcomes[2], Err(NodeFailure::Other(m)) if m == "AccessDenied no"),
            "{outcomes:?}"
        );
        assert!(
            matches!(&outcomes[3], Err(NodeFailure::Other(m)) if m.contains("left-out")),
            "{outcomes:?}"
        );
        // An answer cut short names nothing deleted.
        let cut = delete_outcomes(b"<DeleteResult><Deleted><Key>a&amp;b</Key>", &keys).unwrap();
        assert!(cut.iter().all(Result::is_err), "{cut:?}");
    }

    #[test]
    fn error_documents_map_onto_failures() {
        let doc = |code: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
                 <Message>it &amp; more</Message><RequestId>1</RequestId></Error>"
            )
        };
        let failure = |status: u16, body: &str| {
            let (code, message) = error_fields(body.as_bytes());
            classify(StatusCode::from_u16(status).unwrap(), &code, &message)
        };
        assert!(matches!(failure(507, ""), NodeFailure::Full(_)));
        assert!(matches!(
            failure(400, &doc("XMinioStorageFull")),
            NodeFailure::Full(m) if m == "it & more"
        ));
        assert!(matches!(failure(404, ""), NodeFailure::Missing));
        assert!(matches!(
            failure(400, &doc("NoSuchKey")),
            NodeFailure::Missing
        ));
        assert!(matches!(
            failure(403, &doc("SignatureDoesNotMatch")),
            NodeFailure::Other(m) if m == "SignatureDoesNotMatch it & more"
        ));
        assert!(matches!(
            failure(502, "<html>bad gateway"),
            NodeFailure::Other(m) if m.contains("502")
        ));
    }

    #[test]
    fn listing_pages_give_their_keys_and_continuation() {
        let page = key_page(
            b"<?xml version=\"1.0\"?><ListBucketResult><Name>f</Name><IsTruncated>true</IsTruncated>\
              <Contents><Key>a/0/1</Key><Size>3</Size></Contents>\
              <Contents><Key>b&amp;c/0/2</Key><Size>4</Size></Contents>\
              <NextContinuationToken>tok+/=</NextContinuationToken></ListBucketResult>",
        )
        .unwrap();
        assert_eq!(page.keys, ["a/0/1", "b&c/0/2"]);
        assert_eq!(page.next.as_deref(), Some("tok+/="));
        let last =
            key_page(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")
                .unwrap();
        assert_eq!(last, KeyPage::default());
        assert!(
            key_page(b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>")
                .is_err()
        );
        assert!(key_page(b"<a><b></a>").is_err());
    }

    #[test]
    fn paths_escape_all_but_unreserved_characters_and_slashes() {
        assert_eq!(
            object_path("frags", "a b/c+d/é?x=1#y"),
            "/frags/a%20b/c%2Bd/%C3%A9%3Fx%3D1%23y"
        );
        assert_eq!(object_path("frags", "id/0/9"), "/frags/id/0/9");
    }
}
