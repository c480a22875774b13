//! The `accord` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accord::config::{self, ProcessEnvironment};
use accord::{ConfigSource, Gateway};
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

/// Accord: a cross-cloud API gateway that enforces service-level objectives in the request path.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with a configuration file (SIGHUP reloads it, SIGTERM drains and stops).
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate a configuration file and print every error with its location.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the configuration file's JSON Schema (for editors).
    Schema,
    /// Print the table of gateway error codes (Markdown).
    Errors,
    /// Run the gateway on example routes with built-in simulated backends and light traffic.
    Demo {
        /// Stop after this long (e.g. `60s`); default: until Ctrl-C.
        #[arg(long)]
        duration: Option<String>,
        /// Traffic listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Admin API listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Requests per second the traffic generator sends (0 turns it off).
        #[arg(long, default_value_t = 20)]
        rps: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, format } => check(&config, format),
        Command::Schema => {
            println!("{:#}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Errors => {
            print!("{}", accord::errors::markdown_table());
            ExitCode::SUCCESS
        }
        Command::Run { config, threads } => {
            report(runtime(threads).and_then(|rt| rt.block_on(run(config))))
        }
        Command::Demo {
            duration,
            listen,
            admin,
            rps,
        } => report(runtime(None).and_then(|rt| {
            let duration = duration
                .map(|d| {
                    d.parse::<config::types::ConfigDuration>()
                        .map(|d| d.0)
                        .map_err(anyhow::Error::msg)
                })
                .transpose()?;
            rt.block_on(accord::demo::run(accord::demo::DemoOptions {
                listen,
                admin,
                rps,
                duration,
            }))
        })),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accord: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads.max(1));
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn check(path: &std::path::Path, format: Format) -> ExitCode {
    match (config::load(path, &ProcessEnvironment), format) {
        (Ok(config), Format::Text) => {
            println!(
                "{}: ok ({} listeners, {} backends, {} routes)",
                path.display(),
                config.listeners.len(),
                config.backends.len(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        (Ok(_), Format::Json) => {
            println!(
                "{}",
                serde_json::json!({ "file": path.display().to_string(), "valid": true, "errors": [] })
            );
            ExitCode::SUCCESS
        }
        (Err(errors), Format::Text) => {
            eprintln!("{}", errors.render());
            ExitCode::FAILURE
        }
        (Err(errors), Format::Json) => {
            println!(
                "{}",
                serde_json::json!({ "file": errors.file, "valid": false, "errors": errors.errors })
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = config::load(&path, &ProcessEnvironment)
        .map_err(|e| anyhow::anyhow!("invalid configuration\n{}", e.render()))?;
    accord::telemetry::init(&config.log);
    let running = Gateway::start(
        config,
        ConfigSource::File(path),
        Arc::new(ProcessEnvironment),
    )
    .await?;
    let gateway = running.gateway.clone();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = gateway.reload().await;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("draining: no new connections; in-flight requests may finish");
    let drained = tokio::time::timeout(Duration::from_secs(600), running.shutdown()).await;
    if drained.is_err() {
        tracing::warn!("shutdown did not finish in time");
    }
    tracing::info!("stopped");
    Ok(())
}
