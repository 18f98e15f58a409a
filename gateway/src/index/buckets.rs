//! Buckets in the index: whether one exists, its CORS rules, and deleting
//! an empty one.

use super::{Index, Tx};
use crate::cors::CorsRules;
use crate::error::GatewayError;

impl Index {
    /// Whether a bucket exists.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn bucket_exists(&self, name: &str) -> Result<bool, GatewayError> {
        self.timed_read("bucket", async {
            Ok(sqlx::query("SELECT 1 FROM buckets WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut self.reader().await?)
                .await?
                .is_some())
        })
        .await
    }

    /// Fails with `NoSuchBucket` unless the bucket exists.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] or [`GatewayError::Index`].
    pub async fn require_bucket(&self, name: &str) -> Result<(), GatewayError> {
        if self.bucket_exists(name).await? {
            Ok(())
        } else {
            Err(GatewayError::NoSuchBucket(name.to_owned()))
        }
    }

    /// Deletes an empty bucket.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`], [`GatewayError::BucketNotEmpty`].
    pub async fn delete_bucket(&self, name: &str) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            let has_objects = sqlx::query("SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1")
                .bind(name)
                .fetch_optional(tx.conn().await?)
                .await?
                .is_some();
            if has_objects {
                return Err(GatewayError::BucketNotEmpty(name.to_owned()));
            }
            // Uploads in progress do not keep a bucket alive: abort them.
            let uploads: Vec<String> =
                sqlx::query_scalar("SELECT id FROM uploads WHERE bucket = $1")
                    .bind(name)
                    .fetch_all(tx.conn().await?)
                    .await?;
            for id in uploads {
                Self::abort_upload_in(tx, &id).await?;
            }
            let done = sqlx::query("DELETE FROM buckets WHERE name = $1")
                .bind(name)
                .execute(tx.conn().await?)
                .await?;
            if done.rows_affected() == 0 {
                return Err(GatewayError::NoSuchBucket(name.to_owned()));
            }
            Ok(())
        })
    }

    /// A bucket's CORS rules: `None` when it has none.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] or [`GatewayError::Index`].
    pub async fn bucket_cors(&self, bucket: &str) -> Result<Option<CorsRules>, GatewayError> {
        let cors: Option<Option<String>> =
            sqlx::query_scalar("SELECT cors FROM buckets WHERE name = $1")
                .bind(bucket)
                .fetch_optional(&mut self.reader().await?)
                .await?;
        match cors {
            None => Err(GatewayError::NoSuchBucket(bucket.to_owned())),
            Some(None) => Ok(None),
            Some(Some(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| GatewayError::Internal(format!("stored CORS rules of {bucket}: {e}"))),
        }
    }

    /// Sets (or with `None` removes) a bucket's CORS rules.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] or [`GatewayError::Index`].
    pub async fn set_bucket_cors(
        &self,
        bucket: &str,
        rules: Option<&CorsRules>,
    ) -> Result<(), GatewayError> {
        let json = rules
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let done = sqlx::query("UPDATE buckets SET cors = $1 WHERE name = $2")
            .bind(json)
            .bind(bucket)
            .execute(&mut self.reader().await?)
            .await?;
        if done.rows_affected() == 0 {
            return Err(GatewayError::NoSuchBucket(bucket.to_owned()));
        }
        Ok(())
    }
}
