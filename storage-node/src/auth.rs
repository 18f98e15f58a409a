//! SigV4 credentials: one static key pair, answering an unknown access key
//! with `InvalidAccessKeyId` as AWS does (s3s's `SimpleAuth` says
//! `NotSignedUp`, which clients do not expect).

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

/// A single access key and its secret.
#[derive(Debug)]
pub struct StaticKey {
    access_key: String,
    secret_key: SecretKey,
}

impl StaticKey {
    /// Accepts requests signed with this key pair.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<SecretKey>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for StaticKey {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            Ok(self.secret_key.clone())
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}
