//! The overflow tier: where the balancer puts a fragment when the storage
//! nodes cannot hold all of its replicas.
//!
//! [`OverflowStore`] is what the balancer needs from such a store: add bytes
//! and get a content id back, read a byte range by content id, pin, unpin,
//! and a health report. [`IpfsStore`] implements it over the IPFS RPC API
//! (Kubo's, which js-ipfs also serves); other Web3 stores can implement it
//! later.

mod ipfs;

use std::ops::Range;

use bytes::Bytes;

pub use ipfs::IpfsStore;

/// What can go wrong talking to an overflow store.
#[derive(Debug, thiserror::Error)]
pub enum OverflowError {
    /// The store could not be reached, or did not answer in time.
    #[error("{store} unreachable: {message}")]
    Unreachable { store: String, message: String },
    /// The store answered with an error.
    #[error("{store} refused {operation}: {message}")]
    Refused {
        store: String,
        operation: &'static str,
        message: String,
    },
    /// The store's answer could not be understood, or had the wrong size.
    #[error("{store} answered {operation} unexpectedly: {message}")]
    Malformed {
        store: String,
        operation: &'static str,
        message: String,
    },
    /// A pin could not be recorded before it was made, so it was not made.
    #[error("pin of {cid} not recorded: {message}")]
    NotRecorded { cid: String, message: String },
}

/// An overflow store's state, for `tenfold status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OverflowHealth {
    /// What answered, e.g. `IPFS 0.18.1 at http://127.0.0.1:5001`.
    pub store: String,
    /// Bytes the store's repository holds (all content, not only Tenfold's).
    pub repo_size: u64,
    /// The repository's configured maximum, in bytes.
    pub storage_max: u64,
}

/// A content-addressed store for fragments that do not fit on the nodes.
#[async_trait::async_trait]
pub trait OverflowStore: std::fmt::Debug + Send + Sync {
    /// Where the store is, for logs and errors (e.g. `IPFS at http://…`).
    fn describe(&self) -> String;

    /// Stores `data` without pinning it; returns its content id. Unpinned
    /// content may be dropped by the store's garbage collection at any time.
    ///
    /// # Errors
    /// An [`OverflowError`] when the store did not take it.
    async fn add(&self, data: Bytes) -> Result<String, OverflowError>;

    /// Stores `data`, the fragment stored on nodes under `key`, and pins
    /// it; returns its content id. By default [`Self::add`] then
    /// [`Self::pin`]; a wrapper may record the pin in between.
    ///
    /// # Errors
    /// An [`OverflowError`] when the store did not take it.
    async fn put(&self, key: &str, data: Bytes) -> Result<String, OverflowError> {
        let _ = key;
        let cid = self.add(data).await?;
        self.pin(&cid).await?;
        Ok(cid)
    }

    /// Reads bytes `range` of the content `cid` (exactly that many bytes).
    ///
    /// # Errors
    /// An [`OverflowError`] when the content cannot be read in full.
    async fn get(&self, cid: &str, range: Range<u64>) -> Result<Bytes, OverflowError>;

    /// Pins `cid`, so that the store keeps it.
    ///
    /// # Errors
    /// An [`OverflowError`] when the store refused.
    async fn pin(&self, cid: &str) -> Result<(), OverflowError>;

    /// Unpins `cid` (succeeds when it was not pinned): the store may drop
    /// the content once nothing else pins it.
    ///
    /// # Errors
    /// An [`OverflowError`] when the store could not be asked.
    async fn unpin(&self, cid: &str) -> Result<(), OverflowError>;

    /// Whether the store answers, and how full it is.
    ///
    /// # Errors
    /// An [`OverflowError`] when it does not answer.
    async fn health(&self) -> Result<OverflowHealth, OverflowError>;
}
