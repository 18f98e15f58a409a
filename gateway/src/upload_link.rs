//! Upload links: a share link that takes files instead of giving them.
//! Whoever holds `/_upload/TOKEN` gets a page (served from the binary, no
//! outside assets) that sends files — small ones in one PUT, large ones in
//! parts that survive a dropped connection or a reload — into a new
//! transfer folder under the link's prefix, and then a share link to that
//! transfer. Every route below checks the token; the holder can neither
//! list nor read what others sent.
//!
//! Routes, under `/_upload/TOKEN`:
//! - `GET` the page;
//! - `POST /transfer`: a new transfer (`{"transfer": ID}`);
//! - `PUT /file/TRANSFER/PATH`: one file, with its Content-Length;
//! - `POST /multipart/TRANSFER/PATH?size=N`: start a large file
//!   (`{"upload": ID}`); `GET …?upload=ID`: its stored parts;
//!   `PUT …?upload=ID&part=N`: one part; `POST …?upload=ID&complete`;
//! - `POST /finish/TRANSFER`: the transfer's share link (`{"url": PATH}`).
//!
//! Each file's bytes are reserved against the link's `--max-size` and
//! `--max-files` before a byte of it is read.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use s3s::Body;
use tenfold_common::http_server::{BodyError, BodyWatch};

use crate::error::GatewayError;
use crate::index::{ObjectHeaders, ShareRow, UploadRow, WriteCondition, now_ms};
use crate::integrity::Checksums;
use crate::object_store::{ObjectStore, new_object_id};
use crate::s3_api::{MAX_UPLOAD_SIZE, assemble, check_key};
use crate::share::{Refusal, create_share_until, page, refused, resolve, share_url};
use crate::upload::{BodyChecks, BodyStream, PutRequest};

/// Path under which upload links are served (bucket names cannot start
/// with an underscore).
pub const UPLOAD_PATH: &str = "/_upload/";

/// The page, with `{{LINK}}` standing for what it is told of its link.
const PAGE: &str = include_str!("upload_page.html");

/// Largest part the page may send (it sends 16 MiB parts, more for files
/// above 160 GiB).
const MAX_PART_SIZE: u64 = 512 << 20;

/// Most parts of one file, as in S3.
const MAX_PARTS: u32 = 10_000;

/// Largest file, as S3's largest object: 5 TiB.
const MAX_FILE_SIZE: u64 = 5 << 40;

/// Answers a request under [`UPLOAD_PATH`].
#[tracing::instrument(skip_all, fields(path = %req.uri().path()))]
pub async fn serve_upload_link(store: &Arc<ObjectStore>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(UPLOAD_PATH).unwrap_or_default();
    let (token, route) = rest.split_once('/').unwrap_or((rest, ""));
    let (link, hash) = match resolve(&store.index, token).await {
        Ok((link, hash)) if link.upload.is_some() => (link, hash),
        Ok(_) => return refused(&Refusal::NotFound),
        Err(refusal) if route.is_empty() => return refused(&refusal),
        Err(Refusal::Gone) => {
            return api_error(
                StatusCode::FORBIDDEN,
                "This link has expired or was revoked.",
            );
        }
        Err(Refusal::NotFound) => {
            return api_error(StatusCode::NOT_FOUND, "This link does not exist.");
        }
    };
    let link = Link { row: link, hash };
    let method = req.method().clone();
    let (kind, target) = route.split_once('/').unwrap_or((route, ""));
    let result = match (&method, kind) {
        (&Method::GET | &Method::HEAD, "") => return upload_page(&link),
        (&Method::POST, "transfer") if target.is_empty() => new_transfer(),
        (&Method::PUT, "file") => put_file(store, &link, target, req).await,
        (_, "multipart") => multipart(store, &link, target, req).await,
        (&Method::POST, "finish") => finish(store, &link, target).await,
        _ => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(|e| e.response())
}

/// A resolved upload link.
struct Link {
    row: ShareRow,
    /// The hash the index knows the link by.
    hash: String,
}

/// Why an upload request fails, as the page shows it.
#[derive(Debug)]
enum ApiError {
    NotFound,
    /// The link's allowance cannot take this file.
    Full,
    BadRequest(String),
    /// The client sent no Content-Length.
    LengthRequired,
    Gateway(GatewayError),
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self::Gateway(e)
    }
}

impl ApiError {
    fn response(self) -> Response<Body> {
        match self {
            Self::NotFound => api_error(StatusCode::NOT_FOUND, "No such upload route."),
            Self::Full => api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "This upload link is full: it takes no more files or bytes.",
            ),
            Self::BadRequest(why) => api_error(StatusCode::BAD_REQUEST, &why),
            Self::LengthRequired => api_error(
                StatusCode::LENGTH_REQUIRED,
                "Send the file's Content-Length.",
            ),
            Self::Gateway(e) => {
                let s3 = s3s::S3Error::from(e);
                let status = s3
                    .status_code()
                    .or_else(|| s3.code().status_code())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let status = if status.is_server_error() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    status
                };
                api_error(status, s3.message().unwrap_or("The upload failed."))
            }
        }
    }
}

fn api_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn upload_page(link: &Link) -> Response<Body> {
    let allowance = link.row.upload.unwrap_or_default();
    if allowance.is_full() {
        return page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Link full",
            "This upload link is full: it takes no more files.",
        );
    }
    let about = serde_json::json!({
        "expires_at": link.row.expires_at,
        "max_bytes": allowance.max_bytes,
        "max_files": allowance.max_files,
        "used_bytes": allowance.used_bytes,
        "used_files": allowance.used_files,
    });
    // Inside a <script> element: `<` cannot end it once escaped.
    let about = about.to_string().replace('<', "\\u003c");
    let mut resp = Response::new(Body::from(PAGE.replace("{{LINK}}", &about)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
        ),
    );
    resp
}

/// A new transfer folder's name: the time, then 16 random characters (no
/// holder of the link can guess another's).
fn new_transfer() -> Result<Response<Body>, ApiError> {
    let now = time::OffsetDateTime::now_utc();
    let id = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        &new_object_id()[..16]
    );
    Ok(json(StatusCode::OK, &serde_json::json!({ "transfer": id })))
}

fn valid_transfer(transfer: &str) -> bool {
    !transfer.is_empty()
        && transfer.len() <= 64
        && transfer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The key of `TRANSFER/PATH` (percent-encoded) under the link's prefix:
/// a relative path of plain segments, as a browser gives a dropped
/// folder's files.
fn key_of(link: &Link, target: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(why.to_owned());
    let (transfer, path) = target.split_once('/').ok_or_else(|| bad("no file path"))?;
    if !valid_transfer(transfer) {
        return Err(bad("not a transfer name"));
    }
    let path = urlencoding::decode(path).map_err(|_| bad("the path is not UTF-8"))?;
    let plain =
        |s: &str| !s.is_empty() && s != "." && s != ".." && !s.chars().any(char::is_control);
    if !path.split('/').all(plain) {
        return Err(bad(
            "the path must be relative, with no empty, . or .. parts",
        ));
    }
    let key = format!("{}{transfer}/{path}", link.row.prefix);
    check_key(&key)?;
    Ok(key)
}

fn content_length(req: &Request<Body>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn body_of(req: Request<Body>) -> BodyStream {
    let watch = req.extensions().get::<BodyWatch>().cloned();
    Box::pin(req.into_body().map(move |chunk| {
        chunk.map_err(|e| {
            GatewayError::Body(match &watch {
                Some(watch) => watch.classify(e),
                None => BodyError::Transport(e),
            })
        })
    }))
}

async fn put_file(
    store: &Arc<ObjectStore>,
    link: &Link,
    target: &str,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let key = key_of(link, target)?;
    let size = content_length(&req).ok_or(ApiError::LengthRequired)?;
    if size > MAX_UPLOAD_SIZE {
        return Err(GatewayError::EntityTooLarge(size).into());
    }
    if !store.index.reserve_upload(&link.hash, size, 1).await? {
        return Err(ApiError::Full);
    }
    let put = PutRequest {
        bucket: link.row.bucket.clone(),
        key: key.clone(),
        content_type: content_type(&req),
        metadata: HashMap::new(),
        headers: ObjectHeaders::default(),
        checks: BodyChecks {
            content_length: Some(size),
            ..BodyChecks::default()
        },
        condition: WriteCondition::Always,
        tags: Vec::new(),
    };
    match store.put_object(put, body_of(req)).await {
        Ok(row) => {
            tracing::info!(%key, size, "file stored through an upload link");
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "etag": row.etag }),
            ))
        }
        Err(e) => {
            store.index.release_upload(&link.hash, size, 1).await?;
            Err(e.into())
        }
    }
}

fn content_type(req: &Request<Body>) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn query(req: &Request<Body>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                k.to_owned(),
                urlencoding::decode(v).map_or_else(|_| v.to_owned(), |v| v.into_owned()),
            )
        })
        .collect()
}

async fn multipart(
    store: &Arc<ObjectStore>,
    link: &Link,
    target: &str,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let key = key_of(link, target)?;
    let query = query(&req);
    let number = |name: &str| -> Result<u64, ApiError> {
        query
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a number")))
    };
    let Some(upload_id) = query.get("upload") else {
        if req.method() != Method::POST {
            return Err(ApiError::NotFound);
        }
        return start_large_file(store, link, key, number("size")?, content_type(&req)).await;
    };
    let Some(size) = store.index.link_upload_size(upload_id, &link.hash).await? else {
        return Err(ApiError::NotFound);
    };
    let upload = store
        .index
        .get_upload(&link.row.bucket, &key, upload_id)
        .await?;
    match *req.method() {
        Method::GET => {
            let parts = store
                .index
                .list_parts(&upload.id, 0, i64::from(MAX_PARTS))
                .await?;
            let parts: Vec<_> = parts
                .iter()
                .map(|p| serde_json::json!({ "part": p.part_number, "size": p.size }))
                .collect();
            Ok(json(StatusCode::OK, &serde_json::json!({ "parts": parts })))
        }
        Method::PUT => {
            let part = u32::try_from(number("part")?).unwrap_or(0);
            let length = content_length(&req).ok_or(ApiError::LengthRequired)?;
            if !(1..=MAX_PARTS).contains(&part) || length > MAX_PART_SIZE || length > size {
                return Err(ApiError::BadRequest("no such part".into()));
            }
            let checks = BodyChecks {
                content_length: Some(length),
                ..BodyChecks::default()
            };
            let (etag, _) = store
                .upload_part(upload, part, checks, body_of(req))
                .await?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "etag": etag })))
        }
        Method::POST if query.contains_key("complete") => {
            complete_large_file(store, &upload, size).await
        }
        _ => Err(ApiError::NotFound),
    }
}

async fn start_large_file(
    store: &Arc<ObjectStore>,
    link: &Link,
    key: String,
    size: u64,
    content_type: Option<String>,
) -> Result<Response<Body>, ApiError> {
    if size > MAX_FILE_SIZE {
        return Err(GatewayError::EntityTooLarge(size).into());
    }
    if !store.index.reserve_upload(&link.hash, size, 1).await? {
        return Err(ApiError::Full);
    }
    let upload = UploadRow {
        id: new_object_id(),
        bucket: link.row.bucket.clone(),
        key,
        content_type,
        metadata: HashMap::new(),
        headers: ObjectHeaders::default(),
        created_at: now_ms(),
        checksum_algorithm: None,
        checksum_type: None,
        tags: Vec::new(),
    };
    let started = async {
        store.index.create_upload(&upload).await?;
        store
            .index
            .add_link_upload(&upload.id, &link.hash, size)
            .await
    };
    if let Err(e) = started.await {
        store.index.release_upload(&link.hash, size, 1).await?;
        return Err(e.into());
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "upload": upload.id }),
    ))
}

/// Makes the stored parts, which must be 1 to N and add up to the size
/// the file was started with, one object.
async fn complete_large_file(
    store: &Arc<ObjectStore>,
    upload: &UploadRow,
    size: u64,
) -> Result<Response<Body>, ApiError> {
    let parts = store
        .index
        .list_parts(&upload.id, 0, i64::from(MAX_PARTS))
        .await?;
    let contiguous = parts
        .iter()
        .enumerate()
        .all(|(i, p)| u32::try_from(i + 1).is_ok_and(|n| n == p.part_number));
    let stored: u64 = parts.iter().map(|p| p.size).sum();
    if parts.is_empty() || !contiguous || stored != size {
        return Err(ApiError::BadRequest(format!(
            "the parts hold {stored} of the file's {size} bytes"
        )));
    }
    let chosen: Vec<(u32, String)> = parts
        .iter()
        .map(|p| (p.part_number, p.etag.clone()))
        .collect();
    let object = store
        .index
        .complete_upload(upload, &chosen, &WriteCondition::Always, |stored| {
            assemble(upload, &chosen, &[], &Checksums::default(), stored)
        })
        .await?;
    store.garbage_released();
    tracing::info!(key = %object.key, size = object.size, parts = chosen.len(), "large file stored through an upload link");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "etag": object.etag }),
    ))
}

/// The transfer's share link, expiring with the upload link.
async fn finish(
    store: &Arc<ObjectStore>,
    link: &Link,
    transfer: &str,
) -> Result<Response<Body>, ApiError> {
    if !valid_transfer(transfer) {
        return Err(ApiError::BadRequest("not a transfer name".into()));
    }
    let prefix = format!("{}{transfer}/", link.row.prefix);
    let token = create_share_until(
        &store.index,
        &link.row.bucket,
        &prefix,
        link.row.expires_at,
        None,
    )
    .await?;
    tracing::info!(%prefix, "transfer shared");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "url": share_url("", &token) }),
    ))
}
