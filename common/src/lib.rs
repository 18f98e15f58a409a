//! Plumbing under both Tenfold servers, the gateway and `tenfold-node`:
//! HTTP serving with its limits and timeouts ([`http_server`]), TLS for
//! their listeners ([`tls`]), byte sizes and durations as people write them
//! ([`units`]), S3 listing pages ([`listing`]), the S3 errors both answer
//! alike ([`s3_errors`]), log set-up ([`logging`]) and the format of the
//! batches of small replicas the balancer sends a node ([`replica_batch`]).
//!
//! It depends on no other Tenfold crate, and every other one may use it.

pub mod http_server;
pub mod listing;
pub mod logging;
pub mod metrics;
pub mod replica_batch;
pub mod s3_errors;
pub mod tls;
pub mod units;

/// Most keys one DeleteObjects may name, as in S3 (the gateway's clients'
/// and the balancer's to a node).
pub const MAX_DELETE_KEYS: usize = 1000;
