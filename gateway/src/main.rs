//! `tenfold`: the gateway, its dev cluster and its admin commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tenfold::GatewayError;
use tenfold::config::ServeConfig;
use tenfold::crypto::{Keyring, MasterKey};
use tenfold::dev_cluster::{DevOptions, run_dev};
use tenfold::index::{Index, NewNode, sqlite_url_for_dir};
use tenfold::server::{GatewaySettings, run_gateway};
use tenfold::share::{create_share, revoke_share, share_url};
use tenfold_balancer::{Network, OVERFLOW};
use tenfold_common::http_server::HttpTimeouts;
use tenfold_common::units::parse_size;

#[derive(Debug, Parser)]
#[command(
    name = "tenfold",
    version,
    about = "S3 gateway over independently operated storage nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the index is: a data folder (SQLite inside) or an index URL.
#[derive(Debug, Args)]
struct IndexArgs {
    /// Data folder of a `tenfold dev` cluster.
    #[arg(long, default_value = "./tenfold-data")]
    data: PathBuf,
    /// Index URL (overrides --data), e.g. sqlite:///var/lib/tenfold/index.db.
    #[arg(long, env = "TENFOLD_INDEX_URL")]
    index_url: Option<String>,
    /// File holding the master key (64 hex digits), which seals node
    /// secrets; `TENFOLD_MASTER_KEY` gives the key itself, and a dev
    /// folder's `master.key` is used by default with --data.
    #[arg(long, env = "TENFOLD_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

impl IndexArgs {
    async fn open(&self) -> Result<Index, GatewayError> {
        let url = match &self.index_url {
            Some(url) => url.clone(),
            None => {
                if !self.data.join("index.db").exists() {
                    return Err(GatewayError::Config(format!(
                        "no index in {} (run `tenfold dev --data {0}` first, or pass --index-url)",
                        self.data.display()
                    )));
                }
                sqlite_url_for_dir(&self.data)
            }
        };
        let index = Index::open(&url).await?;
        Ok(match self.master_key()? {
            Some(key) => index.with_keyring(Keyring::new(key, Vec::new())),
            None => index,
        })
    }

    /// The master key, if one is given or the dev folder has one.
    fn master_key(&self) -> Result<Option<MasterKey>, GatewayError> {
        if let Ok(key) = std::env::var("TENFOLD_MASTER_KEY") {
            return MasterKey::parse(&key).map(Some);
        }
        let file = match &self.master_key_file {
            Some(file) => file.clone(),
            None if self.index_url.is_none() => self.data.join("master.key"),
            None => return Ok(None),
        };
        match std::fs::read_to_string(&file) {
            Ok(text) => MasterKey::parse(&text).map(Some),
            Err(_) if self.master_key_file.is_none() => Ok(None),
            Err(e) => Err(GatewayError::Config(format!("{}: {e}", file.display()))),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole local cluster: gateway, 4 mainnet and 2 testnet nodes.
    Dev {
        /// Folder for the index and the nodes' data.
        #[arg(long, default_value = "./tenfold-data")]
        data: PathBuf,
        /// Address of the S3 endpoint.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
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
    },
    /// Run the production gateway: from a configuration file, or from
    /// --index-url and --listen with the credentials and master key in the
    /// environment (TENFOLD_ACCESS_KEY, TENFOLD_SECRET_KEY,
    /// TENFOLD_MASTER_KEY). It serves the nodes registered in the index.
    Serve {
        /// TOML configuration file.
        #[arg(long, required_unless_present = "index_url")]
        config: Option<PathBuf>,
        /// The index (overrides the config's `index_url`), e.g.
        /// postgres://tenfold@db.example:5432/tenfold.
        #[arg(long, env = "TENFOLD_INDEX_URL")]
        index_url: Option<String>,
        /// Address of the S3 endpoint (overrides the config's `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// IPFS RPC API for what the nodes cannot hold (overrides the
        /// config's `ipfs_api`).
        #[arg(long, env = "TENFOLD_IPFS_API")]
        ipfs_api: Option<String>,
    },
    /// Show the nodes' capacity and usage and what lives in the overflow
    /// store, as the index records them.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Manage the registered storage nodes.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Show where an object's fragments live.
    Inspect {
        bucket: String,
        key: String,
        /// Print JSON (the only format for now).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Access keys besides the configuration's admin key: each sees only
    /// the buckets it creates.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Share links: one object or a whole prefix, for anyone with the link.
    Share {
        #[command(subcommand)]
        command: ShareCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ShareCommand {
    /// Create a link and print its URL.
    Create {
        bucket: String,
        /// A key, or a prefix such as `transfers/2024-06/` (empty: the
        /// whole bucket).
        #[arg(default_value = "")]
        prefix: String,
        /// How long the link works, e.g. 7d, 12h, 30m.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// The gateway's address as users reach it (default: the one
        /// `tenfold dev` recorded in its data folder).
        #[arg(long, env = "TENFOLD_PUBLIC_URL")]
        public_url: Option<String>,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Revoke a link (give its URL or token).
    Revoke {
        link: String,
        #[command(flatten)]
        index: IndexArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an access key and print it with its secret (shown only now).
    Create {
        /// A unique name for the key, e.g. the user it is for.
        name: String,
        /// The key may use every bucket, not just its own.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// List the access keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Delete an access key (by name or access key id). Its buckets stay,
    /// reachable with admin keys.
    Delete {
        name: String,
        #[command(flatten)]
        index: IndexArgs,
    },
}

#[derive(Debug, Subcommand)]
enum NodesCommand {
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

async fn run(cli: Cli) -> Result<(), GatewayError> {
    match cli.command {
        Command::Dev {
            data,
            listen,
            node_capacity,
            access_key,
            secret_key,
            ipfs_api,
            index_url,
        } => {
            run_dev(DevOptions {
                data,
                listen,
                node_capacity,
                access_key,
                secret_key,
                ipfs_api,
                index_url,
            })
            .await
        }
        Command::Serve {
            config,
            index_url,
            listen,
            ipfs_api,
        } => {
            let mut config = match (config, index_url.clone()) {
                (Some(path), _) => ServeConfig::load(&path)?,
                (None, Some(url)) => ServeConfig::for_index(url),
                (None, None) => {
                    return Err(GatewayError::Config(
                        "give --config FILE or --index-url URL".into(),
                    ));
                }
            };
            if let Some(url) = index_url {
                config.index_url = url;
            }
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let keyring = config.keyring()?;
            let tls = config.tls()?;
            let node_trust = config.node_trust()?;
            let access_key = std::env::var("TENFOLD_ACCESS_KEY")
                .ok()
                .or(config.access_key);
            let secret_key = std::env::var("TENFOLD_SECRET_KEY")
                .ok()
                .or(config.secret_key);
            let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
                return Err(GatewayError::Config(
                    "credentials missing: set access_key and secret_key in the config or TENFOLD_ACCESS_KEY / TENFOLD_SECRET_KEY".into(),
                ));
            };
            let index = Index::open(&config.index_url).await?;
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .map_err(|e| {
                    GatewayError::Config(format!("cannot listen on {}: {e}", config.listen))
                })?;
            let settings = GatewaySettings {
                access_key,
                secret_key,
                policy: config.storage,
                refresh: Duration::from_secs(config.refresh_seconds.max(1)),
                base_domain: config.base_domain,
                keyring,
                ipfs_api: ipfs_api.or(config.ipfs_api),
                timeouts: HttpTimeouts {
                    headers: Duration::from_secs(config.client_timeout_seconds.max(1)),
                    body_idle: Duration::from_secs(config.client_timeout_seconds.max(1)),
                },
                tls,
                node_trust,
            };
            run_gateway(listener, index, settings).await
        }
        Command::Nodes { command } => nodes(command).await,
        Command::Status { json, index } => status(&index.open().await?, json).await,
        Command::Keys { command } => keys(command).await,
        Command::Share { command } => share(command).await,
        Command::Inspect {
            bucket,
            key,
            json: _,
            index,
        } => {
            let index = index.open().await?;
            let row = index
                .get_object(&bucket, &key)
                .await?
                .ok_or_else(|| GatewayError::NoSuchKey(format!("{bucket}/{key}")))?;
            let layout = index.layout(&row.id, 0..u64::MAX).await?;
            let master_keys: std::collections::BTreeSet<&str> = layout
                .iter()
                .filter_map(|s| s.key.as_ref().map(|k| k.key_id.as_str()))
                .collect();
            let fragments: Vec<serde_json::Value> = layout
                .iter()
                .enumerate()
                .flat_map(|(segment, s)| {
                    s.fragments.iter().map(move |f| {
                        serde_json::json!({
                            "segment": segment,
                            "index": f.index,
                            "size": f.size,
                            "placements": f.placements,
                        })
                    })
                })
                .collect();
            let overflowed: Vec<u64> = fragments
                .iter()
                .filter(|f| {
                    f["placements"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["network"] == OVERFLOW))
                })
                .filter_map(|f| f["size"].as_u64())
                .collect();
            let out = serde_json::json!({
                "bucket": row.bucket,
                "key": row.key,
                "size": row.size,
                "etag": row.etag,
                "master_keys": master_keys,
                "overflow": {
                    "fragments": overflowed.len(),
                    "bytes": overflowed.iter().sum::<u64>(),
                },
                "fragments": fragments,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
    }
}

async fn status(index: &Index, json: bool) -> Result<(), GatewayError> {
    let nodes = index.nodes().await?;
    let (fragments, bytes) = index.overflow_usage().await?;
    let garbage = index.garbage_len().await?;
    if json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id, "name": n.name, "network": n.network,
                    "capacity": n.capacity, "stored": n.stored_bytes,
                })
            })
            .collect();
        let out = serde_json::json!({
            "nodes": list,
            "overflow": { "fragments": fragments, "bytes": bytes },
            "garbage": garbage,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    for network in [Network::Mainnet, Network::Testnet] {
        let of: Vec<_> = nodes.iter().filter(|n| n.network == network).collect();
        let capacity: u64 = of.iter().map(|n| n.capacity).sum();
        let stored: u64 = of.iter().map(|n| n.stored_bytes).sum();
        println!(
            "{network}: {} nodes, {} stored of {}",
            of.len(),
            bytesize::ByteSize(stored),
            bytesize::ByteSize(capacity)
        );
    }
    println!(
        "overflow (IPFS): {fragments} fragments, {}",
        bytesize::ByteSize(bytes)
    );
    println!("awaiting removal: {garbage} replicas");
    Ok(())
}

async fn nodes(command: NodesCommand) -> Result<(), GatewayError> {
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
            let index = index.open().await?;
            let node = NewNode {
                name: name.unwrap_or_else(|| endpoint.clone()),
                endpoint,
                network,
                capacity,
                access_key,
                secret_key,
                bucket,
            };
            let id = index.add_node(&node).await?;
            println!("{id}");
            Ok(())
        }
        NodesCommand::List { json, index } => {
            let nodes = index.open().await?.nodes().await?;
            if json {
                let list: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "id": n.id, "name": n.name, "endpoint": n.endpoint,
                            "network": n.network, "capacity": n.capacity, "stored": n.stored_bytes,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                println!(
                    "{:>4}  {:<8}  {:>14}  {:>14}  {:<24}  ENDPOINT",
                    "ID", "NETWORK", "CAPACITY", "STORED", "NAME"
                );
                for n in nodes {
                    println!(
                        "{:>4}  {:<8}  {:>14}  {:>14}  {:<24}  {}",
                        n.id, n.network, n.capacity, n.stored_bytes, n.name, n.endpoint
                    );
                }
            }
            Ok(())
        }
        NodesCommand::Remove { id, index } => index.open().await?.remove_node(id).await,
    }
}

async fn keys(command: KeysCommand) -> Result<(), GatewayError> {
    match command {
        KeysCommand::Create {
            name,
            admin,
            json,
            index,
        } => {
            let (access_key, secret_key) =
                index.open().await?.create_access_key(&name, admin).await?;
            if json {
                let out = serde_json::json!({
                    "name": name, "access_key": access_key,
                    "secret_key": secret_key, "admin": admin,
                });
                println!("{out}");
            } else {
                println!("access key: {access_key}");
                println!("secret key: {secret_key}");
                eprintln!("The secret is shown only now; the index keeps it sealed.");
            }
            Ok(())
        }
        KeysCommand::List { json, index } => {
            let keys = index.open().await?.access_keys().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&keys).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<24}  {:<20}  {:<5}  {:>7}  CREATED",
                    "NAME", "ACCESS KEY", "ADMIN", "BUCKETS"
                );
                for k in keys {
                    let created = time::OffsetDateTime::from_unix_timestamp(k.created_at / 1000)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<24}  {:<20}  {:<5}  {:>7}  {created}",
                        k.name,
                        k.access_key,
                        if k.admin { "yes" } else { "no" },
                        k.buckets
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Delete { name, index } => {
            if index.open().await?.delete_access_key(&name).await? {
                Ok(())
            } else {
                Err(GatewayError::InvalidArgument(format!(
                    "no access key named {name:?}"
                )))
            }
        }
    }
}

async fn share(command: ShareCommand) -> Result<(), GatewayError> {
    match command {
        ShareCommand::Create {
            bucket,
            prefix,
            expires,
            public_url,
            index,
        } => {
            let public_url = match public_url {
                Some(url) => url,
                None => recorded_endpoint(&index.data)?,
            };
            let db = index.open().await?;
            let token = create_share(&db, &bucket, &prefix, expires).await?;
            println!("{}", share_url(&public_url, &token));
            Ok(())
        }
        ShareCommand::Revoke { link, index } => {
            if revoke_share(&index.open().await?, &link).await? {
                Ok(())
            } else {
                Err(GatewayError::InvalidArgument(format!(
                    "no such share link: {link}"
                )))
            }
        }
    }
}

/// The endpoint `tenfold dev` recorded in its data folder.
fn recorded_endpoint(data: &std::path::Path) -> Result<String, GatewayError> {
    let path = data.join("gateway.json");
    let info: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            GatewayError::Config(format!(
                "no gateway address recorded in {}: pass --public-url",
                path.display()
            ))
        })?;
    info.get("endpoint")
        .and_then(|e| e.as_str())
        .map(str::to_owned)
        .ok_or_else(|| GatewayError::Config(format!("{} has no endpoint", path.display())))
}

#[tokio::main]
async fn main() -> ExitCode {
    tenfold_common::logging::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenfold: {e}");
            ExitCode::FAILURE
        }
    }
}
