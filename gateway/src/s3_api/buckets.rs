//! Bucket operations.

use s3s::dto::{
    Bucket, CreateBucketInput, CreateBucketOutput, DeleteBucketOutput, GetBucketLocationOutput,
    GetBucketVersioningOutput, HeadBucketOutput, ListBucketsOutput,
};

use super::convert::timestamp_ms;
use crate::access::Caller;
use crate::error::GatewayError;
use crate::object_store::ObjectStore;

/// The buckets `caller` may use.
pub async fn list(store: &ObjectStore, caller: &Caller) -> Result<ListBucketsOutput, GatewayError> {
    let buckets = store
        .index
        .list_buckets(caller.listing_filter())
        .await?
        .into_iter()
        .map(|(name, created)| Bucket {
            name: Some(name),
            creation_date: Some(timestamp_ms(created)),
            bucket_region: None,
        })
        .collect();
    Ok(ListBucketsOutput {
        buckets: Some(buckets),
        ..Default::default()
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
    store.garbage_ready.notify_one();
    Ok(DeleteBucketOutput {})
}
