//! Counters every gateway adds to, kept in the index for `tenfold status`:
//! what repair wrote and what the orphan sweep removed, all gateways
//! together, since the index was made.

use super::{Index, Tx, to_u64};
use crate::error::GatewayError;

/// One counter of the `counters` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// New copies repair wrote on nodes, and their bytes.
    RepairedCopies,
    RepairedBytes,
    /// Replicas the orphan sweep removed from nodes.
    OrphansSwept,
    /// Pins the orphan sweep undid on the overflow store.
    OrphanPinsSwept,
}

impl Counter {
    const ALL: [Counter; 4] = [
        Counter::RepairedCopies,
        Counter::RepairedBytes,
        Counter::OrphansSwept,
        Counter::OrphanPinsSwept,
    ];

    fn name(self) -> &'static str {
        match self {
            Counter::RepairedCopies => "repaired_copies",
            Counter::RepairedBytes => "repaired_bytes",
            Counter::OrphansSwept => "orphans_swept",
            Counter::OrphanPinsSwept => "orphan_pins_swept",
        }
    }
}

/// What repair wrote, for `tenfold status`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Repaired {
    /// New copies written on nodes.
    pub copies: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Every counter's value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub repaired: Repaired,
    pub orphans_swept: u64,
    pub orphan_pins_swept: u64,
}

impl Index {
    /// Adds `by` to `counter` in a write transaction.
    pub(super) async fn add_to_counter_in(
        tx: &mut Tx<'_>,
        counter: Counter,
        by: i64,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        )
        .bind(counter.name())
        .bind(by)
        .execute(tx.conn().await?)
        .await?;
        Ok(())
    }

    /// Adds `by` to `counter`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn add_to_counter(&self, counter: Counter, by: u64) -> Result<(), GatewayError> {
        let by = i64::try_from(by).unwrap_or(i64::MAX);
        write_tx!(self, |tx| {
            Self::add_to_counter_in(tx, counter, by).await
        })
    }

    /// Every counter's value (0 for those never added to).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn counters(&self) -> Result<Counters, GatewayError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT name, value FROM counters")
            .fetch_all(&mut self.reader().await?)
            .await?;
        let value = |counter: Counter| {
            rows.iter()
                .find(|(name, _)| name == counter.name())
                .map_or(0, |(_, v)| to_u64(*v))
        };
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            let v = value(counter);
            match counter {
                Counter::RepairedCopies => counters.repaired.copies = v,
                Counter::RepairedBytes => counters.repaired.bytes = v,
                Counter::OrphansSwept => counters.orphans_swept = v,
                Counter::OrphanPinsSwept => counters.orphan_pins_swept = v,
            }
        }
        Ok(counters)
    }
}
