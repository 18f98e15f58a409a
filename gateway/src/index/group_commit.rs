//! Group commit (SQLite): single-PUT commits that arrive while another is
//! being written wait, and are then written together in one transaction,
//! so a burst of small PUTs pays for one `BEGIN`, one usage update and
//! one `COMMIT` (one fsync of the WAL) rather than one each; each commit
//! reads its key, and the rows of all of them go in one query
//! ([`super::writes`]). A lone
//! commit goes at once, as before: nothing waits for company.
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
