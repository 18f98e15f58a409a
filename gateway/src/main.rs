//! `tenfold`: the gateway, its dev cluster and its admin commands; the
//! command line itself is [`tenfold::cli`].

use std::process::ExitCode;

use clap::Parser;
use tenfold::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tenfold_common::logging::init(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenfold: {e}");
            ExitCode::FAILURE
        }
    }
}
