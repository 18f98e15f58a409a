//! `tenfold dev`: a whole cluster on loopback: four mainnet and two testnet
//! storage nodes (the `tenfold-node` code, in process) and a gateway, with
//! the index and the nodes' data under one folder.

use std::time::Duration;

use tenfold_balancer::Network;
use tenfold_common::http_server::HttpLimits;
use tenfold_node::{NodeConfig, run_node};
use tokio::net::TcpListener;

use crate::config::{DurabilityPolicy, StoragePolicy};
use crate::crypto::{Keyring, MasterKey};
use crate::data_dir::DataDir;
use crate::error::GatewayError;
use crate::index::{Index, NewNode};
use crate::metrics::bind_admin;
use crate::server::{GatewaySettings, run_gateway};

/// Local nodes per network.
const DEV_NODES: [(Network, usize); 2] = [(Network::Mainnet, 4), (Network::Testnet, 2)];

/// Options of `tenfold dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data: DataDir,
    pub listen: String,
    /// The admin listener's address (`None`: the default when free).
    pub admin_listen: Option<String>,
    pub node_capacity: u64,
    pub access_key: String,
    pub secret_key: String,
    /// The IPFS RPC API that takes what the nodes cannot hold.
    pub ipfs_api: Option<String>,
    /// The index, when not the folder's SQLite file (a Postgres database
    /// other gateways share).
    pub index_url: Option<String>,
    /// The master key, when not the folder's (created on the first start).
    pub master_key: Option<String>,
    /// How objects are stored, and kept over time.
    pub policy: StoragePolicy,
    pub durability: DurabilityPolicy,
}

async fn bind_preferring(previous: Option<&str>) -> std::io::Result<TcpListener> {
    if let Some(addr) = previous.and_then(|e| e.strip_prefix("http://"))
        && let Ok(l) = TcpListener::bind(addr).await
    {
        return Ok(l);
    }
    TcpListener::bind("127.0.0.1:0").await
}

fn random_secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Runs the dev cluster until the process ends.
///
/// # Errors
/// [`GatewayError`] when the folder, the index or a port cannot be used.
pub async fn run_dev(opts: DevOptions) -> Result<(), GatewayError> {
    let io = |e: std::io::Error| GatewayError::Config(e.to_string());
    std::fs::create_dir_all(opts.data.path()).map_err(io)?;
    let master_key = match &opts.master_key {
        Some(key) => MasterKey::parse(key)?,
        None => opts.data.master_key_or_create()?,
    };
    let keyring = Keyring::new(master_key, Vec::new());
    let url = opts
        .index_url
        .clone()
        .unwrap_or_else(|| opts.data.index_url());
    let index = Index::open(&url).await?.with_keyring(keyring.clone());
    let gateway = TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| GatewayError::Config(format!("cannot listen on {}: {e}", opts.listen)))?;
    let registered = index.nodes().await?;
    for (network, count) in DEV_NODES {
        for i in 0..count {
            let name = format!("dev-{network}-{i}");
            let previous = registered.iter().find(|n| n.name == name);
            let listener = bind_preferring(previous.map(|n| n.endpoint.as_str()))
                .await
                .map_err(io)?;
            let endpoint = format!("http://{}", listener.local_addr().map_err(io)?);
            let (access_key, secret_key) = match previous {
                Some(node) => {
                    index
                        .update_node(node.id, &endpoint, opts.node_capacity)
                        .await?;
                    (node.access_key.clone(), node.secret_key.clone())
                }
                None => {
                    let node = NewNode {
                        name: name.clone(),
                        endpoint,
                        network,
                        capacity: opts.node_capacity,
                        access_key: format!("node-{}", &random_secret()[..12]),
                        secret_key: random_secret(),
                        bucket: "tenfold".into(),
                    };
                    index.add_node(&node).await?;
                    (node.access_key, node.secret_key)
                }
            };
            spawn_node(
                listener,
                opts.data.node_dir(&name),
                opts.node_capacity,
                (access_key, secret_key),
            );
        }
    }
    let addr = gateway.local_addr().map_err(io)?;
    let endpoint = format!("http://{addr}");
    opts.data.record_endpoint(&endpoint)?;
    println!(
        "Tenfold dev cluster is up: 4 mainnet + 2 testnet nodes, index in {}",
        opts.data.path().display()
    );
    println!("  endpoint:   {endpoint}");
    let admin = bind_admin(opts.admin_listen.as_deref(), None).await?;
    if let Some(addr) = admin.as_ref().and_then(|a| a.listener.local_addr().ok()) {
        println!("  admin:      http://{addr}/metrics (and /health, /ready)");
    }
    println!("  access key: {}", opts.access_key);
    println!("  secret key: {}", opts.secret_key);
    match &opts.ipfs_api {
        Some(api) => println!("  overflow:   IPFS at {api}"),
        None => println!("  overflow:   none (pass --ipfs-api http://127.0.0.1:5001 to use IPFS)"),
    }
    println!("Try:");
    println!(
        "  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION=us-east-1",
        opts.access_key, opts.secret_key
    );
    println!("  aws --endpoint-url {endpoint} s3 mb s3://demo");
    println!("  aws --endpoint-url {endpoint} s3 cp ./README.md s3://demo/");
    println!(
        "  tenfold inspect demo README.md --data {} --json",
        opts.data.path().display()
    );
    let settings = GatewaySettings {
        access_key: opts.access_key,
        secret_key: opts.secret_key,
        policy: opts.policy,
        durability: opts.durability,
        refresh: Duration::from_secs(2),
        base_domain: None,
        ipfs_api: opts.ipfs_api,
        keyring,
        limits: HttpLimits::default(),
        tls: None,
        node_trust: tenfold_balancer::NodeTrust::default(),
        admin,
        anonymous_rate: crate::config::DEFAULT_ANONYMOUS_RATE,
    };
    run_gateway(gateway, index, settings).await
}

/// Runs a storage node in this process on `listener`, holding its data in
/// `data`, until the process ends (a dev cluster's, or a test's).
pub fn spawn_node(
    listener: TcpListener,
    data: std::path::PathBuf,
    capacity: u64,
    (access_key, secret_key): (String, String),
) {
    let config = NodeConfig {
        data,
        capacity,
        access_key,
        secret_key,
        delay: std::time::Duration::ZERO,
        bandwidth: None,
        tls: None,
    };
    tokio::spawn(async move {
        if let Err(e) = run_node(config, listener, std::future::pending()).await {
            tracing::error!(error = %e, "in-process node stopped");
        }
    });
}
