//! Conversions between s3s's types and the index's rows.

use s3s::dto::{ETag, StreamingBlob, Timestamp};
use tenfold_common::http_server::BodyWatch;

use crate::error::GatewayError;
use crate::index::{ObjectHeaders, ObjectRow, Tags};
use crate::integrity::ChecksumExpectation;
use crate::upload::{BodyChecks, BodyStream};

/// Largest page a list answers, as in S3.
pub const MAX_LIST_KEYS: i32 = 1000;

/// Largest part number S3 accepts.
pub const MAX_PART_NUMBER: i32 = 10_000;

/// A timestamp from milliseconds since the Unix epoch.
pub fn timestamp_ms(ms: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .into()
}

/// Milliseconds since the Unix epoch of a timestamp.
pub fn timestamp_to_ms(t: Timestamp) -> i64 {
    i64::try_from(time::OffsetDateTime::from(t).unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// A size as S3's signed integer.
pub fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An object's ETag.
pub fn etag(row: &ObjectRow) -> ETag {
    ETag::Strong(row.etag.clone())
}

fn decode_content_md5(b64: &str) -> Result<[u8; 16], GatewayError> {
    let bytes = base64_simd::STANDARD
        .decode_to_vec(b64)
        .map_err(|_| GatewayError::InvalidDigest)?;
    bytes.try_into().map_err(|_| GatewayError::InvalidDigest)
}

/// The length and digest a client announced for a body.
///
/// # Errors
/// [`GatewayError::InvalidDigest`] for a Content-MD5 that is not 16 bytes
/// of base64.
pub fn body_checks(
    content_length: Option<i64>,
    content_md5: Option<&str>,
    checksums: ChecksumExpectation,
) -> Result<BodyChecks, GatewayError> {
    if let Some(size) = content_length.and_then(|n| u64::try_from(n).ok())
        && size > MAX_UPLOAD_SIZE
    {
        return Err(GatewayError::EntityTooLarge(size));
    }
    Ok(BodyChecks {
        content_length: content_length.and_then(|n| u64::try_from(n).ok()),
        content_md5: content_md5.map(decode_content_md5).transpose()?,
        checksums,
    })
}

/// What the server saw of a request's body (nothing, for a request that
/// did not come through the server).
pub fn body_watch(extensions: &http::Extensions) -> BodyWatch {
    extensions.get::<BodyWatch>().cloned().unwrap_or_default()
}

/// A request body as the upload pipeline reads it, its errors typed by
/// what the server saw of it.
pub fn body_stream(blob: Option<StreamingBlob>, watch: BodyWatch) -> BodyStream {
    use futures::StreamExt;
    match blob {
        Some(blob) => {
            Box::pin(blob.map(move |r| r.map_err(|e| GatewayError::Body(watch.classify(e)))))
        }
        None => Box::pin(futures::stream::empty()),
    }
}

/// Largest body of one PUT or one part, as in S3: 5 GiB.
pub const MAX_UPLOAD_SIZE: u64 = 5 << 30;

/// Most bytes of user metadata (`x-amz-meta-*` names and values) S3 keeps.
pub const MAX_METADATA_BYTES: usize = 2048;

/// Checks user metadata is within [`MAX_METADATA_BYTES`].
///
/// # Errors
/// [`GatewayError::MetadataTooLarge`].
pub fn check_metadata(
    metadata: &std::collections::HashMap<String, String>,
) -> Result<(), GatewayError> {
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(GatewayError::MetadataTooLarge(bytes));
    }
    Ok(())
}

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a new object's key is not longer than S3 allows.
///
/// # Errors
/// [`GatewayError::KeyTooLong`].
pub fn check_key(key: &str) -> Result<(), GatewayError> {
    if key.len() > MAX_KEY_LEN {
        Err(GatewayError::KeyTooLong)
    } else {
        Ok(())
    }
}

/// Checks a part number is within S3's 1..=10000.
///
/// # Errors
/// [`GatewayError::InvalidArgument`] otherwise.
pub fn part_number(n: i32) -> Result<u32, GatewayError> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(u32::try_from(n).unwrap_or(1))
    } else {
        Err(GatewayError::InvalidArgument(format!(
            "part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )))
    }
}

/// The standard headers a PUT, copy or multipart upload sets.
pub fn headers(
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
) -> ObjectHeaders {
    ObjectHeaders {
        cache_control,
        content_disposition,
        content_encoding: content_encoding.and_then(|e| stored_encoding(&e)),
        content_language,
        expires: expires.map(timestamp_to_ms),
    }
}

/// A bucket owner as S3 shows it (ID and display name alike: Tenfold has
/// no accounts, see [`Owner::id`](crate::index::Owner::id)).
pub fn owner_dto(owner: &crate::index::Owner) -> s3s::dto::Owner {
    s3s::dto::Owner {
        display_name: Some(owner.id().to_owned()),
        id: Some(owner.id().to_owned()),
    }
}

/// The Content-Encoding kept with an object: what the client sent, less
/// `aws-chunked`, which only says how this request's body was framed (S3
/// keeps `gzip` of `aws-chunked,gzip`; nothing of `aws-chunked` alone).
fn stored_encoding(sent: &str) -> Option<String> {
    let kept: Vec<&str> = sent
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The checksums a PUT or UploadPart declares, in headers or trailers.
macro_rules! checksum_expectation {
    ($input:expr, $trailers:expr) => {
        $crate::integrity::ChecksumExpectation::new(
            [
                $input.checksum_crc32.take(),
                $input.checksum_crc32c.take(),
                $input.checksum_crc64nvme.take(),
                $input.checksum_sha1.take(),
                $input.checksum_sha256.take(),
            ],
            $input.checksum_algorithm.as_ref().map(|a| a.as_str()),
            $trailers,
        )
    };
}
pub(crate) use checksum_expectation;

/// An S3 output struct with its `checksum_*` fields set from `Checksums`,
/// the other fields as given (`field: value` or `field`), the rest default.
macro_rules! with_checksums {
    ($checksums:expr, $ty:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {{
        let c: $crate::integrity::Checksums = $checksums;
        #[allow(clippy::needless_update)]
        let out = $ty {
            checksum_crc32: c.crc32,
            checksum_crc32c: c.crc32c,
            checksum_crc64nvme: c.crc64nvme,
            checksum_sha1: c.sha1,
            checksum_sha256: c.sha256,
            $($field $(: $value)?,)*
            ..Default::default()
        };
        out
    }};
}
pub(crate) use with_checksums;

/// Most tags one object may carry, as in S3.
pub const MAX_TAGS: usize = 10;

/// Checks tags as S3 does: at most [`MAX_TAGS`], keys of 1 to 128
/// characters and values of at most 256, no key twice.
///
/// # Errors
/// [`GatewayError::InvalidTag`].
pub fn check_tags(tags: &Tags) -> Result<(), GatewayError> {
    if tags.len() > MAX_TAGS {
        return Err(GatewayError::InvalidTag(format!(
            "Object tags cannot be greater than {MAX_TAGS}"
        )));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(GatewayError::InvalidTag(
                "A tag key must be 1 to 128 characters and its value at most 256".into(),
            ));
        }
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(GatewayError::InvalidTag(
                "Cannot provide multiple Tags with the same key".into(),
            ));
        }
    }
    Ok(())
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded).
///
/// # Errors
/// [`GatewayError::InvalidTag`].
pub fn parse_tagging(header: Option<&str>) -> Result<Tags, GatewayError> {
    let Some(header) = header.filter(|h| !h.is_empty()) else {
        return Ok(Tags::new());
    };
    let decode = |s: &str| {
        urlencoding::decode(&s.replace('+', " "))
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| GatewayError::InvalidTag("the tagging header is not UTF-8".into()))
    };
    let tags = header
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect::<Result<Tags, GatewayError>>()?;
    check_tags(&tags)?;
    Ok(tags)
}

/// Tags from an S3 TagSet.
///
/// # Errors
/// [`GatewayError::InvalidTag`].
pub fn tags_from_set(set: Vec<s3s::dto::Tag>) -> Result<Tags, GatewayError> {
    let tags: Tags = set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    check_tags(&tags)?;
    Ok(tags)
}

/// Tags as an S3 TagSet.
pub fn tag_set(tags: &Tags) -> Vec<s3s::dto::Tag> {
    tags.iter()
        .map(|(k, v)| s3s::dto::Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// The `x-amz-tagging-count` of an object with `tags`.
pub fn tag_count(tags: &Tags) -> Option<i32> {
    (!tags.is_empty()).then(|| i32::try_from(tags.len()).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::stored_encoding;

    #[test]
    fn aws_chunked_is_not_kept_as_an_encoding() {
        assert_eq!(stored_encoding("aws-chunked"), None);
        assert_eq!(stored_encoding("aws-chunked,gzip").as_deref(), Some("gzip"));
        assert_eq!(
            stored_encoding("gzip, aws-chunked").as_deref(),
            Some("gzip")
        );
        assert_eq!(stored_encoding("gzip,br").as_deref(), Some("gzip,br"));
        assert_eq!(
            stored_encoding("AWS-CHUNKED,,zstd").as_deref(),
            Some("zstd")
        );
    }
}
