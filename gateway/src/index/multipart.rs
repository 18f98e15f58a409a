//! Multipart uploads in the index: uploads, their parts, and completion
//! in one transaction.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{
    Assembly, ObjectRow, PartRow, StoredData, StoredPart, UploadRow, WriteCondition,
};
use super::writes::Writes;
use super::{Engine, Index, Tx, now_ms, packed, part_list_json, to_i64, to_u64};
use crate::error::GatewayError;

impl Index {
    /// Starts a multipart upload.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`], [`GatewayError::Index`].
    pub async fn create_upload(&self, upload: &UploadRow) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::bucket_exists_in(tx, &upload.bucket).await?;
            sqlx::query(
                "INSERT INTO uploads (id, bucket, key, content_type, metadata, headers, created_at, checksum_algorithm, checksum_type, tags) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&upload.id)
            .bind(&upload.bucket)
            .bind(&upload.key)
            .bind(&upload.content_type)
            .bind(serde_json::to_string(&upload.metadata).unwrap_or_else(|_| "{}".into()))
            .bind(serde_json::to_string(&upload.headers).unwrap_or_else(|_| "{}".into()))
            .bind(upload.created_at)
            .bind(&upload.checksum_algorithm)
            .bind(&upload.checksum_type)
            .bind(serde_json::to_string(&upload.tags).unwrap_or_else(|_| "[]".into()))
            .execute(tx.conn().await?)
            .await?;
            Ok(())
        })
    }

    fn upload_from_row(row: &AnyRow) -> Result<UploadRow, GatewayError> {
        let metadata: String = row.try_get("metadata")?;
        Ok(UploadRow {
            id: row.try_get("id")?,
            bucket: row.try_get("bucket")?,
            key: row.try_get("key")?,
            content_type: row.try_get("content_type")?,
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            headers: serde_json::from_str(&row.try_get::<String, _>("headers")?)
                .unwrap_or_default(),
            created_at: row.try_get("created_at")?,
            checksum_algorithm: row.try_get("checksum_algorithm")?,
            checksum_type: row.try_get("checksum_type")?,
            tags: serde_json::from_str(&row.try_get::<String, _>("tags")?).unwrap_or_default(),
        })
    }

    /// The upload `id` of `bucket`/`key`.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchUpload`] when there is no such upload (or it is
    /// for another key), [`GatewayError::Index`].
    pub async fn get_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<UploadRow, GatewayError> {
        let row = sqlx::query(
            "SELECT id, bucket, key, content_type, metadata, headers, created_at, checksum_algorithm, checksum_type, tags FROM uploads WHERE id = $1 AND bucket = $2 AND key = $3",
        )
        .bind(id)
        .bind(bucket)
        .bind(key)
        .fetch_optional(&mut self.reader().await?)
        .await?;
        match row {
            Some(row) => Self::upload_from_row(&row),
            None => Err(GatewayError::NoSuchUpload(id.to_owned())),
        }
    }

    /// Fails with `NoSuchUpload` unless the upload is still in progress
    /// (it may have been completed or aborted meanwhile).
    async fn upload_exists_in(tx: &mut Tx<'_>, upload_id: &str) -> Result<(), GatewayError> {
        let exists = sqlx::query("SELECT 1 FROM uploads WHERE id = $1")
            .bind(upload_id)
            .fetch_optional(tx.conn().await?)
            .await?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(GatewayError::NoSuchUpload(upload_id.to_owned()))
        }
    }

    /// Records an uploaded part, replacing an earlier upload of the same
    /// part number.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchUpload`] when the upload was completed or
    /// aborted meanwhile.
    pub async fn commit_part(
        &self,
        upload_id: &str,
        part_number: u32,
        data: &StoredData,
    ) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::upload_exists_in(tx, upload_id).await?;
            let old: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT data_id FROM upload_parts WHERE upload_id = $1 AND part_number = $2",
            )
            .bind(upload_id)
            .bind(i64::from(part_number))
            .fetch_optional(tx.conn().await?)
            .await?;
            if let Some(old) = old {
                Self::discard_data_in(tx, &packed::id_text(&old)).await?;
                sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1 AND part_number = $2")
                    .bind(upload_id)
                    .bind(i64::from(part_number))
                    .execute(tx.conn().await?)
                    .await?;
            }
            Self::insert_data_in(tx, data).await?;
            sqlx::query(
                "INSERT INTO upload_parts (upload_id, part_number, data_id, size, etag, last_modified, checksums) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(upload_id)
            .bind(i64::from(part_number))
            .bind(packed::id_bytes(&data.data_id))
            .bind(to_i64(data.size))
            .bind(hex::encode(data.md5))
            .bind(now_ms())
            .bind(serde_json::to_string(&data.checksums).unwrap_or_else(|_| "{}".into()))
            .execute(tx.conn().await?)
            .await?;
            Ok(())
        })
    }

    /// Parts of an upload with numbers above `after`, at most `limit`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: i64,
    ) -> Result<Vec<PartRow>, GatewayError> {
        let rows: Vec<(i64, i64, String, i64, String)> = sqlx::query_as(
            "SELECT part_number, size, etag, last_modified, checksums FROM upload_parts \
             WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
        )
        .bind(upload_id)
        .bind(i64::from(after))
        .bind(limit)
        .fetch_all(&mut self.reader().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(n, size, etag, last_modified, checksums)| PartRow {
                part_number: u32::try_from(n).unwrap_or(0),
                size: to_u64(size),
                etag,
                checksums: serde_json::from_str(&checksums).unwrap_or_default(),
                last_modified,
            })
            .collect())
    }

    /// Uploads in progress in a bucket, by key then id, after the markers.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        id_marker: &str,
        limit: i64,
    ) -> Result<Vec<UploadRow>, GatewayError> {
        let rows = sqlx::query(
            "SELECT id, bucket, key, content_type, metadata, headers, created_at, checksum_algorithm, checksum_type, tags FROM uploads \
             WHERE bucket = $1 AND key >= $2 AND (key > $3 OR (key = $3 AND id > $4)) \
             ORDER BY key, id LIMIT $5",
        )
        .bind(bucket)
        .bind(prefix)
        .bind(key_marker)
        .bind(id_marker)
        .bind(limit)
        .fetch_all(&mut self.reader().await?)
        .await?;
        rows.iter()
            .map(Self::upload_from_row)
            .filter(|u| u.as_ref().map_or(true, |u| u.key.starts_with(prefix)))
            .collect()
    }

    /// Completes an upload in one transaction: `assemble` gets the parts
    /// stored for it and answers the object they make (S3's rules are the
    /// caller's: which parts, in which order, the ETag and checksums), which
    /// then replaces any object at the upload's key; the parts it leaves out
    /// are discarded. `chosen` is the client's part list (number and ETag),
    /// recorded so that the same completion can be answered again.
    /// `assemble` may be called more than once (a transaction that lost a
    /// race is run again).
    ///
    /// # Errors
    /// What `assemble` answers, [`GatewayError::NoSuchUpload`],
    /// [`GatewayError::Index`].
    pub async fn complete_upload(
        &self,
        upload: &UploadRow,
        chosen: &[(u32, String)],
        condition: &WriteCondition,
        assemble: impl Fn(&[StoredPart]) -> Result<Assembly, GatewayError>,
    ) -> Result<ObjectRow, GatewayError> {
        let assemble = &assemble;
        write_tx!(self, |tx| {
            Self::upload_exists_in(tx, &upload.id).await?;
            let old = Self::occupant_in(tx, &upload.bucket, &upload.key).await?;
            condition.check(&upload.key, old.as_ref().map(|o| o.etag.as_str()))?;
            let stored: Vec<(i64, Vec<u8>, i64, String, String)> = sqlx::query_as(
                "SELECT part_number, data_id, size, etag, checksums FROM upload_parts WHERE upload_id = $1 ORDER BY part_number",
            )
            .bind(&upload.id)
            .fetch_all(tx.conn().await?)
            .await?;
            let stored: Vec<StoredPart> = stored
                .into_iter()
                .map(|(number, data_id, size, etag, checksums)| StoredPart {
                    number: u32::try_from(number).unwrap_or(0),
                    data_id: packed::id_text(&data_id),
                    size: to_u64(size),
                    etag,
                    checksums: serde_json::from_str(&checksums).unwrap_or_default(),
                })
                .collect();
            let Assembly { object, parts } = assemble(&stored)?;
            let mut writes = Writes::new(Engine::of_tx(tx));
            if let Some(old) = old {
                Self::discard_object_in(tx, &mut writes, (&upload.bucket, &upload.key), &old.id)
                    .await?;
            }
            Self::queue_object(&mut writes, &object);
            writes.run(tx).await?;
            let mut offset = 0;
            for part in &parts {
                Self::insert_object_part_in(tx, &object.id, offset, part).await?;
                offset += part.size;
            }
            for part in &stored {
                if !parts.iter().any(|p| p.number == part.number) {
                    Self::discard_data_in(tx, &part.data_id).await?;
                }
            }
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(&upload.id)
                .execute(tx.conn().await?)
                .await?;
            sqlx::query(
                "INSERT INTO completed_uploads (upload_id, bucket, key, object_id, parts, completed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&upload.id)
            .bind(&object.bucket)
            .bind(&object.key)
            .bind(&object.id)
            .bind(part_list_json(chosen))
            .bind(object.last_modified)
            .execute(tx.conn().await?)
            .await?;
            Ok(object)
        })
    }

    /// The object an upload already completed into, when the same part list
    /// completes it again and the object is still there.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn completed_object(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        chosen: &[(u32, String)],
    ) -> Result<Option<ObjectRow>, GatewayError> {
        let done: Option<(String, String)> = sqlx::query_as(
            "SELECT object_id, parts FROM completed_uploads WHERE upload_id = $1 AND bucket = $2 AND key = $3",
        )
        .bind(upload_id)
        .bind(bucket)
        .bind(key)
        .fetch_optional(&mut self.reader().await?)
        .await?;
        match done {
            Some((object_id, parts)) if parts == part_list_json(chosen) => Ok(self
                .get_object(bucket, key)
                .await?
                .filter(|o| o.id == object_id)),
            _ => Ok(None),
        }
    }

    pub(super) async fn abort_upload_in(
        tx: &mut Tx<'_>,
        upload_id: &str,
    ) -> Result<bool, GatewayError> {
        let parts: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT data_id FROM upload_parts WHERE upload_id = $1")
                .bind(upload_id)
                .fetch_all(tx.conn().await?)
                .await?;
        for data_id in parts {
            Self::discard_data_in(tx, &packed::id_text(&data_id)).await?;
        }
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(upload_id)
            .execute(tx.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Aborts an upload; its parts' replicas go to the garbage queue.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchUpload`], [`GatewayError::Index`].
    pub async fn abort_upload(&self, upload_id: &str) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            if !Self::abort_upload_in(tx, upload_id).await? {
                return Err(GatewayError::NoSuchUpload(upload_id.to_owned()));
            }
            Ok(())
        })
    }

    /// Aborts every upload started before `before_ms`; returns how many.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn abort_uploads_before(&self, before_ms: i64) -> Result<usize, GatewayError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM uploads WHERE created_at < $1")
            .bind(before_ms)
            .fetch_all(&mut self.reader().await?)
            .await?;
        for id in &ids {
            write_tx!(self, |tx| { Self::abort_upload_in(tx, id).await })?;
        }
        sqlx::query("DELETE FROM completed_uploads WHERE completed_at < $1")
            .bind(before_ms)
            .execute(&mut self.reader().await?)
            .await?;
        Ok(ids.len())
    }
}
