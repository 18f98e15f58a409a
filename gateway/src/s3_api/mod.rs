//! The gateway's S3 API, served by `s3s`. Each operation is a thin method
//! here that calls the module holding its logic: [`buckets`], [`objects`],
//! [`listing`], [`multipart`]; [`convert`] maps between s3s types and the
//! index's rows. [`tenfold_routes`] adds the requests S3 lacks: a zip of a
//! prefix, and share links.

mod buckets;
mod convert;
pub mod framing;
mod listing;
mod multipart;
mod objects;
pub mod tenfold_routes;

use convert::tags_from_set;
pub(crate) use convert::{MAX_UPLOAD_SIZE, body_checks, check_key, check_metadata};
pub(crate) use multipart::assemble;

use std::sync::Arc;

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput,
    DeleteBucketCorsInput, DeleteBucketCorsOutput, DeleteBucketInput, DeleteBucketOutput,
    DeleteObjectInput, DeleteObjectOutput, DeleteObjectTaggingInput, DeleteObjectTaggingOutput,
    DeleteObjectsInput, DeleteObjectsOutput, GetBucketCorsInput, GetBucketCorsOutput,
    GetBucketLocationInput, GetBucketLocationOutput, GetBucketVersioningInput,
    GetBucketVersioningOutput, GetObjectAttributesInput, GetObjectAttributesOutput, GetObjectInput,
    GetObjectOutput, GetObjectTaggingInput, GetObjectTaggingOutput, HeadBucketInput,
    HeadBucketOutput, HeadObjectInput, HeadObjectOutput, ListBucketsInput, ListBucketsOutput,
    ListMultipartUploadsInput, ListMultipartUploadsOutput, ListObjectVersionsInput,
    ListObjectVersionsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, PutBucketCorsInput, PutBucketCorsOutput,
    PutObjectInput, PutObjectOutput, PutObjectTaggingInput, PutObjectTaggingOutput,
    UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::access::caller_of;
use crate::error::GatewayError;
use crate::object_store::ObjectStore;
use convert::body_watch;

/// The S3 front end of the gateway. Operations it does not implement
/// answer `NotImplemented` (the `s3s` default).
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

fn respond<T>(result: Result<T, GatewayError>) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(result?))
}

#[async_trait::async_trait]
impl S3 for GatewayS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = caller_of(&req)?.clone();
        respond(buckets::list(&self.store, &caller, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = caller_of(&req)?.clone();
        respond(buckets::create(&self.store, &caller, req.input).await)
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        respond(buckets::head(&self.store, &req.input.bucket).await)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        respond(buckets::location(&self.store, &req.input.bucket).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        respond(buckets::put_cors(&self.store, req.input).await)
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        respond(buckets::get_cors(&self.store, &req.input.bucket).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        respond(buckets::delete_cors(&self.store, &req.input.bucket).await)
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        respond(buckets::versioning(&self.store, &req.input.bucket).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        respond(buckets::delete(&self.store, &req.input.bucket).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let watch = body_watch(&req.extensions);
        let mut input = req.input;
        input.content_length = framing::announced(input.content_length, &req.extensions);
        respond(objects::put(&self.store, input, req.trailing_headers, watch).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        respond(objects::get(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let result = async {
            let tags = tags_from_set(input.tagging.tag_set)?;
            objects::put_tagging(&self.store, &input.bucket, &input.key, &tags).await
        };
        respond(result.await.map(|()| PutObjectTaggingOutput::default()))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        respond(objects::tagging(&self.store, &req.input.bucket, &req.input.key).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let result =
            objects::put_tagging(&self.store, &req.input.bucket, &req.input.key, &Vec::new()).await;
        respond(result.map(|()| DeleteObjectTaggingOutput::default()))
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        respond(objects::attributes(&self.store, req.input).await)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        respond(objects::head(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        respond(objects::copy(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        respond(objects::delete(&self.store, &req.input.bucket, &req.input.key).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        respond(objects::delete_many(&self.store, req.input).await)
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        respond(listing::v1(&self.store, req.input).await)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        respond(listing::v2(&self.store, req.input).await)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        respond(listing::versions(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        respond(multipart::create(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key, part = req.input.part_number))]
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let watch = body_watch(&req.extensions);
        let mut input = req.input;
        input.content_length = framing::announced(input.content_length, &req.extensions);
        respond(multipart::upload_part(&self.store, input, req.trailing_headers, watch).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        respond(multipart::complete(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        respond(multipart::abort(&self.store, req.input).await)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key, part = req.input.part_number))]
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        respond(multipart::upload_part_copy(&self.store, req.input).await)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        respond(multipart::list_parts(&self.store, req.input).await)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        respond(multipart::list_uploads(&self.store, req.input).await)
    }
}
