//! Fragments held by the overflow store: how much they hold, and whether a
//! content id is still used. (They go back onto nodes through repair.)

use super::{Index, to_u64};
use crate::error::GatewayError;

impl Index {
    /// How many fragments, and how many bytes of them, live in the overflow
    /// store.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn overflow_usage(&self) -> Result<(u64, u64), GatewayError> {
        let (count, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM overflow_pins",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((to_u64(count), to_u64(bytes)))
    }

    /// Whether any stored fragment still has its copy under `cid` (content
    /// addressing gives identical fragments one content id).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn cid_in_use(&self, cid: &str) -> Result<bool, GatewayError> {
        Ok(
            sqlx::query("SELECT 1 FROM overflow_pins WHERE cid = $1 LIMIT 1")
                .bind(cid)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }
}
