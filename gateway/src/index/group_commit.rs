//! Group commit (SQLite): single-PUT commits and single-object deletions
//! that arrive while another is being written wait, and are then written
//! together in one transaction, so a burst of small PUTs and DELETEs pays
//! for one `BEGIN` and one `COMMIT` (one fsync of the WAL) rather than one
//! each; one query looks up the keys of all of them, and their rows go in
//! one more ([`super::writes`]). A lone change goes at once: nothing waits
//! for company; a lone PUT is sent in one trip on the guess that its key
//! is free, and looked up first only when the guess was wrong.
//!
//! Each commit is answered only once its transaction has committed. The
//! batch runs in its own task, so a client that goes away cannot cut
//! another's commit short; a commit whose client went away before its
//! batch started is left out.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use tracing::Instrument;

use super::nodes::NodeUsage;
use super::rows::{ObjectRow, StoredData, WriteCondition};
use super::writes::Writes;
use super::{Engine, Index, Tx};
use crate::error::GatewayError;

/// At most this many changes share a transaction (bounds how long one
/// holds SQLite's write lock).
const MAX_BATCH: usize = 128;

/// A change to one key that a group commit writes.
#[derive(Debug)]
pub(super) enum Change {
    /// A single PUT's commit ([`Index::commit_object`]).
    Put {
        object: Box<ObjectRow>,
        data: Box<StoredData>,
        condition: WriteCondition,
    },
    /// An object's deletion ([`Index::delete_object`]).
    Delete { bucket: String, key: String },
}

impl Change {
    /// The bucket and key it changes.
    fn key(&self) -> (&str, &str) {
        match self {
            Self::Put { object, .. } => (&object.bucket, &object.key),
            Self::Delete { bucket, key } => (bucket, key),
        }
    }
}

/// A change waiting for its batch, and where its answer goes: `Ok(true)`
/// when written, a deletion's `Ok(false)` when there was no object.
#[derive(Debug)]
struct Waiting {
    change: Change,
    done: oneshot::Sender<Result<bool, GatewayError>>,
}

#[derive(Debug, Default)]
struct State {
    waiting: Vec<Waiting>,
    /// Whether a task is writing batches (it takes what waits until
    /// nothing does).
    committing: bool,
}

/// The changes waiting for a batch, shared by an index's clones.
#[derive(Debug, Default)]
pub(super) struct GroupCommits(Mutex<State>);

impl GroupCommits {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `waiting`; `true` when no task is writing batches, and the
    /// caller must start one.
    fn queue(&self, waiting: Waiting) -> bool {
        let mut state = self.state();
        state.waiting.push(waiting);
        !std::mem::replace(&mut state.committing, true)
    }

    /// The next batch; empty when nothing waits, and then the task ends.
    fn next_batch(&self) -> Vec<Waiting> {
        let mut state = self.state();
        let n = state.waiting.len().min(MAX_BATCH);
        if n == 0 {
            state.committing = false;
        }
        state.waiting.drain(..n).collect()
    }
}

/// Whether a commit sent on the guess that its key is free found it taken
/// or its bucket gone.
fn guessed_wrong(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(
        db.kind(),
        sqlx::error::ErrorKind::UniqueViolation | sqlx::error::ErrorKind::ForeignKeyViolation
    ))
}

/// The answer of a change whose batch task ended without answering it.
fn task_ended() -> GatewayError {
    GatewayError::Internal("index commit task ended".into())
}

/// Ends the batch task's turn if it ends other than by finding nothing to
/// write (a panic, or its runtime shutting down), so that the next commit
/// starts another and no change waits on a task that is gone.
struct Committing<'a> {
    commits: &'a GroupCommits,
    /// Set when `next_batch` found nothing and handed the turn back.
    handed_back: bool,
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        if self.handed_back {
            return;
        }
        let mut state = self.commits.state();
        state.committing = false;
        for w in state.waiting.drain(..) {
            let _ = w.done.send(Err(task_ended()));
        }
    }
}

impl Index {
    /// Writes `change` through the group commit: queues it, starts the
    /// batch task when none runs, and waits for the answer.
    pub(super) async fn change_grouped(
        &self,
        commits: &Arc<GroupCommits>,
        change: Change,
    ) -> Result<bool, GatewayError> {
        let (done, answer) = oneshot::channel();
        if commits.queue(Waiting { change, done }) {
            let index = self.clone();
            let commits = Arc::clone(commits);
            tokio::spawn(async move { index.write_batches(&commits).await });
        }
        answer.await.unwrap_or_else(|_| Err(task_ended()))
    }

    /// The batch task: writes what waits, batch by batch, until nothing
    /// does.
    async fn write_batches(&self, commits: &GroupCommits) {
        let mut turn = Committing {
            commits,
            handed_back: false,
        };
        loop {
            let mut batch = commits.next_batch();
            if batch.is_empty() {
                turn.handed_back = true;
                return;
            }
            batch.retain(|w| !w.done.is_closed());
            if batch.is_empty() {
                continue;
            }
            let span = tracing::debug_span!("index_group_commit", changes = batch.len());
            self.write_batch(batch).instrument(span).await;
        }
    }

    /// Writes `batch` in one transaction and answers each change; when the
    /// transaction fails as a whole, writes each change alone instead, so
    /// that one cannot fail the others.
    async fn write_batch(&self, batch: Vec<Waiting>) {
        if let [lone] = batch.as_slice()
            && let Change::Put {
                object,
                data,
                condition,
            } = &lone.change
            && let Some(answer) = self.write_to_free_key(object, data, condition).await
        {
            self.stats.commit_batch_objects.observe(1.0);
            if let Some(w) = batch.into_iter().next() {
                let _ = w.done.send(answer.map(|()| true));
            }
            return;
        }
        let written = self.write_batch_tx(&batch).await;
        if written.is_ok() {
            #[allow(clippy::cast_precision_loss)]
            self.stats.commit_batch_objects.observe(batch.len() as f64);
        }
        match written {
            Ok(answers) => {
                for (w, answer) in batch.into_iter().zip(answers) {
                    let _ = w.done.send(answer);
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(w) = batch.into_iter().next() {
                    let _ = w.done.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = batch.len(), "index group commit failed: writing one by one");
                for w in batch {
                    let answer = self.change_alone(&w.change).await;
                    let _ = w.done.send(answer);
                }
            }
        }
    }

    /// `change` in a transaction of its own, outside the group commit.
    async fn change_alone(&self, change: &Change) -> Result<bool, GatewayError> {
        match change {
            Change::Put {
                object,
                data,
                condition,
            } => self
                .commit_object_alone(object, data, condition)
                .await
                .map(|()| true),
            Change::Delete { bucket, key } => {
                Ok(self.delete_objects(bucket, &[key]).await? == [true])
            }
        }
    }

    /// A lone commit in one trip to SQLite's thread, on the guess that its
    /// key is free (most PUTs make a new key): its rows go with the
    /// transaction's `BEGIN` and `COMMIT`, without the lookup that
    /// [`Self::write_batch_tx`] sends first. The object's row is a plain
    /// `INSERT`, which the key's primary key refuses when the key is taken
    /// and the bucket's foreign key when the bucket is gone; the
    /// transaction is then rolled back, and `None` says to write the commit
    /// the usual way, which finds what is there. `None` also when the
    /// commit's condition needs the key's object (`If-Match`).
    pub(super) async fn write_to_free_key(
        &self,
        object: &ObjectRow,
        data: &StoredData,
        condition: &WriteCondition,
    ) -> Option<Result<(), GatewayError>> {
        if condition.check(&object.key, None).is_err() {
            return None;
        }
        let started = std::time::Instant::now();
        let mut turn = self.write_turn().await;
        let mut tx = turn.begin().await.ok()?;
        let mut writes = Writes::new(Engine::of_tx(&tx));
        let mut usage = NodeUsage::default();
        Self::queue_single_put(&mut writes, object, data, &mut usage);
        Self::queue_usage(&mut writes, &usage);
        tx.commit_with(writes).await.ok()?;
        match tx.commit().await {
            Ok(()) => {
                self.stats
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                Some(Ok(()))
            }
            // Refused before its `COMMIT` ran: nothing of it was written.
            // Any other failure may have come after the `COMMIT` took
            // effect (a connection lost with its answer): looking the key
            // up would find this commit's own object, so it fails here.
            Err(e) if guessed_wrong(&e) => {
                tracing::debug!(error = %e, "index commit in one trip refused: looking its key up");
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    /// The transaction of a batch: each change's answer, `Err` when the
    /// transaction failed.
    async fn write_batch_tx(
        &self,
        batch: &[Waiting],
    ) -> Result<Vec<Result<bool, GatewayError>>, GatewayError> {
        write_tx!(self, |tx| {
            let mut writes = Writes::new(Engine::of_tx(tx));
            let mut usage = NodeUsage::default();
            // The first change to each key finds what is there in one
            // query for the batch. A key changed twice in one batch: the
            // second change reads the first's rows, so they go to the
            // database first, and it looks its key up then.
            let mut keys = HashSet::new();
            let firsts: Vec<bool> = batch.iter().map(|w| keys.insert(w.change.key())).collect();
            let first_keys: Vec<(&str, &str)> = batch
                .iter()
                .zip(&firsts)
                .filter(|(_, first)| **first)
                .map(|(w, _)| w.change.key())
                .collect();
            let mut found = Self::bucket_occupants_in(tx, &first_keys)
                .await?
                .into_iter();
            let mut answers = Vec::with_capacity(batch.len());
            for (w, first) in batch.iter().zip(firsts) {
                let found = if first {
                    found.next()
                } else {
                    writes.run(tx).await?;
                    None
                };
                let answer = match &w.change {
                    Change::Put {
                        object,
                        data,
                        condition,
                    } => Self::commit_object_in(
                        tx,
                        &mut writes,
                        (object, data, condition),
                        found,
                        &mut usage,
                    )
                    .await?
                    .map(|()| true),
                    Change::Delete { bucket, key } => {
                        let found = match found {
                            Some(found) => found,
                            None => Self::bucket_occupant_in(tx, bucket, key).await,
                        };
                        Ok(Self::delete_found_in(tx, &mut writes, (bucket, key), found).await?)
                    }
                };
                answers.push(answer);
            }
            Self::queue_usage(&mut writes, &usage);
            tx.commit_with(writes).await?;
            Ok(answers)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{index_with_bucket_b, one_fragment_object};
    use super::*;

    /// PUTs and deletions share a batch's transaction, in the order they
    /// came: a deletion after a PUT to its key deletes what that PUT wrote,
    /// a PUT after a deletion writes anew, and a deletion of a key with no
    /// object, or in no bucket, answers `false` and changes nothing else.
    #[tokio::test]
    async fn puts_and_deletions_share_a_batch_in_their_order() {
        let (dir, index) = index_with_bucket_b("batch-mixed").await;
        let put = |key: &str, data_key: &str| {
            let (object, data) = one_fragment_object(data_key, &format!("cid-{data_key}"));
            Change::Put {
                object: Box::new(ObjectRow {
                    key: key.into(),
                    ..object
                }),
                data: Box::new(data),
                condition: WriteCondition::Always,
            }
        };
        let delete = |bucket: &str, key: &str| Change::Delete {
            bucket: bucket.into(),
            key: key.into(),
        };
        for change in [put("kept", "kept-1"), put("gone", "gone-1")] {
            assert!(index.change_alone(&change).await.unwrap());
        }
        let changes = [
            put("new", "new-1"),
            delete("b", "new"),
            delete("b", "kept"),
            put("kept", "kept-2"),
            delete("b", "gone"),
            delete("b", "gone"),
            delete("b", "never"),
            delete("missing", "kept"),
        ];
        let mut answers = Vec::new();
        let batch = changes
            .into_iter()
            .map(|change| {
                let (done, answer) = oneshot::channel();
                answers.push(answer);
                Waiting { change, done }
            })
            .collect();
        index.write_batch(batch).await;
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.unwrap().unwrap());
        }
        assert_eq!(got, [true, true, true, true, true, false, false, false]);
        let objects = index.list_objects("b", "", "", 10).await.unwrap();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["kept"]);
        assert_eq!(objects[0].id, one_fragment_object("kept-2", "").1.data_id);
        for gone in ["new-1", "kept-1", "gone-1"] {
            let data_id = one_fragment_object(gone, "").1.data_id;
            assert!(!index.data_committed(&data_id).await.unwrap(), "{gone}");
        }
        // new-1's, kept-1's and gone-1's replicas, each once.
        assert_eq!(index.garbage_len().await.unwrap(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A lone commit goes in one trip on the guess that its key is free. A
    /// wrong guess (the key taken, the bucket gone) changes nothing and keeps
    /// SQLite's writing connection, whose transaction is rolled back; the
    /// commit then goes the usual way, which finds what is there. A commit
    /// that needs the key's object (`If-Match`) does not guess.
    #[tokio::test]
    async fn a_lone_commit_guesses_its_key_is_free_and_a_wrong_guess_changes_nothing() {
        let (dir, index) = index_with_bucket_b("guess").await;
        if index.engine() == Engine::Sqlite {
            // A temporary table lives as long as the connection that made it.
            let mut turn = index.write_turn().await;
            let mut tx = turn.begin().await.unwrap();
            sqlx::query("CREATE TEMP TABLE kept_connection (x)")
                .execute(tx.conn().await.unwrap())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            drop(turn);

            let (object, data) = one_fragment_object("k", "first");
            let free = index
                .write_to_free_key(&object, &data, &WriteCondition::Always)
                .await;
            assert!(matches!(free, Some(Ok(()))), "{free:?}");
            let (again, again_data) = one_fragment_object("k2", "second");
            let again = ObjectRow {
                key: "k".into(),
                ..again
            };
            let elsewhere = ObjectRow {
                bucket: "missing".into(),
                ..again.clone()
            };
            for (object, condition) in [
                (&again, WriteCondition::Always),
                (&elsewhere, WriteCondition::Always),
                (&again, WriteCondition::IfMatch("\"x\"".into())),
            ] {
                let guessed = index
                    .write_to_free_key(object, &again_data, &condition)
                    .await;
                assert!(
                    guessed.is_none(),
                    "{} {condition:?}: {guessed:?}",
                    object.bucket
                );
            }
            let objects = index.list_objects("b", "", "", 10).await.unwrap();
            assert_eq!(objects.len(), 1);
            assert_eq!(objects[0].id, data.data_id);
            let layout = index.layout(&again_data.data_id, 0..1).await.unwrap();
            assert!(layout.is_empty(), "{layout:?}");

            let mut turn = index.write_turn().await;
            let mut tx = turn.begin().await.unwrap();
            sqlx::query("SELECT x FROM temp.kept_connection")
                .execute(tx.conn().await.unwrap())
                .await
                .expect("the writing connection was given up");
            tx.commit().await.unwrap();
            drop(turn);

            index
                .commit_object(&again, &again_data, &WriteCondition::Always)
                .await
                .unwrap();
            let objects = index.list_objects("b", "", "", 10).await.unwrap();
            assert_eq!(objects.len(), 1);
            assert_eq!(objects[0].id, again_data.data_id);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
