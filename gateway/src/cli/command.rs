//! The `accord` command line: its commands and options (clap), and what each one runs. The
//! binary's `main` only calls [`main`]; everything it runs is compiled here, in the library,
//! once (a binary that awaits the library's futures compiles them again, after the library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accord_policies::plugin::{
    COMPILE_REFUSED, Compiler, EngineLimits, compile_artifact, set_compiler,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, ProcessEnvironment};
use crate::{ConfigSource, Gateway, demo};

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
        /// Worker threads (default: one per CPU; 1 runs the single-threaded scheduler).
        #[arg(long)]
        threads: Option<usize>,
        /// Reload when the configuration file changes (checked every second; sees in-place
        /// edits, renames and a Kubernetes ConfigMap's symlink swap). SIGHUP and POST /reload
        /// keep working.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a configuration file and print every error with its location.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Do not load the plugins (by default each is loaded and its `configure` run with its
        /// configuration, as at start).
        #[arg(long)]
        skip_plugins: bool,
    },
    /// Print the configuration file's JSON Schema (for editors).
    Schema,
    /// Service-level objective tools.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Print the SLA report of a running gateway (read from its admin API).
    Report {
        /// The configuration file, to find the admin API and its token.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// The admin API address (overrides the configuration's).
        #[arg(long)]
        admin: Option<String>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// The window for attainment, latency and traffic (5m, 30m, 1h, 2h, 6h, 1d, 3d or the SLO window).
        #[arg(long, default_value = "1h")]
        window: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::cli::report::ReportFormat::Table)]
        format: crate::cli::report::ReportFormat,
    },
    /// Show or drive a route's canary release (through the admin API): `status`, `promote` (to
    /// the next step now), `pause`, `resume`, `abort` (share 0).
    Canary {
        /// What to do.
        #[arg(value_enum)]
        action: CanaryAction,
        /// The route.
        #[arg(long)]
        route: String,
        /// The configuration file, to find the admin API and its token.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// The admin API address (overrides the configuration's).
        #[arg(long)]
        admin: Option<String>,
    },
    /// The release gate, for CI/CD: exits 0 when a release of the route may go ahead, 1 with
    /// every reason when not (budget below the floor, a page alert, a canary in progress or
    /// rolled back within the hour).
    Gate {
        /// The route.
        #[arg(long)]
        route: String,
        /// The least error budget left a release needs, e.g. `25%`.
        #[arg(long, default_value = "0%")]
        min_budget: String,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
        /// The configuration file, to find the admin API and its token.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// The admin API address (overrides the configuration's).
        #[arg(long)]
        admin: Option<String>,
    },
    /// WebAssembly policy plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Print the table of gateway error codes (Markdown).
    Errors,
    /// Compile a Wasm component from standard input into an artifact on standard output, for
    /// an engine made for these limits: the gateway runs itself with this to compile its
    /// plugins in a child process.
    #[command(hide = true)]
    CompilePlugin {
        /// Plugin instances at once.
        #[arg(long)]
        instances: u32,
        /// Linear memory per instance, in bytes.
        #[arg(long)]
        memory: usize,
    },
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
        /// Run this many gateway replicas in cluster mode, sharing one SLA through Redis
        /// (`--redis`); replica i listens on the ports of `--listen` and `--admin` plus i.
        #[arg(long, default_value_t = 1)]
        replicas: u16,
        /// The Redis of cluster mode (with `--replicas` above 1).
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Where the traffic generator sends (e.g. a load balancer in front of the
        /// replicas); default: the replicas in turn.
        #[arg(long)]
        traffic_to: Option<String>,
    },
}

#[derive(Subcommand)]
enum SloCommand {
    /// Write Prometheus recording and multi-window multi-burn-rate alerting rules for every
    /// SLO (Sloth-compatible series, from `accord_sla_events_total`).
    Rules {
        /// The configuration file.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write the routes' objectives as OpenSLO v1 `SLO` documents.
    Export {
        /// The configuration file.
        #[arg(short, long, default_value = "accord.yaml")]
        config: PathBuf,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin as the gateway would (compile, link, configure, a canary call) and list
    /// its imports and exports.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Its configuration, JSON or YAML (as under `plugins.<name>.config`).
        #[arg(long)]
        config: Option<String>,
    },
    /// Run scripted cases (requests, SLA states, responses, expected decisions) through a
    /// plugin, without a gateway.
    Test {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The cases file (YAML).
        #[arg(long)]
        cases: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CanaryAction {
    Status,
    Promote,
    Pause,
    Resume,
    Abort,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Parses the command line and runs the command; the process exits with what it returns.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            format,
            skip_plugins,
        } => check(&config, format, skip_plugins),
        Command::Schema => {
            println!("{:#}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Report {
            config,
            admin,
            route,
            window,
            format,
        } => report(
            runtime(Some(1))
                .and_then(|rt| rt.block_on(sla_report(config, admin, route, window, format))),
        ),
        Command::Slo {
            command: SloCommand::Rules { config, output },
        } => report(write_slo_document(
            &config,
            output,
            crate::cli::slo_rules::rules,
        )),
        Command::Slo {
            command: SloCommand::Export { config, output },
        } => report(write_slo_document(
            &config,
            output,
            crate::cli::openslo::export,
        )),
        Command::Plugin { command } => plugin(command),
        Command::Canary {
            action,
            route,
            config,
            admin,
        } => report(
            runtime(Some(1)).and_then(|rt| rt.block_on(canary(action, route, config, admin))),
        ),
        Command::Gate {
            route,
            min_budget,
            json,
            config,
            admin,
        } => match runtime(Some(1))
            .and_then(|rt| rt.block_on(gate(route, min_budget, json, config, admin)))
        {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("accord: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Errors => {
            print!("{}", crate::proxy::errors::markdown_table());
            ExitCode::SUCCESS
        }
        Command::CompilePlugin { instances, memory } => compile_plugin(EngineLimits {
            max_instances: instances,
            max_memory: memory,
        }),
        Command::Run {
            config,
            threads,
            watch,
        } => {
            compile_plugins_in_a_child();
            report(runtime(threads).and_then(|rt| rt.block_on(run(config, watch))))
        }
        Command::Demo {
            duration,
            listen,
            admin,
            rps,
            replicas,
            redis,
            traffic_to,
        } => report(runtime(None).and_then(|rt| {
            compile_plugins_in_a_child();
            let duration = duration
                .map(|d| {
                    d.parse::<config::types::ConfigDuration>()
                        .map(|d| d.0)
                        .map_err(anyhow::Error::msg)
                })
                .transpose()?;
            rt.block_on(demo::run(demo::DemoOptions {
                listen,
                admin,
                rps,
                duration,
                replicas,
                redis,
                traffic_to,
            }))
        })),
    }
}

/// A gateway that serves traffic compiles its plugins in a child process of its own binary
/// (see [`Compiler::Child`]).
fn compile_plugins_in_a_child() {
    // The running binary itself, even if its file has been replaced since it started.
    #[cfg(target_os = "linux")]
    let program = Some(PathBuf::from("/proc/self/exe"));
    #[cfg(not(target_os = "linux"))]
    let program = std::env::current_exe().ok();
    if let Some(program) = program {
        set_compiler(Compiler::Child(program));
    }
}

/// `accord compile-plugin`: a component on standard input, its artifact on standard output;
/// a component that does not compile exits with [`COMPILE_REFUSED`] and the reason on standard
/// error.
fn compile_plugin(limits: EngineLimits) -> ExitCode {
    use std::io::{Read, Write};
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {e}");
        return ExitCode::from(2);
    }
    match compile_artifact(limits, &wasm) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the artifact: {e}");
                ExitCode::from(2)
            }
        },
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(COMPILE_REFUSED as u8)
        }
    }
}

fn plugin(command: PluginCommand) -> ExitCode {
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => return report(Err(e)),
    };
    match command {
        PluginCommand::Check { file, config } => {
            match rt.block_on(crate::cli::plugin::check(&file, config.as_deref())) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("accord: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginCommand::Test { file, cases } => {
            match rt.block_on(crate::cli::plugin::test(&file, &cases)) {
                Ok(outcome) => {
                    print!("{}", outcome.report);
                    if outcome.failed == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(message) => {
                    eprintln!("accord: {message}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// `slo rules` and `slo export`: loads the configuration, renders a document from its SLOs and
/// writes it to `output` (standard output without one).
fn write_slo_document(
    config: &std::path::Path,
    output: Option<PathBuf>,
    render: fn(&config::Config) -> Result<String, String>,
) -> anyhow::Result<()> {
    let config = config::load(config, &ProcessEnvironment)
        .map_err(|e| anyhow::anyhow!("invalid configuration\n{}", e.render()))?;
    let text = render(&config).map_err(anyhow::Error::msg)?;
    match output {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
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

/// `--threads 1` gets tokio's single-threaded scheduler: one worker has nobody to steal work
/// from or to wake, and that scheduler does not keep the books for it.
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn sla_report(
    config: PathBuf,
    admin: Option<String>,
    route: Option<String>,
    window: String,
    format: crate::cli::report::ReportFormat,
) -> anyhow::Result<()> {
    let client = crate::cli::admin_client::AdminClient::new(&config, admin);
    let (status, document) = client.call(http::Method::GET, "/sla").await?;
    if !status.is_success() {
        anyhow::bail!("the admin API answered {status}: {document}");
    }
    let text = crate::cli::report::render(&document, route.as_deref(), &window, format)
        .map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(())
}

/// `accord canary ACTION --route R`: prints the canary after the action; an action that does
/// not apply (409) is an error that says why.
async fn canary(
    action: CanaryAction,
    route: String,
    config: PathBuf,
    admin: Option<String>,
) -> anyhow::Result<()> {
    let client = crate::cli::admin_client::AdminClient::new(&config, admin);
    let (method, path) = match action {
        CanaryAction::Status => (http::Method::GET, format!("/canary/{route}")),
        CanaryAction::Promote => (http::Method::POST, format!("/canary/{route}/promote")),
        CanaryAction::Pause => (http::Method::POST, format!("/canary/{route}/pause")),
        CanaryAction::Resume => (http::Method::POST, format!("/canary/{route}/resume")),
        CanaryAction::Abort => (http::Method::POST, format!("/canary/{route}/abort")),
    };
    let (status, body) = client.call(method, &path).await?;
    if !status.is_success() {
        anyhow::bail!(
            "{}",
            body["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned)
        );
    }
    print!("{}", crate::cli::canary::render_canary(&route, &body));
    Ok(())
}

/// `accord gate --route R --min-budget 25%`: whether a release may go ahead.
async fn gate(
    route: String,
    min_budget: String,
    json: bool,
    config: PathBuf,
    admin: Option<String>,
) -> anyhow::Result<bool> {
    let client = crate::cli::admin_client::AdminClient::new(&config, admin);
    let floor = min_budget.replace('%', "%25");
    let (status, body) = client
        .call(
            http::Method::GET,
            &format!("/sla/routes/{route}/gate?min_budget={floor}"),
        )
        .await?;
    if !(status.is_success() || status == http::StatusCode::CONFLICT) {
        anyhow::bail!(
            "{}",
            body["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned)
        );
    }
    if json {
        println!("{body:#}");
    } else {
        print!("{}", crate::cli::canary::render_gate(&body));
    }
    Ok(body["allow"].as_bool().unwrap_or(false))
}

fn check(path: &std::path::Path, format: Format, skip_plugins: bool) -> ExitCode {
    let loaded = config::load(path, &ProcessEnvironment);
    let loaded = match loaded {
        Ok(config) if !skip_plugins && !config.plugins.is_empty() => {
            configure_plugins(path, config)
        }
        other => other,
    };
    match (loaded, format) {
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

/// Runs every plugin's `configure` with its configuration; a refusal is an error located at the
/// plugin in the file.
fn configure_plugins(
    path: &std::path::Path,
    config: config::Config,
) -> Result<config::Config, config::ConfigErrors> {
    let base = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let refused = match runtime(Some(1)) {
        Ok(rt) => rt.block_on(crate::cli::plugin::configure_all(&config, &base)),
        Err(e) => vec![(Arc::from("(all)"), e.to_string())],
    };
    if refused.is_empty() {
        return Ok(config);
    }
    let source = std::fs::read_to_string(path).unwrap_or_default();
    let raw = config::parse(&source).ok();
    let errors = refused
        .into_iter()
        .map(|(id, message)| {
            let (line, column) = raw
                .as_ref()
                .and_then(|raw| raw.plugins.get(&*id))
                .map_or((0, 0), |p| (p.line, p.column));
            config::error::ConfigError::new(
                line,
                column,
                format!("plugins.{id}.config"),
                format!("the plugin refused to start with this configuration: {message}"),
            )
        })
        .collect();
    Err(config::ConfigErrors::new(errors).in_file(&path.display().to_string(), &source))
}

async fn run(path: PathBuf, watch: bool) -> anyhow::Result<()> {
    let config = config::load(&path, &ProcessEnvironment)
        .map_err(|e| anyhow::anyhow!("invalid configuration\n{}", e.render()))?;
    crate::telemetry::init(&config.log);
    let running = Gateway::start(
        config,
        ConfigSource::File(path.clone()),
        Arc::new(ProcessEnvironment),
    )
    .await?;
    let gateway = running.gateway.clone();
    if watch {
        tokio::spawn(crate::control::watch::watch(
            gateway.clone(),
            path,
            Duration::from_secs(1),
        ));
    }
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
