//! Share links: a token that opens one object or a whole prefix (a
//! "transfer") to anyone holding it, until it expires or is revoked. The
//! link leads to a small HTML page listing the files, and `…/zip` to all of
//! them in one streamed zip archive.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::{HeaderValue, Method, Response, StatusCode, Uri, header};
use s3s::Body;
use s3s::dto::StreamingBlob;
use sha2::{Digest, Sha256};

use crate::crypto::Keyring;
use crate::error::GatewayError;
use crate::index::{Index, ShareRow, UploadAllowance, now_ms};
use crate::object_store::ObjectStore;
use crate::zip_stream::entry_name;

/// Path under which share links are served. Bucket names cannot start with
/// an underscore, so it never shadows a path-style bucket.
pub const SHARE_PATH: &str = "/_share/";
/// Files listed on one share page (the next page follows them; the zip
/// holds them all).
const PAGE_LIMIT: usize = 500;
/// Files a share page counts at most for its summary.
const COUNT_LIMIT: u64 = 10_000;

/// Bytes of a link's random id.
pub const ID_LEN: usize = 16;

/// A share link's token: `PAYLOAD.MAC`, both base64url. The payload is the
/// link's random id and its expiry (ms since the epoch, big-endian); the
/// MAC is an HMAC-SHA256 of the payload under a key derived from the
/// master key. A token that does not verify is refused before the index is
/// asked, and the index, which keeps only a hash of the id, cannot make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Random; the index keeps its SHA-256.
    pub id: [u8; ID_LEN],
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

impl Token {
    fn payload(&self) -> [u8; ID_LEN + 8] {
        let mut payload = [0; ID_LEN + 8];
        payload[..ID_LEN].copy_from_slice(&self.id);
        payload[ID_LEN..].copy_from_slice(&self.expires_at.to_be_bytes());
        payload
    }

    /// The token's text, signed with the current master key.
    pub fn encode(&self, keyring: &Keyring) -> String {
        let payload = self.payload();
        let b64 = base64_simd::URL_SAFE_NO_PAD;
        format!(
            "{}.{}",
            b64.encode_to_string(payload),
            b64.encode_to_string(keyring.sign_link(&payload))
        )
    }

    /// The token in `text` if its signature verifies.
    pub fn decode(keyring: &Keyring, text: &str) -> Option<Self> {
        let (payload, mac) = text.split_once('.')?;
        let b64 = base64_simd::URL_SAFE_NO_PAD;
        // Lengths first: nothing longer than a token is decoded.
        if payload.len() != 32 || mac.len() != 43 {
            return None;
        }
        let payload = b64.decode_to_vec(payload).ok()?;
        let mac = b64.decode_to_vec(mac).ok()?;
        if !keyring.verify_link(&payload, &mac) {
            return None;
        }
        let (id, expires) = payload.split_at_checked(ID_LEN)?;
        Some(Self {
            id: id.try_into().ok()?,
            expires_at: i64::from_be_bytes(expires.try_into().ok()?),
        })
    }

    /// What the index keeps of the link's id.
    fn id_hash(&self) -> String {
        hex::encode(Sha256::digest(self.id))
    }
}

fn keyring_of(index: &Index) -> Result<&Keyring, GatewayError> {
    index.keyring().ok_or_else(|| {
        GatewayError::Config(
            "share links are signed with the master key: set TENFOLD_MASTER_KEY, pass --master-key-file, or use --data with a dev folder".into(),
        )
    })
}

/// The token in a link's URL (or the token itself).
fn token_text(token_or_url: &str) -> &str {
    token_or_url
        .trim_end_matches('/')
        .trim_end_matches("/zip")
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// Creates a share link for `bucket`/`prefix` valid for `valid_for` and
/// returns its token: a link that gives the files under the prefix, or
/// with `upload` one that takes files into it, within that allowance.
///
/// # Errors
/// [`GatewayError::NoSuchBucket`], [`GatewayError::Index`],
/// [`GatewayError::Config`] without a master key.
pub async fn create_share(
    index: &Index,
    bucket: &str,
    prefix: &str,
    valid_for: Duration,
    upload: Option<UploadAllowance>,
) -> Result<String, GatewayError> {
    let expires_at =
        now_ms().saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX));
    create_share_until(index, bucket, prefix, expires_at, upload).await
}

/// [`create_share`] with an expiry (ms since the epoch) instead of a
/// lifetime.
///
/// # Errors
/// As [`create_share`].
pub async fn create_share_until(
    index: &Index,
    bucket: &str,
    prefix: &str,
    expires_at: i64,
    upload: Option<UploadAllowance>,
) -> Result<String, GatewayError> {
    let keyring = keyring_of(index)?;
    let token = Token {
        id: rand::random(),
        expires_at,
    };
    index
        .add_share(&token.id_hash(), bucket, prefix, token.expires_at, upload)
        .await?;
    Ok(token.encode(keyring))
}

/// The bucket a link (URL or token) opens, whether or not it still works;
/// `None` for a link that is not one of ours.
///
/// # Errors
/// [`GatewayError::Index`], [`GatewayError::Config`] without a master key.
pub async fn share_bucket(
    index: &Index,
    token_or_url: &str,
) -> Result<Option<String>, GatewayError> {
    let Some(token) = Token::decode(keyring_of(index)?, token_text(token_or_url)) else {
        return Ok(None);
    };
    Ok(index.share(&token.id_hash()).await?.map(|s| s.bucket))
}

/// Revokes the link with this token (or this URL); `false` when unknown.
///
/// # Errors
/// [`GatewayError::Index`], [`GatewayError::Config`] without a master key.
pub async fn revoke_share(index: &Index, token_or_url: &str) -> Result<bool, GatewayError> {
    match Token::decode(keyring_of(index)?, token_text(token_or_url)) {
        Some(token) => index.revoke_share(&token.id_hash()).await,
        None => Ok(false),
    }
}

/// The URL of a share link on a gateway reachable at `public_url`.
pub fn share_url(public_url: &str, token: &str) -> String {
    format!("{}{SHARE_PATH}{token}", public_url.trim_end_matches('/'))
}

/// The URL of an upload link on a gateway reachable at `public_url`.
pub fn upload_url(public_url: &str, token: &str) -> String {
    format!(
        "{}{}{token}",
        public_url.trim_end_matches('/'),
        crate::upload_link::UPLOAD_PATH
    )
}

/// Why a link opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed or unknown token.
    NotFound,
    /// Expired or revoked.
    Gone,
}

/// Answers a request under [`SHARE_PATH`]: the page of a link (one page
/// of its files, `?after=` the next), its zip, or one of its files.
#[tracing::instrument(skip_all, fields(path = %uri.path()))]
pub async fn serve_share(store: &Arc<ObjectStore>, method: &Method, uri: &Uri) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "Share links can only be read.",
        );
    }
    let rest = uri.path().strip_prefix(SHARE_PATH).unwrap_or_default();
    let (token, route) = rest.split_once('/').unwrap_or((rest, ""));
    let share = match resolve(&store.index, token).await {
        // An upload link's holder sees nothing of what others sent.
        Ok((share, _)) if share.upload.is_some() => return refused(&Refusal::NotFound),
        Ok((share, _)) => share,
        Err(refusal) => return refused(&refusal),
    };
    let result = match route {
        "" => {
            let after = uri
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|p| p.strip_prefix("after="))
                .and_then(|a| urlencoding::decode(a).ok())
                .map(|a| a.into_owned())
                .unwrap_or_default();
            listing_page(store, &share, token, &after).await
        }
        "zip" => zip_response(store, share, method).await,
        file => match file.strip_prefix("file/").map(urlencoding::decode) {
            Some(Ok(suffix)) => file_response(store, &share, &suffix, method).await,
            _ => return refused(&Refusal::NotFound),
        },
    };
    result.unwrap_or_else(|e| match e {
        GatewayError::NoSuchKey(_) => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This link has no such file.",
        ),
        e => {
            tracing::warn!(error = %e, "share link failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The files cannot be read right now. Please try again later.",
            )
        }
    })
}

/// The link a token opens (and the hash the index knows it by), if it
/// verifies and still works.
pub(crate) async fn resolve(index: &Index, token: &str) -> Result<(ShareRow, String), Refusal> {
    let Some(token) = index.keyring().and_then(|k| Token::decode(k, token)) else {
        return Err(Refusal::NotFound);
    };
    if token.expires_at <= now_ms() {
        return Err(Refusal::Gone);
    }
    match index.share(&token.id_hash()).await {
        Ok(Some(share)) if share.revoked || share.expires_at <= now_ms() => Err(Refusal::Gone),
        Ok(Some(share)) => Ok((share, token.id_hash())),
        Ok(None) => Err(Refusal::NotFound),
        Err(e) => {
            tracing::warn!(error = %e, "reading a share link");
            Err(Refusal::NotFound)
        }
    }
}

pub(crate) fn refused(refusal: &Refusal) -> Response<Body> {
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

/// One page of a link's files (those after `after`, a key relative to the
/// link's prefix), each with its own download, and what the link holds in
/// all (counted up to [`COUNT_LIMIT`] files).
async fn listing_page(
    store: &Arc<ObjectStore>,
    share: &ShareRow,
    token: &str,
    after: &str,
) -> Result<Response<Body>, GatewayError> {
    let mut rows = String::new();
    let (mut count, mut total, mut shown) = (0u64, 0u64, 0usize);
    let mut next_page = None;
    let start = if after.is_empty() {
        String::new()
    } else {
        format!("{}{after}", share.prefix)
    };
    let mut cursor = start.clone();
    // The page's files.
    while shown < PAGE_LIMIT {
        let Some((objects, next)) = store
            .archive_page(&share.bucket, &share.prefix, &cursor)
            .await?
        else {
            break;
        };
        for object in objects {
            if shown == PAGE_LIMIT {
                break;
            }
            shown += 1;
            let suffix = object
                .key
                .strip_prefix(share.prefix.as_str())
                .unwrap_or_default();
            let _ = writeln!(
                rows,
                "<tr><td><a href=\"{SHARE_PATH}{token}/file/{}\" download>{}</a></td>\
                 <td class=\"size\">{}</td></tr>",
                escape(&encode_path(suffix)),
                escape(&entry_name(&object.key, &share.prefix)),
                bytesize::ByteSize::b(object.size)
            );
            next_page = Some(suffix.to_owned());
        }
        cursor = next;
    }
    // What the whole link holds, within bounds: an anonymous view may not
    // walk a huge prefix.
    let mut cursor = String::new();
    let mut more = false;
    while let Some((objects, next)) = store
        .archive_page(&share.bucket, &share.prefix, &cursor)
        .await?
    {
        count += objects.len() as u64;
        total += objects.iter().map(|o| o.size).sum::<u64>();
        cursor = next;
        if count >= COUNT_LIMIT {
            more = true;
            break;
        }
    }
    let next_link = next_page
        .filter(|_| u64::try_from(shown).unwrap_or(0) == PAGE_LIMIT as u64)
        .map(|last| {
            format!(
                "<p><a href=\"{SHARE_PATH}{token}?after={}\">Next page</a></p>",
                escape(&urlencoding::encode(&last))
            )
        })
        .unwrap_or_default();
    let expires = time::OffsetDateTime::from_unix_timestamp(share.expires_at / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let body = format!(
        "<p>{}{count} file{} · {}{} · available until {}</p>\n\
         <p><a class=\"button\" href=\"{SHARE_PATH}{token}/zip\" download>Download all</a></p>\n\
         <table><thead><tr><th>File</th><th class=\"size\">Size</th></tr></thead><tbody>\n{rows}</tbody></table>\n{next_link}",
        if more { "more than " } else { "" },
        if count == 1 { "" } else { "s" },
        if more { "more than " } else { "" },
        bytesize::ByteSize::b(total),
        escape(&expires),
    );
    Ok(html(StatusCode::OK, &archive_name(share), &body))
}

/// A key relative to a link's prefix, percent-encoded segment by segment.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|s| urlencoding::encode(s).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// One file of a link (`suffix`: its key after the link's prefix; empty
/// for a link to one object), as a download.
async fn file_response(
    store: &Arc<ObjectStore>,
    share: &ShareRow,
    suffix: &str,
    method: &Method,
) -> Result<Response<Body>, GatewayError> {
    let key = format!("{}{suffix}", share.prefix);
    let object = store
        .index
        .get_object(&share.bucket, &key)
        .await?
        .filter(|o| !(o.key.ends_with('/') && o.size == 0))
        .ok_or_else(|| GatewayError::NoSuchKey(key.clone()))?;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let layout = store.index.layout(&object.id, 0..object.size).await?;
        let stream = store
            .object_stream(layout, 0..object.size)
            .map(|r| r.map_err(std::io::Error::other));
        Body::from(StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream)))
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    let content_type = object
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.size));
    let name = entry_name(&object.key, &share.prefix);
    let name = name.rsplit('/').next().unwrap_or_default();
    let plain: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{plain}\"; filename*=UTF-8''{}",
        urlencoding::encode(name)
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", object.etag)) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub(crate) fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    html(status, title, &format!("<p>{}</p>", escape(text)))
}

pub(crate) fn html(status: StatusCode, title: &str, body: &str) -> Response<Body> {
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

pub(crate) fn escape(text: &str) -> String {
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
    use crate::crypto::MasterKey;

    fn keyring() -> Keyring {
        Keyring::new(MasterKey::parse(&MasterKey::generate()).unwrap(), vec![])
    }

    #[test]
    fn tokens_are_url_safe_and_verify() {
        let keyring = keyring();
        let token = Token {
            id: rand::random(),
            expires_at: 1_900_000_000_000,
        };
        let text = token.encode(&keyring);
        assert_eq!(text.len(), 76);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_eq!(Token::decode(&keyring, &text), Some(token));
        assert_eq!(token_text(&format!("http://h/_share/{text}/zip")), text);
    }

    #[test]
    fn altered_or_foreign_tokens_do_not_verify() {
        let keyring = keyring();
        let token = Token {
            id: [7; ID_LEN],
            expires_at: 1_900_000_000_000,
        };
        let text = token.encode(&keyring);
        // A later expiry with the old signature.
        let longer = Token {
            expires_at: i64::MAX,
            ..token
        };
        let (_, mac) = text.split_once('.').unwrap();
        let forged = format!(
            "{}.{mac}",
            base64_simd::URL_SAFE_NO_PAD.encode_to_string(longer.payload())
        );
        assert_eq!(Token::decode(&keyring, &forged), None);
        // Another master key's link.
        assert_eq!(
            Token::decode(&keyring, &token.encode(&self::keyring())),
            None
        );
        // A flipped character anywhere.
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered != text {
                assert_eq!(Token::decode(&keyring, &altered), None, "at {i}");
            }
        }
        for junk in ["", ".", "a.b", &"x".repeat(200), &text[..75]] {
            assert_eq!(Token::decode(&keyring, junk), None);
        }
    }

    #[test]
    fn rotated_keys_still_verify_old_links() {
        let old = MasterKey::parse(&MasterKey::generate()).unwrap();
        let before = Keyring::new(old.clone(), vec![]);
        let token = Token {
            id: [1; ID_LEN],
            expires_at: 5,
        };
        let text = token.encode(&before);
        let after = Keyring::new(MasterKey::parse(&MasterKey::generate()).unwrap(), vec![old]);
        assert_eq!(Token::decode(&after, &text), Some(token));
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
            upload: None,
        };
        assert_eq!(archive_name(&share("photos/2024/")), "2024.zip");
        assert_eq!(archive_name(&share("")), "bkt.zip");
        assert_eq!(archive_name(&share("a/\"x y\".txt")), "_x_y_.txt.zip");
    }
}
