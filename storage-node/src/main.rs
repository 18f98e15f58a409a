//! `tenfold-node`: run a Tenfold storage node.

use std::path::PathBuf;

use clap::Parser;
use tenfold_common::tls::TlsFiles;
use tenfold_common::units::{parse_duration, parse_size};
use tenfold_node::{NodeConfig, run_node};

/// jemalloc, which returns freed memory to the system (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A standalone S3-compatible storage node for Tenfold.
#[derive(Debug, Parser)]
#[command(name = "tenfold-node", version)]
struct Args {
    /// Folder for the node's data.
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// Most bytes the node stores (for example 500MiB, 10GiB).
    #[arg(long, value_parser = parse_size)]
    capacity: u64,
    /// S3 access key clients sign with.
    #[arg(long, env = "TENFOLD_NODE_ACCESS_KEY")]
    access_key: String,
    /// S3 secret key clients sign with.
    #[arg(long, env = "TENFOLD_NODE_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Test only: wait this long before every answer (for example 200ms), to
    /// play a slow node.
    #[arg(long, value_parser = parse_duration, default_value = "0s", hide = true)]
    test_delay: std::time::Duration,
    /// Test and benchmark option: move at most RATE bytes per second each
    /// way, summed over all requests (for example 50MiB), to play a node
    /// behind an operator's uplink on loopback.
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    test_bandwidth: Option<u64>,
    /// How log lines are written: text, or JSON lines (RUST_LOG sets the
    /// level).
    #[arg(long, value_enum, default_value = "text")]
    log_format: tenfold_common::logging::LogFormat,
    /// Threads that run requests: HTTP, signatures, checksums, TLS. Disk
    /// work runs on threads of its own whatever this says. One spares the
    /// wake-ups between request threads (a quarter of the node's CPU per
    /// 4 KiB PUT, see BENCHMARKS.md); more suit a node that serves HTTPS
    /// at several hundred MiB/s.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(e) => {
            eprintln!("tenfold-node: cannot start its runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Listens and serves until terminated.
async fn serve(args: Args) -> std::process::ExitCode {
    tenfold_common::logging::init(args.log_format);
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background thread not started");
    }
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tenfold-node: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let config = NodeConfig {
        data: args.data,
        capacity: args.capacity,
        access_key: args.access_key,
        secret_key: args.secret_key,
        delay: args.test_delay,
        bandwidth: args.test_bandwidth,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
    };
    match run_node(config, listener, tenfold_common::http_server::terminated()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenfold-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
