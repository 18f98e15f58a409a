//! Objects in the index: their rows, the data behind them (segments,
//! fragments, placements, wrapped data keys), and the transactions that
//! commit them (replacing and deleting objects: [`super::discard`]).

use sqlx::any::AnyRow;
use sqlx::{Executor, Row};
use tenfold_balancer::Placement;

use super::group_commit::Change;
use super::nodes::NodeUsage;
use super::rows::{
    ObjectHeaders, ObjectRow, SegmentRow, StoredData, StoredPart, Tags, WriteCondition,
};
use super::writes::Writes;
use super::{Connections, Engine, Index, Occupant, Tx, packed, segment_of, to_i64, to_u64};
use crate::error::GatewayError;
use crate::integrity::Checksums;

/// An object row's columns, as [`Index::object_from_row`] reads them.
const OBJECT_COLUMNS: &str = "id, bucket, key, size, etag, content_type, metadata, headers, checksums, last_modified, parts_count, tags";

/// A segment row's columns, as [`segment_of`] reads them.
pub(super) const SEGMENT_COLUMNS: &str =
    "data_id, seq, plain_offset, plain_size, frames, key_id, wrapped, fragments";

impl Index {
    /// The segment in `row`, its overflow pins' content ids looked up (few
    /// segments have any).
    async fn segment_read(&self, row: &AnyRow) -> Result<SegmentRow, GatewayError> {
        let mut segment = segment_of(row)?;
        if packed::has_overflow(&segment.fragments) {
            let mut conn = self.reader().await?;
            Self::fill_cids(&mut conn, &mut segment).await?;
        }
        Ok(segment)
    }

    fn object_from_row(row: &AnyRow) -> Result<ObjectRow, GatewayError> {
        // Empty metadata, headers and tags are stored as NULL.
        fn json<T: serde::de::DeserializeOwned + Default>(
            row: &AnyRow,
            column: &str,
        ) -> Result<T, GatewayError> {
            Ok(row
                .try_get::<Option<String>, _>(column)?
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default())
        }
        let parts_count = row
            .try_get::<Option<i64>, _>("parts_count")?
            .and_then(|n| u32::try_from(n).ok());
        Ok(ObjectRow {
            id: packed::id_text(&row.try_get::<Vec<u8>, _>("id")?),
            bucket: row.try_get("bucket")?,
            key: row.try_get("key")?,
            size: to_u64(row.try_get("size")?),
            etag: packed::etag_text(&row.try_get::<Vec<u8>, _>("etag")?, parts_count),
            content_type: row.try_get("content_type")?,
            metadata: json(row, "metadata")?,
            headers: json(row, "headers")?,
            checksums: json(row, "checksums")?,
            last_modified: row.try_get("last_modified")?,
            parts_count,
            tags: json(row, "tags")?,
        })
    }

    /// The visible object at `bucket`/`key`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRow>, GatewayError> {
        self.timed_read("object", async {
            let row = sqlx::query(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2"
            ))
            .bind(bucket)
            .bind(key)
            .fetch_optional(&mut self.reader().await?)
            .await?;
            row.as_ref().map(Self::object_from_row).transpose()
        })
        .await
    }

    /// The visible object at `bucket`/`key` and, when it is a single PUT
    /// held in one segment (any object up to the segment size), that
    /// segment: a small object's GET reads its row and its layout in one
    /// query, as one snapshot.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn get_object_with_segment(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectRow, Option<SegmentRow>)>, GatewayError> {
        self.timed_read("object", async {
            // Segment 0 of a single PUT holds all of it exactly when its
            // size is the object's.
            let row = sqlx::query(
                // (No column name is in both tables.)
                &format!(
                    "SELECT {OBJECT_COLUMNS}, {SEGMENT_COLUMNS} \
                     FROM objects o LEFT JOIN segments s \
                       ON s.data_id = o.id AND s.seq = 0 AND s.plain_size = o.size \
                       AND o.parts_count IS NULL \
                     WHERE o.bucket = $1 AND o.key = $2"
                ),
            )
            .bind(bucket)
            .bind(key)
            .fetch_optional(&mut self.reader().await?)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let object = Self::object_from_row(&row)?;
            if row.try_get::<Option<Vec<u8>>, _>("data_id")?.is_none() {
                return Ok(Some((object, None)));
            }
            Ok(Some((object, Some(self.segment_read(&row).await?))))
        })
        .await
    }

    /// Objects of a bucket with keys greater than `after` and at least
    /// `prefix`, in key order, at most `limit`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ObjectRow>, GatewayError> {
        self.timed_read("listing", async {
            let rows = sqlx::query(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects \
                     WHERE bucket = $1 AND key > $2 AND key >= $3 ORDER BY key LIMIT $4"
            ))
            .bind(bucket)
            .bind(after)
            .bind(prefix)
            .bind(limit)
            .fetch_all(&mut self.reader().await?)
            .await?;
            rows.iter().map(Self::object_from_row).collect()
        })
        .await
    }

    /// The segments of an object that overlap plaintext `range` (and any
    /// empty one), in order, with their fragments and placements; offsets
    /// are within the object.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn layout(
        &self,
        object_id: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<SegmentRow>, GatewayError> {
        self.timed_read("layout", async {
            // A single PUT's object id is its data's; a multipart object's
            // parts name theirs.
            let rows = sqlx::query(
                "SELECT 0 AS part_number, s.data_id, s.seq, s.plain_offset, s.plain_size, \
                        s.frames, s.key_id, s.wrapped, s.fragments \
                 FROM segments s \
                 WHERE s.data_id = $1 \
                   AND (s.plain_size = 0 OR (s.plain_offset < $3 AND s.plain_offset + s.plain_size > $2)) \
                 UNION ALL \
                 SELECT op.part_number, s.data_id, s.seq, op.plain_offset + s.plain_offset AS plain_offset, \
                        s.plain_size, s.frames, s.key_id, s.wrapped, s.fragments \
                 FROM object_parts op \
                 JOIN segments s ON s.data_id = op.data_id \
                 WHERE op.object_id = $1 \
                   AND (s.plain_size = 0 OR (op.plain_offset + s.plain_offset < $3 \
                        AND op.plain_offset + s.plain_offset + s.plain_size > $2)) \
                 ORDER BY part_number, seq",
            )
            .bind(packed::id_bytes(object_id))
            .bind(to_i64(range.start))
            .bind(to_i64(range.end))
            .fetch_all(&mut self.reader().await?)
            .await?;
            let mut segments = Vec::with_capacity(rows.len());
            for row in &rows {
                segments.push(self.segment_read(row).await?);
            }
            Ok(segments)
        })
        .await
    }

    /// Fills in the content ids of a segment's overflow pins.
    pub(super) async fn fill_cids<C>(
        conn: &mut C,
        segment: &mut SegmentRow,
    ) -> Result<(), GatewayError>
    where
        C: Send + ?Sized,
        for<'e> &'e mut C: Executor<'e, Database = sqlx::Any>,
    {
        let pins: Vec<(i64, String)> =
            sqlx::query_as("SELECT idx, cid FROM overflow_pins WHERE data_id = $1 AND seq = $2")
                .bind(packed::id_bytes(&segment.data_id))
                .bind(i64::from(segment.seq))
                .fetch_all(&mut *conn)
                .await?;
        for (idx, cid) in pins {
            let Some(f) = segment
                .fragments
                .iter_mut()
                .find(|f| i64::from(f.index) == idx)
            else {
                continue;
            };
            for p in &mut f.placements {
                if let Placement::Overflow { cid: slot } = p {
                    slot.clone_from(&cid);
                }
            }
        }
        Ok(())
    }

    pub(super) async fn bucket_exists_in(
        tx: &mut Tx<'_>,
        bucket: &str,
    ) -> Result<(), GatewayError> {
        let exists = sqlx::query("SELECT 1 FROM buckets WHERE name = $1")
            .bind(bucket)
            .fetch_optional(tx.conn().await?)
            .await?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(GatewayError::NoSuchBucket(bucket.to_owned()))
        }
    }

    /// Records placed data: its segments (with their fragments, copies and
    /// wrapped key), its overflow pins, what it adds to each node, and its
    /// fragments placed short of the policy, queued for repair.
    pub(super) async fn insert_data_in(
        tx: &mut Tx<'_>,
        data: &StoredData,
    ) -> Result<(), GatewayError> {
        let mut writes = Writes::new(Engine::of_tx(tx));
        let mut usage = NodeUsage::default();
        Self::queue_data(&mut writes, data, &mut usage);
        Self::queue_usage(&mut writes, &usage);
        writes.run(tx).await
    }

    /// Queues [`Index::insert_data_in`]'s statements, adding what the data
    /// places on nodes to `usage` for the caller to log (once for a whole
    /// group commit).
    pub(super) fn queue_data(writes: &mut Writes, data: &StoredData, usage: &mut NodeUsage) {
        let id = packed::id_bytes(&data.data_id);
        // The segments' master key goes into `master_keys_used` by a
        // trigger (migration 23).
        writes.rows(
            "INSERT INTO segments (data_id, seq, plain_offset, plain_size, frames, key_id, wrapped, fragments)",
            8,
            "",
            &data.segments,
            |row, s| {
                row.bind(id.clone())
                    .bind(i64::from(s.seq))
                    .bind(to_i64(s.plain_offset))
                    .bind(to_i64(s.plain_size))
                    .bind(s.frames.as_ref().map(packed::frames_text))
                    .bind(data.key.as_ref().map(|k| k.key_id.clone()))
                    .bind(data.key.as_ref().map(|k| k.wrapped.clone()))
                    .bind(packed::pack(&s.fragments));
            },
        );
        let mut pins = Vec::new();
        for s in &data.segments {
            for f in &s.fragments {
                for p in &f.placements {
                    match p {
                        Placement::Node { node_id, .. } => usage.add(*node_id, f.size),
                        Placement::Overflow { cid } => {
                            pins.push((s.seq, f.index, cid.as_str(), f.size));
                        }
                    }
                }
            }
        }
        Self::queue_pins(writes, &id, &pins);
        writes.rows(
            "INSERT INTO repairs (data_id, seq, idx, queued)",
            4,
            "",
            &data.short,
            |row, (seq, idx)| {
                row.bind(id.clone())
                    .bind(i64::from(*seq))
                    .bind(i64::from(*idx))
                    .bind(1i64);
            },
        );
    }

    /// Records a fragment's overflow pin.
    pub(super) async fn insert_pin_in(
        tx: &mut Tx<'_>,
        (data_id, seq, idx): (&str, u32, u16),
        cid: &str,
        size: u64,
    ) -> Result<(), GatewayError> {
        let mut writes = Writes::new(Engine::of_tx(tx));
        Self::queue_pins(
            &mut writes,
            &packed::id_bytes(data_id),
            &[(seq, idx, cid, size)],
        );
        writes.run(tx).await
    }

    /// Queues the overflow pins (segment, fragment, content id, size) of
    /// the data whose id is `id` (as stored).
    fn queue_pins(writes: &mut Writes, id: &[u8], pins: &[(u32, u16, &str, u64)]) {
        writes.rows(
            "INSERT INTO overflow_pins (data_id, seq, idx, cid, size)",
            5,
            "ON CONFLICT (data_id, seq, idx) DO UPDATE SET cid = excluded.cid",
            pins,
            |row, (seq, idx, cid, size)| {
                row.bind(id.to_vec())
                    .bind(i64::from(*seq))
                    .bind(i64::from(*idx))
                    .bind((*cid).to_owned())
                    .bind(to_i64(*size));
            },
        );
    }

    /// Whether a piece of data was committed (an object or a part has it).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn data_committed(&self, data_id: &str) -> Result<bool, GatewayError> {
        Ok(
            sqlx::query("SELECT 1 FROM segments WHERE data_id = $1 LIMIT 1")
                .bind(packed::id_bytes(data_id))
                .fetch_optional(&mut self.reader().await?)
                .await?
                .is_some(),
        )
    }

    /// Queues the insertion of `object`'s row.
    pub(super) fn queue_object(writes: &mut Writes, object: &ObjectRow) {
        writes.rows(
            &format!("INSERT INTO objects ({OBJECT_COLUMNS})"),
            12,
            "",
            std::slice::from_ref(object),
            |row, object| {
                row.bind(packed::id_bytes(&object.id))
                    .bind(object.bucket.clone())
                    .bind(object.key.clone())
                    .bind(to_i64(object.size))
                    .bind(packed::etag_bytes(&object.etag, object.parts_count))
                    .bind(object.content_type.clone())
                    .bind(
                        (!object.metadata.is_empty())
                            .then(|| serde_json::to_string(&object.metadata).ok())
                            .flatten(),
                    )
                    .bind(
                        (object.headers != ObjectHeaders::default())
                            .then(|| serde_json::to_string(&object.headers).ok())
                            .flatten(),
                    )
                    .bind(serde_json::to_string(&object.checksums).unwrap_or_else(|_| "{}".into()))
                    .bind(object.last_modified)
                    .bind(object.parts_count.map(i64::from))
                    .bind(tags_column(&object.tags));
            },
        );
    }

    /// Records `part` of multipart object `object_id`, starting at `offset`
    /// in the object's bytes.
    pub(super) async fn insert_object_part_in(
        tx: &mut Tx<'_>,
        object_id: &str,
        offset: u64,
        part: &StoredPart,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO object_parts (object_id, part_number, data_id, plain_offset, size, etag, checksums) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(packed::id_bytes(object_id))
        .bind(i64::from(part.number))
        .bind(packed::id_bytes(&part.data_id))
        .bind(to_i64(offset))
        .bind(to_i64(part.size))
        .bind(&part.etag)
        .bind(serde_json::to_string(&part.checksums).unwrap_or_else(|_| "{}".into()))
        .execute(tx.conn().await?)
        .await?;
        Ok(())
    }

    /// Makes a fully placed single-PUT object visible, replacing any object
    /// at the same key (whose replicas go to the garbage queue), in one
    /// transaction, if `condition` holds of the object there. Its id is its
    /// data's (`object.id` is not looked at).
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] when the bucket went away meanwhile,
    /// [`GatewayError::PreconditionFailed`], [`GatewayError::Index`].
    pub async fn commit_object(
        &self,
        object: &ObjectRow,
        data: &StoredData,
        condition: &WriteCondition,
    ) -> Result<(), GatewayError> {
        match &self.connections {
            Connections::Sqlite { group_commits, .. } => {
                let change = Change::Put {
                    object: Box::new(object.clone()),
                    data: Box::new(data.clone()),
                    condition: condition.clone(),
                };
                self.change_grouped(group_commits, change).await?;
                Ok(())
            }
            Connections::Postgres(_) => self.commit_object_alone(object, data, condition).await,
        }
    }

    /// [`Index::commit_object`] in a transaction of its own.
    pub(super) async fn commit_object_alone(
        &self,
        object: &ObjectRow,
        data: &StoredData,
        condition: &WriteCondition,
    ) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            let mut writes = Writes::new(Engine::of_tx(tx));
            let mut usage = NodeUsage::default();
            Self::commit_object_in(tx, &mut writes, (object, data, condition), None, &mut usage)
                .await??;
            Self::queue_usage(&mut writes, &usage);
            tx.commit_with(writes).await
        })
    }

    /// A single-PUT commit inside `tx`, adding what it places on nodes to
    /// `usage`: `Ok(Err(_))` when its bucket or condition refuses it
    /// (nothing of it written; a group commit goes on with the others),
    /// `Err` when the transaction itself failed. The object it replaces is
    /// discarded at once; its own rows are queued in `writes`, so they must
    /// be run before another commit reads its key. `found` is what a lookup
    /// of its key in `tx` found already ([`Index::bucket_occupants_in`]),
    /// `None` to look it up here.
    pub(super) async fn commit_object_in(
        tx: &mut Tx<'_>,
        writes: &mut Writes,
        (object, data, condition): (&ObjectRow, &StoredData, &WriteCondition),
        found: Option<Result<Option<Occupant>, GatewayError>>,
        usage: &mut NodeUsage,
    ) -> Result<Result<(), GatewayError>, GatewayError> {
        let found = match found {
            Some(found) => found,
            None => Self::bucket_occupant_in(tx, &object.bucket, &object.key).await,
        };
        let old = match found {
            Ok(old) => old,
            Err(e @ GatewayError::Index(_)) => return Err(e),
            Err(refused) => return Ok(Err(refused)),
        };
        if let Err(refused) = condition.check(&object.key, old.as_ref().map(|o| o.etag.as_str())) {
            return Ok(Err(refused));
        }
        if let Some(old) = old {
            Self::discard_object_in(tx, writes, (&object.bucket, &object.key), &old.id).await?;
        }
        Self::queue_single_put(writes, object, data, usage);
        Ok(Ok(()))
    }

    /// Queues the rows of a single PUT: `object`, under its data's id, and
    /// `data`, adding what it places on nodes to `usage`.
    pub(super) fn queue_single_put(
        writes: &mut Writes,
        object: &ObjectRow,
        data: &StoredData,
        usage: &mut NodeUsage,
    ) {
        let object = ObjectRow {
            id: data.data_id.clone(),
            ..object.clone()
        };
        Self::queue_object(writes, &object);
        Self::queue_data(writes, data, usage);
    }

    /// Offset and size of part `number` of an object.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn part_range(
        &self,
        object_id: &str,
        number: u32,
    ) -> Result<Option<(u64, u64)>, GatewayError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT plain_offset, size FROM object_parts WHERE object_id = $1 AND part_number = $2",
        )
        .bind(packed::id_bytes(object_id))
        .bind(i64::from(number))
        .fetch_optional(&mut self.reader().await?)
        .await?;
        Ok(row.map(|(o, s)| (to_u64(o), to_u64(s))))
    }

    /// Replaces the tags of the object at `bucket`/`key`; `false` when
    /// there is none.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: &Tags,
    ) -> Result<bool, GatewayError> {
        let done = sqlx::query("UPDATE objects SET tags = $1 WHERE bucket = $2 AND key = $3")
            .bind(tags_column(tags))
            .bind(bucket)
            .bind(key)
            .execute(&mut self.reader().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Part numbers, sizes and checksums of a multipart object's parts after
    /// `after`, at most `limit`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn object_parts(
        &self,
        object_id: &str,
        after: u32,
        limit: i64,
    ) -> Result<Vec<(u32, u64, Checksums)>, GatewayError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT part_number, size, checksums FROM object_parts \
             WHERE object_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
        )
        .bind(packed::id_bytes(object_id))
        .bind(i64::from(after))
        .bind(limit)
        .fetch_all(&mut self.reader().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(n, size, checksums)| {
                (
                    u32::try_from(n).unwrap_or(0),
                    to_u64(size),
                    serde_json::from_str(&checksums).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Ids of the master keys that wrapped the stored data keys.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn master_key_ids(&self) -> Result<Vec<String>, GatewayError> {
        Ok(sqlx::query_scalar("SELECT key_id FROM master_keys_used")
            .fetch_all(&mut self.reader().await?)
            .await?)
    }
}

/// Tags as stored: none as NULL.
fn tags_column(tags: &Tags) -> Option<String> {
    (!tags.is_empty())
        .then(|| serde_json::to_string(tags).ok())
        .flatten()
}
