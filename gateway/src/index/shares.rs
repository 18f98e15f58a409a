//! Share links: the hash of each link's id, its prefix and its expiry;
//! for upload links, what they may take and have taken.

use sqlx::Row;

use super::rows::{ShareRow, UploadAllowance};
use super::{Index, now_ms};
use crate::error::GatewayError;

impl Index {
    /// Records a share link: the hash of its id, what it opens and until
    /// when (ms since the epoch), and for an upload link (`upload`) what
    /// it may take in all.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] when the bucket does not exist.
    pub async fn add_share(
        &self,
        token_hash: &str,
        bucket: &str,
        prefix: &str,
        expires_at: i64,
        upload: Option<UploadAllowance>,
    ) -> Result<(), GatewayError> {
        self.require_bucket(bucket).await?;
        let limit = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        sqlx::query(
            "INSERT INTO shares (token_hash, bucket, prefix, created_at, expires_at, upload, \
             max_bytes, max_files) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token_hash)
        .bind(bucket)
        .bind(prefix)
        .bind(now_ms())
        .bind(expires_at)
        .bind(i64::from(upload.is_some()))
        .bind(limit(upload.and_then(|u| u.max_bytes)))
        .bind(limit(upload.and_then(|u| u.max_files)))
        .execute(&mut self.reader().await?)
        .await?;
        Ok(())
    }

    /// Reserves `bytes` and `files` of an upload link's allowance before
    /// they are read; `false` when they do not fit (or the link is no
    /// upload link, or revoked).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn reserve_upload(
        &self,
        token_hash: &str,
        bytes: u64,
        files: u64,
    ) -> Result<bool, GatewayError> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let files = i64::try_from(files).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE shares SET used_bytes = used_bytes + $2, used_files = used_files + $3 \
             WHERE token_hash = $1 AND upload = 1 AND revoked = 0 \
             AND (max_bytes IS NULL OR used_bytes + $2 <= max_bytes) \
             AND (max_files IS NULL OR used_files + $3 <= max_files)",
        )
        .bind(token_hash)
        .bind(bytes)
        .bind(files)
        .execute(&mut self.reader().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives back a reservation whose upload failed.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn release_upload(
        &self,
        token_hash: &str,
        bytes: u64,
        files: u64,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "UPDATE shares SET used_bytes = used_bytes - $2, used_files = used_files - $3 \
             WHERE token_hash = $1 AND used_bytes >= $2 AND used_files >= $3",
        )
        .bind(token_hash)
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(files).unwrap_or(i64::MAX))
        .execute(&mut self.reader().await?)
        .await?;
        Ok(())
    }

    /// The share link whose id hashes to `token_hash`, revoked or not.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn share(&self, token_hash: &str) -> Result<Option<ShareRow>, GatewayError> {
        let row = sqlx::query(
            "SELECT bucket, prefix, expires_at, revoked, upload, max_bytes, max_files, \
             used_bytes, used_files FROM shares WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut self.reader().await?)
        .await?;
        row.map(|row| {
            Ok(ShareRow {
                bucket: row.try_get("bucket")?,
                prefix: row.try_get("prefix")?,
                expires_at: row.try_get("expires_at")?,
                revoked: row.try_get::<i64, _>("revoked")? != 0,
                upload: if row.try_get::<i64, _>("upload")? == 0 {
                    None
                } else {
                    let count = |v: i64| u64::try_from(v).unwrap_or(0);
                    Some(UploadAllowance {
                        max_bytes: row.try_get::<Option<i64>, _>("max_bytes")?.map(count),
                        max_files: row.try_get::<Option<i64>, _>("max_files")?.map(count),
                        used_bytes: count(row.try_get("used_bytes")?),
                        used_files: count(row.try_get("used_files")?),
                    })
                },
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
            .execute(&mut self.reader().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records that an upload link started multipart upload `upload_id`
    /// for a file of `size` bytes.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn add_link_upload(
        &self,
        upload_id: &str,
        token_hash: &str,
        size: u64,
    ) -> Result<(), GatewayError> {
        sqlx::query("INSERT INTO link_uploads (upload_id, token_hash, size) VALUES ($1, $2, $3)")
            .bind(upload_id)
            .bind(token_hash)
            .bind(i64::try_from(size).unwrap_or(i64::MAX))
            .execute(&mut self.reader().await?)
            .await?;
        Ok(())
    }

    /// The size a multipart upload started by the link `token_hash` was
    /// announced with; `None` when that link did not start it.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn link_upload_size(
        &self,
        upload_id: &str,
        token_hash: &str,
    ) -> Result<Option<u64>, GatewayError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT size FROM link_uploads WHERE upload_id = $1 AND token_hash = $2",
        )
        .bind(upload_id)
        .bind(token_hash)
        .fetch_optional(&mut self.reader().await?)
        .await?;
        Ok(size.map(|s| u64::try_from(s).unwrap_or(0)))
    }
}
