//! Log set-up shared by the `tenfold` and `tenfold-node` binaries.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain text, with colour only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the spans it is in
    /// (a request's `id` is its `x-amz-request-id`).
    Json,
}

/// Logs to standard error at the level `RUST_LOG` names (`info` when
/// unset) in `format`: text with colour only when standard error is a
/// terminal (a log file or a pipe gets plain text that can be searched),
/// or JSON lines.
pub fn init(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
