//! Deleting objects and discarding their data: the object's rows go, its
//! data's segments, overflow pins and repair entries with them, each
//! replica to the garbage queue (removed from its node once no reader
//! can still be reading it), and what the replicas held off their nodes'
//! usage. The data is read in one query; every statement is queued to go
//! with the transaction's `COMMIT` (on SQLite in the same trip).

use tenfold_balancer::Replica;

use super::group_commit::Change;
use super::nodes::NodeUsage;
use super::objects::SEGMENT_COLUMNS;
use super::writes::{Writes, numbered};
use super::{Connections, Engine, Index, Occupant, Tx, now_ms, packed, segment_of};
use crate::error::GatewayError;
use crate::fragment::node_key;

impl Index {
    /// Moves a piece of data's replicas to the garbage queue and forgets it.
    pub(super) async fn discard_data_in(
        tx: &mut Tx<'_>,
        data_id: &str,
    ) -> Result<(), GatewayError> {
        let mut writes = Writes::new(Engine::of_tx(tx));
        Self::queue_discard(tx, &mut writes, Discarded::Data(&packed::id_bytes(data_id))).await?;
        writes.run(tx).await
    }

    /// Reads the segments of the data `which` names, in one query, and
    /// queues what discards them: their rows' deletion, their replicas to
    /// the garbage queue, and what they held off their nodes' usage.
    async fn queue_discard(
        tx: &mut Tx<'_>,
        writes: &mut Writes,
        which: Discarded<'_>,
    ) -> Result<(), GatewayError> {
        let (set, values) = which.set();
        let sql = format!(
            "{}SELECT {SEGMENT_COLUMNS} FROM segments WHERE data_id {} ORDER BY data_id, seq",
            tx.opening(),
            numbered(set)
        );
        let mut read = sqlx::query(&sql);
        for v in &values {
            read = read.bind(v.to_vec());
        }
        let rows = read.fetch_all(tx.conn().await?).await?;
        let mut usage = NodeUsage::default();
        let mut replicas = Vec::new();
        for row in &rows {
            let mut s = segment_of(row)?;
            if packed::has_overflow(&s.fragments) {
                Self::fill_cids(tx.conn().await?, &mut s).await?;
            }
            for f in &s.fragments {
                for p in &f.placements {
                    if let Some(node_id) = p.node_id() {
                        usage.remove(node_id, f.size);
                    }
                    replicas.push(Replica {
                        key: node_key(&s.data_id, s.seq, f.index),
                        placement: p.clone(),
                    });
                }
            }
        }
        for table in ["segments", "overflow_pins", "repairs"] {
            writes.statement(&format!("DELETE FROM {table} WHERE data_id {set}"), |row| {
                for v in &values {
                    row.bind(v.to_vec());
                }
            });
        }
        Self::queue_usage(writes, &usage);
        Self::queue_garbage(writes, &replicas, now_ms());
        Ok(())
    }

    /// Queues the deletion of the object at `bucket`/`key`, whose id is
    /// `id`, and the discarding of its data: a single PUT's (its id's), or
    /// its parts'. One read (the data's segments); the rest goes with
    /// `writes`.
    pub(super) async fn discard_object_in(
        tx: &mut Tx<'_>,
        writes: &mut Writes,
        (bucket, key): (&str, &str),
        id: &[u8],
    ) -> Result<(), GatewayError> {
        Self::queue_discard(tx, writes, Discarded::Object(id)).await?;
        writes.statement("DELETE FROM object_parts WHERE object_id = ?", |row| {
            row.bind(id.to_vec());
        });
        writes.statement("DELETE FROM objects WHERE bucket = ? AND key = ?", |row| {
            row.bind(bucket.to_owned()).bind(key.to_owned());
        });
        Ok(())
    }

    /// Deletes the object at `bucket`/`key`; its replicas go to the garbage
    /// queue. `false` when there was none.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, GatewayError> {
        match &self.connections {
            Connections::Sqlite { group_commits, .. } => {
                let change = Change::Delete {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                };
                self.change_grouped(group_commits, change).await
            }
            Connections::Postgres(_) => Ok(self.delete_objects(bucket, &[key]).await? == [true]),
        }
    }

    /// Deletes, in `tx`, the object a lookup of `bucket`/`key` `found`
    /// there, queuing what discards it in `writes`: whether there was one.
    /// A bucket gone meanwhile holds no objects.
    ///
    /// # Errors
    /// [`GatewayError::Index`]: the transaction failed.
    pub(super) async fn delete_found_in(
        tx: &mut Tx<'_>,
        writes: &mut Writes,
        (bucket, key): (&str, &str),
        found: Result<Option<Occupant>, GatewayError>,
    ) -> Result<bool, GatewayError> {
        match found {
            Ok(Some(old)) => {
                Self::discard_object_in(tx, writes, (bucket, key), &old.id).await?;
                Ok(true)
            }
            Ok(None) | Err(GatewayError::NoSuchBucket(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the objects at `keys` in `bucket` in one transaction (what a
    /// DeleteObjects names, a chunk at a time): whether each was there.
    /// Their replicas go to the garbage queue.
    ///
    /// # Errors
    /// [`GatewayError::Index`]: then none of them was deleted.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[&str],
    ) -> Result<Vec<bool>, GatewayError> {
        let pairs: Vec<(&str, &str)> = keys.iter().map(|key| (bucket, *key)).collect();
        let pairs = &pairs;
        write_tx!(self, |tx| {
            let found = Self::bucket_occupants_in(tx, pairs).await?;
            let mut writes = Writes::new(Engine::of_tx(tx));
            let mut deleted = Vec::with_capacity(keys.len());
            let mut seen = std::collections::HashSet::new();
            for (key, found) in keys.iter().zip(found) {
                // A key named twice was deleted the first time.
                let found = if seen.insert(*key) { found } else { Ok(None) };
                deleted.push(Self::delete_found_in(tx, &mut writes, (bucket, key), found).await?);
            }
            tx.commit_with(writes).await?;
            Ok(deleted)
        })
    }
}

/// The stored data a discard is of.
#[derive(Clone, Copy)]
enum Discarded<'a> {
    /// One piece of data, by its id (as stored).
    Data(&'a [u8]),
    /// An object's: its own id's data and its parts', by the object's id.
    Object(&'a [u8]),
}

impl<'a> Discarded<'a> {
    /// The condition on a `data_id` column that selects the data, with
    /// `?` placeholders, and their values.
    fn set(self) -> (&'static str, Vec<&'a [u8]>) {
        match self {
            Self::Data(id) => ("= ?", vec![id]),
            Self::Object(id) => (
                "IN (SELECT ? UNION ALL SELECT data_id FROM object_parts WHERE object_id = ?)",
                vec![id, id],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::super::tests::{index_with_bucket_b, one_fragment_object};
    use super::*;
    use tenfold_balancer::Placement;

    use crate::index::rows::{Assembly, ObjectHeaders, UploadRow, WriteCondition};
    use crate::object_store::new_object_id;

    /// Completes an upload to `b`/`mp` of one part per content id, each
    /// part one fragment in overflow; the parts' data ids.
    async fn complete_multipart(index: &Index, cids: &[&str]) -> Vec<String> {
        let upload = UploadRow {
            id: new_object_id(),
            bucket: "b".into(),
            key: "mp".into(),
            content_type: None,
            metadata: HashMap::new(),
            headers: ObjectHeaders::default(),
            created_at: 0,
            checksum_algorithm: None,
            checksum_type: None,
            tags: Vec::new(),
        };
        index.create_upload(&upload).await.unwrap();
        let mut data_ids = Vec::new();
        let mut chosen = Vec::new();
        for (n, cid) in (1..).zip(cids) {
            let (_, mut data) = one_fragment_object(&format!("part-{cid}"), cid);
            data.md5 = [u8::try_from(n).unwrap(); 16];
            index.commit_part(&upload.id, n, &data).await.unwrap();
            chosen.push((n, hex::encode(data.md5)));
            data_ids.push(data.data_id);
        }
        index
            .complete_upload(&upload, &chosen, &WriteCondition::Always, |stored| {
                let (mut object, _) = one_fragment_object("mp", "unused");
                object.id = new_object_id();
                object.parts_count = u32::try_from(stored.len()).ok();
                Ok(Assembly {
                    object,
                    parts: stored.to_vec(),
                })
            })
            .await
            .unwrap();
        data_ids
    }

    /// The content ids the garbage queue holds, taken out of it.
    async fn garbage_cids(index: &Index) -> BTreeSet<String> {
        let mut cids = BTreeSet::new();
        let claimed = index.claim_garbage(now_ms(), 60_000, 1000).await.unwrap();
        let ids: Vec<i64> = claimed.iter().map(|q| q.id).collect();
        index.settle_garbage(&ids, &[]).await.unwrap();
        for q in claimed {
            match q.replica.placement {
                Placement::Overflow { cid } => assert!(cids.insert(cid)),
                other => panic!("{other:?} in the garbage queue"),
            }
        }
        cids
    }

    /// Whatever replaces or deletes an object (a completed upload, a single
    /// PUT, a deletion) discards every piece of its data, a multipart
    /// object's parts' as well: their rows go, and each replica, its
    /// content id read back, goes to the garbage queue once.
    #[tokio::test]
    async fn replacing_or_deleting_an_object_discards_all_its_data() {
        let (dir, index) = index_with_bucket_b("discard").await;
        let first = complete_multipart(&index, &["cid-p1", "cid-p2"]).await;
        let second = complete_multipart(&index, &["cid-p3"]).await;
        let set = |cids: &[&str]| cids.iter().map(|c| (*c).to_owned()).collect();
        assert_eq!(garbage_cids(&index).await, set(&["cid-p1", "cid-p2"]));
        let mp = index.get_object("b", "mp").await.unwrap().unwrap();
        assert_eq!(index.object_parts(&mp.id, 0, 10).await.unwrap().len(), 1);

        let (object, data) = one_fragment_object("mp", "cid-single");
        index
            .commit_object(&object, &data, &WriteCondition::Always)
            .await
            .unwrap();
        assert_eq!(garbage_cids(&index).await, set(&["cid-p3"]));
        assert!(index.object_parts(&mp.id, 0, 10).await.unwrap().is_empty());
        for data_id in first.iter().chain(&second) {
            assert!(!index.data_committed(data_id).await.unwrap(), "{data_id}");
        }
        assert!(index.data_committed(&data.data_id).await.unwrap());

        assert!(index.delete_object("b", "mp").await.unwrap());
        assert_eq!(garbage_cids(&index).await, set(&["cid-single"]));
        assert!(!index.data_committed(&data.data_id).await.unwrap());
        assert!(index.get_object("b", "mp").await.unwrap().is_none());
        assert!(!index.delete_object("b", "mp").await.unwrap());
        assert_eq!(index.garbage_len().await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The keys of a DeleteObjects go in one transaction: each object
    /// there is deleted and its data discarded once, even when its key is
    /// named twice; a key with no object, or in no bucket, deletes nothing.
    #[tokio::test]
    async fn objects_deleted_together_are_each_discarded_once() {
        let (dir, index) = index_with_bucket_b("delete-many").await;
        let mut cids = BTreeSet::new();
        for key in ["one", "two"] {
            let (object, data) = one_fragment_object(key, &format!("cid-{key}"));
            index
                .commit_object(&object, &data, &WriteCondition::Always)
                .await
                .unwrap();
            cids.insert(format!("cid-{key}"));
        }
        complete_multipart(&index, &["cid-p1", "cid-p2"]).await;
        cids.extend(["cid-p1".to_owned(), "cid-p2".to_owned()]);
        let deleted = index
            .delete_objects("b", &["one", "mp", "none", "one", "two"])
            .await
            .unwrap();
        assert_eq!(deleted, [true, true, false, false, true]);
        assert_eq!(garbage_cids(&index).await, cids);
        assert!(
            index
                .list_objects("b", "", "", 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !index
                .data_committed(&one_fragment_object("two", "").1.data_id)
                .await
                .unwrap()
        );
        assert_eq!(
            index.delete_objects("gone", &["one"]).await.unwrap(),
            [false]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
