//! The `tenfold` command line: one module per command family, each with its
//! arguments and what it runs.

mod dev;
mod keys;
mod nodes;
mod serve;
mod share;
mod status;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tenfold_common::logging::LogFormat;

use crate::crypto::{Keyring, MasterKey};
use crate::data_dir::DataDir;
use crate::error::GatewayError;
use crate::index::Index;

/// The `tenfold` command.
#[derive(Debug, Parser)]
#[command(
    name = "tenfold",
    version,
    about = "S3 gateway over independently operated storage nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: text, or JSON lines (RUST_LOG sets the
    /// level).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole local cluster: gateway, 4 mainnet and 2 testnet nodes.
    Dev(dev::DevArgs),
    /// Run the production gateway: from a configuration file, or from
    /// --index-url and --listen with the credentials and master key in the
    /// environment (TENFOLD_ACCESS_KEY, TENFOLD_SECRET_KEY,
    /// TENFOLD_MASTER_KEY). It serves the nodes registered in the index.
    Serve(serve::ServeArgs),
    /// Show the nodes' capacity and usage and what lives in the overflow
    /// store, as the index records them.
    Status(status::StatusArgs),
    /// Manage the registered storage nodes.
    Nodes {
        #[command(subcommand)]
        command: nodes::NodesCommand,
    },
    /// Show where an object's fragments live.
    Inspect(status::InspectArgs),
    /// Access keys besides the configuration's admin key: each sees only
    /// the buckets it creates.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Share links: one object or a whole prefix, for anyone with the link.
    Share {
        #[command(subcommand)]
        command: share::ShareCommand,
    },
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command met, for `main` to print.
pub async fn run(cli: Cli) -> Result<(), GatewayError> {
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Inspect(args) => status::inspect(args).await,
        Command::Nodes { command } => nodes::run(command).await,
        Command::Keys { command } => keys::run(command).await,
        Command::Share { command } => share::run(command).await,
    }
}

/// Where the index is: a data folder (SQLite inside) or an index URL, and
/// the master key that seals node and access-key secrets.
#[derive(Debug, Args)]
struct IndexArgs {
    /// Data folder of a `tenfold dev` cluster.
    #[arg(long, default_value = "./tenfold-data")]
    data: PathBuf,
    /// Index URL (overrides --data), e.g. sqlite:///var/lib/tenfold/index.db.
    #[arg(long, env = "TENFOLD_INDEX_URL")]
    index_url: Option<String>,
    /// File holding the master key (64 hex digits), which seals node
    /// secrets; a dev folder's `master.key` is used by default with --data.
    #[arg(long, env = "TENFOLD_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// The master key itself (64 hex digits); overrides the files.
    #[arg(long, env = "TENFOLD_MASTER_KEY", hide_env_values = true, hide = true)]
    master_key: Option<String>,
}

impl IndexArgs {
    fn data_dir(&self) -> DataDir {
        DataDir::new(&self.data)
    }

    async fn open(&self) -> Result<Index, GatewayError> {
        let url = match &self.index_url {
            Some(url) => url.clone(),
            None => {
                let dir = self.data_dir();
                if !dir.index_file().exists() {
                    return Err(GatewayError::Config(format!(
                        "no index in {} (run `tenfold dev --data {0}` first, or pass --index-url)",
                        self.data.display()
                    )));
                }
                dir.index_url()
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
        if let Some(key) = &self.master_key {
            return MasterKey::parse(key).map(Some);
        }
        match &self.master_key_file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| GatewayError::Config(format!("{}: {e}", file.display())))
                .and_then(|text| MasterKey::parse(&text))
                .map(Some),
            None if self.index_url.is_none() => self.data_dir().master_key(),
            None => Ok(None),
        }
    }
}
