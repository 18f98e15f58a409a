//! `tenfold keys`: access keys besides the configuration's admin key.

use clap::Subcommand;

use super::IndexArgs;
use super::status::print_json;
use crate::error::GatewayError;

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
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

/// A key just created, with its secret.
#[derive(Debug, serde::Serialize)]
struct CreatedKey {
    name: String,
    access_key: String,
    secret_key: String,
    admin: bool,
}

pub(super) async fn run(command: KeysCommand) -> Result<(), GatewayError> {
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
                print_json(&CreatedKey {
                    name,
                    access_key,
                    secret_key,
                    admin,
                });
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
                print_json(&keys);
                return Ok(());
            }
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
