//! `tenfold-node`: a standalone S3-compatible storage node for Tenfold operators.
//!
//! Objects live under a data directory ([`disk_store`]), written atomically
//! and durably, within a capacity limit: a file each, or a record in a
//! volume file for small ones, so that concurrent small writes share one
//! fsync ([`volumes`]). The S3 API ([`s3_api`]), with batches of small
//! replicas in one request ([`batch`]), is
//! served by `s3s` with SigV4 authentication; `GET /health` reports capacity
//! and usage as JSON ([`server`]). HTTP serving, TLS, sizes and listings
//! come from `tenfold-common`, shared with the gateway.

pub mod auth;
pub mod bandwidth;
pub mod batch;
pub mod disk_store;
pub mod error;
mod file_reads;
pub mod metrics;
pub mod s3_api;
pub mod server;
pub mod volumes;

pub use disk_store::DiskStore;
pub use error::StoreError;
pub use s3_api::NodeS3;
pub use server::{NodeConfig, run_node};
