//! What the balancer knows about a storage node.

use std::fmt;
use std::str::FromStr;

/// The network a node belongs to: each fragment gets replicas on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Mainnet,
    Testnet,
}

impl Network {
    /// The lowercase name used in the index, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mainnet" => Ok(Network::Mainnet),
            "testnet" => Ok(Network::Testnet),
            other => Err(format!(
                "unknown network {other:?} (expected mainnet or testnet)"
            )),
        }
    }
}

/// Where a node is in its life, as recorded in the index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new replicas; its replicas count.
    #[default]
    Active,
    /// Its replicas are being moved off (`tenfold nodes drain`): they are
    /// read still, but no longer count, and it takes no new ones.
    Draining,
    /// Unreachable for longer than `node_lost_after`: its replicas no
    /// longer count and are repaired elsewhere.
    Lost,
    /// Failed too many audits: its replicas no longer count, it takes no
    /// new ones, and it is read only when every other replica failed.
    Disqualified,
}

impl NodeState {
    /// The lowercase name used in the index, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
            NodeState::Disqualified => "disqualified",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NodeState::Active),
            "draining" => Ok(NodeState::Draining),
            "lost" => Ok(NodeState::Lost),
            "disqualified" => Ok(NodeState::Disqualified),
            other => Err(format!("unknown node state {other:?}")),
        }
    }
}

/// A registered storage node, as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: i64,
    pub name: String,
    /// Base URL of the node's S3 endpoint, e.g. `http://127.0.0.1:9101`.
    pub endpoint: String,
    pub network: Network,
    /// Capacity the operator registered, in bytes.
    pub capacity: u64,
    /// Bytes the index records on this node (used when the node cannot
    /// report its own usage).
    pub stored_bytes: u64,
    pub access_key: String,
    pub secret_key: String,
    /// The bucket on the node that holds Tenfold's fragments.
    pub bucket: String,
    /// Its place in the node lifecycle: only active nodes take replicas.
    pub state: NodeState,
}
