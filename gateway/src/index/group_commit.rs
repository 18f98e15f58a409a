//! Group commit (SQLite): single-PUT commits that arrive while another is
//! being written wait, and are then written together in one transaction,
//! so a burst of small PUTs pays for one `BEGIN`, one usage update and
//! one `COMMIT` (one fsync of the WAL) rather than one each; each commit
//! reads its key, and the rows of all of them go in one query
//! ([`super::writes`]). A lone
//! commit goes at once, as before: nothing waits for company; it is sent
//! in one trip on the guess that its key is free, and looked up first
//! only when the guess was wrong.
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

/// At most this many commits share a transaction (bounds how long one
/// holds SQLite's write lock).
const MAX_BATCH: usize = 128;

/// A commit waiting for its batch.
#[derive(Debug)]
struct Waiting {
    object: ObjectRow,
    data: StoredData,
    condition: WriteCondition,
    done: oneshot::Sender<Result<(), GatewayError>>,
}

#[derive(Debug, Default)]
struct State {
    waiting: Vec<Waiting>,
    /// Whether a task is writing batches (it takes what waits until
    /// nothing does).
    committing: bool,
}

/// The commits waiting for a batch, shared by an index's clones.
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

/// The answer of a commit whose batch task ended without answering it.
fn task_ended() -> GatewayError {
    GatewayError::Internal("index commit task ended".into())
}

/// Ends the batch task's turn if it ends other than by finding nothing to
/// write (a panic, or its runtime shutting down), so that the next commit
/// starts another and no commit waits on a task that is gone.
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
    /// Commits through the group commit: queues the commit, starts the
    /// batch task when none runs, and waits for the answer.
    pub(super) async fn commit_grouped(
        &self,
        commits: &Arc<GroupCommits>,
        object: &ObjectRow,
        data: &StoredData,
        condition: &WriteCondition,
    ) -> Result<(), GatewayError> {
        let (done, answer) = oneshot::channel();
        let start = commits.queue(Waiting {
            object: object.clone(),
            data: data.clone(),
            condition: condition.clone(),
            done,
        });
        if start {
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
            let span = tracing::debug_span!("index_group_commit", objects = batch.len());
            self.write_batch(batch).instrument(span).await;
        }
    }

    /// Writes `batch` in one transaction and answers each commit; when the
    /// transaction fails as a whole, writes each commit alone instead, so
    /// that one cannot fail the others.
    async fn write_batch(&self, batch: Vec<Waiting>) {
        if let [lone] = batch.as_slice()
            && let Some(answer) = self
                .write_to_free_key(&lone.object, &lone.data, &lone.condition)
                .await
        {
            self.stats.commit_batch_objects.observe(1.0);
            if let Some(w) = batch.into_iter().next() {
                let _ = w.done.send(answer);
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
                tracing::warn!(error = %e, objects = batch.len(), "index group commit failed: committing one by one");
                for w in batch {
                    let answer = self
                        .commit_object_alone(&w.object, &w.data, &w.condition)
                        .await;
                    let _ = w.done.send(answer);
                }
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

    /// The transaction of a batch: each commit's answer, `Err` when the
    /// transaction failed.
    async fn write_batch_tx(
        &self,
        batch: &[Waiting],
    ) -> Result<Vec<Result<(), GatewayError>>, GatewayError> {
        write_tx!(self, |tx| {
            let mut writes = Writes::new(Engine::of_tx(tx));
            let mut usage = NodeUsage::default();
            // The first commit to each key finds what is there in one
            // query for the batch. A key written twice in one batch: the
            // second commit reads the first's rows, so they go to the
            // database first, and it looks its key up then.
            let mut keys = HashSet::new();
            let firsts: Vec<bool> = batch
                .iter()
                .map(|w| keys.insert((w.object.bucket.as_str(), w.object.key.as_str())))
                .collect();
            let first_keys: Vec<(&str, &str)> = batch
                .iter()
                .zip(&firsts)
                .filter(|(_, first)| **first)
                .map(|(w, _)| (w.object.bucket.as_str(), w.object.key.as_str()))
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
                answers.push(
                    Self::commit_object_in(
                        tx,
                        &mut writes,
                        (&w.object, &w.data, &w.condition),
                        found,
                        &mut usage,
                    )
                    .await?,
                );
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
