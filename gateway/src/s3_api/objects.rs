//! Object operations: PUT, GET, HEAD, copy and delete.

use std::sync::Arc;

use s3s::dto::{
    Checksum, GetObjectAttributesInput, GetObjectAttributesOutput, GetObjectAttributesParts,
    GetObjectTaggingOutput, ObjectAttributes, ObjectPart, StorageClass, TaggingDirective,
};
use s3s::dto::{
    ChecksumMode, CopyObjectInput, CopyObjectOutput, CopyObjectResult, CopySource,
    DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject, ETag,
    ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    MetadataDirective, PutObjectInput, PutObjectOutput, StreamingBlob,
};

use s3s::TrailingHeaders;
use tenfold_common::MAX_DELETE_KEYS;
use tenfold_common::http_server::BodyWatch;

use super::convert::{
    body_checks, body_stream, check_key, check_metadata, check_tags, checksum_expectation, etag,
    headers, parse_tagging, part_number, size_i64, tag_count, tag_set, timestamp_ms,
    with_checksums,
};
use crate::error::GatewayError;
use crate::index::{ObjectRow, Tags, WriteCondition};
use crate::integrity::Checksums;
use crate::object_store::ObjectStore;
use crate::preconditions::Conditions;
use crate::upload::{BodyChecks, PutRequest};

/// Keys of a DeleteObjects deleted in one index transaction: one commit
/// (one flush) for them all, while the index's write lock is held a few
/// milliseconds at most.
const DELETE_KEYS_PER_TRANSACTION: usize = 100;

pub(super) async fn existing(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<ObjectRow, GatewayError> {
    match store.index.get_object(bucket, key).await? {
        Some(row) => Ok(row),
        None => Err(missing(store, bucket, key).await),
    }
}

/// Why there is no object at `bucket`/`key`: `NoSuchBucket` or
/// `NoSuchKey` (or the index's error).
async fn missing(store: &ObjectStore, bucket: &str, key: &str) -> GatewayError {
    match store.index.require_bucket(bucket).await {
        Ok(()) => GatewayError::NoSuchKey(key.to_owned()),
        Err(e) => e,
    }
}

pub async fn put(
    store: &Arc<ObjectStore>,
    mut input: PutObjectInput,
    trailers: Option<TrailingHeaders>,
    watch: BodyWatch,
) -> Result<PutObjectOutput, GatewayError> {
    check_key(&input.key)?;
    if let Some(metadata) = &input.metadata {
        check_metadata(metadata)?;
    }
    let condition = write_condition(input.if_match.take(), input.if_none_match.take())?;
    let tags = parse_tagging(input.tagging.as_deref())?;
    check_before_body(store, &input.bucket, &input.key, &condition).await?;
    let put = PutRequest {
        bucket: input.bucket,
        key: input.key,
        content_type: input.content_type.map(|c| c.to_string()),
        metadata: input.metadata.unwrap_or_default(),
        headers: headers(
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
        ),
        checks: body_checks(
            input.content_length,
            input.content_md5.as_deref(),
            checksum_expectation!(input, trailers),
        )?,
        condition,
        tags,
    };
    let row = store
        .put_object(put, body_stream(input.body, watch))
        .await?;
    Ok(with_checksums!(
        row.checksums,
        PutObjectOutput {
            e_tag: Some(ETag::Strong(row.etag)),
            size: Some(size_i64(row.size)),
        }
    ))
}

/// The condition of a conditional write: `If-None-Match: *` (only
/// `*` is allowed there, as in S3), or `If-Match: ETAG` / `*`.
///
/// # Errors
/// [`GatewayError::NotImplemented`] for `If-None-Match: ETAG`,
/// [`GatewayError::InvalidRequest`] for both headers at once.
pub(super) fn write_condition(
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
) -> Result<WriteCondition, GatewayError> {
    match (if_match, if_none_match) {
        (None, None) => Ok(WriteCondition::Always),
        (None, Some(ETagCondition::Any)) => Ok(WriteCondition::IfAbsent),
        (None, Some(ETagCondition::ETag(_))) => Err(GatewayError::NotImplemented(
            "If-None-Match on a write takes only *".into(),
        )),
        (Some(ETagCondition::Any), None) => Ok(WriteCondition::IfPresent),
        (Some(ETagCondition::ETag(etag)), None) => {
            Ok(WriteCondition::IfMatch(etag.value().to_owned()))
        }
        (Some(_), Some(_)) => Err(GatewayError::InvalidRequest(
            "If-Match and If-None-Match cannot both be given on a write".into(),
        )),
    }
}

/// Refuses a conditional write that cannot succeed before its body is
/// read (the commit checks again, in its transaction).
pub(super) async fn check_before_body(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
    condition: &WriteCondition,
) -> Result<(), GatewayError> {
    if *condition == WriteCondition::Always {
        return Ok(());
    }
    let current = store.index.get_object(bucket, key).await?;
    condition.check(key, current.as_ref().map(|o| o.etag.as_str()))
}

/// The byte range a GET or HEAD asks for: a `Range`, a `partNumber`, or all.
async fn requested_range(
    store: &ObjectStore,
    row: &ObjectRow,
    range: Option<&s3s::dto::Range>,
    part: Option<i32>,
) -> Result<(std::ops::Range<u64>, bool), GatewayError> {
    match (range, part) {
        (Some(_), Some(_)) => Err(GatewayError::InvalidRequest(
            "Range and partNumber cannot both be given".into(),
        )),
        (Some(r), None) => r
            .check(row.size)
            .map(|r| (r, true))
            .map_err(|_| GatewayError::InvalidRange),
        (None, Some(n)) => {
            let n = part_number(n)?;
            let (offset, size) = if row.parts_count.is_some() {
                store
                    .index
                    .part_range(&row.id, n)
                    .await?
                    .ok_or(GatewayError::InvalidPartNumber)?
            } else if n == 1 {
                // A single PUT is its own part 1.
                (0, row.size)
            } else {
                return Err(GatewayError::InvalidPartNumber);
            };
            Ok((offset..offset + size, row.parts_count.is_some()))
        }
        (None, None) => Ok((0..row.size, false)),
    }
}

/// What a GET or HEAD answers about an object, once its conditions held.
struct ReadView {
    row: ObjectRow,
    range: std::ops::Range<u64>,
    content_range: Option<String>,
    parts_count: Option<i32>,
    /// The stored checksums, when asked for and the whole object is read
    /// (a checksum is of the whole object: a range or part gets none, as in
    /// S3).
    checksums: Checksums,
}

impl ReadView {
    async fn new(
        store: &ObjectStore,
        bucket: &str,
        key: &str,
        conditions: Conditions,
        range: Option<&s3s::dto::Range>,
        part: Option<i32>,
        checksum_mode: Option<&ChecksumMode>,
    ) -> Result<Self, GatewayError> {
        let row = existing(store, bucket, key).await?;
        Self::of(store, row, conditions, range, part, checksum_mode).await
    }

    /// The view of `row`, once its conditions held.
    async fn of(
        store: &ObjectStore,
        row: ObjectRow,
        conditions: Conditions,
        range: Option<&s3s::dto::Range>,
        part: Option<i32>,
        checksum_mode: Option<&ChecksumMode>,
    ) -> Result<Self, GatewayError> {
        conditions.check(&row.etag, row.last_modified)?;
        let (range, partial) = requested_range(store, &row, range, part).await?;
        let content_range = partial.then(|| {
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                row.size
            )
        });
        let wants_checksums = checksum_mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        Ok(Self {
            parts_count: part
                .and(row.parts_count)
                .and_then(|n| i32::try_from(n).ok()),
            checksums: if wants_checksums && !partial {
                row.checksums.clone()
            } else {
                Checksums::default()
            },
            content_range,
            range,
            row,
        })
    }

    fn content_length(&self) -> Option<i64> {
        Some(size_i64(self.range.end - self.range.start))
    }

    fn content_type(&self) -> Option<s3s::dto::ContentType> {
        self.row
            .content_type
            .as_deref()
            .and_then(|c| c.parse().ok())
    }

    fn expires(&self) -> Option<s3s::dto::Timestamp> {
        self.row.headers.expires.map(timestamp_ms)
    }
}

pub async fn get(
    store: &Arc<ObjectStore>,
    input: GetObjectInput,
) -> Result<GetObjectOutput, GatewayError> {
    let conditions = Conditions {
        if_match: input.if_match,
        if_none_match: input.if_none_match,
        if_modified_since: input.if_modified_since,
        if_unmodified_since: input.if_unmodified_since,
    };
    let (row, segment) = match store
        .index
        .get_object_with_segment(&input.bucket, &input.key)
        .await?
    {
        Some(found) => found,
        None => return Err(missing(store, &input.bucket, &input.key).await),
    };
    let view = ReadView::of(
        store,
        row,
        conditions,
        input.range.as_ref(),
        input.part_number,
        input.checksum_mode.as_ref(),
    )
    .await?;
    // An object in one segment came with it; any range of it is in it.
    let segments = match segment {
        Some(segment) => vec![segment],
        None => store.index.layout(&view.row.id, view.range.clone()).await?,
    };
    let body = store.object_stream(segments, view.range.clone());
    let (content_length, content_type, expires) =
        (view.content_length(), view.content_type(), view.expires());
    let ReadView {
        row,
        content_range,
        parts_count,
        checksums,
        ..
    } = view;
    let h = row.headers;
    let checksum_type = checksums.checksum_type(row.parts_count.is_some());
    Ok(with_checksums!(
        checksums,
        GetObjectOutput {
            // s3s wants a `Sync` body; the stream is only ever polled by one task.
            body: Some(StreamingBlob::wrap(sync_wrapper::SyncStream::new(body))),
            content_length,
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(row.etag)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            content_type: input.response_content_type.or(content_type),
            metadata: Some(row.metadata),
            cache_control: input.response_cache_control.or(h.cache_control),
            content_disposition: input.response_content_disposition.or(h.content_disposition),
            content_encoding: input.response_content_encoding.or(h.content_encoding),
            content_language: input.response_content_language.or(h.content_language),
            expires: input.response_expires.or(expires),
            checksum_type,
            parts_count,
            tag_count: tag_count(&row.tags),
        }
    ))
}

pub async fn head(
    store: &ObjectStore,
    input: HeadObjectInput,
) -> Result<HeadObjectOutput, GatewayError> {
    let conditions = Conditions {
        if_match: input.if_match,
        if_none_match: input.if_none_match,
        if_modified_since: input.if_modified_since,
        if_unmodified_since: input.if_unmodified_since,
    };
    let view = ReadView::new(
        store,
        &input.bucket,
        &input.key,
        conditions,
        input.range.as_ref(),
        input.part_number,
        input.checksum_mode.as_ref(),
    )
    .await?;
    let (content_length, content_type, expires) =
        (view.content_length(), view.content_type(), view.expires());
    let ReadView {
        row,
        content_range,
        parts_count,
        checksums,
        ..
    } = view;
    let h = row.headers;
    let checksum_type = checksums.checksum_type(row.parts_count.is_some());
    Ok(with_checksums!(
        checksums,
        HeadObjectOutput {
            content_length,
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(row.etag)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            content_type,
            metadata: Some(row.metadata),
            cache_control: h.cache_control,
            content_disposition: h.content_disposition,
            content_encoding: h.content_encoding,
            content_language: h.content_language,
            expires,
            checksum_type,
            parts_count,
        }
    ))
}

/// What GetObjectAttributes asks of an object: its ETag, checksum, parts
/// (a page of them, from `part_number_marker`), storage class and size.
pub async fn attributes(
    store: &ObjectStore,
    input: GetObjectAttributesInput,
) -> Result<GetObjectAttributesOutput, GatewayError> {
    let row = existing(store, &input.bucket, &input.key).await?;
    // One header, `x-amz-object-attributes: ETag,ObjectSize`, may carry them all.
    let wants = |name: &str| {
        input
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .any(|a| a.trim() == name)
    };
    let mut out = GetObjectAttributesOutput {
        last_modified: Some(timestamp_ms(row.last_modified)),
        ..Default::default()
    };
    if wants(ObjectAttributes::ETAG) {
        out.e_tag = Some(ETag::Strong(row.etag.clone()));
    }
    if wants(ObjectAttributes::OBJECT_SIZE) {
        out.object_size = Some(size_i64(row.size));
    }
    if wants(ObjectAttributes::STORAGE_CLASS) {
        out.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
    }
    if wants(ObjectAttributes::CHECKSUM)
        && let Some(kind) = row.checksums.checksum_type(row.parts_count.is_some())
    {
        let c = &row.checksums;
        out.checksum = Some(Checksum {
            checksum_crc32: c.crc32.clone(),
            checksum_crc32c: c.crc32c.clone(),
            checksum_crc64nvme: c.crc64nvme.clone(),
            checksum_sha1: c.sha1.clone(),
            checksum_sha256: c.sha256.clone(),
            checksum_type: Some(kind),
        });
    }
    if wants(ObjectAttributes::OBJECT_PARTS)
        && let Some(total) = row.parts_count
    {
        let marker = input
            .part_number_marker
            .map(|m| u32::try_from(m).unwrap_or(0))
            .unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000);
        let mut parts = store
            .index
            .object_parts(&row.id, marker, i64::from(max) + 1)
            .await?;
        let truncated = parts.len() > usize::try_from(max).unwrap_or(1000);
        parts.truncate(usize::try_from(max).unwrap_or(1000));
        out.object_parts = Some(GetObjectAttributesParts {
            is_truncated: Some(truncated),
            max_parts: Some(max),
            next_part_number_marker: parts
                .last()
                .filter(|_| truncated)
                .map(|(n, _, _)| i32::try_from(*n).unwrap_or(i32::MAX)),
            part_number_marker: Some(i32::try_from(marker).unwrap_or(0)),
            parts: Some(
                parts
                    .into_iter()
                    .map(|(n, size, c)| ObjectPart {
                        part_number: Some(i32::try_from(n).unwrap_or(i32::MAX)),
                        size: Some(size_i64(size)),
                        checksum_crc32: c.crc32,
                        checksum_crc32c: c.crc32c,
                        checksum_crc64nvme: c.crc64nvme,
                        checksum_sha1: c.sha1,
                        checksum_sha256: c.sha256,
                    })
                    .collect(),
            ),
            total_parts_count: Some(i32::try_from(total).unwrap_or(i32::MAX)),
        });
    }
    Ok(out)
}

/// Replaces an object's tags (PutObjectTagging; DeleteObjectTagging with
/// none).
pub async fn put_tagging(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
    tags: &Tags,
) -> Result<(), GatewayError> {
    check_tags(tags)?;
    if store.index.set_tags(bucket, key, tags).await? {
        Ok(())
    } else {
        existing(store, bucket, key).await.map(drop)
    }
}

/// An object's tags (GetObjectTagging).
pub async fn tagging(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<GetObjectTaggingOutput, GatewayError> {
    let row = existing(store, bucket, key).await?;
    Ok(GetObjectTaggingOutput {
        tag_set: tag_set(&row.tags),
        version_id: None,
    })
}

pub async fn copy(
    store: &Arc<ObjectStore>,
    input: CopyObjectInput,
) -> Result<CopyObjectOutput, GatewayError> {
    let CopySource::Bucket {
        bucket: src_bucket,
        key: src_key,
        ..
    } = &input.copy_source
    else {
        return Err(GatewayError::NotImplemented(
            "access point copy sources".into(),
        ));
    };
    check_key(&input.key)?;
    let source = existing(store, src_bucket, src_key).await?;
    Conditions {
        if_match: input.copy_source_if_match,
        if_none_match: input.copy_source_if_none_match,
        if_modified_since: input.copy_source_if_modified_since,
        if_unmodified_since: input.copy_source_if_unmodified_since,
    }
    .check_copy_source(&source.etag, source.last_modified)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if !replace && **src_bucket == *input.bucket && **src_key == *input.key {
        return Err(GatewayError::InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
        ));
    }
    if replace && let Some(metadata) = &input.metadata {
        check_metadata(metadata)?;
    }
    let (content_type, metadata, object_headers) = if replace {
        (
            input.content_type.map(|c| c.to_string()),
            input.metadata.unwrap_or_default(),
            headers(
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires,
            ),
        )
    } else {
        (
            source.content_type.clone(),
            source.metadata.clone(),
            source.headers.clone(),
        )
    };
    let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
        Some(TaggingDirective::REPLACE) => parse_tagging(input.tagging.as_deref())?,
        _ => source.tags.clone(),
    };
    let body = store.source_body(&source, 0..source.size).await?;
    let put = PutRequest {
        bucket: input.bucket,
        key: input.key,
        content_type,
        metadata,
        headers: object_headers,
        checks: BodyChecks {
            content_length: Some(source.size),
            ..Default::default()
        },
        condition: WriteCondition::Always,
        tags,
    };
    let row = store.put_object(put, body).await?;
    Ok(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&row)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Deletes one object; a missing key succeeds, as in S3.
pub async fn delete(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<DeleteObjectOutput, GatewayError> {
    store.index.require_bucket(bucket).await?;
    if store.index.delete_object(bucket, key).await? {
        store.garbage_released();
    }
    Ok(DeleteObjectOutput::default())
}

pub async fn delete_many(
    store: &ObjectStore,
    input: DeleteObjectsInput,
) -> Result<DeleteObjectsOutput, GatewayError> {
    store.index.require_bucket(&input.bucket).await?;
    let objects = input.delete.objects;
    if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
        return Err(GatewayError::MalformedXml(format!(
            "a delete names 1 to {MAX_DELETE_KEYS} keys"
        )));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for chunk in objects.chunks(DELETE_KEYS_PER_TRANSACTION) {
        let keys: Vec<&str> = chunk.iter().map(|o| o.key.as_str()).collect();
        // A chunk whose transaction fails is deleted key by key, so that
        // each key gets its own answer.
        let answers = match store.index.delete_objects(&input.bucket, &keys).await {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::warn!(error = %e, keys = keys.len(), "DeleteObjects chunk failed: deleting key by key");
                let mut answers = Vec::with_capacity(keys.len());
                for key in &keys {
                    answers.push(store.index.delete_object(&input.bucket, key).await);
                }
                answers
            }
        };
        for (key, answer) in keys.into_iter().zip(answers) {
            match answer {
                Ok(_) if quiet => {}
                Ok(_) => deleted.push(DeletedObject {
                    key: Some(key.to_owned()),
                    ..Default::default()
                }),
                Err(e) => errors.push(s3s::dto::Error {
                    code: Some("InternalError".into()),
                    message: Some(e.to_string()),
                    key: Some(key.to_owned()),
                    version_id: None,
                }),
            }
        }
    }
    store.garbage_released();
    Ok(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        request_charged: None,
    })
}
