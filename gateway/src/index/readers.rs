//! The connections reads run on: sqlx's pool on Postgres; on SQLite a few
//! connections of the index's own, lent one read at a time.
//!
//! sqlx's pool pings every connection given back to it (unconditionally, in
//! sqlx 0.8): for an embedded file that is one more round trip to the
//! connection's thread, and a task woken, after every read. A lent SQLite
//! connection goes back as it is, unless a read on it found its thread gone.

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use sqlx::any::{AnyConnectOptions, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Describe, Either, Execute, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::transaction::is_connection_loss;
use super::{ACQUIRE_TIMEOUT, connect_sqlite};

/// SQLite's reading connections: at most `max` open, each lent to one read
/// at a time.
pub(super) struct Readers {
    /// Connections not lent now.
    idle: Mutex<Vec<AnyConnection>>,
    /// One per connection that may be open.
    permits: Arc<Semaphore>,
    /// Where they connect.
    options: AnyConnectOptions,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").finish_non_exhaustive()
    }
}

impl Readers {
    /// Up to `max` connections to `options`, opened as reads need them.
    pub(super) fn new(options: AnyConnectOptions, max: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::with_capacity(max)),
            permits: Arc::new(Semaphore::new(max)),
            options,
        }
    }

    /// A connection for one read, an idle one or a new one; waits while all
    /// are lent, up to [`ACQUIRE_TIMEOUT`] (then [`sqlx::Error::PoolTimedOut`]).
    pub(super) async fn lend(self: &Arc<Self>) -> Result<Reader, sqlx::Error> {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => connect_sqlite(&self.options).await?,
        };
        Ok(Reader::Lent(Lent {
            connection: Some(connection),
            broken: false,
            readers: Arc::clone(self),
            _permit: permit,
        }))
    }
}

/// A connection for a read: run queries on `&mut reader`.
#[derive(Debug)]
pub(super) enum Reader {
    /// From sqlx's pool (Postgres).
    Pooled(PoolConnection<Any>),
    /// Lent by [`Readers`] (SQLite).
    Lent(Lent),
}

/// A SQLite connection lent for one read, given back when dropped.
pub(super) struct Lent {
    connection: Option<AnyConnection>,
    /// A read on it found its thread gone: it is closed, not given back.
    broken: bool,
    readers: Arc<Readers>,
    /// Released after the connection is back.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !self.broken
        {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(connection);
        }
    }
}

impl Reader {
    /// The connection, and where to note that it broke (none for a pooled
    /// one: sqlx's pool finds out itself).
    fn parts(&mut self) -> Result<(&mut AnyConnection, Option<&mut bool>), sqlx::Error> {
        match self {
            Reader::Pooled(connection) => Ok((&mut **connection, None)),
            Reader::Lent(lent) => match lent.connection.as_mut() {
                Some(connection) => Ok((connection, Some(&mut lent.broken))),
                None => Err(sqlx::Error::PoolClosed),
            },
        }
    }
}

/// Notes in `broken` when `result` says the connection's thread is gone.
fn note<T>(result: &Result<T, sqlx::Error>, broken: &mut Option<&mut bool>) {
    if let (Err(e), Some(broken)) = (result, broken)
        && is_connection_loss(e)
    {
        **broken = true;
    }
}

impl<'c> Executor<'c> for &'c mut Reader {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.parts() {
            Ok((connection, mut broken)) => connection
                .fetch_many(query)
                .inspect(move |result| note(result, &mut broken))
                .boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        async move {
            let (connection, mut broken) = self.parts()?;
            let result = connection.fetch_optional(query).await;
            note(&result, &mut broken);
            result
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        async move {
            let (connection, mut broken) = self.parts()?;
            let result = connection.prepare_with(sql, parameters).await;
            note(&result, &mut broken);
            result
        }
        .boxed()
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        async move {
            let (connection, _) = self.parts()?;
            connection.describe(sql).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use super::*;

    async fn readers(max: usize) -> (Arc<Readers>, std::path::PathBuf) {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!(
            "tenfold-readers-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("index.db").display());
        let options = AnyConnectOptions::from_str(&url).unwrap();
        (Arc::new(Readers::new(options, max)), dir)
    }

    /// The connection a reader holds, told apart by a temporary table only
    /// it can see.
    async fn mark(reader: &mut Reader, name: &str) {
        sqlx::query(&format!("CREATE TEMP TABLE {name} (x)"))
            .execute(reader)
            .await
            .unwrap();
    }

    async fn has(reader: &mut Reader, name: &str) -> bool {
        sqlx::query("SELECT 1 FROM temp.sqlite_master WHERE name = $1")
            .bind(name)
            .fetch_optional(reader)
            .await
            .unwrap()
            .is_some()
    }

    #[tokio::test]
    async fn a_connection_given_back_is_lent_again() {
        let (readers, dir) = readers(2).await;
        let mut first = readers.lend().await.unwrap();
        mark(&mut first, "first").await;
        drop(first);
        let mut again = readers.lend().await.unwrap();
        assert!(has(&mut again, "first").await);
        // A second one lent meanwhile is a new connection.
        let mut second = readers.lend().await.unwrap();
        assert!(!has(&mut second, "first").await);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_read_waits_while_every_connection_is_lent() {
        let (readers, dir) = readers(1).await;
        let held = readers.lend().await.unwrap();
        let waiting = tokio::spawn({
            let readers = Arc::clone(&readers);
            async move { readers.lend().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "lent a second connection past the limit"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting read got no connection")
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn only_a_lost_connection_is_noted_broken() {
        let mut broken = false;
        note::<()>(&Err(sqlx::Error::RowNotFound), &mut Some(&mut broken));
        assert!(!broken);
        note::<()>(&Err(sqlx::Error::WorkerCrashed), &mut Some(&mut broken));
        assert!(broken);
    }
}
