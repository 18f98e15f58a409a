//! Real `tenfold-node`s on loopback for the crate's tests.

use std::path::Path;
use std::time::Duration;

use tenfold_node::{NodeConfig, run_node};

use crate::node::{Network, NodeSpec, NodeState};

/// Starts a node (answering `delay` late) with its data under `dir`, and
/// returns its registration as node `id` of the mainnet.
pub(crate) async fn start_node(dir: &Path, id: i64, delay: Duration) -> NodeSpec {
    start(dir, id, delay, 1 << 30).await
}

/// [`start_node`] with room for `capacity` bytes only.
pub(crate) async fn start_small_node(dir: &Path, id: i64, capacity: u64) -> NodeSpec {
    start(dir, id, Duration::ZERO, capacity).await
}

async fn start(dir: &Path, id: i64, delay: Duration, capacity: u64) -> NodeSpec {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let config = NodeConfig {
        data: dir.join(format!("node{id}")),
        capacity,
        access_key: "k".into(),
        secret_key: "s".into(),
        delay,
        bandwidth: None,
        tls: None,
    };
    tokio::spawn(run_node(config, listener, std::future::pending()));
    NodeSpec {
        id,
        name: format!("node{id}"),
        endpoint,
        network: Network::Mainnet,
        capacity,
        stored_bytes: 0,
        access_key: "k".into(),
        secret_key: "s".into(),
        bucket: "tenfold".into(),
        state: NodeState::Active,
    }
}
