//! `tenfold share`: links that open an object or a prefix to anyone.

use std::time::Duration;

use clap::Subcommand;
use tenfold_common::units::{parse_duration, parse_size};

use super::IndexArgs;
use crate::error::GatewayError;
use crate::index::UploadAllowance;
use crate::share::{create_share, revoke_share, share_url, upload_url};

#[derive(Debug, Subcommand)]
pub(super) enum ShareCommand {
    /// Create a link and print its URL.
    Create {
        bucket: String,
        /// A key, or a prefix such as `transfers/2024-06/` (empty: the
        /// whole bucket).
        #[arg(default_value = "")]
        prefix: String,
        /// How long the link works, e.g. 7d, 12h, 30m.
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: Duration,
        /// An upload link: its holder sends files into a new folder under
        /// the prefix (per transfer), and sees nothing else.
        #[arg(long)]
        upload: bool,
        /// With --upload: the most bytes the link takes in all, e.g. 10GiB.
        #[arg(long, value_parser = parse_size, requires = "upload")]
        max_size: Option<u64>,
        /// With --upload: the most files the link takes in all.
        #[arg(long, requires = "upload")]
        max_files: Option<u64>,
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

pub(super) async fn run(command: ShareCommand) -> Result<(), GatewayError> {
    match command {
        ShareCommand::Create {
            bucket,
            prefix,
            expires,
            upload,
            max_size,
            max_files,
            public_url,
            index,
        } => {
            let public_url = match public_url {
                Some(url) => url,
                None => index.data_dir().recorded_endpoint()?,
            };
            let allowance = upload.then_some(UploadAllowance {
                max_bytes: max_size,
                max_files,
                ..UploadAllowance::default()
            });
            let token =
                create_share(&index.open().await?, &bucket, &prefix, expires, allowance).await?;
            if upload {
                println!("{}", upload_url(&public_url, &token));
            } else {
                println!("{}", share_url(&public_url, &token));
            }
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
