//! Tenfold: an S3 gateway that keeps every object as compressed fragments
//! replicated over independently operated storage nodes.
//!
//! The upload path reads [`s3_api`] → [`upload`] → [`fragment`] and the
//! balancer's placement; the download path [`s3_api`] → [`download`] →
//! [`fragment`] and the balancer's replica reads. The [`index`] records
//! everything; [`garbage`] removes replicas nothing references any more,
//! [`orphans`] those nothing ever referenced (a write cut short);
//! [`repair`] brings every fragment back to its target copies (nodes lost,
//! drained or disqualified, fragments that overflowed to IPFS), and
//! [`node_lifecycle`] notices lost nodes, [`scrub`] reads every replica
//! back and keeps each node's audit record.

pub mod access;
pub mod addressing;
pub mod cli;
pub mod config;
pub mod cors;
pub mod crypto;
pub mod data_dir;
pub mod dev_cluster;
pub mod download;
pub mod error;
pub mod fragment;
pub mod garbage;
pub mod index;
pub mod integrity;
pub mod known_buckets;
pub mod metrics;
pub mod node_lifecycle;
pub mod object_store;
pub mod orphans;
pub mod post_object;
pub mod preconditions;
pub mod rate_limit;
pub mod read_leases;
pub mod recorded_pins;
pub mod repair;
pub mod s3_api;
pub mod scrub;
pub mod server;
pub mod share;
pub mod upload;
pub mod upload_link;
pub mod write_intents;
pub mod zip_stream;

pub use error::GatewayError;
