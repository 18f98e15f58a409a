//! `tenfold nodes`: register, list and remove storage nodes.

use clap::Subcommand;
use tenfold_balancer::{Network, NodeState};
use tenfold_common::units::parse_size;

use super::IndexArgs;
use super::status::{NodeReport, node_reports};
use crate::error::GatewayError;
use crate::index::NewNode;

#[derive(Debug, Subcommand)]
pub(super) enum NodesCommand {
    /// Register a storage node (any S3-compatible server).
    Add {
        /// The node's S3 endpoint, e.g. http://10.0.0.5:9100.
        #[arg(long)]
        endpoint: String,
        /// mainnet or testnet.
        #[arg(long)]
        network: Network,
        /// How much Tenfold may store on it (for example 500GiB).
        #[arg(long, value_parser = parse_size)]
        capacity: u64,
        #[arg(long)]
        access_key: String,
        #[arg(long)]
        secret_key: String,
        /// A unique name (defaults to the endpoint).
        #[arg(long)]
        name: Option<String>,
        /// The bucket on the node that holds fragments (created if missing).
        #[arg(long, default_value = "tenfold")]
        bucket: String,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// List the registered nodes.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Stop new writes to a node and move every replica off it (repair
    /// copies each elsewhere, then removes it from the node); `nodes remove`
    /// succeeds once it holds nothing.
    Drain {
        id: i64,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Make a drained (or disqualified) node active again: it takes new
    /// replicas, and those it still holds count again.
    Activate {
        id: i64,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Unregister a node that holds no fragments.
    Remove {
        id: i64,
        #[command(flatten)]
        index: IndexArgs,
    },
}

pub(super) async fn run(command: NodesCommand) -> Result<(), GatewayError> {
    match command {
        NodesCommand::Add {
            endpoint,
            network,
            capacity,
            access_key,
            secret_key,
            name,
            bucket,
            index,
        } => {
            let node = NewNode {
                name: name.unwrap_or_else(|| endpoint.clone()),
                endpoint,
                network,
                capacity,
                access_key,
                secret_key,
                bucket,
            };
            let id = index.open().await?.add_node(&node).await?;
            println!("{id}");
            Ok(())
        }
        NodesCommand::List { json, index } => {
            let nodes: Vec<NodeReport> = node_reports(&index.open().await?).await?;
            if json {
                super::status::print_json(&nodes);
                return Ok(());
            }
            println!(
                "{:>4}  {:<8}  {:<12}  {:>14}  {:>14}  {:>9}  {:<20}  {:>13}  {:<24}  ENDPOINT",
                "ID",
                "NETWORK",
                "STATE",
                "CAPACITY",
                "STORED",
                "REPLICAS",
                "LAST SEEN",
                "AUDITS FAILED",
                "NAME"
            );
            for n in nodes {
                let seen = n
                    .record
                    .last_seen
                    .map_or_else(|| "never".to_owned(), seen_ago);
                let audits = format!("{}/{}", n.record.audit_failures, n.record.audits);
                println!(
                    "{:>4}  {:<8}  {:<12}  {:>14}  {:>14}  {:>9}  {:<20}  {:>13}  {:<24}  {}",
                    n.id,
                    // Padding applies to strings, not to these types' Display.
                    n.network.to_string(),
                    n.state.to_string(),
                    bytesize::ByteSize(n.capacity).to_string(),
                    bytesize::ByteSize(n.stored).to_string(),
                    n.record.replicas,
                    seen,
                    audits,
                    n.name,
                    n.endpoint
                );
            }
            Ok(())
        }
        NodesCommand::Drain { id, index } => {
            let index = index.open().await?;
            index.set_node_state(id, NodeState::Draining).await?;
            let held = index
                .node_records()
                .await?
                .get(&id)
                .map_or(0, |r| r.replicas);
            println!(
                "node {id} is draining: {held} replicas to move; `tenfold nodes remove {id}` once none is left"
            );
            Ok(())
        }
        NodesCommand::Activate { id, index } => {
            index
                .open()
                .await?
                .set_node_state(id, NodeState::Active)
                .await
        }
        NodesCommand::Remove { id, index } => index.open().await?.remove_node(id).await,
    }
}

/// How long ago `ms` (since the epoch) was, roughly.
pub(super) fn seen_ago(ms: i64) -> String {
    let secs = crate::index::now_ms().saturating_sub(ms) / 1000;
    let ago = humantime::format_duration(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ));
    format!("{ago} ago")
}
