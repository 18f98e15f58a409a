//! The system-test harness: real `tenfold` and `tenfold-node` processes on
//! loopback ports ([`node`], [`cluster`]), driven by real clients
//! ([`clients`]), beside a real IPFS daemon ([`ipfs`]) and PostgreSQL
//! server ([`postgres`]).
//!
//! The binaries must be built first (`cargo build --bins`, which the
//! README's test command does); they are found next to the test executable.

pub mod clients;
pub mod cluster;
pub mod files;
pub mod ipfs;
pub mod node;
pub mod postgres;
pub mod process;
pub mod seaweedfs;

pub use clients::*;
pub use cluster::*;
pub use files::*;
pub use ipfs::*;
pub use node::*;
pub use postgres::*;
pub use process::*;
pub use seaweedfs::*;

/// Access key the test gateways accept.
pub const ACCESS_KEY: &str = "test-access";
/// Secret key the test gateways accept.
pub const SECRET_KEY: &str = "test-secret";
