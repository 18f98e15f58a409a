//! Tenfold: an S3 gateway that keeps every object as compressed fragments
//! replicated over independently operated storage nodes.
//!
//! The upload path reads [`s3_api`] → [`upload`] → [`fragment`] and the
//! balancer's placement; the download path [`s3_api`] → [`download`] →
//! [`fragment`] and the balancer's replica reads. The [`index`] records
//! everything; [`garbage`] removes replicas nothing references any more,
//! [`orphans`] those nothing ever referenced (a write cut short);
//! [`overflow_return`] moves fragments that overflowed to IPFS back onto
//! nodes once they have room.

pub mod access;
pub mod addressing;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod data_dir;
pub mod dev_cluster;
pub mod download;
pub mod error;
pub mod fragment;
pub mod garbage;
pub mod index;
pub mod integrity;
pub mod object_store;
pub mod orphans;
pub mod overflow_return;
pub mod preconditions;
pub mod read_leases;
pub mod s3_api;
pub mod server;
pub mod share;
pub mod upload;
pub mod write_intents;
pub mod zip_stream;

pub use error::GatewayError;
