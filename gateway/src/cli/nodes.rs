//! `tenfold nodes`: register, list and remove storage nodes.

use clap::Subcommand;
use tenfold_balancer::Network;
use tenfold_common::units::parse_size;

use super::IndexArgs;
use super::status::NodeReport;
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
            let nodes: Vec<NodeReport> = index
                .open()
                .await?
                .nodes()
                .await?
                .iter()
                .map(NodeReport::from)
                .collect();
            if json {
                super::status::print_json(&nodes);
                return Ok(());
            }
            println!(
                "{:>4}  {:<8}  {:>14}  {:>14}  {:<24}  ENDPOINT",
                "ID", "NETWORK", "CAPACITY", "STORED", "NAME"
            );
            for n in nodes {
                println!(
                    "{:>4}  {:<8}  {:>14}  {:>14}  {:<24}  {}",
                    n.id, n.network, n.capacity, n.stored, n.name, n.endpoint
                );
            }
            Ok(())
        }
        NodesCommand::Remove { id, index } => index.open().await?.remove_node(id).await,
    }
}
