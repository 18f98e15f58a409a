//! How a request's body is framed, where s3s 0.14 refuses what S3, MinIO
//! or Ceph accept. [`admit`] mends the request before s3s sees it.
//!
//! **No length.** `Transfer-Encoding: chunked` (or HTTP/2) without
//! `Content-Length`, as `curl -T -` and streaming clients send: s3s refuses
//! an unsigned payload without a length before any handler runs
//! (`MissingContentLength`). The gateway does not need the length up
//! front: it reads bodies segment by segment and caps them at
//! [`MAX_UPLOAD_SIZE`](super::MAX_UPLOAD_SIZE). So such a PutObject or
//! UploadPart gets a stand-in `Content-Length: 0` for s3s and is marked
//! [`UnknownLength`]; the handlers drop the stand-in ([`announced`]).
//! Nothing changes for authentication: the stand-in header is never a
//! signed one (a signed `Content-Length` would have been sent), and s3s
//! still checks the signature before any body byte is read. A body signed
//! by its SHA-256 (`x-amz-content-sha256: <hex>`) is left alone: s3s must
//! know its length to verify it, and answers 411 as S3 does.
//!
//! **Two `Content-Encoding` headers.** The AWS SDKs send `gzip` and
//! `aws-chunked` as two headers; s3s refuses a repeated header. They are
//! joined into one, `gzip,aws-chunked`, which is what SigV4 signs for
//! repeated headers anyway; the handlers keep only the real encoding.

use http::Request;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};

/// Marks a request whose `Content-Length` is a stand-in set by [`admit`].
#[derive(Debug, Clone, Copy)]
pub struct UnknownLength;

/// Query parameters an object upload may carry: UploadPart's own, the SDKs'
/// `x-id`, and a presigned URL's `X-Amz-*`.
fn is_upload_param(name: &str) -> bool {
    matches!(name, "partNumber" | "uploadId" | "x-id") || name.starts_with("X-Amz-")
}

/// Mends a request's framing for s3s (see the module documentation).
/// `names_key` says whether the request's path names an object (the
/// addressing style is the caller's business).
pub fn admit<B>(req: &mut Request<B>, names_key: bool) {
    join_encodings(req);
    let headers = req.headers();
    let streamed =
        headers.contains_key(TRANSFER_ENCODING) || req.version() == http::Version::HTTP_2;
    let unsigned_payload = headers
        .get("x-amz-content-sha256")
        .is_none_or(|v| v.as_bytes() == b"UNSIGNED-PAYLOAD");
    let plain_upload = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .all(|pair| is_upload_param(pair.split_once('=').map_or(pair, |(name, _)| name)));
    if req.method() == http::Method::PUT
        && names_key
        && streamed
        && unsigned_payload
        && !headers.contains_key(CONTENT_LENGTH)
        && !headers.contains_key("x-amz-copy-source")
        && plain_upload
    {
        req.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        req.extensions_mut().insert(UnknownLength);
    }
}

/// Joins repeated `Content-Encoding` headers into one, in their order.
fn join_encodings<B>(req: &mut Request<B>) {
    let headers = req.headers_mut();
    if headers.get_all(CONTENT_ENCODING).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b","[..])) {
        headers.insert(CONTENT_ENCODING, value);
    }
}

/// The length a client announced, unless it is [`admit`]'s stand-in.
pub fn announced(content_length: Option<i64>, extensions: &http::Extensions) -> Option<i64> {
    content_length.filter(|_| extensions.get::<UnknownLength>().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::put(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn admitted(mut req: Request<()>, names_key: bool) -> bool {
        admit(&mut req, names_key);
        let marked = req.extensions().get::<UnknownLength>().is_some();
        assert_eq!(
            marked,
            req.headers().get(CONTENT_LENGTH).is_some_and(|v| v == "0")
        );
        marked
    }

    const CHUNKED: (&str, &str) = ("transfer-encoding", "chunked");
    const UNSIGNED: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

    #[test]
    fn chunked_object_uploads_are_admitted() {
        assert!(admitted(put("/b/k", &[CHUNKED, UNSIGNED]), true));
        assert!(admitted(
            put("/b/k?partNumber=2&uploadId=u&x-id=UploadPart", &[CHUNKED]),
            true
        ));
        assert!(admitted(
            put(
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab",
                &[CHUNKED]
            ),
            true
        ));
    }

    #[test]
    fn everything_else_is_left_to_s3s() {
        // A length, no body, a signed body, a bucket, a subresource, a copy.
        assert!(!admitted(
            put("/b/k", &[CHUNKED, UNSIGNED, ("content-length", "3")]),
            true
        ));
        assert!(!admitted(put("/b/k", &[UNSIGNED]), true));
        assert!(!admitted(
            put(
                "/b/k",
                &[CHUNKED, ("x-amz-content-sha256", &"a".repeat(64))]
            ),
            true
        ));
        assert!(!admitted(put("/b", &[CHUNKED, UNSIGNED]), false));
        assert!(!admitted(put("/b/k?tagging", &[CHUNKED, UNSIGNED]), true));
        assert!(!admitted(
            put("/b/k", &[CHUNKED, ("x-amz-copy-source", "/b/o")]),
            true
        ));
        let mut get = put("/b/k", &[CHUNKED]);
        *get.method_mut() = http::Method::POST;
        assert!(!admitted(get, true));
    }

    #[test]
    fn repeated_encodings_are_joined_in_order() {
        let mut req = put("/b/k", &[("content-encoding", "gzip")]);
        req.headers_mut()
            .append(CONTENT_ENCODING, HeaderValue::from_static("aws-chunked"));
        admit(&mut req, true);
        let all: Vec<_> = req.headers().get_all(CONTENT_ENCODING).iter().collect();
        assert_eq!(all, ["gzip,aws-chunked"]);
    }

    #[test]
    fn the_stand_in_is_not_announced() {
        let mut req = put("/b/k", &[CHUNKED]);
        admit(&mut req, true);
        assert_eq!(announced(Some(0), req.extensions()), None);
        assert_eq!(announced(Some(7), &http::Extensions::new()), Some(7));
    }
}
