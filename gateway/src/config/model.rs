//! The validated, internal configuration that the gateway is built from. It is not a file
//! format: only [`super::validate`] creates it, so its shape may change freely.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use accord_adapters::RetryBudgetPolicy;
use accord_adapters::failover::RetryPolicy;
use accord_adapters::http::HttpBackendConfig;
use http::{HeaderName, HeaderValue, Method};

pub use accord_adapters::Secret;

/// The whole gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Traffic listeners.
    pub listeners: Vec<Listener>,
    /// The admin API.
    pub admin: Admin,
    /// Client-facing limits.
    pub limits: Limits,
    /// Logging.
    pub log: Log,
    /// The SLA history store.
    pub sla_history: SlaHistory,
    /// Cluster mode, when configured.
    pub cluster: Option<Cluster>,
    /// Where SLA events are pushed, when configured.
    pub notifications: Option<Notifications>,
    /// OpenTelemetry traces, when configured.
    pub traces: Option<Traces>,
    /// Backends by id, in file order.
    pub backends: Vec<(Arc<str>, BackendConfig)>,
    /// Plugins by id.
    pub plugins: Vec<(Arc<str>, PluginConfig)>,
    /// Where compiled plugins are kept across restarts (relative to the configuration file).
    pub plugin_cache: Option<PathBuf>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// The effective configuration as JSON (references to secrets only, never their values),
    /// served by `GET /config`.
    pub effective: serde_json::Value,
}

/// Cluster mode: replicas sharing SLA state through Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name (the key prefix).
    pub name: String,
    /// Where Redis is.
    pub redis: RedisAddress,
    /// `password` or `user:password`.
    pub password: Option<Secret>,
    /// This replica's name.
    pub replica: String,
    /// How often to sync.
    pub sync_interval: Duration,
}

/// One Redis server or a Redis Cluster's seed nodes (URLs, validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddress {
    /// One server.
    Single(String),
    /// A Redis Cluster.
    Cluster(Vec<String>),
}

/// Where SLA history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaHistory {
    /// The database file (`None`: history is not kept); relative to the configuration file.
    pub path: Option<PathBuf>,
    /// Flush interval.
    pub flush_interval: Duration,
}

/// A traffic listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name for logs.
    pub name: String,
    /// Socket address.
    pub address: SocketAddr,
    /// Certificate and key, when the listener serves TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Socket address.
    pub address: SocketAddr,
    /// Bearer token for protected endpoints.
    pub token: Option<Secret>,
    /// Whether `/metrics` carries Accord's own Sloth-compatible `slo:*` series.
    pub sloth_series: bool,
}

/// Client-facing limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head.
    pub max_header_size: usize,
    /// Time to receive the request head.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Plugin instances held at once (the plugin engine's slots).
    pub plugin_instances: u32,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Line format.
    pub format: LogFormat,
    /// Filter directive.
    pub level: String,
    /// Whether access-log lines are written.
    pub access_log: bool,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// One backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// An on-prem HTTP service.
    Http(HttpBackendConfig),
    /// An AWS Lambda function.
    Lambda(accord_adapters::lambda::LambdaBackendConfig),
    /// An Azure Function, AI service or REST API.
    Azure(Box<accord_adapters::azure::AzureBackendConfig>),
}

/// A route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Route id.
    pub id: Arc<str>,
    /// Which requests it takes.
    pub matcher: RouteMatch,
    /// Backends with priority and weight.
    pub backends: Vec<RouteBackendRef>,
    /// Overall deadline.
    pub timeout: Duration,
    /// Per-try deadline.
    pub per_try_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Retry budget.
    pub retry_budget: RetryBudgetPolicy,
    /// Largest body.
    pub max_body: u64,
    /// Replay buffer size.
    pub replay_buffer: u64,
    /// The route's objective and its enforcement.
    pub slo: Option<RouteSlo>,
    /// The route's plugin chain, by plugin id.
    pub plugins: Vec<Arc<str>>,
}

/// A plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The component file (relative paths are resolved against the configuration's directory).
    pub path: PathBuf,
    /// Host settings and the plugin's own configuration (JSON).
    pub spec: accord_policies::plugin::PluginSpec,
}

/// A route's objective, enforcement and priority rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSlo {
    /// The objective.
    pub objective: accord_policies::sla::Objective,
    /// What the engine may do.
    pub enforcement: accord_policies::sla::Enforcement,
    /// How a request's priority is read.
    pub priority: PriorityRule,
}

/// How a request's priority is read from a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityRule {
    /// The header.
    pub header: HeaderName,
    /// Values meaning low priority.
    pub low: Vec<String>,
    /// Values meaning critical.
    pub critical: Vec<String>,
}

impl PriorityRule {
    /// The priority of a request.
    pub fn classify(&self, headers: &http::HeaderMap) -> accord_policies::sla::Priority {
        use accord_policies::sla::Priority;
        let Some(value) = headers.get(&self.header).and_then(|v| v.to_str().ok()) else {
            return Priority::Normal;
        };
        let value = value.trim();
        if self.critical.iter().any(|c| c.eq_ignore_ascii_case(value)) {
            Priority::Critical
        } else if self.low.iter().any(|l| l.eq_ignore_ascii_case(value)) {
            Priority::Low
        } else {
            Priority::Normal
        }
    }
}

/// A route's reference to a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteBackendRef {
    /// Backend id.
    pub backend: Arc<str>,
    /// Lower is preferred.
    pub priority: u32,
    /// Share within a priority.
    pub weight: u32,
    /// Set when this backend is the route's canary.
    pub canary: Option<CanaryConfig>,
}

/// OpenTelemetry traces.
#[derive(Debug, Clone, PartialEq)]
pub struct Traces {
    /// The collector.
    pub endpoint: http::Uri,
    /// gRPC (true) or HTTP/protobuf.
    pub grpc: bool,
    /// Share of ordinary requests kept.
    pub sample_ratio: f64,
    /// Classes always kept (by [`accord_policies::Class`] name), and whether slow requests are.
    pub always_keep: Vec<accord_policies::Class>,
    /// Keep requests slower than their route's latency threshold.
    pub keep_slow: bool,
    /// `service.name`.
    pub service_name: String,
}

/// Where the SLA engine's events are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifications {
    /// An Alertmanager.
    pub alertmanager: Option<AlertmanagerTarget>,
    /// Webhook receivers.
    pub webhooks: Vec<WebhookTarget>,
    /// The outbox's SQLite file.
    pub outbox: PathBuf,
    /// How long a webhook delivery is retried.
    pub max_age: Duration,
}

/// An Alertmanager (API v2).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerTarget {
    /// Base URL.
    pub url: http::Uri,
    /// How often firing alerts are sent again.
    pub resend_interval: Duration,
}

/// A webhook receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookTarget {
    /// Where to POST.
    pub url: http::Uri,
    /// The HMAC-SHA256 key.
    pub secret: Option<Secret>,
    /// Event kinds sent (all when empty).
    pub kinds: Vec<accord_policies::sla::engine::EventKind>,
}

/// A canary release of one of a route's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    /// Steps, timing and judgement.
    pub spec: accord_policies::sla::canary::CanarySpec,
    /// Sticky assignment key.
    pub sticky: Option<accord_adapters::http::HashKey>,
}

/// Request matching conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Host condition.
    pub host: HostMatch,
    /// Path condition.
    pub path: PathMatch,
    /// Allowed methods (empty: any).
    pub methods: Vec<Method>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
}

/// Host condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// Any subdomain of this suffix (stored with its leading dot: `.example.com`).
    Suffix(String),
}

/// Path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-wise prefix, normalised without a trailing slash (`/` for everything).
    Prefix(String),
    /// Exact path.
    Exact(String),
    /// Template with `{param}` segments.
    Template(String),
}

/// Header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name.
    pub name: HeaderName,
    /// Required value; `None` means present with any value.
    pub value: Option<HeaderValue>,
}
