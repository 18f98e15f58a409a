//! The gateway's S3 API, served by `s3s`: buckets and objects backed by the
//! index and the fragment pipeline.

use std::sync::Arc;

use futures::StreamExt;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, Bucket, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, ETag, GetBucketLocationInput,
    GetBucketLocationOutput, GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput,
    HeadObjectInput, HeadObjectOutput, ListBucketsInput, ListBucketsOutput,
    ListMultipartUploadsInput, ListMultipartUploadsOutput, ListObjectsV2Input, ListObjectsV2Output,
    ListPartsInput, ListPartsOutput, MultipartUpload, Object, Part, PutObjectInput,
    PutObjectOutput, StreamingBlob, Timestamp, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result};
use tenfold_node::listing::{Listing, Step, decode_token, encode_token};

use crate::error::GatewayError;
use crate::index::ObjectRow;
use crate::index::UploadRow;
use crate::object_store::ObjectStore;
use crate::upload::{BodyChecks, BodyStream, PutRequest};

/// Largest page a list answers, as in S3.
const MAX_LIST_KEYS: i32 = 1000;

/// The S3 front end of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayS3 {
    store: Arc<ObjectStore>,
}

impl GatewayS3 {
    /// Serves `store` over S3.
    pub fn new(store: Arc<ObjectStore>) -> Self {
        Self { store }
    }
}

fn timestamp_ms(ms: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .into()
}

fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode_content_md5(b64: &str) -> Result<[u8; 16], GatewayError> {
    let bytes = base64_simd::STANDARD
        .decode_to_vec(b64)
        .map_err(|_| GatewayError::InvalidDigest)?;
    bytes.try_into().map_err(|_| GatewayError::InvalidDigest)
}

fn body_checks(
    content_length: Option<i64>,
    content_md5: Option<&str>,
) -> Result<BodyChecks, GatewayError> {
    Ok(BodyChecks {
        content_length: content_length.and_then(|n| u64::try_from(n).ok()),
        content_md5: content_md5.map(decode_content_md5).transpose()?,
    })
}

fn body_stream(blob: Option<StreamingBlob>) -> BodyStream {
    match blob {
        Some(blob) => Box::pin(blob.map(|r| r.map_err(|e| e.to_string()))),
        None => Box::pin(futures::stream::empty()),
    }
}

/// Largest part number S3 accepts.
const MAX_PART_NUMBER: i32 = 10_000;

fn part_number(n: i32) -> Result<u32, GatewayError> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(u32::try_from(n).unwrap_or(1))
    } else {
        Err(GatewayError::InvalidArgument(format!(
            "part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )))
    }
}

async fn existing_object(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<ObjectRow, GatewayError> {
    match store.index.get_object(bucket, key).await? {
        Some(row) => Ok(row),
        None => {
            store.index.require_bucket(bucket).await?;
            Err(GatewayError::NoSuchKey(key.to_owned()))
        }
    }
}

#[async_trait::async_trait]
impl S3 for GatewayS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .store
            .index
            .list_buckets()
            .await?
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp_ms(created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if !self.store.index.create_bucket(&bucket).await? {
            return Err(GatewayError::BucketExists(bucket).into());
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.store.index.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.store.index.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store.index.delete_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let put = PutRequest {
            bucket: input.bucket,
            key: input.key,
            content_type: input.content_type.map(|c| c.to_string()),
            metadata: input.metadata.unwrap_or_default(),
            checks: body_checks(input.content_length, input.content_md5.as_deref())?,
        };
        let row = self.store.put_object(put, body_stream(input.body)).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(row.etag)),
            size: Some(size_i64(row.size)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let row = existing_object(&self.store, &input.bucket, &input.key).await?;
        let range = match &input.range {
            None => 0..row.size,
            Some(r) => r.check(row.size).map_err(|_| GatewayError::InvalidRange)?,
        };
        let segments = self.store.index.layout(&row.id).await?;
        let content_range = input.range.map(|_| {
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                row.size
            )
        });
        let length = range.end - range.start;
        let body = self.store.object_stream(segments, range);
        Ok(S3Response::new(GetObjectOutput {
            // s3s wants a `Sync` body; the stream is only ever polled by one task.
            body: Some(StreamingBlob::wrap(sync_wrapper::SyncStream::new(body))),
            content_length: Some(size_i64(length)),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(row.etag)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            content_type: row.content_type.as_deref().and_then(|c| c.parse().ok()),
            metadata: Some(row.metadata),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let row = existing_object(&self.store, &req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size_i64(row.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(row.etag)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            content_type: row.content_type.as_deref().and_then(|c| c.parse().ok()),
            metadata: Some(row.metadata),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.store.index.require_bucket(&input.bucket).await?;
        // Deleting a missing key succeeds, as in S3.
        if self
            .store
            .index
            .delete_object(&input.bucket, &input.key)
            .await?
        {
            self.store.garbage_ready.notify_one();
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.store.index.require_bucket(&input.bucket).await?;
        let max_keys = input
            .max_keys
            .unwrap_or(MAX_LIST_KEYS)
            .clamp(0, MAX_LIST_KEYS);
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut cursor = match &input.continuation_token {
            Some(t) => decode_token(t).ok_or_else(|| {
                GatewayError::InvalidArgument("the continuation token is not valid".into())
            })?,
            None => input.start_after.clone().unwrap_or_default(),
        };
        let mut listing = Listing::new(
            &prefix,
            input.delimiter.as_deref(),
            usize::try_from(max_keys).unwrap_or(0),
        );
        'pages: loop {
            let rows = self
                .store
                .index
                .list_objects(
                    &input.bucket,
                    &prefix,
                    &cursor,
                    i64::from(MAX_LIST_KEYS) + 1,
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let key = row.key.clone();
                match listing.offer(key.clone(), row) {
                    Step::Next => cursor = key,
                    Step::SkipPast(next) => {
                        cursor = next;
                        continue 'pages;
                    }
                    Step::Done => break 'pages,
                }
            }
        }
        let contents: Vec<Object> = listing
            .objects
            .iter()
            .map(|(key, row)| Object {
                key: Some(key.clone()),
                size: Some(size_i64(row.size)),
                e_tag: Some(ETag::Strong(row.etag.clone())),
                last_modified: Some(timestamp_ms(row.last_modified)),
                ..Default::default()
            })
            .collect();
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

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let upload = UploadRow {
            id: crate::object_store::new_object_id(),
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_type: input.content_type.map(|c| c.to_string()),
            metadata: input.metadata.unwrap_or_default(),
            created_at: crate::index::now_ms(),
        };
        self.store.index.create_upload(&upload).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key, part = req.input.part_number))]
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let number = part_number(input.part_number)?;
        let upload = self
            .store
            .index
            .get_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let checks = body_checks(input.content_length, input.content_md5.as_deref())?;
        let etag = self
            .store
            .upload_part(upload, number, checks, body_stream(input.body))
            .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self
            .store
            .index
            .get_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let mut chosen = Vec::new();
        for part in input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
        {
            let number = part_number(part.part_number.unwrap_or(0))?;
            let etag = part.e_tag.map(ETag::into_value).unwrap_or_default();
            chosen.push((number, etag));
        }
        let object = self.store.index.complete_upload(&upload, &chosen).await?;
        self.store.garbage_ready.notify_one();
        tracing::info!(object = %object.id, size = object.size, parts = chosen.len(), "multipart object stored");
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(object.bucket),
            key: Some(object.key),
            e_tag: Some(ETag::Strong(object.etag)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let upload = self
            .store
            .index
            .get_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        self.store.index.abort_upload(&upload.id).await?;
        self.store.garbage_ready.notify_one();
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self
            .store
            .index
            .get_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let max_parts = input
            .max_parts
            .unwrap_or(MAX_LIST_KEYS)
            .clamp(0, MAX_LIST_KEYS);
        let after = input
            .part_number_marker
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(0);
        let mut parts = self
            .store
            .index
            .list_parts(&upload.id, after, i64::from(max_parts) + 1)
            .await?;
        let truncated = parts.len() > usize::try_from(max_parts).unwrap_or(0);
        parts.truncate(usize::try_from(max_parts).unwrap_or(0));
        let next = parts
            .last()
            .filter(|_| truncated)
            .and_then(|p| i32::try_from(p.part_number).ok());
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.id),
            max_parts: Some(max_parts),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| Part {
                        part_number: i32::try_from(p.part_number).ok(),
                        size: Some(size_i64(p.size)),
                        e_tag: Some(ETag::Strong(p.etag)),
                        last_modified: Some(timestamp_ms(p.last_modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.store.index.require_bucket(&input.bucket).await?;
        let max = input
            .max_uploads
            .unwrap_or(MAX_LIST_KEYS)
            .clamp(0, MAX_LIST_KEYS);
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads = self
            .store
            .index
            .list_uploads(
                &input.bucket,
                &prefix,
                input.key_marker.as_deref().unwrap_or_default(),
                input.upload_id_marker.as_deref().unwrap_or_default(),
                i64::from(max) + 1,
            )
            .await?;
        let truncated = uploads.len() > usize::try_from(max).unwrap_or(0);
        uploads.truncate(usize::try_from(max).unwrap_or(0));
        let last = uploads.last().filter(|_| truncated).cloned();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().map(|u| u.key.clone()),
            next_upload_id_marker: last.map(|u| u.id),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(timestamp_ms(u.created_at)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}
