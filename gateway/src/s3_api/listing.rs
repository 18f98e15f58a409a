//! Object listings: ListObjects (v1), ListObjectsV2 and ListObjectVersions,
//! all built on one paging walk over the index.

use s3s::dto::{
    CommonPrefix, EncodingType, ListObjectVersionsInput, ListObjectVersionsOutput,
    ListObjectsInput, ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output, Object,
    ObjectVersion,
};
use tenfold_common::listing::{Listing, Step, decode_token, encode_token};

use super::convert::{MAX_LIST_KEYS, etag, owner_dto, size_i64, timestamp_ms};
use crate::error::GatewayError;
use crate::index::ObjectRow;
use crate::object_store::ObjectStore;

/// One page of keys after `after` (and of their common prefixes).
async fn page(
    store: &ObjectStore,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: i32,
    after: &str,
) -> Result<Listing<ObjectRow>, GatewayError> {
    store.index.require_bucket(bucket).await?;
    let mut listing = Listing::new(prefix, delimiter, usize::try_from(max_keys).unwrap_or(0))
        .resuming_after(after);
    let mut cursor = after.to_owned();
    'pages: loop {
        let rows = store
            .index
            .list_objects(bucket, prefix, &cursor, i64::from(MAX_LIST_KEYS) + 1)
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
    Ok(listing)
}

fn max_keys(requested: Option<i32>) -> i32 {
    requested.unwrap_or(MAX_LIST_KEYS).clamp(0, MAX_LIST_KEYS)
}

/// How names are written in a listing: as they are, or URL-encoded when
/// the client asked for `encoding-type=url` (XML 1.0 cannot carry some
/// characters, such as NUL, that keys may hold).
#[derive(Clone, Copy)]
struct Names {
    url: bool,
}

impl Names {
    fn of(encoding: Option<&EncodingType>) -> Self {
        Self {
            url: encoding.is_some_and(|e| e.as_str() == EncodingType::URL),
        }
    }

    /// One name, encoded as S3 does it (`/` stays as it is).
    fn write(self, name: &str) -> String {
        if self.url {
            urlencoding::encode(name).replace("%2F", "/")
        } else {
            name.to_owned()
        }
    }

    fn opt(self, name: Option<String>) -> Option<String> {
        name.map(|n| self.write(&n))
    }
}

fn contents(listing: &Listing<ObjectRow>, names: Names) -> Vec<Object> {
    listing
        .objects
        .iter()
        .map(|(key, row)| Object {
            key: Some(names.write(key)),
            size: Some(size_i64(row.size)),
            e_tag: Some(etag(row)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            ..Default::default()
        })
        .collect()
}

fn common_prefixes(listing: &Listing<ObjectRow>, names: Names) -> Vec<CommonPrefix> {
    listing
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(names.write(p)),
        })
        .collect()
}

/// The last key or common prefix on a truncated page: where the next page
/// starts for markers (v1, versions).
fn last_entry(listing: &Listing<ObjectRow>) -> Option<String> {
    if !listing.truncated {
        return None;
    }
    let last_key = listing.objects.last().map(|o| o.0.clone());
    let last_prefix = listing.prefixes.last().cloned();
    last_key.max(last_prefix)
}

pub async fn v1(
    store: &ObjectStore,
    input: ListObjectsInput,
) -> Result<ListObjectsOutput, GatewayError> {
    let max = max_keys(input.max_keys);
    let prefix = input.prefix.clone().unwrap_or_default();
    let marker = input.marker.clone().unwrap_or_default();
    let listing = page(
        store,
        &input.bucket,
        &prefix,
        input.delimiter.as_deref(),
        max,
        &marker,
    )
    .await?;
    let names = Names::of(input.encoding_type.as_ref());
    Ok(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(names.write(&prefix)),
        marker: names.opt(input.marker),
        max_keys: Some(max),
        is_truncated: Some(listing.truncated),
        next_marker: names.opt(last_entry(&listing)),
        contents: Some(contents(&listing, names)),
        common_prefixes: Some(common_prefixes(&listing, names)),
        delimiter: names.opt(input.delimiter.filter(|d| !d.is_empty())),
        encoding_type: input.encoding_type,
        request_charged: None,
    })
}

pub async fn v2(
    store: &ObjectStore,
    input: ListObjectsV2Input,
) -> Result<ListObjectsV2Output, GatewayError> {
    let max = max_keys(input.max_keys);
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = match &input.continuation_token {
        Some(t) => decode_token(t).ok_or_else(|| {
            GatewayError::InvalidArgument("the continuation token is not valid".into())
        })?,
        None => input.start_after.clone().unwrap_or_default(),
    };
    let listing = page(
        store,
        &input.bucket,
        &prefix,
        input.delimiter.as_deref(),
        max,
        &after,
    )
    .await?;
    let names = Names::of(input.encoding_type.as_ref());
    let contents = contents(&listing, names);
    let prefixes = common_prefixes(&listing, names);
    let key_count = i32::try_from(contents.len() + prefixes.len()).unwrap_or(i32::MAX);
    let owner = match input.fetch_owner {
        Some(true) => store
            .index
            .bucket_owner(&input.bucket)
            .await?
            .as_ref()
            .map(owner_dto),
        _ => None,
    };
    Ok(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(names.write(&prefix)),
        max_keys: Some(max),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        is_truncated: Some(listing.truncated),
        next_continuation_token: listing.next_cursor().map(encode_token),
        contents: Some(
            contents
                .into_iter()
                .map(|o| Object {
                    owner: owner.clone(),
                    ..o
                })
                .collect(),
        ),
        common_prefixes: Some(prefixes),
        delimiter: names.opt(input.delimiter.filter(|d| !d.is_empty())),
        encoding_type: input.encoding_type,
        start_after: names.opt(input.start_after),
        request_charged: None,
    })
}

/// Versioning is never on: every object is its one, latest version `null`.
pub async fn versions(
    store: &ObjectStore,
    input: ListObjectVersionsInput,
) -> Result<ListObjectVersionsOutput, GatewayError> {
    let max = max_keys(input.max_keys);
    let prefix = input.prefix.clone().unwrap_or_default();
    let marker = input.key_marker.clone().unwrap_or_default();
    let listing = page(
        store,
        &input.bucket,
        &prefix,
        input.delimiter.as_deref(),
        max,
        &marker,
    )
    .await?;
    let names = Names::of(input.encoding_type.as_ref());
    let versions = listing
        .objects
        .iter()
        .map(|(key, row)| ObjectVersion {
            key: Some(names.write(key)),
            version_id: Some("null".into()),
            is_latest: Some(true),
            size: Some(size_i64(row.size)),
            e_tag: Some(etag(row)),
            last_modified: Some(timestamp_ms(row.last_modified)),
            ..Default::default()
        })
        .collect();
    let next = last_entry(&listing);
    Ok(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(names.write(&prefix)),
        key_marker: names.opt(input.key_marker),
        version_id_marker: input.version_id_marker,
        max_keys: Some(max),
        is_truncated: Some(listing.truncated),
        next_version_id_marker: next.as_ref().map(|_| "null".to_owned()),
        next_key_marker: names.opt(next),
        versions: Some(versions),
        common_prefixes: Some(common_prefixes(&listing, names)),
        delimiter: names.opt(input.delimiter.filter(|d| !d.is_empty())),
        encoding_type: input.encoding_type,
        delete_markers: None,
        request_charged: None,
    })
}
