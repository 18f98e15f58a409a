//! Share links: a token that opens one object or a whole prefix (a
//! "transfer") to anyone holding it, until it expires or is revoked. The
//! link leads to a small HTML page listing the files, and `…/zip` to all of
//! them in one streamed zip archive.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Response, StatusCode, header};
use s3s::Body;
use s3s::dto::StreamingBlob;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::index::{Index, ShareRow, now_ms};
use crate::object_store::ObjectStore;
use crate::zip_stream::entry_name;

/// Path under which share links are served. Bucket names cannot start with
/// an underscore, so it never shadows a path-style bucket.
pub const SHARE_PATH: &str = "/_share/";
/// Files listed on a share page at most (the zip holds them all).
const PAGE_LIMIT: usize = 1000;

/// A new link's token: 256 random bits, URL-safe.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(bytes)
}

/// What the index keeps of a token.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a share link for `bucket`/`prefix` valid for `valid_for` and
/// returns its token.
///
/// # Errors
/// [`GatewayError::NoSuchBucket`], [`GatewayError::Index`].
pub async fn create_share(
    index: &Index,
    bucket: &str,
    prefix: &str,
    valid_for: Duration,
) -> Result<String, GatewayError> {
    let token = new_token();
    let expires = now_ms().saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX));
    index
        .add_share(&token_hash(&token), bucket, prefix, expires)
        .await?;
    Ok(token)
}

/// Revokes the link with this token (or this URL); `false` when unknown.
///
/// # Errors
/// [`GatewayError::Index`].
pub async fn revoke_share(index: &Index, token_or_url: &str) -> Result<bool, GatewayError> {
    let token = token_or_url
        .trim_end_matches('/')
        .trim_end_matches("/zip")
        .rsplit('/')
        .next()
        .unwrap_or_default();
    index.revoke_share(&token_hash(token)).await
}

/// The URL of a share link on a gateway reachable at `public_url`.
pub fn share_url(public_url: &str, token: &str) -> String {
    format!("{}{SHARE_PATH}{token}", public_url.trim_end_matches('/'))
}

/// Why a link opens nothing.
enum Refusal {
    /// Malformed or unknown token.
    NotFound,
    /// Expired or revoked.
    Gone,
}

/// Answers a request under [`SHARE_PATH`]: the page of a link, or its zip.
#[tracing::instrument(skip_all, fields(path = %path))]
pub async fn serve_share(store: &Arc<ObjectStore>, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "Share links can only be read.",
        );
    }
    let rest = path.strip_prefix(SHARE_PATH).unwrap_or_default();
    let (token, zip) = match rest.split_once('/') {
        None => (rest, false),
        Some((token, "")) => (token, false),
        Some((token, "zip")) => (token, true),
        Some(_) => return refused(&Refusal::NotFound),
    };
    let share = match resolve(&store.index, token).await {
        Ok(share) => share,
        Err(refusal) => return refused(&refusal),
    };
    let result = if zip {
        zip_response(store, share, method).await
    } else {
        listing_page(store, &share, token).await
    };
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "share link failed");
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The files cannot be read right now. Please try again later.",
        )
    })
}

async fn resolve(index: &Index, token: &str) -> Result<ShareRow, Refusal> {
    // Tokens are 43 URL-safe characters; anything else is not one.
    if token.len() != 43
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Refusal::NotFound);
    }
    match index.share(&token_hash(token)).await {
        Ok(Some(share)) if share.revoked || share.expires_at <= now_ms() => Err(Refusal::Gone),
        Ok(Some(share)) => Ok(share),
        Ok(None) => Err(Refusal::NotFound),
        Err(e) => {
            tracing::warn!(error = %e, "reading a share link");
            Err(Refusal::NotFound)
        }
    }
}

fn refused(refusal: &Refusal) -> Response<Body> {
    match refusal {
        Refusal::NotFound => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This link does not exist.",
        ),
        Refusal::Gone => page(
            StatusCode::FORBIDDEN,
            "Link expired",
            "This link has expired or was revoked.",
        ),
    }
}

/// The zip name offered for a share: the prefix's last folder or name.
fn archive_name(share: &ShareRow) -> String {
    let base = share
        .prefix
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(&share.bucket);
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.zip")
}

async fn zip_response(
    store: &Arc<ObjectStore>,
    share: ShareRow,
    method: &Method,
) -> Result<Response<Body>, GatewayError> {
    let name = archive_name(&share);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let stream = store.zip_stream(share.bucket, share.prefix).await?;
        Body::from(StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream)))
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn listing_page(
    store: &Arc<ObjectStore>,
    share: &ShareRow,
    token: &str,
) -> Result<Response<Body>, GatewayError> {
    let mut rows = String::new();
    let (mut count, mut total, mut shown) = (0u64, 0u64, 0usize);
    let mut after = String::new();
    while let Some((objects, next)) = store
        .archive_page(&share.bucket, &share.prefix, &after)
        .await?
    {
        for object in objects {
            count += 1;
            total += object.size;
            if shown < PAGE_LIMIT {
                shown += 1;
                let _ = writeln!(
                    rows,
                    "<tr><td>{}</td><td class=\"size\">{}</td></tr>",
                    escape(&entry_name(&object.key, &share.prefix)),
                    bytesize::ByteSize::b(object.size)
                );
            }
        }
        after = next;
    }
    if u64::try_from(shown).unwrap_or(u64::MAX) < count {
        let _ = writeln!(
            rows,
            "<tr><td>… and {} more</td><td></td></tr>",
            count - shown as u64
        );
    }
    let expires = time::OffsetDateTime::from_unix_timestamp(share.expires_at / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let body = format!(
        "<p>{count} file{} · {} · available until {}</p>\n\
         <p><a class=\"button\" href=\"{SHARE_PATH}{token}/zip\" download>Download all</a></p>\n\
         <table><thead><tr><th>File</th><th class=\"size\">Size</th></tr></thead><tbody>\n{rows}</tbody></table>",
        if count == 1 { "" } else { "s" },
        bytesize::ByteSize::b(total),
        escape(&expires),
    );
    Ok(html(StatusCode::OK, &archive_name(share), &body))
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    html(status, title, &format!("<p>{}</p>", escape(text)))
}

fn html(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let doc = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Tenfold</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         table{{border-collapse:collapse;width:100%}}td,th{{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:left}}\
         .size{{text-align:right;white-space:nowrap}}\
         .button{{display:inline-block;padding:.6rem 1.2rem;background:#2457d6;color:#fff;border-radius:.3rem;text-decoration:none}}\
         </style></head><body><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
    );
    let mut resp = Response::new(Body::from(doc));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, new_token());
        assert_ne!(token_hash(&a), a);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn archive_names_are_plain() {
        let share = |prefix: &str| ShareRow {
            bucket: "bkt".into(),
            prefix: prefix.into(),
            expires_at: 0,
            revoked: false,
        };
        assert_eq!(archive_name(&share("photos/2024/")), "2024.zip");
        assert_eq!(archive_name(&share("")), "bkt.zip");
        assert_eq!(archive_name(&share("a/\"x y\".txt")), "_x_y_.txt.zip");
    }
}
