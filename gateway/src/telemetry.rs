//! Logging setup: `tracing` with text or JSON lines; `RUST_LOG` overrides the configured level.
//! Access-log lines use the target `accord::access`.

use tracing_subscriber::EnvFilter;

use crate::config::model::Log;
use crate::config::model::LogFormat;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only where a person reads a terminal: a file, a pipe or a log collector gets
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
