//! Log set-up shared by the `tenfold` and `tenfold-node` binaries.

use std::io::IsTerminal;

/// Logs to standard error at the level `RUST_LOG` names (`info` when
/// unset), with colour only when standard error is a terminal: a log file
/// or a pipe gets plain text that can be searched.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
