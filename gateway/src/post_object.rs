//! Browser form uploads: S3's POST Object.
//!
//! The form's fields are read one by one up to the file, the policy's
//! signature (SigV4, or SigV2 as boto3's `generate_presigned_post` still
//! makes it) and its conditions are checked before a byte of the file is
//! read, and the file is streamed into the object store, bounded by the
//! policy's `content-length-range` — never buffered whole. A form without a
//! signed policy is refused: no bucket here is writable anonymously.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request, Response, StatusCode, header};
use s3s::auth::S3Auth;
use s3s::post_policy::{PostPolicy, PostPolicyCondition};
use s3s::{Body, S3Error, S3ErrorCode};
use sha2::Sha256;
use tenfold_common::http_server::{BodyError, BodyWatch};
use tenfold_common::s3_errors::error_response;

use crate::access::Access;
use crate::error::GatewayError;
use crate::index::{ObjectHeaders, WriteCondition};
use crate::integrity::{ChecksumExpectation, Checksums};
use crate::object_store::ObjectStore;
use crate::s3_api::{MAX_UPLOAD_SIZE, body_checks, check_key, check_metadata};
use crate::upload::PutRequest;

/// Most bytes of form fields before the file, as S3 bounds them (a
/// policy document is at most 20 KB).
const MAX_FIELD_BYTES: usize = 64 << 10;

/// Form fields no policy condition needs to name, lowercase.
const UNCONDITIONED_FIELDS: [&str; 5] = [
    "policy",
    "x-amz-signature",
    "signature",
    "awsaccesskeyid",
    "file",
];

/// A refused form whose whole body is at most this long is read to its
/// end before the answer, within [`DRAIN_TIME`]: a client that is still
/// sending (`fetch`, a browser) then reads the S3 error instead of a reset
/// connection. A longer one is not read further (nothing unauthenticated
/// reads a large body): the connection is closed after the answer.
const DRAIN_LIMIT: u64 = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers a form upload to `bucket` (`None`: the form was posted to an
/// object's path, which S3 does not accept).
pub async fn serve_form_upload(
    store: &Arc<ObjectStore>,
    access: &Access,
    bucket: Option<String>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let small = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|length| length <= DRAIN_LIMIT);
    // Shared with the form's reader, to drain what it left after a refusal.
    let body = Arc::new(tokio::sync::Mutex::new(body));
    let stream = futures::stream::unfold(body.clone(), |body| async move {
        let item = body.lock().await.next().await;
        item.map(|item| (item, body))
    });
    let result = match bucket {
        Some(bucket) => form_upload(store, access, bucket, &parts, stream).await,
        None => Err(S3Error::with_message(
            S3ErrorCode::MethodNotAllowed,
            "POST Object takes the bucket's URL, not an object's",
        )),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(code = %e.code().as_str(), message = ?e.message(), "form upload refused");
            let mut resp = error_response(e);
            if !(small && drained(&body).await) {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    }
}

/// Reads and drops the rest of `body` (at most [`DRAIN_LIMIT`] bytes),
/// within [`DRAIN_TIME`]: whether it reached its end.
async fn drained(body: &tokio::sync::Mutex<Body>) -> bool {
    let mut body = body.lock().await;
    let mut left = DRAIN_LIMIT;
    let drain = async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) if (chunk.len() as u64) <= left => left -= chunk.len() as u64,
                _ => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, drain)
        .await
        .unwrap_or(false)
}

/// The form's fields before the file, names lowercased (S3 compares them
/// regardless of case).
#[derive(Debug, Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn form_upload(
    store: &Arc<ObjectStore>,
    access: &Access,
    bucket: String,
    req: &http::request::Parts,
    body: impl futures::Stream<Item = Result<Bytes, s3s::StdError>> + Send + 'static,
) -> Result<Response<Body>, S3Error> {
    let boundary = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| malformed("the Content-Type has no multipart boundary"))?;
    let watch = req.extensions.get::<BodyWatch>().cloned();
    let mut form = multer::Multipart::new(body, boundary);
    let mut fields = Fields::default();
    let mut field_bytes = 0;
    let file = loop {
        let Some(mut field) = form
            .next_field()
            .await
            .map_err(|e| form_error(e, watch.as_ref()))?
        else {
            return Err(S3Error::with_message(
                S3ErrorCode::IncorrectNumberOfFilesInPostRequest,
                "POST requires exactly one file upload per request.",
            ));
        };
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            break field;
        }
        let mut value = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| form_error(e, watch.as_ref()))?
        {
            field_bytes += chunk.len();
            if field_bytes + name.len() > MAX_FIELD_BYTES {
                return Err(S3Error::with_message(
                    S3ErrorCode::MaxPostPreDataLengthExceededError,
                    "Your POST request fields preceding the upload file were too large.",
                ));
            }
            value.extend_from_slice(&chunk);
        }
        let value =
            String::from_utf8(value).map_err(|_| malformed("a form field is not UTF-8 text"))?;
        fields.0.push((name, value));
    };

    let access_key = check_signature(access, &fields).await?;
    let policy = PostPolicy::from_base64(fields.get("policy").unwrap_or_default())
        .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidPolicyDocument, e.to_string()))?;
    let expiration: time::OffsetDateTime = policy.expiration.clone().into();
    if time::OffsetDateTime::now_utc() >= expiration {
        return Err(denied("Invalid according to Policy: Policy expired."));
    }
    let key = match fields.get("key") {
        Some(key) => key.replace("${filename}", file.file_name().unwrap_or_default()),
        None => return Err(invalid("Bucket POST must contain a field named 'key'.")),
    };
    let range = check_conditions(&policy, &fields, &bucket, &key)?;

    let caller = access.caller(&access_key).await?;
    access.require_bucket_access(&caller, &bucket, None).await?;
    if key.is_empty() {
        return Err(invalid("User key must have a length greater than 0."));
    }
    check_key(&key)?;
    let metadata: HashMap<String, String> = fields
        .0
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("x-amz-meta-")?.to_owned(), v.clone())))
        .collect();
    check_metadata(&metadata)?;
    let content_type = fields
        .get("content-type")
        .map(str::to_owned)
        .or_else(|| file.content_type().map(ToString::to_string));
    let field = |name: &str| fields.get(name).map(str::to_owned);
    let mut declared = Checksums::default();
    declared.overlay(field);
    let put = PutRequest {
        bucket: bucket.clone(),
        key: key.clone(),
        content_type,
        metadata,
        headers: ObjectHeaders {
            cache_control: field("cache-control"),
            content_disposition: field("content-disposition"),
            content_encoding: field("content-encoding"),
            content_language: field("content-language"),
            expires: None,
        },
        // The form's checksums, as S3 takes them (the policy names them
        // like any other field): the file must match, or nothing is stored.
        checks: body_checks(
            None,
            fields.get("content-md5"),
            ChecksumExpectation::declared(declared, fields.get("x-amz-checksum-algorithm")),
        )?,
        condition: WriteCondition::Always,
        tags: Vec::new(),
    };
    let body = bounded_file(file, range, watch);
    let row = store.put_object(put, Box::pin(body)).await?;
    tracing::info!(%bucket, %key, size = row.size, "form upload stored");
    Ok(success(&fields, &bucket, &key, &row.etag))
}

/// Verifies the policy's signature and answers whose key signed it.
async fn check_signature(access: &Access, fields: &Fields) -> Result<String, S3Error> {
    let Some(policy) = fields.get("policy") else {
        return Err(denied(
            "Anonymous form uploads are not accepted: sign a POST policy.",
        ));
    };
    if let Some(algorithm) = fields.get("x-amz-algorithm") {
        if algorithm != "AWS4-HMAC-SHA256" {
            return Err(invalid("x-amz-algorithm must be AWS4-HMAC-SHA256"));
        }
        let credential = fields
            .get("x-amz-credential")
            .ok_or_else(|| invalid("Bucket POST must contain a field named 'x-amz-credential'."))?;
        let signature = fields
            .get("x-amz-signature")
            .ok_or_else(|| invalid("Bucket POST must contain a field named 'x-amz-signature'."))?;
        let [access_key, date, region, service, "aws4_request"] =
            credential.split('/').collect::<Vec<_>>()[..]
        else {
            return Err(invalid("x-amz-credential is malformed"));
        };
        let secret = access.get_secret_key(access_key).await?;
        let expected = sigv4_policy_signature(secret.expose(), date, region, service, policy);
        if !constant_time_eq(
            expected.as_bytes(),
            signature.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(signature_mismatch());
        }
        Ok(access_key.to_owned())
    } else if let (Some(access_key), Some(signature)) =
        (fields.get("awsaccesskeyid"), fields.get("signature"))
    {
        let secret = access.get_secret_key(access_key).await?;
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            secret.expose().as_bytes(),
        );
        let expected = base64_simd::STANDARD
            .encode_to_string(ring::hmac::sign(&key, policy.as_bytes()).as_ref());
        if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Err(signature_mismatch());
        }
        Ok(access_key.to_owned())
    } else {
        Err(denied(
            "A POST policy must be signed (x-amz-signature, or AWSAccessKeyId and signature).",
        ))
    }
}

/// SigV4's signature of a POST policy: the base64 policy signed with the
/// key derived from the secret and the credential's scope.
fn sigv4_policy_signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    policy_b64: &str,
) -> String {
    let sign = |key: &[u8], data: &str| -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let key = sign(format!("AWS4{secret}").as_bytes(), date);
    let key = sign(&key, region);
    let key = sign(&key, service);
    let key = sign(&key, "aws4_request");
    hex::encode(sign(&key, policy_b64))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The file sizes the policy allows: within every `content-length-range`,
/// and never above S3's 5 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeRange {
    min: u64,
    max: u64,
}

/// Checks the form against the policy's conditions (the key with
/// `${filename}` already replaced): every condition holds, and every field
/// but the signature's own is named by one.
fn check_conditions(
    policy: &PostPolicy,
    fields: &Fields,
    bucket: &str,
    key: &str,
) -> Result<SizeRange, S3Error> {
    let mut range = SizeRange {
        min: 0,
        max: MAX_UPLOAD_SIZE,
    };
    let value_of = |field: &str| match field {
        "bucket" => Some(bucket),
        "key" => Some(key),
        other => fields.get(other),
    };
    let mut named = Vec::new();
    for condition in &policy.conditions {
        let (field, holds) = match condition {
            PostPolicyCondition::Eq { field, value } => {
                (field, value_of(field).is_some_and(|v| v == value))
            }
            PostPolicyCondition::StartsWith { field, prefix } => (
                field,
                value_of(field).is_some_and(|v| v.starts_with(prefix.as_str())),
            ),
            PostPolicyCondition::ContentLengthRange { min, max } => {
                range.min = range.min.max(*min);
                range.max = range.max.min(*max);
                continue;
            }
        };
        if !holds {
            return Err(denied(&format!(
                "Invalid according to Policy: Policy Condition failed on field {field:?}"
            )));
        }
        named.push(field.as_str());
    }
    let extra: Vec<&str> = fields
        .0
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| {
            !UNCONDITIONED_FIELDS.contains(name)
                && !name.starts_with("x-ignore-")
                && !named.contains(name)
        })
        .collect();
    if !extra.is_empty() {
        return Err(denied(&format!(
            "Invalid according to Policy: Extra input fields: {}",
            extra.join(", ")
        )));
    }
    Ok(range)
}

/// The file part as an upload body that fails as soon as it exceeds the
/// policy's maximum, and at its end if it is below the minimum: the upload
/// then leaves nothing behind.
fn bounded_file(
    file: multer::Field<'static>,
    range: SizeRange,
    watch: Option<BodyWatch>,
) -> impl futures::Stream<Item = Result<Bytes, GatewayError>> + Send + 'static {
    futures::stream::try_unfold((file, 0u64), move |(mut file, seen)| {
        let watch = watch.clone();
        async move {
            match file.chunk().await {
                Ok(Some(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > range.max {
                        return Err(GatewayError::PostTooLarge(range.max));
                    }
                    Ok(Some((chunk, (file, seen))))
                }
                Ok(None) if seen < range.min => Err(GatewayError::PostTooSmall(range.min)),
                Ok(None) => Ok(None),
                Err(e) => Err(form_gateway_error(e, watch.as_ref())),
            }
        }
    })
}

/// What S3 answers an upload that succeeded: a redirect, or the status
/// the form asked for (204 by default; 201 with a description).
fn success(fields: &Fields, bucket: &str, key: &str, etag: &str) -> Response<Body> {
    let quoted = format!("\"{etag}\"");
    let redirect = fields
        .get("success_action_redirect")
        .or_else(|| fields.get("redirect"))
        .filter(|url| url.starts_with("http://") || url.starts_with("https://"));
    let mut resp = if let Some(url) = redirect {
        let sep = if url.contains('?') { '&' } else { '?' };
        let location = format!(
            "{url}{sep}bucket={}&key={}&etag={}",
            urlencoding::encode(bucket),
            urlencoding::encode(key),
            urlencoding::encode(&quoted)
        );
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    } else {
        match fields.get("success_action_status") {
            Some("201") => {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>/{b}/{k}</Location>\
                     <Bucket>{b}</Bucket><Key>{k}</Key><ETag>{e}</ETag></PostResponse>",
                    b = xml_escape(bucket),
                    k = xml_escape(key),
                    e = xml_escape(&quoted),
                );
                let mut resp = Response::new(Body::from(body));
                *resp.status_mut() = StatusCode::CREATED;
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml"),
                );
                resp
            }
            Some("200") => Response::new(Body::empty()),
            _ => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A multipart error: the client's body was malformed, or reading it
/// failed (the connection, or an idle client).
fn form_gateway_error(error: multer::Error, watch: Option<&BodyWatch>) -> GatewayError {
    match error {
        multer::Error::StreamReadFailed(e) => GatewayError::Body(match watch {
            Some(watch) => watch.classify(e),
            None => BodyError::Transport(e),
        }),
        other => GatewayError::MalformedPost(other.to_string()),
    }
}

fn form_error(error: multer::Error, watch: Option<&BodyWatch>) -> S3Error {
    form_gateway_error(error, watch).into()
}

fn malformed(why: &str) -> S3Error {
    GatewayError::MalformedPost(why.to_owned()).into()
}

fn invalid(why: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, why.to_owned())
}

fn denied(why: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, why.to_owned())
}

fn signature_mismatch() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::SignatureDoesNotMatch,
        "The request signature we calculated does not match the signature you provided.",
    )
}
