//! Object operations: PUT, GET, HEAD, copy and delete.

use std::sync::Arc;

use s3s::dto::{
    ChecksumMode, CopyObjectInput, CopyObjectOutput, CopyObjectResult, CopySource,
    DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject, ETag,
    ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    MetadataDirective, PutObjectInput, PutObjectOutput, StreamingBlob,
};

use s3s::TrailingHeaders;

use super::convert::{
    body_checks, body_stream, check_key, checksum_expectation, etag, headers, part_number,
    size_i64, timestamp_ms,
};
use crate::error::GatewayError;
use crate::index::ObjectRow;
use crate::object_store::ObjectStore;
use crate::preconditions::Conditions;
use crate::upload::{BodyChecks, PutRequest};

/// Most keys one DeleteObjects may name, as in S3.
const MAX_DELETE_KEYS: usize = 1000;

pub(super) async fn existing(
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

pub async fn put(
    store: &Arc<ObjectStore>,
    mut input: PutObjectInput,
    trailers: Option<TrailingHeaders>,
) -> Result<PutObjectOutput, GatewayError> {
    check_key(&input.key)?;
    let if_absent = match input.if_none_match {
        None => false,
        Some(ETagCondition::Any) => true,
        Some(ETagCondition::ETag(_)) => {
            return Err(GatewayError::NotImplemented(
                "If-None-Match on PUT takes only *".into(),
            ));
        }
    };
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
        if_absent,
    };
    let row = store.put_object(put, body_stream(input.body)).await?;
    let c = row.checksums;
    Ok(PutObjectOutput {
        e_tag: Some(ETag::Strong(row.etag)),
        size: Some(size_i64(row.size)),
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_crc64nvme: c.crc64nvme,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        ..Default::default()
    })
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
            let (offset, size) = store
                .index
                .part_range(&row.id, n)
                .await?
                .ok_or(GatewayError::InvalidPartNumber)?;
            Ok((offset..offset + size, row.parts_count.is_some()))
        }
        (None, None) => Ok((0..row.size, false)),
    }
}

/// Fills the fields GetObjectOutput and HeadObjectOutput share.
macro_rules! object_fields {
    ($row:expr, $range:expr, $partial:expr, $part:expr) => {{
        let row = $row;
        let range = $range;
        let expires = row.headers.expires.map(timestamp_ms);
        (
            Some(size_i64(range.end - range.start)),
            $partial.then(|| {
                format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end.saturating_sub(1),
                    row.size
                )
            }),
            Some(etag(&row)),
            Some(timestamp_ms(row.last_modified)),
            row.content_type.as_deref().and_then(|c| c.parse().ok()),
            Some(row.metadata.clone()),
            row.headers.clone(),
            expires,
            $part
                .and(row.parts_count)
                .and_then(|n| i32::try_from(n).ok()),
        )
    }};
}

pub async fn get(
    store: &Arc<ObjectStore>,
    input: GetObjectInput,
) -> Result<GetObjectOutput, GatewayError> {
    let row = existing(store, &input.bucket, &input.key).await?;
    Conditions {
        if_match: input.if_match,
        if_none_match: input.if_none_match,
        if_modified_since: input.if_modified_since,
        if_unmodified_since: input.if_unmodified_since,
    }
    .check(&row.etag, row.last_modified)?;
    let (range, partial) =
        requested_range(store, &row, input.range.as_ref(), input.part_number).await?;
    let segments = store.index.layout(&row.id).await?;
    let (
        content_length,
        content_range,
        e_tag,
        last_modified,
        content_type,
        metadata,
        h,
        expires,
        parts_count,
    ) = object_fields!(&row, &range, partial, input.part_number);
    let body = store.object_stream(segments, range);
    let mut out = GetObjectOutput {
        // s3s wants a `Sync` body; the stream is only ever polled by one task.
        body: Some(StreamingBlob::wrap(sync_wrapper::SyncStream::new(body))),
        content_length,
        content_range,
        accept_ranges: Some("bytes".into()),
        e_tag,
        last_modified,
        content_type: input.response_content_type.or(content_type),
        metadata,
        cache_control: input.response_cache_control.or(h.cache_control),
        content_disposition: input.response_content_disposition.or(h.content_disposition),
        content_encoding: input.response_content_encoding.or(h.content_encoding),
        content_language: input.response_content_language.or(h.content_language),
        expires: input.response_expires.or(expires),
        parts_count,
        ..Default::default()
    };
    // Checksums are of the whole object: a range or a part gets none, as in S3.
    if !partial
        && input
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
    {
        let c = row.checksums.clone();
        out.checksum_crc32 = c.crc32;
        out.checksum_crc32c = c.crc32c;
        out.checksum_crc64nvme = c.crc64nvme;
        out.checksum_sha1 = c.sha1;
        out.checksum_sha256 = c.sha256;
    }
    Ok(out)
}

pub async fn head(
    store: &ObjectStore,
    input: HeadObjectInput,
) -> Result<HeadObjectOutput, GatewayError> {
    let row = existing(store, &input.bucket, &input.key).await?;
    Conditions {
        if_match: input.if_match,
        if_none_match: input.if_none_match,
        if_modified_since: input.if_modified_since,
        if_unmodified_since: input.if_unmodified_since,
    }
    .check(&row.etag, row.last_modified)?;
    let (range, partial) =
        requested_range(store, &row, input.range.as_ref(), input.part_number).await?;
    let (
        content_length,
        content_range,
        e_tag,
        last_modified,
        content_type,
        metadata,
        h,
        expires,
        parts_count,
    ) = object_fields!(&row, &range, partial, input.part_number);
    let mut out = HeadObjectOutput {
        content_length,
        content_range,
        accept_ranges: Some("bytes".into()),
        e_tag,
        last_modified,
        content_type,
        metadata,
        cache_control: h.cache_control,
        content_disposition: h.content_disposition,
        content_encoding: h.content_encoding,
        content_language: h.content_language,
        expires,
        parts_count,
        ..Default::default()
    };
    // Checksums are of the whole object: a range or a part gets none, as in S3.
    if !partial
        && input
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
    {
        let c = row.checksums.clone();
        out.checksum_crc32 = c.crc32;
        out.checksum_crc32c = c.crc32c;
        out.checksum_crc64nvme = c.crc64nvme;
        out.checksum_sha1 = c.sha1;
        out.checksum_sha256 = c.sha256;
    }
    Ok(out)
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
        if_absent: false,
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
        store.garbage_ready.notify_one();
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
    for object in objects {
        match store.index.delete_object(&input.bucket, &object.key).await {
            Ok(_) if quiet => {}
            Ok(_) => deleted.push(DeletedObject {
                key: Some(object.key),
                ..Default::default()
            }),
            Err(e) => errors.push(s3s::dto::Error {
                code: Some("InternalError".into()),
                message: Some(e.to_string()),
                key: Some(object.key),
                version_id: None,
            }),
        }
    }
    store.garbage_ready.notify_one();
    Ok(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        request_charged: None,
    })
}
