//! `tenfold serve`: the production gateway.

use std::path::PathBuf;

use clap::Args;
use tenfold_common::http_server::HttpLimits;

use crate::config::ServeConfig;
use crate::error::GatewayError;
use crate::index::Index;
use crate::metrics::bind_admin;
use crate::server::{GatewaySettings, run_gateway};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
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
    /// Address of the admin listener: metrics, health, readiness
    /// (overrides the config's `admin_listen`; `off` for none).
    #[arg(long)]
    admin_listen: Option<String>,
    /// IPFS RPC API for what the nodes cannot hold (overrides the
    /// config's `ipfs_api`).
    #[arg(long, env = "TENFOLD_IPFS_API")]
    ipfs_api: Option<String>,
    /// The S3 access key of the admin (overrides the config's).
    #[arg(long, env = "TENFOLD_ACCESS_KEY", hide = true)]
    access_key: Option<String>,
    /// Its secret (overrides the config's).
    #[arg(long, env = "TENFOLD_SECRET_KEY", hide_env_values = true, hide = true)]
    secret_key: Option<String>,
    /// The master key (overrides the config's `master_key`).
    #[arg(long, env = "TENFOLD_MASTER_KEY", hide_env_values = true, hide = true)]
    master_key: Option<String>,
}

pub(super) async fn run(args: ServeArgs) -> Result<(), GatewayError> {
    let mut config = match (&args.config, &args.index_url) {
        (Some(path), _) => ServeConfig::load(path)?,
        (None, Some(url)) => ServeConfig::for_index(url.clone()),
        (None, None) => {
            return Err(GatewayError::Config(
                "give --config FILE or --index-url URL".into(),
            ));
        }
    };
    if let Some(url) = args.index_url {
        config.index_url = url;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let keyring = config.keyring(args.master_key.as_deref())?;
    let tls = config.tls()?;
    let node_trust = config.node_trust()?;
    let (Some(access_key), Some(secret_key)) = (
        args.access_key.or(config.access_key),
        args.secret_key.or(config.secret_key),
    ) else {
        return Err(GatewayError::Config(
            "credentials missing: set access_key and secret_key in the config or TENFOLD_ACCESS_KEY / TENFOLD_SECRET_KEY".into(),
        ));
    };
    let index = Index::open(&config.index_url).await?;
    let admin = bind_admin(
        args.admin_listen
            .as_deref()
            .or(config.admin_listen.as_deref()),
        config.metrics_token.clone(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| GatewayError::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    // Below a second, probes and client deadlines would only add noise.
    let at_least_a_second = |d: std::time::Duration| d.max(std::time::Duration::from_secs(1));
    let client_timeout = at_least_a_second(config.client_timeout);
    let settings = GatewaySettings {
        access_key,
        secret_key,
        policy: config.storage,
        durability: config.durability,
        refresh: at_least_a_second(config.refresh),
        base_domain: config.base_domain,
        keyring,
        ipfs_api: args.ipfs_api.or(config.ipfs_api),
        limits: HttpLimits {
            headers: client_timeout,
            body_idle: client_timeout,
            idle: client_timeout,
            max_connections: config.max_connections,
            shutdown_grace: config.shutdown_grace,
            ..HttpLimits::default()
        },
        tls,
        node_trust,
        admin,
        anonymous_rate: config.anonymous_rate,
    };
    run_gateway(listener, index, settings).await
}
