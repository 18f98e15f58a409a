//! Batches of small replicas in one request (`POST /{bucket}?tenfold-batch`,
//! [`tenfold_common::replica_batch`]): each record is stored as a PUT of
//! its own would be, all of them at once, so that they share the volume's
//! next fsync; the answer comes when every one is durable or refused.

use std::sync::Arc;

use futures::future::join_all;
use http::{HeaderMap, HeaderValue, Method, Uri};
use s3s::route::S3Route;
use s3s::{Body, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tenfold_common::http_server::BodyWatch;
use tenfold_common::replica_batch::{self, COUNT_HEADER, MAX_BODY, MAX_RECORDS, QUERY, Record};

use crate::disk_store::{DiskStore, PutAttributes};
use crate::error::StoreError;

/// The custom route that takes batches of replicas.
#[derive(Debug, Clone)]
pub struct BatchRoute {
    store: Arc<DiskStore>,
}

impl BatchRoute {
    /// Stores batches in `store`.
    pub fn new(store: Arc<DiskStore>) -> Self {
        Self { store }
    }

    async fn store(&self, bucket: &str, record: Record) -> Result<String, StoreError> {
        let attrs = PutAttributes {
            content_type: None,
            metadata: std::collections::HashMap::new(),
            content_length: Some(record.data.len() as u64),
            content_md5: Some(record.md5),
            crc32c: Some(record.crc32c),
        };
        let body = futures::stream::iter([Ok(record.data)]);
        let meta = self
            .store
            .put_object(bucket, &record.key, attrs, body)
            .await?;
        Ok(meta.etag)
    }
}

/// Whether a query string names a batch.
fn names_batch(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == QUERY || p == "tenfold-batch="))
}

/// The bucket of a batch's path: one segment (bucket names need no
/// escapes; one with them names no bucket).
fn bucket_of(uri: &Uri) -> S3Result<&str> {
    let path = uri.path().trim_start_matches('/');
    if path.is_empty() || path.contains('/') {
        return Err(s3_error!(InvalidRequest, "a batch goes to a bucket"));
    }
    Ok(path)
}

fn record_count(headers: &HeaderMap) -> S3Result<usize> {
    headers
        .get(COUNT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=MAX_RECORDS).contains(n))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("{COUNT_HEADER} must give 1 to {MAX_RECORDS} records"),
            )
        })
}

/// One record's outcome in the answer.
fn outcome(stored: Result<String, StoreError>) -> serde_json::Value {
    match stored {
        Ok(etag) => serde_json::json!({ "etag": etag }),
        Err(e) => {
            let error = S3Error::from(e);
            serde_json::json!({
                "code": error.code().as_str(),
                "message": error.message().unwrap_or_default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl S3Route for BatchRoute {
    fn is_match(
        &self,
        method: &Method,
        uri: &Uri,
        _headers: &HeaderMap,
        _extensions: &mut http::Extensions,
    ) -> bool {
        method == Method::POST && names_batch(uri.query())
    }

    #[tracing::instrument(skip_all, fields(bucket, records))]
    async fn call(&self, mut req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let bucket = bucket_of(&req.uri)?.to_owned();
        let count = record_count(&req.headers)?;
        tracing::Span::current()
            .record("bucket", bucket.as_str())
            .record("records", count);
        let announced = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if announced.is_none_or(|len| len > MAX_BODY) {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!("a batch needs a Content-Length of at most {MAX_BODY} bytes"),
            ));
        }
        let body = req.input.store_all_limited(MAX_BODY).await.map_err(|e| {
            S3Error::from(StoreError::Body(BodyWatch::classify_in(&req.extensions, e)))
        })?;
        let records = replica_batch::decode(body, count)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidRequest, e.to_string()))?;
        let stored = join_all(records.into_iter().map(|r| self.store(&bucket, r))).await;
        let answer: Vec<serde_json::Value> = stored.into_iter().map(outcome).collect();
        let mut resp = S3Response::new(Body::from(serde_json::Value::from(answer).to_string()));
        resp.headers.insert(COUNT_HEADER, HeaderValue::from(count));
        resp.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_batch_parameter_names_a_batch() {
        assert!(names_batch(Some("tenfold-batch")));
        assert!(names_batch(Some("x=1&tenfold-batch=")));
        assert!(!names_batch(Some("tenfold-batches")));
        assert!(!names_batch(Some("uploads")));
        assert!(!names_batch(None));
    }

    #[test]
    fn a_batch_goes_to_one_bucket() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            bucket_of(&uri("/frag-ments?tenfold-batch")).unwrap(),
            "frag-ments"
        );
        assert!(bucket_of(&uri("/?tenfold-batch")).is_err());
        assert!(bucket_of(&uri("/b/key?tenfold-batch")).is_err());
    }

    #[test]
    fn the_record_count_is_bounded() {
        let mut headers = HeaderMap::new();
        assert!(record_count(&headers).is_err());
        for (value, ok) in [
            ("0", false),
            ("1", true),
            ("64", true),
            ("65", false),
            ("x", false),
        ] {
            headers.insert(COUNT_HEADER, HeaderValue::from_static(value));
            assert_eq!(record_count(&headers).is_ok(), ok, "{value}");
        }
    }
}
