//! `tenfold`: the gateway, its dev cluster and its admin commands; the
//! command line itself is [`tenfold::cli`].

use std::process::ExitCode;

use clap::Parser;
use tenfold::cli::{Cli, run};

/// jemalloc, which returns freed memory to the system (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tenfold_common::logging::init(cli.log_format);
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background thread not started");
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenfold: {e}");
            ExitCode::FAILURE
        }
    }
}
