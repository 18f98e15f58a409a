//! Multipart uploads: parts are stored as they arrive; completion makes the
//! chosen parts one object.

use std::sync::Arc;

use md5::{Digest, Md5};

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, ChecksumType,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CreateMultipartUploadInput,
    CreateMultipartUploadOutput, ETag, ListMultipartUploadsInput, ListMultipartUploadsOutput,
    ListPartsInput, ListPartsOutput, MultipartUpload, Part, UploadPartInput, UploadPartOutput,
};

use s3s::TrailingHeaders;
use s3s::dto::{CopyPartResult, CopySource, Range, UploadPartCopyInput, UploadPartCopyOutput};
use tenfold_common::http_server::BodyWatch;

use super::objects::{existing, write_condition};
use crate::preconditions::Conditions;
use crate::upload::BodyChecks;

use super::convert::{
    MAX_LIST_KEYS, body_checks, body_stream, check_key, check_metadata, checksum_expectation,
    headers, parse_tagging, part_number, size_i64, timestamp_ms, with_checksums,
};
use crate::error::GatewayError;
use crate::index::{Assembly, ObjectRow, StoredPart, UploadRow, now_ms};
use crate::integrity::Checksums;
use crate::object_store::{ObjectStore, new_object_id};

pub async fn create(
    store: &ObjectStore,
    input: CreateMultipartUploadInput,
) -> Result<CreateMultipartUploadOutput, GatewayError> {
    check_key(&input.key)?;
    if let Some(metadata) = &input.metadata {
        check_metadata(metadata)?;
    }
    let upload = UploadRow {
        id: new_object_id(),
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        content_type: input.content_type.map(|c| c.to_string()),
        metadata: input.metadata.unwrap_or_default(),
        headers: headers(
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
        ),
        created_at: now_ms(),
        checksum_algorithm: input
            .checksum_algorithm
            .as_ref()
            .map(|a| a.as_str().to_ascii_uppercase()),
        checksum_type: input
            .checksum_type
            .as_ref()
            .map(|t| t.as_str().to_ascii_uppercase()),
        tags: parse_tagging(input.tagging.as_deref())?,
    };
    store.index.create_upload(&upload).await?;
    Ok(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload.id),
        checksum_algorithm: input.checksum_algorithm,
        ..Default::default()
    })
}

pub async fn upload_part(
    store: &Arc<ObjectStore>,
    mut input: UploadPartInput,
    trailers: Option<TrailingHeaders>,
    watch: BodyWatch,
) -> Result<UploadPartOutput, GatewayError> {
    let number = part_number(input.part_number)?;
    let upload = store
        .index
        .get_upload(&input.bucket, &input.key, &input.upload_id)
        .await?;
    let checks = body_checks(
        input.content_length,
        input.content_md5.as_deref(),
        checksum_expectation!(input, trailers),
    )?;
    let only = upload.checksum_algorithm.clone();
    let (etag, checksums) = store
        .upload_part(upload, number, checks, body_stream(input.body, watch))
        .await?;
    // The upload's algorithm, or what the client sent for this part.
    let checksums = match only {
        Some(algorithm) => checksums.only(&algorithm),
        None => checksums,
    };
    Ok(with_checksums!(
        checksums,
        UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
        }
    ))
}

pub async fn complete(
    store: &ObjectStore,
    mut input: CompleteMultipartUploadInput,
) -> Result<CompleteMultipartUploadOutput, GatewayError> {
    let condition = write_condition(input.if_match.take(), input.if_none_match.take())?;
    // A checksum of the whole object the client declares must be the one
    // the parts make.
    let whole = Checksums {
        crc32: input.checksum_crc32.take(),
        crc32c: input.checksum_crc32c.take(),
        crc64nvme: input.checksum_crc64nvme.take(),
        sha1: input.checksum_sha1.take(),
        sha256: input.checksum_sha256.take(),
        full_object: false,
    };
    let mut chosen = Vec::new();
    let mut declared = Vec::new();
    for part in input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
    {
        let number = part_number(part.part_number.unwrap_or(0))?;
        chosen.push((number, part.e_tag.map(ETag::into_value).unwrap_or_default()));
        declared.push(Checksums {
            crc32: part.checksum_crc32,
            crc32c: part.checksum_crc32c,
            crc64nvme: part.checksum_crc64nvme,
            sha1: part.checksum_sha1,
            sha256: part.checksum_sha256,
            full_object: false,
        });
    }
    let object = match store
        .index
        .get_upload(&input.bucket, &input.key, &input.upload_id)
        .await
    {
        Ok(upload) => {
            if chosen.is_empty() {
                return Err(GatewayError::MalformedXml(
                    "you must specify at least one part".into(),
                ));
            }
            if chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(GatewayError::InvalidPartOrder);
            }
            let object = store
                .index
                .complete_upload(&upload, &chosen, &condition, |stored| {
                    assemble(&upload, &chosen, &declared, &whole, stored)
                })
                .await?;
            store.garbage_released();
            tracing::info!(object = %object.id, size = object.size, parts = chosen.len(), "multipart object stored");
            object
        }
        // Completing again with the same parts answers the same object.
        Err(GatewayError::NoSuchUpload(id)) => store
            .index
            .completed_object(&input.bucket, &input.key, &id, &chosen)
            .await?
            .ok_or(GatewayError::NoSuchUpload(id))?,
        Err(e) => return Err(e),
    };
    let checksum_type = object.checksums.checksum_type(true);
    Ok(with_checksums!(
        object.checksums,
        CompleteMultipartUploadOutput {
            bucket: Some(object.bucket),
            key: Some(object.key),
            e_tag: Some(ETag::Strong(object.etag)),
            checksum_type: checksum_type,
        }
    ))
}

/// Smallest part S3 accepts, but for the last.
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// S3's rules for completing `upload` with the parts the client `chosen`
/// (number and ETag, ascending) and the checksums it `declared` for each,
/// out of the parts `stored`: each must exist with that ETag and those
/// checksums (`InvalidPart`), every part but the last must hold
/// [`MIN_PART_SIZE`] (`EntityTooSmall`); the object's ETag is the MD5 of
/// the parts' MD5s with their count (`md5-N`), its checksum the composite
/// of the parts' in the upload's algorithm.
pub(crate) fn assemble(
    upload: &UploadRow,
    chosen: &[(u32, String)],
    declared: &[Checksums],
    whole: &Checksums,
    stored: &[StoredPart],
) -> Result<Assembly, GatewayError> {
    let mut parts = Vec::with_capacity(chosen.len());
    let mut md5s = Md5::new();
    for (i, (number, etag)) in chosen.iter().enumerate() {
        let part = stored
            .iter()
            .find(|p| p.number == *number)
            .filter(|p| etag.trim_matches('"').eq_ignore_ascii_case(&p.etag))
            .ok_or(GatewayError::InvalidPart(*number))?;
        // A checksum the client lists for a part must be the part's.
        if let Some(listed) = declared.get(i)
            && listed
                .fields()
                .into_iter()
                .any(|(name, v)| v.is_some() && v.as_deref() != part.checksums.get(name))
        {
            return Err(GatewayError::InvalidPart(*number));
        }
        if i + 1 < chosen.len() && part.size < MIN_PART_SIZE {
            return Err(GatewayError::EntityTooSmall(*number));
        }
        md5s.update(hex::decode(&part.etag).unwrap_or_default());
        // Each part keeps the upload's checksum (GetObjectAttributes shows it).
        let mut part = part.clone();
        part.checksums = upload
            .checksum_algorithm
            .as_deref()
            .map(|algorithm| part.checksums.only(algorithm))
            .unwrap_or_default();
        parts.push(part);
    }
    let full_object = upload.checksum_type.as_deref() == Some(ChecksumType::FULL_OBJECT);
    let checksums = upload
        .checksum_algorithm
        .as_deref()
        .and_then(|algorithm| {
            if full_object {
                Checksums::full_object(algorithm, parts.iter().map(|p| (&p.checksums, p.size)))
            } else {
                Checksums::composite(algorithm, parts.iter().map(|p| &p.checksums))
            }
        })
        .unwrap_or_default();
    for (name, value) in whole.fields() {
        if let Some(value) = value
            && checksums.get(name) != Some(value.as_str())
        {
            return Err(GatewayError::ChecksumMismatch(name));
        }
    }
    let object = ObjectRow {
        id: new_object_id(),
        bucket: upload.bucket.clone(),
        key: upload.key.clone(),
        size: parts.iter().map(|p| p.size).sum(),
        etag: format!("{}-{}", hex::encode(md5s.finalize()), parts.len()),
        content_type: upload.content_type.clone(),
        metadata: upload.metadata.clone(),
        headers: upload.headers.clone(),
        checksums,
        last_modified: now_ms(),
        parts_count: u32::try_from(parts.len()).ok(),
        tags: upload.tags.clone(),
    };
    Ok(Assembly { object, parts })
}

pub async fn abort(
    store: &ObjectStore,
    input: AbortMultipartUploadInput,
) -> Result<AbortMultipartUploadOutput, GatewayError> {
    let upload = store
        .index
        .get_upload(&input.bucket, &input.key, &input.upload_id)
        .await?;
    store.index.abort_upload(&upload.id).await?;
    store.garbage_released();
    Ok(AbortMultipartUploadOutput::default())
}

pub async fn list_parts(
    store: &ObjectStore,
    input: ListPartsInput,
) -> Result<ListPartsOutput, GatewayError> {
    let upload = store
        .index
        .get_upload(&input.bucket, &input.key, &input.upload_id)
        .await?;
    let max = input
        .max_parts
        .unwrap_or(MAX_LIST_KEYS)
        .clamp(0, MAX_LIST_KEYS);
    let limit = usize::try_from(max).unwrap_or(0);
    let after = input
        .part_number_marker
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0);
    let mut parts = store
        .index
        .list_parts(&upload.id, after, i64::from(max) + 1)
        .await?;
    let truncated = parts.len() > limit;
    parts.truncate(limit);
    let next = parts
        .last()
        .filter(|_| truncated)
        .and_then(|p| i32::try_from(p.part_number).ok());
    Ok(ListPartsOutput {
        bucket: Some(upload.bucket),
        key: Some(upload.key),
        upload_id: Some(upload.id),
        max_parts: Some(max),
        is_truncated: Some(truncated),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        parts: Some(
            parts
                .into_iter()
                .map(|p| {
                    with_checksums!(
                        p.checksums,
                        Part {
                            part_number: i32::try_from(p.part_number).ok(),
                            size: Some(size_i64(p.size)),
                            e_tag: Some(ETag::Strong(p.etag)),
                            last_modified: Some(timestamp_ms(p.last_modified)),
                        }
                    )
                })
                .collect(),
        ),
        ..Default::default()
    })
}

pub async fn list_uploads(
    store: &ObjectStore,
    input: ListMultipartUploadsInput,
) -> Result<ListMultipartUploadsOutput, GatewayError> {
    store.index.require_bucket(&input.bucket).await?;
    let max = input
        .max_uploads
        .unwrap_or(MAX_LIST_KEYS)
        .clamp(0, MAX_LIST_KEYS);
    let limit = usize::try_from(max).unwrap_or(0);
    let prefix = input.prefix.clone().unwrap_or_default();
    let mut uploads = store
        .index
        .list_uploads(
            &input.bucket,
            &prefix,
            input.key_marker.as_deref().unwrap_or_default(),
            input.upload_id_marker.as_deref().unwrap_or_default(),
            i64::from(max) + 1,
        )
        .await?;
    let truncated = uploads.len() > limit;
    uploads.truncate(limit);
    let last = uploads.last().filter(|_| truncated).cloned();
    Ok(ListMultipartUploadsOutput {
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
    })
}

pub async fn upload_part_copy(
    store: &Arc<ObjectStore>,
    input: UploadPartCopyInput,
) -> Result<UploadPartCopyOutput, GatewayError> {
    let number = part_number(input.part_number)?;
    let upload = store
        .index
        .get_upload(&input.bucket, &input.key, &input.upload_id)
        .await?;
    let CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
        return Err(GatewayError::NotImplemented(
            "access point copy sources".into(),
        ));
    };
    let source = existing(store, bucket, key).await?;
    Conditions {
        if_match: input.copy_source_if_match,
        if_none_match: input.copy_source_if_none_match,
        if_modified_since: input.copy_source_if_modified_since,
        if_unmodified_since: input.copy_source_if_unmodified_since,
    }
    .check_copy_source(&source.etag, source.last_modified)?;
    let range = match input.copy_source_range.as_deref() {
        None => 0..source.size,
        Some(header) => Range::parse(header)
            .map_err(|_| {
                GatewayError::InvalidArgument(format!("invalid x-amz-copy-source-range {header:?}"))
            })?
            .check(source.size)
            .map_err(|_| GatewayError::InvalidRange)?,
    };
    let checks = BodyChecks {
        content_length: Some(range.end - range.start),
        ..Default::default()
    };
    let body = store.source_body(&source, range).await?;
    let (etag, _) = store.upload_part(upload, number, checks, body).await?;
    Ok(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp_ms(now_ms())),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> UploadRow {
        UploadRow {
            id: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
            content_type: None,
            metadata: std::collections::HashMap::new(),
            headers: crate::index::ObjectHeaders::default(),
            created_at: 0,
            checksum_algorithm: None,
            checksum_type: None,
            tags: Vec::new(),
        }
    }

    fn part(number: u32, size: u64) -> StoredPart {
        StoredPart {
            number,
            data_id: format!("d{number}"),
            size,
            etag: hex::encode(Md5::digest(number.to_be_bytes())),
            checksums: Checksums::default(),
        }
    }

    #[test]
    fn completion_follows_s3_rules() {
        let stored = [part(1, MIN_PART_SIZE), part(2, 10), part(3, 1)];
        let listed = |numbers: &[u32]| -> Vec<(u32, String)> {
            numbers
                .iter()
                .map(|n| (*n, format!("\"{}\"", stored[*n as usize - 1].etag)))
                .collect()
        };
        // Parts 1 and 3: part 2 is left out, the last may be small, and the
        // ETag is the MD5 of the parts' MD5s with their count.
        let chosen = listed(&[1, 3]);
        let done = assemble(&upload(), &chosen, &[], &Checksums::default(), &stored).unwrap();
        assert_eq!(
            done.parts.iter().map(|p| p.number).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(done.object.size, MIN_PART_SIZE + 1);
        let mut md5s = Md5::new();
        md5s.update(hex::decode(&stored[0].etag).unwrap());
        md5s.update(hex::decode(&stored[2].etag).unwrap());
        assert_eq!(
            done.object.etag,
            format!("{}-2", hex::encode(md5s.finalize()))
        );
        assert_eq!(done.object.parts_count, Some(2));
        // A small part that is not the last.
        let err = assemble(
            &upload(),
            &listed(&[2, 3]),
            &[],
            &Checksums::default(),
            &stored,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::EntityTooSmall(2)), "{err:?}");
        // A part never uploaded, or listed with another ETag.
        let err = assemble(
            &upload(),
            &[(4, "x".into())],
            &[],
            &Checksums::default(),
            &stored,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::InvalidPart(4)), "{err:?}");
        let err = assemble(
            &upload(),
            &[(1, "\"00\"".into())],
            &[],
            &Checksums::default(),
            &stored,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::InvalidPart(1)), "{err:?}");
        // A checksum listed for a part must be the part's.
        let declared = [Checksums {
            crc32: Some("AAAAAA==".into()),
            ..Checksums::default()
        }];
        let err = assemble(
            &upload(),
            &listed(&[1]),
            &declared,
            &Checksums::default(),
            &stored,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::InvalidPart(1)), "{err:?}");
    }
}
