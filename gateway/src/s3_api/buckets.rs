//! Bucket operations.

use s3s::dto::{
    Bucket, CreateBucketInput, CreateBucketOutput, DeleteBucketCorsOutput, DeleteBucketOutput,
    GetBucketCorsOutput, GetBucketLocationOutput, GetBucketVersioningOutput, HeadBucketOutput,
    ListBucketsInput, ListBucketsOutput, PutBucketCorsInput, PutBucketCorsOutput,
};

use super::convert::{owner_dto, timestamp_ms};
use crate::access::Caller;
use crate::cors::CorsRules;
use crate::error::GatewayError;
use crate::object_store::ObjectStore;

/// Most buckets one ListBuckets answers, as in S3.
const MAX_BUCKETS: usize = 10_000;

/// The buckets `caller` may use, a page at a time: those whose names start
/// with `prefix`, after the continuation token's, at most `max-buckets`.
pub async fn list(
    store: &ObjectStore,
    caller: &Caller,
    input: ListBucketsInput,
) -> Result<ListBucketsOutput, GatewayError> {
    let b64 = base64_simd::URL_SAFE_NO_PAD;
    let after = match &input.continuation_token {
        Some(token) => Some(
            b64.decode_to_vec(token)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| {
                    GatewayError::InvalidArgument("The continuation token is not valid.".into())
                })?,
        ),
        None => None,
    };
    let max = match input.max_buckets {
        None => MAX_BUCKETS,
        Some(n) if (1..=10_000).contains(&n) => usize::try_from(n).unwrap_or(MAX_BUCKETS),
        Some(_) => {
            return Err(GatewayError::InvalidArgument(
                "max-buckets must be between 1 and 10000".into(),
            ));
        }
    };
    let prefix = input.prefix.clone().unwrap_or_default();
    let mut buckets: Vec<(String, i64)> = store
        .index
        .list_buckets(caller.listing_filter())
        .await?
        .into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .filter(|(name, _)| after.as_ref().is_none_or(|a| name > a))
        .collect();
    let more = buckets.len() > max;
    buckets.truncate(max);
    let continuation_token = more
        .then(|| buckets.last().map(|(name, _)| b64.encode_to_string(name)))
        .flatten();
    let buckets = buckets
        .into_iter()
        .map(|(name, created)| Bucket {
            name: Some(name),
            creation_date: Some(timestamp_ms(created)),
            bucket_region: None,
        })
        .collect();
    Ok(ListBucketsOutput {
        buckets: Some(buckets),
        continuation_token,
        owner: Some(owner_dto(&caller.owner)),
        prefix: input.prefix,
    })
}

/// Creates a bucket owned by `caller`. An existing bucket answers
/// `BucketAlreadyOwnedByYou` to its owner and `BucketAlreadyExists` to
/// anyone else, as S3 does.
pub async fn create(
    store: &ObjectStore,
    caller: &Caller,
    input: CreateBucketInput,
) -> Result<CreateBucketOutput, GatewayError> {
    let bucket = input.bucket;
    if !store.index.create_bucket(&bucket, &caller.owner).await? {
        return Err(match store.index.bucket_owner(&bucket).await? {
            Some(owner) if owner != caller.owner => GatewayError::BucketTaken(bucket),
            _ => GatewayError::BucketExists(bucket),
        });
    }
    Ok(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    })
}

pub async fn head(store: &ObjectStore, bucket: &str) -> Result<HeadBucketOutput, GatewayError> {
    store.index.require_bucket(bucket).await?;
    Ok(HeadBucketOutput::default())
}

/// Every bucket is in the gateway's one region (an empty answer means
/// `us-east-1`, as S3 says).
pub async fn location(
    store: &ObjectStore,
    bucket: &str,
) -> Result<GetBucketLocationOutput, GatewayError> {
    store.index.require_bucket(bucket).await?;
    Ok(GetBucketLocationOutput::default())
}

/// Versioning is never enabled: an empty status, as S3 answers for a bucket
/// that never had it.
pub async fn versioning(
    store: &ObjectStore,
    bucket: &str,
) -> Result<GetBucketVersioningOutput, GatewayError> {
    store.index.require_bucket(bucket).await?;
    Ok(GetBucketVersioningOutput::default())
}

pub async fn delete(store: &ObjectStore, bucket: &str) -> Result<DeleteBucketOutput, GatewayError> {
    store.index.delete_bucket(bucket).await?;
    store.known_buckets.forget(bucket);
    store.garbage_released();
    Ok(DeleteBucketOutput {})
}

/// Sets a bucket's CORS rules.
pub async fn put_cors(
    store: &ObjectStore,
    input: PutBucketCorsInput,
) -> Result<PutBucketCorsOutput, GatewayError> {
    let rules = CorsRules::from_s3(input.cors_configuration.cors_rules)?;
    store
        .index
        .set_bucket_cors(&input.bucket, Some(&rules))
        .await?;
    Ok(PutBucketCorsOutput::default())
}

/// A bucket's CORS rules: `NoSuchCORSConfiguration` when it has none.
pub async fn get_cors(
    store: &ObjectStore,
    bucket: &str,
) -> Result<GetBucketCorsOutput, GatewayError> {
    match store.index.bucket_cors(bucket).await? {
        Some(rules) => Ok(GetBucketCorsOutput {
            cors_rules: Some(rules.to_s3()),
        }),
        None => Err(GatewayError::NoSuchCorsConfiguration(bucket.to_owned())),
    }
}

/// Removes a bucket's CORS rules.
pub async fn delete_cors(
    store: &ObjectStore,
    bucket: &str,
) -> Result<DeleteBucketCorsOutput, GatewayError> {
    store.index.set_bucket_cors(bucket, None).await?;
    Ok(DeleteBucketCorsOutput::default())
}
