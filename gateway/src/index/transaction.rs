//! Write transactions: a writer's turn on SQLite's one writing connection
//! (or a pooled Postgres connection), the transaction that runs in it, and
//! how its end decides whether `write_tx!` runs it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, AnyPool, Executor};

use super::writes::Writes;
use super::{Connections, Index, connect_sqlite};
use crate::error::GatewayError;

/// A write transaction: on SQLite it borrows the writing connection of the
/// [`WriteTurn`] that runs it, on Postgres it holds a pooled connection.
/// Queries run on [`Tx::conn`].
pub(super) enum Tx<'c> {
    Sqlite(SqliteTx<'c>),
    Postgres(sqlx::Transaction<'c, sqlx::Any>),
}

/// A transaction on SQLite's writing connection, begun and ended by plain
/// statements that travel with its first and last queries where they can.
/// Every statement is a round trip to sqlx's SQLite thread (see
/// [`writes`](super::writes)); a `BEGIN` and a `COMMIT` sent alone would
/// be two more in every write.
pub(super) struct SqliteTx<'c> {
    connection: &'c mut AnyConnection,
    /// Set when the transaction is dropped while it may be open (its
    /// future cancelled, or a statement, `COMMIT` or `ROLLBACK` that
    /// failed): the next turn connects again, and closing this connection
    /// rolls it back.
    abandoned: &'c AtomicBool,
    state: SqliteTxState,
    /// Statements to send with the `COMMIT` ([`Tx::commit_with`]).
    at_commit: Option<Writes>,
}

/// How far a [`SqliteTx`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SqliteTxState {
    /// No statement sent yet: `BEGIN` goes with the first.
    Pending,
    /// `BEGIN` sent (the transaction may be open).
    Open,
    /// Committed or rolled back.
    Ended,
}

/// Opens a write transaction; IMMEDIATE takes the write lock up front, so
/// that two writers queue on the busy timeout instead of failing to
/// upgrade a read lock.
const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE;\n";

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.state == SqliteTxState::Open {
            self.abandoned.store(true, Ordering::Release);
        }
    }
}

impl SqliteTx<'_> {
    /// What a query must start with to be the transaction's first:
    /// [`SQLITE_BEGIN`] once, then nothing. From here the transaction
    /// counts as open, whether or not the query then runs.
    fn opening(&mut self) -> &'static str {
        if self.state == SqliteTxState::Pending {
            self.state = SqliteTxState::Open;
            SQLITE_BEGIN
        } else {
            ""
        }
    }
}

impl Tx<'_> {
    /// The connection to run the transaction's queries on; on SQLite its
    /// `BEGIN` is sent first if no query has been.
    pub(super) async fn conn(&mut self) -> Result<&mut AnyConnection, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => {
                debug_assert!(tx.at_commit.is_none(), "a query after commit_with");
                let opening = tx.opening();
                if !opening.is_empty() {
                    tx.connection.execute(opening).await?;
                }
                Ok(&mut *tx.connection)
            }
            Tx::Postgres(tx) => Ok(&mut **tx),
        }
    }

    /// What the next query must start with on SQLite (`BEGIN IMMEDIATE;`
    /// when it is the first), for a query sent on [`Tx::conn`] right after.
    pub(super) fn opening(&mut self) -> &'static str {
        match self {
            Tx::Sqlite(tx) => tx.opening(),
            Tx::Postgres(_) => "",
        }
    }

    /// Sends `writes` with the `COMMIT` on SQLite, in one trip; on
    /// Postgres now. The transaction's last statements: no query may
    /// follow.
    ///
    /// # Errors
    /// [`GatewayError::Index`]: on Postgres a statement failed.
    pub(super) async fn commit_with(&mut self, mut writes: Writes) -> Result<(), GatewayError> {
        match self {
            Tx::Sqlite(tx) => {
                tx.at_commit = Some(writes);
                Ok(())
            }
            Tx::Postgres(_) => writes.run(self).await,
        }
    }

    /// Commits. On SQLite, when a statement sent with the `COMMIT` (or the
    /// `COMMIT` itself) fails, the transaction is rolled back in one more
    /// trip; should that fail too, the connection is given up (see
    /// [`SqliteTx`]).
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(mut tx) => {
                let writes = tx.at_commit.take();
                if tx.state == SqliteTxState::Pending && writes.is_none() {
                    tx.state = SqliteTxState::Ended;
                    return Ok(());
                }
                let mut sql = tx.opening().to_owned();
                let args = match writes {
                    Some(writes) => {
                        let (statements, args) = writes.into_sqlite_query()?;
                        sql.push_str(&statements);
                        sql.push_str(";\n");
                        args
                    }
                    None => sqlx::any::AnyArguments::default(),
                };
                sql.push_str("COMMIT");
                let committed = sqlx::query_with(&sql, args)
                    .execute(&mut *tx.connection)
                    .await;
                if let Err(e) = committed {
                    // SQLite refused a statement (a constraint, say): the
                    // transaction is still open on a sound connection.
                    if matches!(e, sqlx::Error::Database(_))
                        && tx.connection.execute("ROLLBACK").await.is_ok()
                    {
                        tx.state = SqliteTxState::Ended;
                    }
                    return Err(e);
                }
                tx.state = SqliteTxState::Ended;
                Ok(())
            }
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// Rolls back (on Postgres as the transaction is dropped).
    pub(super) async fn rollback(self) {
        match self {
            Tx::Sqlite(mut tx) => {
                // Nothing to roll back before `BEGIN` went.
                if tx.state == SqliteTxState::Pending
                    || tx.connection.execute("ROLLBACK").await.is_ok()
                {
                    tx.state = SqliteTxState::Ended;
                }
            }
            Tx::Postgres(tx) => drop(tx),
        }
    }
}

/// SQLite's one writing connection. Only it changes the file, so its page
/// cache stays valid from one commit to the next (a write on a pooled
/// connection would first read again every page another connection's
/// commit had changed). Writers take turns on it in arrival order, rather
/// than in SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between
/// tries and leaves the lock idle meanwhile.
///
/// It is held directly rather than in a pool of one: sqlx's pool pings a
/// connection each time it is given back, one more round trip to SQLite's
/// thread between two writers.
pub(super) struct Writer {
    /// The connection, lent to one turn at a time; `None` after it broke,
    /// until the next turn connects again.
    connection: Arc<tokio::sync::Mutex<Option<AnyConnection>>>,
    /// Set when a transaction on it was left open: the next turn connects
    /// again.
    abandoned: AtomicBool,
    /// Where it connects.
    options: AnyConnectOptions,
}

impl Writer {
    /// The writer of the SQLite file of `options`, starting with
    /// `connection` to it.
    pub(super) fn new(connection: AnyConnection, options: AnyConnectOptions) -> Self {
        Self {
            connection: Arc::new(tokio::sync::Mutex::new(Some(connection))),
            abandoned: AtomicBool::new(false),
            options,
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// A writer's turn: on SQLite the writing connection, held until its
/// transaction has ended; on Postgres the pool (writers run at once).
pub(super) enum WriteTurn {
    Sqlite {
        /// Where a broken connection connects again.
        writer: Arc<Writer>,
        connection: tokio::sync::OwnedMutexGuard<Option<AnyConnection>>,
    },
    Postgres(AnyPool),
}

impl WriteTurn {
    /// Begins a write transaction in this turn.
    pub(super) async fn begin(&mut self) -> Result<Tx<'_>, GatewayError> {
        match self {
            // `BEGIN` goes with the transaction's first query.
            WriteTurn::Sqlite { writer, connection } => {
                if writer.abandoned.swap(false, Ordering::AcqRel) {
                    **connection = None;
                }
                let connection = match &mut **connection {
                    Some(connection) => connection,
                    slot @ None => slot.insert(connect_sqlite(&writer.options).await?),
                };
                Ok(Tx::Sqlite(SqliteTx {
                    connection,
                    abandoned: &writer.abandoned,
                    state: SqliteTxState::Pending,
                    at_commit: None,
                }))
            }
            // Several gateways write at once: conflicts surface as
            // serialization failures, and `write_tx!` runs the work again.
            WriteTurn::Postgres(pool) => Ok(Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    .await?,
            )),
        }
    }

    /// Drops SQLite's writing connection when `outcome` says it broke, so
    /// that the next turn connects again.
    pub(super) fn check<T>(&mut self, outcome: &Settled<T>) {
        let broke = match outcome {
            Settled::Again(e) | Settled::Done(Err(GatewayError::Index(e))) => is_connection_loss(e),
            Settled::Done(_) => false,
        };
        if broke && let WriteTurn::Sqlite { connection, .. } = self {
            **connection = None;
        }
    }
}

/// How a write transaction ended.
pub(super) enum Settled<T> {
    /// Committed, or failed for good.
    Done(Result<T, GatewayError>),
    /// Lost a race (nothing changed): to run again.
    Again(sqlx::Error),
}

impl<T> Settled<T> {
    /// Ends a write transaction run by `write_tx!`: commits it after
    /// `result` succeeded, rolls it back otherwise. [`Settled::Again`] when
    /// it lost a race (a conflict with another writer, or a connection lost
    /// before committing: nothing changed).
    pub(super) async fn after(tx: Tx<'_>, result: Result<T, GatewayError>) -> Self {
        match result {
            Ok(value) => match tx.commit().await {
                Ok(()) => Settled::Done(Ok(value)),
                // A commit whose answer was lost may have happened: only a
                // conflict is known to have changed nothing.
                Err(e) if is_conflict(&e) => Settled::Again(e),
                Err(e) => Settled::Done(Err(e.into())),
            },
            Err(GatewayError::Index(e)) if is_conflict(&e) || is_connection_loss(&e) => {
                tx.rollback().await;
                Settled::Again(e)
            }
            Err(e) => {
                tx.rollback().await;
                Settled::Done(Err(e))
            }
        }
    }
}

/// How often a conflicting write transaction is run again. Of N writers
/// that conflict, at least one commits each round, so the last may need N
/// attempts: `aws s3 cp` commits ten parts of one upload at once, and
/// Postgres' predicate locks make those conflict (the index pages they
/// read and write are shared).
const WRITE_RETRIES: u32 = 24;

/// Whether a database error is a conflict with a concurrent writer, after
/// which the transaction changed nothing: Postgres's serialization failure
/// (40001), deadlock (40P01) or unique violation (23505, a row another
/// writer inserted meanwhile). Not SQLite's busy database: its `BEGIN
/// IMMEDIATE` waited the whole busy timeout for another process's write
/// lock, and a transaction that holds the lock is never busy after.
fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01" | "23505"))
        }
        _ => false,
    }
}

/// Whether the connection broke (the transaction is rolled back with it).
pub(super) fn is_connection_loss(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
    )
}

impl Index {
    /// Waits for this gateway's turn to write (SQLite: one writer at a
    /// time, first come first served); hold it until the transaction has
    /// ended. Postgres takes writers at once, and this returns at once.
    pub(super) async fn write_turn(&self) -> WriteTurn {
        match &self.connections {
            Connections::Sqlite { writer, .. } => WriteTurn::Sqlite {
                writer: Arc::clone(writer),
                connection: Arc::clone(&writer.connection).lock_owned().await,
            },
            Connections::Postgres(pool) => WriteTurn::Postgres(pool.clone()),
        }
    }

    /// What a write transaction's `settled` end leaves to do: its result,
    /// or `None` when it should run again, after a short random pause (its
    /// turn given up already), unless it has run out of attempts.
    pub(super) async fn again<T>(
        &self,
        settled: Settled<T>,
        attempt: &mut u32,
    ) -> Option<Result<T, GatewayError>> {
        let retry = match settled {
            Settled::Done(done) => return Some(done),
            Settled::Again(e) => GatewayError::from(e),
        };
        if *attempt >= WRITE_RETRIES {
            return Some(Err(retry));
        }
        *attempt += 1;
        self.stats.write_retries.inc();
        tracing::debug!(error = %retry, attempt = *attempt, "index write lost a race: running it again");
        let pause = rand::random_range(1..=5u64 << (*attempt).min(5));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        None
    }
}
