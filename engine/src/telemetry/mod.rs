//! Logs and metrics. Logs go through `tracing` (human-readable or JSON);
//! metrics are rendered at `/metrics`. Nothing here ever sees a secret value:
//! secrets are a type that prints as `[redacted]`, and text from platforms is
//! passed through `redact` before it is logged or stored.

pub mod metrics;
pub mod redact;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Install the global subscriber once; `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat) {
    init_logging_with(format, "info");
}

/// Like `init_logging`, with another default level.
pub fn init_logging_with(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colours only for a person at a terminal, not in a log file or a journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
