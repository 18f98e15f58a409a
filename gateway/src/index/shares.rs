//! Share links: the hash of each link's id, its prefix and its expiry.

use sqlx::Row;

use super::rows::ShareRow;
use super::{Index, now_ms};
use crate::error::GatewayError;

impl Index {
    /// Records a share link: the hash of its id, what it opens and until
    /// when (ms since the epoch).
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] when the bucket does not exist.
    pub async fn add_share(
        &self,
        token_hash: &str,
        bucket: &str,
        prefix: &str,
        expires_at: i64,
    ) -> Result<(), GatewayError> {
        self.require_bucket(bucket).await?;
        sqlx::query(
            "INSERT INTO shares (token_hash, bucket, prefix, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(bucket)
        .bind(prefix)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The share link whose id hashes to `token_hash`, revoked or not.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn share(&self, token_hash: &str) -> Result<Option<ShareRow>, GatewayError> {
        let row = sqlx::query(
            "SELECT bucket, prefix, expires_at, revoked FROM shares WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ShareRow {
                bucket: row.try_get("bucket")?,
                prefix: row.try_get("prefix")?,
                expires_at: row.try_get("expires_at")?,
                revoked: row.try_get::<i64, _>("revoked")? != 0,
            })
        })
        .transpose()
    }

    /// Revokes a share link; `false` when there is none with this hash.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn revoke_share(&self, token_hash: &str) -> Result<bool, GatewayError> {
        let done = sqlx::query("UPDATE shares SET revoked = 1 WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
