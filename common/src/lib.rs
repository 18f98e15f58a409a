//! Plumbing under both Tenfold servers, the gateway and `tenfold-node`:
//! HTTP serving with its limits and timeouts ([`http_server`]), TLS for
//! their listeners ([`tls`]), byte sizes and durations as people write them
//! ([`units`]), S3 listing pages ([`listing`]), the S3 errors both answer
//! alike ([`s3_errors`]) and log set-up ([`logging`]).
//!
//! It depends on no other Tenfold crate, and every other one may use it.

pub mod http_server;
pub mod listing;
pub mod logging;
pub mod metrics;
pub mod s3_errors;
pub mod tls;
pub mod units;
