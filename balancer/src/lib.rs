//! The Tenfold node balancer: the fabric of storage nodes behind the gateway.
//!
//! It keeps the registry of nodes with their health, capacity and latency
//! ([`registry`]), places each fragment on distinct nodes of each network
//! chosen at random with failover to the next candidate ([`placement`]),
//! and reads a fragment back from the best replica that verifies
//! ([`hedged_read`]). It speaks nothing but plain S3 to the nodes
//! ([`node_client`]), over http or https ([`trust`]), so any S3-compatible
//! server can be a node; small replicas bound for a `tenfold-node` that is
//! busy go to it in batches (`write_batch`). Fragments
//! the nodes cannot hold go to an overflow store (IPFS), read last.

pub mod audit;
pub mod choice;
pub mod chunks;
pub mod error;
pub mod hedged_read;
pub mod node;
pub mod node_client;
pub mod placement;
pub mod registry;
#[cfg(test)]
mod testing;
pub mod trust;
mod write_batch;

pub use audit::AuditOutcome;
pub use chunks::Chunks;
pub use error::BalancerError;
pub use hedged_read::Check;
pub use node::{Network, NodeSpec, NodeState};
pub use node_client::KeyPage;
pub use placement::{OVERFLOW, Placement, Replica, ReplicaPolicy};
pub use registry::{Balancer, NodeStatus};
pub use trust::NodeTrust;
