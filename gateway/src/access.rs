//! Who may do what: the access keys a request can be signed with, and the
//! rule that a bucket belongs to the key that created it.
//!
//! The configuration's key and the index's admin keys may do everything;
//! any other key of the index (`tenfold keys create`) sees and touches only
//! its own buckets, and gets `AccessDenied` on the others.
//!
//! What the index says about a key is kept for [`KEY_CACHE_TTL`], so that a
//! request costs one index read (its bucket's owner) rather than three: a
//! deleted key stops working within that long on every gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

use crate::index::{Index, IndexKey, Owner};
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

/// How long a gateway trusts what it last read of an index key before
/// reading it again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// How many index keys a gateway keeps at most; past it, the expired ones
/// go, and all of them if none has expired.
const KEY_CACHE_ENTRIES: usize = 4096;

/// Access keys and bucket ownership, for s3s's authentication and access
/// checks.
#[derive(Debug, Clone)]
pub struct Access {
    index: Index,
    admin_key: String,
    admin_secret: SecretKey,
    /// Index keys by access key id, with when they were read. Unknown keys
    /// are not kept, so a key made a moment ago works at once.
    known: Arc<Mutex<HashMap<String, (Instant, IndexKey)>>>,
}

impl Access {
    /// Checks requests against the configuration's admin key pair and the
    /// index's access keys.
    pub fn new(index: Index, admin_key: String, admin_secret: String) -> Self {
        Self {
            index,
            admin_key,
            admin_secret: admin_secret.into(),
            known: Arc::default(),
        }
    }

    /// The index's key `access_key`, from what was read of it in the last
    /// [`KEY_CACHE_TTL`] or from the index; `None` when there is no such key.
    async fn index_key(&self, access_key: &str) -> S3Result<Option<IndexKey>> {
        let now = Instant::now();
        if let Some((read_at, key)) = self.known_keys().get(access_key)
            && now.duration_since(*read_at) < KEY_CACHE_TTL
        {
            return Ok(Some(key.clone()));
        }
        let key = self.index.access_key(access_key).await?;
        let mut known = self.known_keys();
        match &key {
            Some(key) => {
                if known.len() >= KEY_CACHE_ENTRIES {
                    known.retain(|_, (read_at, _)| now.duration_since(*read_at) < KEY_CACHE_TTL);
                    if known.len() >= KEY_CACHE_ENTRIES {
                        known.clear();
                    }
                }
                known.insert(access_key.to_owned(), (now, key.clone()));
            }
            None => {
                known.remove(access_key);
            }
        }
        Ok(key)
    }

    fn known_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, IndexKey)>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            .index_key(access_key)
            .await?
            .map_or_else(|| (access_key.to_owned(), false), |k| (k.name, k.admin));
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
        match self.index_key(access_key).await? {
            Some(key) => Ok(key.secret.into()),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keyring, MasterKey};

    /// A key read from the index serves its requests for [`KEY_CACHE_TTL`]
    /// and no longer: a deleted key is refused once that has passed.
    #[tokio::test]
    async fn a_deleted_key_is_refused_once_the_cache_expires() {
        let dir = std::env::temp_dir().join(format!("tenfold-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keyring = Keyring::new(
            MasterKey::parse(&MasterKey::generate()).unwrap(),
            Vec::new(),
        );
        let index = Index::open(&crate::data_dir::DataDir::new(&dir).index_url())
            .await
            .unwrap()
            .with_keyring(keyring);
        let access = Access::new(index.clone(), "admin".into(), "admin-secret".into());
        assert!(access.get_secret_key("TFNOSUCHKEY").await.is_err());

        let (id, secret) = index.create_access_key("alice", false).await.unwrap();
        assert_eq!(access.get_secret_key(&id).await.unwrap().expose(), secret);
        let caller = access.caller(&id).await.unwrap();
        assert_eq!((caller.name.as_str(), caller.admin), ("alice", false));

        assert!(index.delete_access_key("alice").await.unwrap());
        let deleted = Instant::now();
        assert_eq!(access.get_secret_key(&id).await.unwrap().expose(), secret);
        tokio::time::sleep(KEY_CACHE_TTL.saturating_sub(deleted.elapsed())).await;
        let err = access.get_secret_key(&id).await.unwrap_err();
        assert_eq!(*err.code(), s3s::S3ErrorCode::InvalidAccessKeyId);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
