//! The gateway's requests beyond S3, signed like any S3 request and held
//! to the same bucket ownership:
//!
//! - `GET /BUCKET?x-tenfold-zip&prefix=PREFIX`: every object under the
//!   prefix in one streamed zip archive;
//! - `POST /BUCKET?x-tenfold-share&prefix=PREFIX&expires=7d`: a new share
//!   link for the prefix (its URL is the response body); with `&upload`
//!   (and optionally `&max-size=10GiB&max-files=N`) an upload link;
//! - `DELETE /BUCKET?x-tenfold-share&link=URL`: revokes one of the
//!   bucket's share links.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, Uri, header};
use hyper::HeaderMap;
use hyper::http::Extensions;
use s3s::dto::StreamingBlob;
use s3s::route::S3Route;
use s3s::{Body, S3Request, S3Response, S3Result, s3_error};
use tenfold_common::units::{parse_duration, parse_size};

use crate::access::{Access, EXPECTED_OWNER, expected_owner};
use crate::addressing::BaseDomain;
use crate::error::GatewayError;
use crate::index::UploadAllowance;
use crate::object_store::ObjectStore;
use crate::share::{create_share, revoke_share, share_bucket, share_url, upload_url};

/// The query flag that asks for a zip of a prefix.
pub const ZIP_FLAG: &str = "x-tenfold-zip";
/// The query flag of share-link requests.
pub const SHARE_FLAG: &str = "x-tenfold-share";
/// The longest a share link made over HTTP may work.
const MAX_SHARE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The custom routes (s3s has checked the signature before they run; the
/// default access check refuses anonymous requests).
#[derive(Debug, Clone)]
pub struct TenfoldRoutes {
    store: Arc<ObjectStore>,
    access: Access,
    base_domain: Option<BaseDomain>,
    /// `http` or `https`: how share links made here start.
    scheme: &'static str,
}

impl TenfoldRoutes {
    /// Serves `store`'s zips and share links to the callers `access`
    /// allows; `base_domain` names the bucket of virtual-hosted-style
    /// requests.
    pub fn new(
        store: Arc<ObjectStore>,
        access: Access,
        base_domain: Option<BaseDomain>,
        scheme: &'static str,
    ) -> Self {
        Self {
            store,
            access,
            base_domain,
            scheme,
        }
    }

    /// The bucket a request is for, path-style or virtual-hosted-style.
    fn bucket(&self, req: &S3Request<Body>) -> S3Result<String> {
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if let Some(bucket) = host
            .zip(self.base_domain.as_ref())
            .and_then(|(h, d)| d.bucket_of(h))
        {
            return Ok(bucket.to_owned());
        }
        let path = urlencoding::decode(req.uri.path()).map_err(|_| s3_error!(InvalidURI))?;
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.contains('/') {
            return Err(s3_error!(
                InvalidRequest,
                "use /BUCKET?{ZIP_FLAG}&prefix=PREFIX or /BUCKET?{SHARE_FLAG}"
            ));
        }
        Ok(path.to_owned())
    }

    async fn zip(&self, bucket: String, prefix: String) -> S3Result<S3Response<Body>> {
        self.store.index.require_bucket(&bucket).await?;
        let name = format!("{bucket}.zip");
        let stream = self.store.zip_stream(bucket, prefix).await?;
        let mut resp = S3Response::new(Body::from(StreamingBlob::wrap(
            sync_wrapper::SyncStream::new(stream),
        )));
        resp.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/zip"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            resp.headers.insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(resp)
    }

    async fn create_share(
        &self,
        req: &S3Request<Body>,
        bucket: &str,
        prefix: &str,
    ) -> S3Result<S3Response<Body>> {
        let expires = match query_value(&req.uri, "expires") {
            None => Duration::from_secs(7 * 24 * 3600),
            Some(text) => parse_duration(&text)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_SHARE_LIFETIME)
                .ok_or_else(|| {
                    s3_error!(
                        InvalidArgument,
                        "expires is a duration such as 7d or 12h, at most 365 days"
                    )
                })?,
        };
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| s3_error!(InvalidRequest, "a Host header is required"))?;
        let upload = query_pairs(&req.uri).any(|(k, _)| k == "upload");
        let limit = |name: &str, parse: fn(&str) -> Result<u64, String>| {
            query_value(&req.uri, name)
                .map(|v| parse(&v).map_err(|e| s3_error!(InvalidArgument, "{name}: {e}")))
                .transpose()
        };
        let allowance = upload
            .then(|| -> S3Result<UploadAllowance> {
                Ok(UploadAllowance {
                    max_bytes: limit("max-size", parse_size)?,
                    max_files: limit("max-files", |v| {
                        v.parse().map_err(|_| "not a number".into())
                    })?,
                    ..UploadAllowance::default()
                })
            })
            .transpose()?;
        let token = create_share(&self.store.index, bucket, prefix, expires, allowance).await?;
        let public_url = format!("{}://{host}", self.scheme);
        let url = if upload {
            upload_url(&public_url, &token)
        } else {
            share_url(&public_url, &token)
        };
        let mut resp = S3Response::new(Body::from(format!("{url}\n")));
        resp.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(resp)
    }

    async fn revoke_share(
        &self,
        req: &S3Request<Body>,
        bucket: &str,
    ) -> S3Result<S3Response<Body>> {
        let link = query_value(&req.uri, "link")
            .ok_or_else(|| s3_error!(InvalidArgument, "give the link to revoke as link=URL"))?;
        let index = &self.store.index;
        // A link of another bucket is as unknown here as a made-up one.
        if share_bucket(index, &link).await?.as_deref() != Some(bucket)
            || !revoke_share(index, &link).await?
        {
            return Err(GatewayError::InvalidArgument(format!(
                "bucket {bucket} has no share link {link}"
            ))
            .into());
        }
        let mut resp = S3Response::new(Body::empty());
        resp.status = Some(StatusCode::NO_CONTENT);
        Ok(resp)
    }
}

fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, String)> + '_ {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                urlencoding::decode(&s.replace('+', " "))
                    .map_or_else(|_| s.to_owned(), |d| d.into_owned())
            };
            (decode(k), decode(v))
        })
}

fn query_value(uri: &Uri, name: &str) -> Option<String> {
    query_pairs(uri).find(|(k, _)| k == name).map(|(_, v)| v)
}

#[async_trait::async_trait]
impl S3Route for TenfoldRoutes {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, _: &mut Extensions) -> bool {
        let has = |flag: &str| query_pairs(uri).any(|(k, _)| k == flag);
        (method == Method::GET && has(ZIP_FLAG))
            || ((method == Method::POST || method == Method::DELETE) && has(SHARE_FLAG))
    }

    #[tracing::instrument(name = "tenfold_route", skip_all, fields(method = %req.method, uri = %req.uri))]
    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let credentials = req
            .credentials
            .as_ref()
            .ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))?;
        let caller = self.access.caller(&credentials.access_key).await?;
        let bucket = self.bucket(&req)?;
        let expected = expected_owner(&req.headers, EXPECTED_OWNER);
        self.access
            .require_bucket_access(&caller, &bucket, expected)
            .await?;
        let prefix = query_value(&req.uri, "prefix").unwrap_or_default();
        match req.method {
            Method::GET => self.zip(bucket, prefix).await,
            Method::POST => self.create_share(&req, &bucket, &prefix).await,
            _ => self.revoke_share(&req, &bucket).await,
        }
    }
}
