//! Write statements queued in a transaction and sent in as few trips to
//! the database as it takes. sqlx runs a SQLite connection on a thread of
//! its own, so every statement is a round trip between threads (two
//! wake-ups, ~20 µs a trip on a two-core VM at one writer, more under
//! load): there the queued statements go as one multi-statement query,
//! with `?` placeholders, which sqlx binds in order across the
//! statements, and the transaction's `COMMIT` goes with the last of them
//! ([`super::Tx::commit_with`]). Postgres takes one
//! statement per query with `$n` placeholders, so there they go one by
//! one, as before.

use sqlx::Arguments as _;
use sqlx::any::{Any, AnyArguments};
use sqlx::encode::Encode;
use sqlx::types::Type;

use super::{Engine, ROWS_PER_INSERT, Tx, push_values};
use crate::error::GatewayError;

/// Statements queued for one transaction; [`Writes::run`] sends them.
pub(super) struct Writes {
    engine: Engine,
    /// The queries to send, each with its arguments: on SQLite one, its
    /// statements `;`-separated; on Postgres one per statement.
    queries: Vec<(String, AnyArguments<'static>)>,
    /// The first value that could not be bound, reported by `run`.
    error: Option<sqlx::error::BoxDynError>,
}

impl Writes {
    /// No statements yet, for a transaction on `engine`.
    pub(super) fn new(engine: Engine) -> Self {
        Self {
            engine,
            queries: Vec::new(),
            error: None,
        }
    }

    /// The engine the statements are written for.
    pub(super) fn engine(&self) -> Engine {
        self.engine
    }

    /// Queues `head VALUES (…), (…) tail` for `rows`, `columns` values to a
    /// row, bound by `bind` in column order; at most [`ROWS_PER_INSERT`]
    /// rows go to one statement.
    pub(super) fn rows<T>(
        &mut self,
        head: &str,
        columns: usize,
        tail: &str,
        rows: &[T],
        mut bind: impl FnMut(&mut Row<'_>, &T),
    ) {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = format!("{head} ");
            push_values(
                &mut sql,
                columns,
                chunk.len(),
                self.engine == Engine::Postgres,
            );
            if !tail.is_empty() {
                sql.push(' ');
                sql.push_str(tail);
            }
            let mut row = self.push(sql);
            for value in chunk {
                row.bound = 0;
                bind(&mut row, value);
                // A row short or long of its columns would shift the values
                // of every statement after it onto the wrong columns.
                if row.bound != columns {
                    let wrong = format!(
                        "{head}: a row bound {} values for {columns} columns",
                        row.bound
                    );
                    row.error.get_or_insert(wrong.into());
                }
            }
        }
    }

    /// Queues `sql`, a statement whose values are `?` placeholders (made
    /// `$1`, `$2`… on Postgres), bound by `bind` in order.
    pub(super) fn statement(&mut self, sql: &str, bind: impl FnOnce(&mut Row<'_>)) {
        let values = sql.matches('?').count();
        let statement = match self.engine {
            Engine::Sqlite => sql.to_owned(),
            Engine::Postgres => numbered(sql),
        };
        let mut row = self.push(statement);
        bind(&mut row);
        if row.bound != values {
            let wrong = format!("{sql}: bound {} values for {values}", row.bound);
            row.error.get_or_insert(wrong.into());
        }
    }

    /// Queues `sql` after the statements queued so far (on SQLite in the
    /// same query), for its values to be bound to the row it answers.
    fn push(&mut self, sql: String) -> Row<'_> {
        match self.queries.last_mut() {
            Some((query, _)) if self.engine == Engine::Sqlite => {
                query.push_str(";\n");
                query.push_str(&sql);
            }
            _ => self.queries.push((sql, AnyArguments::default())),
        }
        let args = &mut self.queries.last_mut().expect("a query was just queued").1;
        Row {
            args,
            error: &mut self.error,
            bound: 0,
        }
    }

    /// The SQLite query that sends what is queued (its statements
    /// `;`-separated, empty when none is), with its arguments.
    ///
    /// # Errors
    /// A value that could not be bound.
    pub(super) fn into_sqlite_query(self) -> Result<(String, AnyArguments<'static>), sqlx::Error> {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e));
        }
        debug_assert!(self.engine == Engine::Sqlite && self.queries.len() <= 1);
        Ok(self.queries.into_iter().next().unwrap_or_default())
    }

    /// Sends what is queued, in order, in `tx`; the queue is then empty.
    ///
    /// # Errors
    /// [`GatewayError::Index`]: a statement failed (those before it ran,
    /// in the transaction) or a value could not be bound (none ran).
    pub(super) async fn run(&mut self, tx: &mut Tx<'_>) -> Result<(), GatewayError> {
        if let Some(e) = self.error.take() {
            *self = Self::new(self.engine);
            return Err(sqlx::Error::Encode(e).into());
        }
        for (sql, args) in std::mem::take(&mut self.queries) {
            sqlx::query_with(&sql, args)
                .execute(tx.conn().await?)
                .await?;
        }
        Ok(())
    }
}

/// The values of the rows being queued; binding errors are kept for
/// [`Writes::run`], as sqlx's own `bind` does.
pub(super) struct Row<'w> {
    args: &'w mut AnyArguments<'static>,
    error: &'w mut Option<sqlx::error::BoxDynError>,
    /// Values bound to the row so far.
    bound: usize,
}

impl Row<'_> {
    /// Binds the next value.
    pub(super) fn bind<V: 'static + Encode<'static, Any> + Type<Any>>(
        &mut self,
        value: V,
    ) -> &mut Self {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        self.bound += 1;
        self
    }
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`… in order (for
/// Postgres; SQLite takes either, but in a query of several statements
/// binds `$n` to the query's `n`th value, not the statement's).
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered(
                "DELETE FROM t WHERE a = ? AND b IN (SELECT ? UNION ALL SELECT c FROM u WHERE d = ?)"
            ),
            "DELETE FROM t WHERE a = $1 AND b IN (SELECT $2 UNION ALL SELECT c FROM u WHERE d = $3)"
        );
    }

    /// Statements join one query on SQLite; one bound short of its
    /// placeholders makes the whole queue refuse to run.
    #[test]
    fn statements_go_in_one_query_and_one_short_of_its_values_is_refused() {
        let mut writes = Writes::new(Engine::Sqlite);
        writes.statement("DELETE FROM t WHERE a = ?", |row| {
            row.bind(1i64);
        });
        writes.statement("DELETE FROM u WHERE b = ?", |row| {
            row.bind(2i64);
        });
        let (sql, _) = writes.into_sqlite_query().unwrap();
        assert_eq!(sql, "DELETE FROM t WHERE a = ?;\nDELETE FROM u WHERE b = ?");

        let mut writes = Writes::new(Engine::Sqlite);
        writes.statement("DELETE FROM t WHERE a = ? AND b = ?", |row| {
            row.bind(1i64);
        });
        let Err(err) = writes.into_sqlite_query() else {
            panic!("a statement short of its values was queued");
        };
        assert!(err.to_string().contains("bound 1 values for 2"), "{err}");
    }
}
