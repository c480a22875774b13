//! `accord demo`: the gateway on example routes, with simulated on-prem services whose latency
//! and failures follow a script, and a light traffic generator, so that failover, retries,
//! outlier ejection and the metrics can be watched without any cloud account.

pub mod lambda;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use accord_adapters::RequestBody;
use anyhow::Context as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{self, Environment, ProcessEnvironment};
use crate::{ConfigSource, Gateway};
use upstream::{Behaviour, Phase};

/// The demo's configuration template.
pub const CONFIG_TEMPLATE: &str = include_str!("config.yaml");

/// Options of `accord demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Traffic listener address.
    pub listen: String,
    /// Admin listener address.
    pub admin: String,
    /// Generated requests per second.
    pub rps: u32,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Gateway replicas (more than 1: cluster mode through `redis`).
    pub replicas: u16,
    /// Redis, for cluster mode.
    pub redis: String,
    /// Where generated traffic goes (default: the replicas in turn).
    pub traffic_to: Option<String>,
}

/// The process environment, plus the demo's made-up AWS keys (the simulated Invoke endpoint
/// accepts any).
struct DemoEnvironment;

impl Environment for DemoEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "ACCORD_DEMO_ACCESS_KEY_ID" => Some("AKIDACCORDDEMO".into()),
            "ACCORD_DEMO_SECRET_ACCESS_KEY" => Some("accord-demo-secret".into()),
            // The admin token for POST endpoints (reload, canary commands), printed in the
            // banner: a demo on loopback, not a secret.
            "ACCORD_DEMO_ADMIN_TOKEN" => Some("demo".into()),
            _ => ProcessEnvironment.var(name),
        }
    }

    fn read_file(&self, path: &str) -> std::io::Result<String> {
        ProcessEnvironment.read_file(path)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn steady(latency: u64, jitter: u64, error_rate: f64) -> Behaviour {
    Behaviour {
        latency: ms(latency),
        jitter: ms(jitter),
        error_rate,
    }
}

/// Where the demo's simulated services listen.
struct Services {
    orders_primary: std::net::SocketAddr,
    orders_secondary: std::net::SocketAddr,
    catalog: [std::net::SocketAddr; 3],
    quotes_lambda: std::net::SocketAddr,
    quotes_dc: std::net::SocketAddr,
    checkout: [std::net::SocketAddr; 2],
}

/// Runs the demo until Ctrl-C or the duration passes.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let services = spawn_services().await?;
    let replicas = options.replicas.max(1);
    let mut running = Vec::new();
    for replica in 0..replicas {
        let listen = shifted(&options.listen, replica).context("--listen")?;
        let admin = shifted(&options.admin, replica).context("--admin")?;
        let mut text = services.configuration(&listen, &admin);
        if replicas > 1 {
            text.push_str(&format!(
                "cluster:\n  name: demo\n  redis: \"{}\"\n  replica: demo-{}\n  sync_interval: 1s\n",
                options.redis,
                replica + 1
            ));
        }
        let config = config::from_str(&text, &DemoEnvironment)
            .map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
        if replica == 0 {
            crate::telemetry::init(&config.log);
        }
        running.push(
            Gateway::start(config, ConfigSource::Text(text), Arc::new(DemoEnvironment)).await?,
        );
    }
    let bases: Vec<String> = running
        .iter()
        .map(|r| format!("http://{}", r.address()))
        .collect();
    print_banner(&bases[0], running[0].admin);
    if replicas > 1 {
        println!(
            "Cluster mode: {replicas} replicas share one SLA through {}:",
            options.redis
        );
        for (base, r) in bases.iter().zip(&running) {
            println!("  {base}   dashboard http://{}/dashboard", r.admin);
        }
        println!();
    }
    if options.rps > 0 {
        let targets = match &options.traffic_to {
            Some(target) => vec![target.trim_end_matches('/').to_owned()],
            None => bases.clone(),
        };
        tokio::spawn(generate_traffic(targets, options.rps));
    }
    let gateway = running[0].gateway.clone();
    let summary = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(10));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            print_summary(&gateway);
        }
    });
    match options.duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?,
    }
    summary.abort();
    print_summary(&running[0].gateway);
    for r in running {
        r.shutdown().await;
    }
    Ok(())
}

/// `address` with its port moved up by `by` (port 0 stays 0: the OS picks).
fn shifted(address: &str, by: u16) -> anyhow::Result<String> {
    let mut address: std::net::SocketAddr = address
        .parse()
        .with_context(|| format!("{address:?} is not an ip:port"))?;
    if address.port() != 0 {
        address.set_port(
            address
                .port()
                .checked_add(by)
                .context("the port is too high for this many replicas")?,
        );
    }
    Ok(address.to_string())
}

impl Services {
    /// The demo's configuration, on these services.
    fn configuration(&self, listen: &str, admin: &str) -> String {
        CONFIG_TEMPLATE
            .replace("${LISTEN}", listen)
            .replace("${ADMIN}", admin)
            .replace("${ORDERS_PRIMARY}", &self.orders_primary.to_string())
            .replace("${ORDERS_SECONDARY}", &self.orders_secondary.to_string())
            .replace("${CATALOG_A}", &self.catalog[0].to_string())
            .replace("${CATALOG_B}", &self.catalog[1].to_string())
            .replace("${CATALOG_C}", &self.catalog[2].to_string())
            .replace("${QUOTES_LAMBDA}", &self.quotes_lambda.to_string())
            .replace("${QUOTES_DC}", &self.quotes_dc.to_string())
            .replace("${CHECKOUT_V1}", &self.checkout[0].to_string())
            .replace("${CHECKOUT_V2}", &self.checkout[1].to_string())
    }
}

/// The simulated services, each on its schedule.
async fn spawn_services() -> anyhow::Result<Services> {
    // The primary orders service: healthy for 40s, then slow for 15s, then failing for 15s.
    let primary = upstream::spawn(
        "orders-primary",
        vec![
            Phase {
                duration: Duration::from_secs(40),
                behaviour: steady(15, 10, 0.0),
            },
            Phase {
                duration: Duration::from_secs(15),
                behaviour: steady(700, 100, 0.0),
            },
            Phase {
                duration: Duration::from_secs(15),
                behaviour: steady(10, 5, 0.9),
            },
        ],
    )
    .await?;
    let secondary = upstream::spawn(
        "orders-secondary",
        vec![Phase {
            duration: Duration::from_secs(60),
            behaviour: steady(35, 15, 0.0),
        }],
    )
    .await?;
    let catalog_a = upstream::spawn(
        "catalog-a",
        vec![Phase {
            duration: Duration::from_secs(60),
            behaviour: steady(5, 5, 0.0),
        }],
    )
    .await?;
    let catalog_b = upstream::spawn(
        "catalog-b",
        vec![Phase {
            duration: Duration::from_secs(60),
            behaviour: steady(60, 40, 0.0),
        }],
    )
    .await?;
    let catalog_c = upstream::spawn(
        "catalog-c",
        vec![Phase {
            duration: Duration::from_secs(60),
            behaviour: steady(5, 5, 0.01),
        }],
    )
    .await?;

    // The quotes function: fine for 30s, throttled half the time for 20s, then failing a third
    // of its invocations for 10s; the data-centre fallback is slower but steady.
    let quotes_lambda = lambda::spawn(vec![
        lambda::FunctionPhase {
            duration: Duration::from_secs(30),
            behaviour: lambda::FunctionBehaviour {
                latency: ms(20),
                throttle_rate: 0.0,
                error_rate: 0.0,
            },
        },
        lambda::FunctionPhase {
            duration: Duration::from_secs(20),
            behaviour: lambda::FunctionBehaviour {
                latency: ms(20),
                throttle_rate: 0.5,
                error_rate: 0.0,
            },
        },
        lambda::FunctionPhase {
            duration: Duration::from_secs(10),
            behaviour: lambda::FunctionBehaviour {
                latency: ms(20),
                throttle_rate: 0.0,
                error_rate: 0.35,
            },
        },
    ])
    .await?;
    let quotes_dc = upstream::spawn(
        "quotes-dc",
        vec![Phase {
            duration: Duration::from_secs(60),
            behaviour: steady(60, 30, 0.0),
        }],
    )
    .await?;

    // Checkout: v1 steady; v2, the canary, as good for a minute, then failing a third of its
    // requests for 40s (the script repeats, for a canary resumed later).
    let checkout_v1 = upstream::spawn(
        "checkout-v1",
        vec![Phase {
            duration: Duration::from_secs(60),
            behaviour: steady(25, 10, 0.0),
        }],
    )
    .await?;
    let checkout_v2 = upstream::spawn(
        "checkout-v2",
        vec![
            Phase {
                duration: Duration::from_secs(60),
                behaviour: steady(20, 10, 0.0),
            },
            Phase {
                duration: Duration::from_secs(40),
                behaviour: steady(20, 10, 0.33),
            },
        ],
    )
    .await?;

    Ok(Services {
        checkout: [checkout_v1, checkout_v2],
        orders_primary: primary,
        orders_secondary: secondary,
        catalog: [catalog_a, catalog_b, catalog_c],
        quotes_lambda,
        quotes_dc,
    })
}

/// What the demo shows, and where.
fn print_banner(base: &str, admin: std::net::SocketAddr) {
    println!("Accord demo is running.");
    println!();
    println!("  gateway     {base}   (try: curl {base}/orders/42)");
    println!("  metrics     http://{}/metrics", admin);
    println!("  readiness   http://{}/readyz", admin);
    println!("  config      http://{}/config", admin);
    println!("  dashboard   http://{}/dashboard", admin);
    println!(
        "  SLA report  http://{}/sla   (or: accord report --admin {})",
        admin, admin
    );
    println!();
    println!(
        "The orders-primary service is healthy for 40s, slow for 15s, then failing for 15s, and"
    );
    println!(
        "repeats. The orders routes carry an SLO (99.5% available, 95% under 250ms): watch the"
    );
    println!(
        "engine mark the primary breaching, reroute to orders-secondary, burn budget, and give the"
    );
    println!("primary its traffic back after a minute of compliance.");
    println!();
    println!(
        "GET /quotes/{{symbol}} goes to the Lambda function quotes-fn (the real Lambda adapter on a"
    );
    println!(
        "simulated Invoke endpoint): it is throttled half the time for 20s, then raises errors for"
    );
    println!(
        "10s, every minute; those requests fail over to quotes-dc, and the SLA report counts the"
    );
    println!("function's tries as throttled and bad.");
    println!();
    println!(
        "POST /checkout releases checkout-v2 as a canary: 10%, 50%, then all of the traffic while"
    );
    println!(
        "it is no worse than checkout-v1. After a minute it turns faulty and is rolled back; the"
    );
    println!("dashboard shows its steps and timeline; drive it with the admin token \"demo\":");
    println!("  accord canary status --route checkout --admin {admin}");
    println!("  ACCORD_ADMIN_TOKEN=demo accord canary resume --route checkout --admin {admin}");
    println!("  accord gate --route checkout --min-budget 25% --admin {admin}");
    println!("Ctrl-C stops.");
    println!();
}

fn print_summary(gateway: &Gateway) {
    gateway.sla().tick();
    for report in crate::admin::sla::reports(gateway.sla()) {
        let budget = report
            .indicators
            .iter()
            .map(|i| i.budget.remaining_ratio)
            .fold(f64::INFINITY, f64::min);
        let breaching: Vec<&str> = report
            .backends
            .iter()
            .filter(|b| b.state == "breaching")
            .map(|b| &*b.backend)
            .collect();
        let status = serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let budget = if budget > 0.0 {
            format!("{:.1}%", budget * 100.0)
        } else {
            "exhausted".to_owned()
        };
        println!(
            "SLA {:<12} {:<16} budget left {:>9}  rerouted {:>5}  shed {:>4}  breaching: {}",
            report.route,
            status,
            budget,
            report.actions.rerouted,
            report.actions.shed,
            if breaching.is_empty() {
                "-".to_owned()
            } else {
                breaching.join(", ")
            }
        );
    }
    let generation = gateway.generation();
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8}",
        "route", "good", "bad", "client", "retries"
    );
    for route in generation.routes() {
        let s = route.stats();
        let by = |c: accord_policies::Class| s.requests_by_class[c.index()].load(Relaxed);
        println!(
            "{:<14} {:>8} {:>8} {:>8} {:>8}",
            route.id(),
            by(accord_policies::Class::Good),
            by(accord_policies::Class::Bad),
            by(accord_policies::Class::ClientError),
            s.retries.load(Relaxed)
        );
    }
    for backend in generation.backends() {
        let counts = backend.endpoint_counts();
        let failed: Vec<String> = accord_adapters::stats::ERROR_KINDS
            .iter()
            .zip(&backend.stats().errors_by_kind)
            .map(|(kind, n)| (kind, n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{} {n}", kind.as_str()))
            .collect();
        println!(
            "  backend {:<18} {:<7} tries {:>6}  endpoints available {}/{}  ejections {}  failed: {}",
            backend.id(),
            backend.provider().as_str(),
            backend.stats().tries.load(Relaxed),
            counts.available,
            counts.total,
            backend.stats().ejections.load(Relaxed),
            if failed.is_empty() {
                "-".to_owned()
            } else {
                failed.join(", ")
            }
        );
    }
    println!();
}

/// Sends `rps` requests a second, to each of `bases` in turn.
async fn generate_traffic(bases: Vec<String>, rps: u32) {
    let client: Client<_, RequestBody> = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    for base in bases.iter().cycle() {
        ticker.tick().await;
        let (method, path, body) = match fastrand::u8(0..15) {
            12..=14 => (
                "POST",
                "/checkout".to_owned(),
                RequestBody::full(bytes::Bytes::from_static(b"{\"cart\":7}")),
            ),
            10..=11 => (
                "GET",
                format!(
                    "/quotes/{}",
                    ["ACME", "GLOBEX", "INITECH"][fastrand::usize(0..3)]
                ),
                RequestBody::empty(),
            ),
            0..=3 => (
                "GET",
                format!("/orders/{}", fastrand::u16(1..1000)),
                RequestBody::empty(),
            ),
            4..=5 => (
                "POST",
                "/orders".to_owned(),
                RequestBody::full(bytes::Bytes::from_static(b"{\"item\":\"book\"}")),
            ),
            _ => (
                "GET",
                format!("/catalog/items/{}", fastrand::u16(1..100)),
                RequestBody::empty(),
            ),
        };
        let Ok(request) = http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .body(body)
        else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(response) = client.request(request).await {
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
        });
    }
}
