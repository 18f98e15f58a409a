//! `GET /BUCKET?x-tenfold-zip&prefix=PREFIX`, signed like any S3 request:
//! every object under the prefix in one streamed zip archive, for
//! authenticated users (anyone else uses a share link).

use std::sync::Arc;

use http::{HeaderValue, Method, Uri, header};
use hyper::HeaderMap;
use hyper::http::Extensions;
use s3s::dto::StreamingBlob;
use s3s::route::S3Route;
use s3s::{Body, S3Request, S3Response, S3Result, s3_error};

use crate::addressing::BaseDomain;
use crate::object_store::ObjectStore;

/// The query flag that asks for a zip of a prefix.
pub const ZIP_FLAG: &str = "x-tenfold-zip";

/// The custom route serving zips of a prefix (s3s has checked the
/// signature before it runs; the default access check refuses anonymous
/// requests).
#[derive(Debug, Clone)]
pub struct ZipRoute {
    store: Arc<ObjectStore>,
    base_domain: Option<BaseDomain>,
}

impl ZipRoute {
    /// Serves zips of `store`'s objects; `base_domain` names the bucket of
    /// virtual-hosted-style requests.
    pub fn new(store: Arc<ObjectStore>, base_domain: Option<BaseDomain>) -> Self {
        Self { store, base_domain }
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

#[async_trait::async_trait]
impl S3Route for ZipRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, _: &mut Extensions) -> bool {
        method == Method::GET && query_pairs(uri).any(|(k, _)| k == ZIP_FLAG)
    }

    #[tracing::instrument(name = "zip_request", skip_all, fields(uri = %req.uri))]
    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let path = urlencoding::decode(req.uri.path()).map_err(|_| s3_error!(InvalidURI))?;
        let virtual_bucket = host
            .zip(self.base_domain.as_ref())
            .and_then(|(h, d)| d.bucket_of(h));
        let bucket = match virtual_bucket {
            Some(bucket) => bucket.to_owned(),
            None => {
                let path = path.trim_start_matches('/');
                if path.is_empty() || path.contains('/') {
                    return Err(s3_error!(
                        InvalidRequest,
                        "use GET /BUCKET?{ZIP_FLAG}&prefix=PREFIX"
                    ));
                }
                path.to_owned()
            }
        };
        let prefix = query_pairs(&req.uri)
            .find(|(k, _)| k == "prefix")
            .map(|(_, v)| v)
            .unwrap_or_default();
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
}
