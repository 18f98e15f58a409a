//! The overflow store as the gateway hands it to the balancer: each pin is
//! recorded in the index just before it is made ([`Index::record_pin`]).
//! A pin whose write never commits (the gateway was killed mid-upload, a
//! repair died before its commit) can then be found and undone by the
//! orphan sweep ([`crate::orphans`]), on a daemon others may pin on too:
//! only pins Tenfold recorded are ever undone. Content is added unpinned
//! first, so a pin that is never recorded is never made, and the daemon's
//! garbage collection can drop the content.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tenfold_overflow::{OverflowError, OverflowHealth, OverflowStore};

use crate::fragment::parse_node_key;
use crate::index::Index;

/// An overflow store whose pins are recorded in the index.
#[derive(Debug)]
pub struct RecordedPins {
    inner: Arc<dyn OverflowStore>,
    index: Index,
}

impl RecordedPins {
    /// Records the pins made on `inner` in `index`.
    pub fn new(inner: Arc<dyn OverflowStore>, index: Index) -> Self {
        Self { inner, index }
    }
}

#[async_trait::async_trait]
impl OverflowStore for RecordedPins {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn add(&self, data: Bytes) -> Result<String, OverflowError> {
        self.inner.add(data).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<String, OverflowError> {
        let cid = self.inner.add(data).await?;
        let Some((data_id, ..)) = parse_node_key(key) else {
            return Err(OverflowError::NotRecorded {
                cid,
                message: format!("{key} is not a fragment's key"),
            });
        };
        if let Err(e) = self.index.record_pin(&cid, data_id).await {
            return Err(OverflowError::NotRecorded {
                cid,
                message: e.to_string(),
            });
        }
        self.inner.pin(&cid).await?;
        Ok(cid)
    }

    async fn get(&self, cid: &str, range: Range<u64>) -> Result<Bytes, OverflowError> {
        self.inner.get(cid, range).await
    }

    async fn pin(&self, cid: &str) -> Result<(), OverflowError> {
        self.inner.pin(cid).await
    }

    async fn unpin(&self, cid: &str) -> Result<(), OverflowError> {
        self.inner.unpin(cid).await
    }

    async fn health(&self) -> Result<OverflowHealth, OverflowError> {
        self.inner.health().await
    }
}
