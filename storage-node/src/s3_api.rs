//! The storage node's S3 API: the operations the Tenfold balancer (and any
//! S3 client) needs, served by `s3s` over the [`DiskStore`].

use std::sync::Arc;

use s3s::dto::{
    Bucket, CommonPrefix, CreateBucketInput, CreateBucketOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, DeletedObject, ETag, GetObjectInput, GetObjectOutput, HeadBucketInput,
    HeadBucketOutput, HeadObjectInput, HeadObjectOutput, ListBucketsInput, ListBucketsOutput,
    ListObjectsV2Input, ListObjectsV2Output, Object, PutObjectInput, PutObjectOutput,
    StreamingBlob, Timestamp,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use crate::disk_store::{DiskStore, ObjectMeta, PutAttributes};
use crate::error::StoreError;
use futures::StreamExt;
use tenfold_common::MAX_DELETE_KEYS;
use tenfold_common::http_server::BodyWatch;
use tenfold_common::listing::{Listing, Step, decode_token, encode_token};

/// Largest page a ListObjectsV2 answers, as in S3.
const MAX_LIST_KEYS: i32 = 1000;

/// The S3 service of one storage node.
#[derive(Debug, Clone)]
pub struct NodeS3 {
    store: Arc<DiskStore>,
}

impl NodeS3 {
    /// Serves `store` over S3.
    pub fn new(store: Arc<DiskStore>) -> Self {
        Self { store }
    }
}

fn timestamp(unix: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .into()
}

fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.clone())
}

fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode_content_md5(b64: &str) -> Result<[u8; 16], StoreError> {
    let bytes = base64_simd::STANDARD
        .decode_to_vec(b64)
        .map_err(|_| StoreError::InvalidDigest)?;
    bytes.try_into().map_err(|_| StoreError::InvalidDigest)
}

/// An `x-amz-checksum-crc32c` header's value: a base64 big-endian u32.
fn decode_crc32c(b64: &str) -> Result<u32, StoreError> {
    let bytes = base64_simd::STANDARD
        .decode_to_vec(b64)
        .map_err(|_| StoreError::InvalidChecksum)?;
    let bytes: [u8; 4] = bytes.try_into().map_err(|_| StoreError::InvalidChecksum)?;
    Ok(u32::from_be_bytes(bytes))
}

/// Resolves an optional Range header against an object size.
///
/// # Errors
/// `InvalidRange` (416) when the range cannot be satisfied.
pub fn resolve_range(range: Option<&s3s::dto::Range>, size: u64) -> S3Result<std::ops::Range<u64>> {
    match range {
        None => Ok(0..size),
        Some(r) => r.check(size).map_err(|_| {
            s3_error!(
                InvalidRange,
                "the range is not satisfiable for an object of {size} bytes"
            )
        }),
    }
}

#[async_trait::async_trait]
impl S3 for NodeS3 {
    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.store.create_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.store.head_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store.delete_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .store
            .list_buckets()
            .await?
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(created.into()),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let extensions = req.extensions;
        let content_md5 = input
            .content_md5
            .as_deref()
            .map(decode_content_md5)
            .transpose()?;
        let crc32c = input
            .checksum_crc32c
            .as_deref()
            .map(decode_crc32c)
            .transpose()?;
        let attrs = PutAttributes {
            content_type: input.content_type.map(|m| m.to_string()),
            metadata: input.metadata.unwrap_or_default(),
            content_length: input.content_length.and_then(|n| u64::try_from(n).ok()),
            content_md5,
            crc32c,
        };
        let body = input
            .body
            .unwrap_or_else(|| {
                StreamingBlob::wrap(
                    futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
                )
            })
            .map(|chunk| chunk.map_err(|e| BodyWatch::classify_in(&extensions, e)));
        let meta = self
            .store
            .put_object(&input.bucket, &input.key, attrs, body)
            .await?;
        tracing::debug!(size = meta.size, "stored");
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta)),
            size: Some(size_i64(meta.size)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let object = self.store.open_object(&input.bucket, &input.key).await?;
        let range = resolve_range(input.range.as_ref(), object.meta.size)?;
        let len = range.end - range.start;
        let (meta, body) = object.read(range.clone()).await?;
        let content_range = input.range.map(|_| {
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                meta.size
            )
        });
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(size_i64(len)),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta)),
            last_modified: Some(timestamp(meta.last_modified)),
            content_type: meta.content_type.as_deref().and_then(|c| c.parse().ok()),
            metadata: Some(meta.metadata),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let meta = self
            .store
            .head_object(&req.input.bucket, &req.input.key)
            .await?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size_i64(meta.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta)),
            last_modified: Some(timestamp(meta.last_modified)),
            content_type: meta.content_type.as_deref().and_then(|c| c.parse().ok()),
            metadata: Some(meta.metadata),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.store
            .delete_object(&req.input.bucket, &req.input.key)
            .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, keys = req.input.delete.objects.len()))]
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let DeleteObjectsInput { bucket, delete, .. } = req.input;
        if delete.objects.is_empty() || delete.objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "a delete names 1 to {MAX_DELETE_KEYS} keys"
            ));
        }
        let quiet = delete.quiet.unwrap_or(false);
        let keys: Vec<String> = delete.objects.into_iter().map(|o| o.key).collect();
        let answers = self.store.delete_objects(&bucket, &keys).await?;
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for (key, answer) in keys.into_iter().zip(answers) {
            match answer {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(key),
                    ..Default::default()
                }),
                Err(e) => {
                    let e = S3Error::from(e);
                    errors.push(s3s::dto::Error {
                        code: Some(e.code().as_str().to_owned()),
                        message: e.message().map(str::to_owned),
                        key: Some(key),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = input
            .max_keys
            .unwrap_or(MAX_LIST_KEYS)
            .clamp(0, MAX_LIST_KEYS);
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut skip = match &input.continuation_token {
            Some(t) => Some(decode_token(t).ok_or_else(|| {
                S3Error::with_message(S3ErrorCode::InvalidArgument, "invalid continuation token")
            })?),
            None => input.start_after.clone(),
        };
        let keys = self
            .store
            .list_keys(&input.bucket, &prefix, skip.as_deref())
            .await?;
        let mut listing = Listing::new(
            &prefix,
            input.delimiter.as_deref(),
            usize::try_from(max_keys).unwrap_or(0),
        );
        for key in keys {
            if skip.as_deref().is_some_and(|s| key.as_str() <= s) {
                continue;
            }
            match listing.offer(key, ()) {
                Step::Next => {}
                Step::SkipPast(cursor) => skip = Some(cursor),
                Step::Done => break,
            }
        }
        // Only the page's objects have their metadata read.
        let keys: Vec<String> = listing
            .objects
            .iter()
            .map(|(key, ())| key.clone())
            .collect();
        let metas = self.store.object_metas(&input.bucket, &keys).await?;
        let mut contents: Vec<Object> = Vec::with_capacity(keys.len());
        // A key without metadata was deleted while we listed.
        for (key, meta) in keys.into_iter().zip(metas) {
            let Some(meta) = meta else { continue };
            contents.push(Object {
                key: Some(key),
                size: Some(size_i64(meta.size)),
                e_tag: Some(etag(&meta)),
                last_modified: Some(timestamp(meta.last_modified)),
                ..Default::default()
            });
        }
        let common_prefixes: Vec<CommonPrefix> = listing
            .prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(p.clone()),
            })
            .collect();
        let key_count = i32::try_from(contents.len() + common_prefixes.len()).unwrap_or(i32::MAX);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(listing.truncated),
            next_continuation_token: listing.next_cursor().map(encode_token),
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            start_after: input.start_after,
            request_charged: None,
        }))
    }
}
