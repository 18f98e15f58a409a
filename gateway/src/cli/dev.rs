//! `tenfold dev`: the whole cluster on loopback.

use std::path::PathBuf;

use clap::Args;
use tenfold_common::units::{parse_duration, parse_size};

use crate::config::DevConfig;
use crate::data_dir::DataDir;
use crate::dev_cluster::{DevOptions, run_dev};
use crate::error::GatewayError;

#[derive(Debug, Args)]
pub(super) struct DevArgs {
    /// Folder for the index and the nodes' data.
    #[arg(long, default_value = "./tenfold-data")]
    data: PathBuf,
    /// Address of the S3 endpoint.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Address of the admin listener: metrics, health, readiness (`off`
    /// for none; by default 127.0.0.1:9001 when it is free).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Capacity of each local node.
    #[arg(long, default_value = "10GiB", value_parser = parse_size)]
    node_capacity: u64,
    #[arg(long, env = "TENFOLD_ACCESS_KEY", default_value = "tenfold")]
    access_key: String,
    #[arg(
        long,
        env = "TENFOLD_SECRET_KEY",
        default_value = "tenfold-secret",
        hide_env_values = true
    )]
    secret_key: String,
    /// IPFS RPC API for what the nodes cannot hold, e.g.
    /// http://127.0.0.1:5001.
    #[arg(long, env = "TENFOLD_IPFS_API")]
    ipfs_api: Option<String>,
    /// Keep the index there instead of DATA/index.db, e.g. a Postgres
    /// database more gateways join with `tenfold serve --index-url`.
    #[arg(long, env = "TENFOLD_INDEX_URL")]
    index_url: Option<String>,
    /// The master key (64 hex digits); by default the one in
    /// DATA/master.key, created on the first start.
    #[arg(long, env = "TENFOLD_MASTER_KEY", hide_env_values = true, hide = true)]
    master_key: Option<String>,
    /// How long replicas released by an overwrite or a delete stay on the
    /// nodes before they are removed (reads through other gateways that
    /// started before finish within it); 10m unless the config says.
    #[arg(long, value_parser = parse_duration)]
    gc_delay: Option<std::time::Duration>,
    /// A `tenfold serve` configuration file whose `[storage]` and
    /// `[durability]` sections the cluster follows (and its `ipfs_api`,
    /// unless --ipfs-api is given); addresses, index and credentials stay
    /// the dev cluster's own.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub(super) async fn run(args: DevArgs) -> Result<(), GatewayError> {
    let config = match &args.config {
        Some(path) => DevConfig::load(path)?,
        None => DevConfig::default(),
    };
    let mut durability = config.durability;
    if let Some(delay) = args.gc_delay {
        durability.gc_delay = delay;
    }
    run_dev(DevOptions {
        data: DataDir::new(args.data),
        listen: args.listen,
        admin_listen: args.admin_listen,
        node_capacity: args.node_capacity,
        access_key: args.access_key,
        secret_key: args.secret_key,
        ipfs_api: args.ipfs_api.or(config.ipfs_api),
        index_url: args.index_url,
        master_key: args.master_key,
        policy: config.storage,
        durability,
    })
    .await
}
