//! Who may do what: the access keys a request can be signed with, and the
//! rule that a bucket belongs to the key that created it.
//!
//! The configuration's key and the index's admin keys may do everything;
//! any other key of the index (`tenfold keys create`) sees and touches only
//! its own buckets, and gets `AccessDenied` on the others.

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

use crate::index::{Index, Owner};
use crate::metrics::RequestFacts;

/// The key a request was signed with, as the access checks resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who owns the buckets this caller creates.
    pub owner: Owner,
    /// Whether it may touch every bucket.
    pub admin: bool,
    /// The key's name, for logs (the configuration's key, which has none,
    /// goes by its id).
    pub name: String,
}

impl Caller {
    /// Whether this caller may use a bucket owned by `owner`.
    pub fn may_use(&self, owner: &Owner) -> bool {
        self.admin || *owner == self.owner
    }

    /// The buckets it lists: all of them (`None`) or its own.
    pub fn listing_filter(&self) -> Option<&Owner> {
        (!self.admin).then_some(&self.owner)
    }
}

/// The resolved caller of a request; s3s runs the access check (which
/// stores it) before every operation.
///
/// # Errors
/// `AccessDenied` if no check ran.
pub fn caller_of<T>(req: &S3Request<T>) -> S3Result<&Caller> {
    req.extensions
        .get::<Caller>()
        .ok_or_else(|| s3_error!(AccessDenied, "Access Denied"))
}

/// Access keys and bucket ownership, for s3s's authentication and access
/// checks.
#[derive(Debug, Clone)]
pub struct Access {
    index: Index,
    admin_key: String,
    admin_secret: SecretKey,
}

impl Access {
    /// Checks requests against the configuration's admin key pair and the
    /// index's access keys.
    pub fn new(index: Index, admin_key: String, admin_secret: String) -> Self {
        Self {
            index,
            admin_key,
            admin_secret: admin_secret.into(),
        }
    }

    /// Who signed with `access_key` (already authenticated by s3s).
    ///
    /// # Errors
    /// `ServiceUnavailable` when the index cannot answer.
    pub async fn caller(&self, access_key: &str) -> S3Result<Caller> {
        if access_key == self.admin_key {
            return Ok(Caller {
                owner: Owner::Admin,
                admin: true,
                name: access_key.to_owned(),
            });
        }
        let (name, admin) = self
            .index
            .access_key_of(access_key)
            .await?
            .unwrap_or_else(|| (access_key.to_owned(), false));
        Ok(Caller {
            owner: Owner::Key(access_key.to_owned()),
            admin,
            name,
        })
    }

    /// Fails with `AccessDenied` unless `caller` may use `bucket`, and
    /// unless the bucket's owner is `expected_owner` when the request names
    /// one (`x-amz-expected-bucket-owner`, as in S3). A bucket that does not
    /// exist passes: the operation answers `NoSuchBucket`.
    ///
    /// # Errors
    /// `AccessDenied`, or `ServiceUnavailable` when the index cannot answer.
    pub async fn require_bucket_access(
        &self,
        caller: &Caller,
        bucket: &str,
        expected_owner: Option<&str>,
    ) -> S3Result<()> {
        if caller.admin && expected_owner.is_none() {
            return Ok(());
        }
        match self.index.bucket_owner(bucket).await? {
            Some(owner) if !caller.may_use(&owner) => Err(s3_error!(AccessDenied, "Access Denied")),
            Some(owner) if expected_owner.is_some_and(|id| id != owner.id()) => {
                Err(s3_error!(AccessDenied, "Access Denied"))
            }
            _ => Ok(()),
        }
    }

    /// Fails with `AccessDenied` unless the caller of `req` may read the
    /// bucket it copies from.
    async fn require_copy_source<T>(
        &self,
        req: &S3Request<T>,
        source: &CopySource,
    ) -> S3Result<()> {
        let caller = caller_of(req)?;
        let expected = expected_owner(&req.headers, "x-amz-source-expected-bucket-owner");
        match source {
            CopySource::Bucket { bucket, .. } => {
                self.require_bucket_access(caller, bucket, expected).await
            }
            _ => Err(s3_error!(AccessDenied, "Access Denied")),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for Access {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.admin_key {
            return Ok(self.admin_secret.clone());
        }
        match self.index.access_key_secret(access_key).await {
            Ok(Some(secret)) => Ok(secret.into()),
            Ok(None) => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// The header naming the bucket owner a request expects.
pub const EXPECTED_OWNER: &str = "x-amz-expected-bucket-owner";

/// The bucket owner a request expects, from header `name` ([`EXPECTED_OWNER`],
/// or the copy source's).
pub fn expected_owner<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        let key = cx.credentials().map(|c| c.access_key.clone());
        if let Some(facts) = cx.extensions_mut().get::<RequestFacts>() {
            facts.set_operation(&operation);
        }
        let Some(key) = key else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        // Logged by its name; by its id when it cannot be looked up.
        let caller = self.caller(&key).await;
        let logged = caller.as_ref().map_or(key.as_str(), |c| c.name.as_str());
        if let Some(facts) = cx.extensions_mut().get::<RequestFacts>() {
            facts.set_access_key(logged);
        }
        let caller = caller?;
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
        };
        if let Some(bucket) = bucket
            && cx.s3_op().name() != "CreateBucket"
        {
            let expected = expected_owner(cx.headers(), EXPECTED_OWNER);
            self.require_bucket_access(&caller, &bucket, expected)
                .await?;
        }
        cx.extensions_mut().insert(caller);
        Ok(())
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.require_copy_source(req, &req.input.copy_source).await
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.require_copy_source(req, &req.input.copy_source).await
    }
}
