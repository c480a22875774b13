//! The configuration file's model: what `accord.yaml` may contain, field by field. This is the
//! public schema (`accord schema` prints it); the gateway's `accord::config::validate` turns it into
//! the model it runs from. Every struct rejects unknown fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::{ByteSize, ConfigDuration, Id, Located, Percent};

/// An Accord configuration file.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the gateway accepts traffic.
    pub listeners: Located<Vec<RawListener>>,
    /// The admin API (health, metrics, config, reload).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Limits that protect the gateway from clients.
    #[serde(default)]
    pub limits: RawLimits,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Where SLA history is kept, so that reports cover whole windows across restarts.
    #[serde(default)]
    pub sla_history: RawSlaHistory,
    /// Cluster mode: replicas with the same cluster name share one SLA state (budgets, burn
    /// rates, breach verdicts, events) through Redis. Without it, each gateway is on its own.
    #[serde(default)]
    pub cluster: Option<Located<RawCluster>>,
    /// Where the SLA engine's events are pushed: Alertmanager and webhooks.
    #[serde(default)]
    pub notifications: Option<Located<RawNotifications>>,
    /// OpenTelemetry traces of the requests, exported over OTLP.
    #[serde(default)]
    pub traces: Option<Located<RawTraces>>,
    /// Named backends that routes send traffic to.
    #[serde(default)]
    pub backends: BTreeMap<String, Located<RawBackend>>,
    /// Named Entra ID credentials that Azure backends authenticate with.
    #[serde(default)]
    pub azure_credentials: BTreeMap<String, Located<RawAzureCredential>>,
    /// Named WebAssembly SLA policy plugins that routes chain.
    #[serde(default)]
    pub plugins: BTreeMap<String, Located<RawPlugin>>,
    /// A directory for compiled plugins (relative to the configuration file's directory), so
    /// that a restart does not compile unchanged plugins again. Without it, compiled plugins
    /// are reused only within the process (across reloads). Only the gateway's user may be
    /// able to write to it. Takes effect at start.
    #[serde(default)]
    pub plugin_cache: Option<Located<String>>,
    /// Routes, matched most specific first (exact path, then template, then longest prefix;
    /// ties go to the route listed first).
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// A listening socket.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// A name for logs and metrics (defaults to the address).
    #[serde(default)]
    pub name: Option<Located<Id>>,
    /// `ip:port` to listen on, e.g. `0.0.0.0:8080`.
    pub address: Located<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate.
    #[serde(default)]
    pub tls: Option<RawServerTls>,
}

/// A listener's certificate.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    /// PEM file with the certificate chain.
    pub cert_file: Located<String>,
    /// PEM file with the private key.
    pub key_file: Located<String>,
}

/// The admin API listener.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` of the admin API.
    #[serde(default = "default_admin_address")]
    pub address: Located<String>,
    /// Environment variable holding the bearer token required for `POST` endpoints (and for
    /// every endpoint when the address is not loopback).
    #[serde(default)]
    pub token_env: Option<Located<String>>,
    /// File holding that token.
    #[serde(default)]
    pub token_file: Option<Located<String>>,
    /// Whether `/metrics` carries the Sloth-compatible `slo:*` series Accord computes itself
    /// (default true). Set it to false when Prometheus computes them from the rules `accord slo
    /// rules` writes, so that each series has one source.
    #[serde(default = "default_true")]
    pub sloth_series: bool,
}

fn default_true() -> bool {
    true
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
            token_env: None,
            token_file: None,
            sloth_series: true,
        }
    }
}

fn default_admin_address() -> Located<String> {
    Located::unlocated("127.0.0.1:9901".into())
}

/// Protections against misbehaving clients.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest request head (request line and headers) a client may send.
    pub max_header_size: Located<ByteSize>,
    /// Time a client has to send the full request head (slow-client protection).
    pub header_read_timeout: Located<ConfigDuration>,
    /// Client connections served at once; further connections are closed at once.
    pub max_connections: Located<usize>,
    /// On SIGTERM, how long in-flight requests may take to finish before connections are closed.
    pub shutdown_grace: Located<ConfigDuration>,
    /// Plugin instances the gateway can hold at once, across plugins and reloads (the plugin
    /// engine's slots). Each slot reserves its memory limit's worth of address space, not of
    /// memory: lower it where the address space is limited (`ulimit -v`, valgrind). Takes effect
    /// at start.
    pub plugin_instances: Located<u32>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_size: Located::unlocated(ByteSize(64 * 1024)),
            header_read_timeout: Located::unlocated(ConfigDuration(
                std::time::Duration::from_secs(10),
            )),
            max_connections: Located::unlocated(10_000),
            shutdown_grace: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(30))),
            plugin_instances: Located::unlocated(512),
        }
    }
}

/// Logging.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: RawLogFormat,
    /// A `tracing` filter, e.g. `info` or `accord=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
    /// Write one access-log line per request (target `accord::access`).
    pub access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: RawLogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

/// The SLA history store (SQLite).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawSlaHistory {
    /// Keep history on disk (default `true`). Without it, a restart starts every window empty.
    pub enabled: bool,
    /// The database file; relative paths are relative to the configuration file's directory.
    pub path: String,
    /// How often history is written: at most this much is lost if the process is killed.
    pub flush_interval: Located<ConfigDuration>,
}

impl Default for RawSlaHistory {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "accord-sla.db".into(),
            flush_interval: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(10))),
        }
    }
}

/// Cluster mode (the `cluster` section).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Replicas with the same name share SLA state: the prefix of every Redis key.
    pub name: Located<Id>,
    /// `redis://host:port/db` or `rediss://…` (TLS), or `{cluster: [redis://…, …]}` for a
    /// Redis Cluster (any of its nodes; the rest are discovered).
    pub redis: Located<RawRedis>,
    /// Environment variable holding the Redis password (or `user:password` for an ACL user).
    #[serde(default)]
    pub password_env: Option<Located<String>>,
    /// File holding the Redis password (or `user:password`).
    #[serde(default)]
    pub password_file: Option<Located<String>>,
    /// This replica's name in reports; `${VAR}` is replaced by the environment variable (e.g.
    /// `${HOSTNAME}`, a pod's name). Default: the host name and process id.
    #[serde(default)]
    pub replica: Option<Located<String>>,
    /// How often the replica publishes its counters and reads the cluster's (default 1s).
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Located<ConfigDuration>,
}

fn default_sync_interval() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(1)))
}

/// Where the cluster's Redis is.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawRedis {
    /// One Redis server (or a primary behind a stable address).
    Url(String),
    /// A Redis Cluster.
    Cluster(RawRedisCluster),
}

/// A Redis Cluster's seed nodes.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedisCluster {
    /// Node URLs (`redis://host:port` or `rediss://…`); one reachable node is enough.
    pub cluster: Vec<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawLogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A backend: exactly one kind, written as its key (`http:`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawBackend {
    /// An on-prem HTTP service.
    Http(RawHttpBackend),
    /// An AWS Lambda function, invoked with an API Gateway event.
    Lambda(RawLambdaBackend),
    /// An Azure Functions HTTP trigger.
    AzureFunction(RawAzureFunction),
    /// An Azure AI services endpoint.
    AzureAi(RawAzureAi),
    /// Any other Azure REST API, with an Entra ID token.
    Azure(RawAzureRest),
}

/// An Azure Functions HTTP trigger.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAzureFunction {
    /// The function app's URL (`https://orders.azurewebsites.net`), or the function's full URL
    /// (`…/api/orders`).
    pub url: Located<String>,
    /// The function's name, with an app URL: requests go to `/api/<function>`.
    #[serde(default)]
    pub function: Option<Located<String>>,
    /// An environment variable holding the function key (sent as `x-functions-key`).
    #[serde(default)]
    pub key_env: Option<Located<String>>,
    /// A file holding the function key.
    #[serde(default)]
    pub key_file: Option<Located<String>>,
    /// An Entra ID token instead of a key (App Service authentication).
    #[serde(default)]
    pub entra: Option<RawEntraAuth>,
    /// Trust this CA (PEM) for the service instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// An Azure AI services endpoint.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAzureAi {
    /// The resource's endpoint (`https://my-ai.cognitiveservices.azure.com`); request paths
    /// are appended to it.
    pub endpoint: Located<String>,
    /// An environment variable holding the resource key.
    #[serde(default)]
    pub key_env: Option<Located<String>>,
    /// A file holding the resource key.
    #[serde(default)]
    pub key_file: Option<Located<String>>,
    /// The key's header: `api-key` (default; Azure OpenAI) or `ocp-apim-subscription-key`.
    #[serde(default)]
    pub key_header: RawAiKeyHeader,
    /// An Entra ID token instead of a key (scope default:
    /// `https://cognitiveservices.azure.com/.default`).
    #[serde(default)]
    pub entra: Option<RawEntraAuth>,
    /// Trust this CA (PEM) for the service instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// The header an Azure AI key travels in.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawAiKeyHeader {
    /// `api-key`.
    #[default]
    ApiKey,
    /// `Ocp-Apim-Subscription-Key`.
    OcpApimSubscriptionKey,
}

/// Any Azure REST API.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAzureRest {
    /// The service's endpoint (`https://account.blob.core.windows.net/container`); request
    /// paths are appended to it.
    pub endpoint: Located<String>,
    /// The Entra ID token to send (e.g. scope `https://storage.azure.com/.default`).
    pub entra: RawEntraAuth,
    /// Trust this CA (PEM) for the service instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// An Entra ID token for a backend.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEntraAuth {
    /// The name of an entry of `azure_credentials`.
    pub credential: Located<String>,
    /// The token's scope: the resource's App ID URI followed by `/.default`.
    #[serde(default)]
    pub scope: Option<Located<String>>,
}

/// An Entra ID credential: exactly one of `client_secret`, `managed_identity`,
/// `workload_identity`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAzureCredential {
    /// An app registration's client secret.
    #[serde(default)]
    pub client_secret: Option<RawClientSecret>,
    /// The managed identity of where the gateway runs (`{}` for the system-assigned one).
    #[serde(default)]
    pub managed_identity: Option<RawManagedIdentity>,
    /// Workload identity federation (AKS); fields default to `AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`.
    #[serde(default)]
    pub workload_identity: Option<RawWorkloadIdentity>,
    /// The authority (default `https://login.microsoftonline.com`; e.g.
    /// `https://login.microsoftonline.us` for Azure Government). HTTPS only.
    #[serde(default)]
    pub authority_host: Option<Located<String>>,
    /// Trust this CA (PEM) for the authority instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// A client secret credential.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientSecret {
    /// Directory (tenant) id.
    pub tenant_id: Located<String>,
    /// Application (client) id.
    pub client_id: Located<String>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<Located<String>>,
    /// A file holding the secret.
    #[serde(default)]
    pub secret_file: Option<Located<String>>,
}

/// A managed identity: system-assigned, or user-assigned by one id.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawManagedIdentity {
    /// A user-assigned identity's client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// A user-assigned identity's object (principal) id.
    #[serde(default)]
    pub object_id: Option<String>,
    /// A user-assigned identity's Azure resource id.
    #[serde(default)]
    pub resource_id: Option<String>,
}

/// Workload identity federation.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWorkloadIdentity {
    /// Tenant id.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The federated token file.
    #[serde(default)]
    pub token_file: Option<String>,
}

/// An AWS Lambda function.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLambdaBackend {
    /// The function's name, partial ARN (`123456789012:function:orders`) or ARN.
    pub function: Located<String>,
    /// A version or alias (`live`, `7`).
    #[serde(default)]
    pub qualifier: Option<Located<String>>,
    /// The function's region (default: the ARN's, else `AWS_REGION` or the profile's).
    #[serde(default)]
    pub region: Option<Located<String>>,
    /// The API Gateway event format the function expects: `"2.0"` (default) or `"1.0"`.
    #[serde(default)]
    pub payload_format: Option<Located<RawPayloadFormat>>,
    /// `request_response` (default: wait for the function's answer) or `event` (queue it and
    /// answer 202).
    #[serde(default)]
    pub invocation: RawInvocation,
    /// Another Invoke endpoint (`http(s)://host:port`): a local emulator, a VPC endpoint.
    #[serde(default)]
    pub endpoint: Option<Located<String>>,
    /// How the gateway authenticates to AWS (default: the default credential chain).
    #[serde(default)]
    pub credentials: Option<Located<RawAwsCredentials>>,
    /// `requestContext.stage` in the events (default `$default`).
    #[serde(default = "default_stage")]
    pub stage: String,
    /// How long one invocation may take, function time included (default: the route's
    /// per-try timeout alone).
    #[serde(default)]
    pub timeout: Option<Located<ConfigDuration>>,
}

fn default_stage() -> String {
    "$default".into()
}

/// A payload format version, written `"2.0"` or `2.0`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPayloadFormat {
    /// `"2.0"`.
    Text(String),
    /// `2.0`.
    Number(f64),
}

/// A Lambda invocation type.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawInvocation {
    /// Wait for the function's answer.
    #[default]
    RequestResponse,
    /// Queue the event; the client gets 202.
    Event,
}

/// AWS credentials: the default chain unless a profile or keys are named; `assume_role` assumes
/// a role with those.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAwsCredentials {
    /// A profile of the shared config and credentials files.
    #[serde(default)]
    pub profile: Option<Located<String>>,
    /// A credentials file for `profile` instead of `~/.aws/credentials`.
    #[serde(default)]
    pub profile_credentials_file: Option<Located<String>>,
    /// A config file for `profile` instead of `~/.aws/config`.
    #[serde(default)]
    pub profile_config_file: Option<Located<String>>,
    /// An environment variable holding an access key id.
    #[serde(default)]
    pub access_key_id_env: Option<Located<String>>,
    /// A file holding an access key id.
    #[serde(default)]
    pub access_key_id_file: Option<Located<String>>,
    /// An environment variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<Located<String>>,
    /// A file holding the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<Located<String>>,
    /// An environment variable holding a session token (temporary keys).
    #[serde(default)]
    pub session_token_env: Option<Located<String>>,
    /// A file holding a session token.
    #[serde(default)]
    pub session_token_file: Option<Located<String>>,
    /// Assume this role (STS `AssumeRole`) with the credentials above.
    #[serde(default)]
    pub assume_role: Option<RawAssumeRole>,
}

/// A role to assume.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAssumeRole {
    /// The role's ARN.
    pub role_arn: Located<String>,
    /// The external id its trust policy requires.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The session name (default `accord`).
    #[serde(default)]
    pub session_name: Option<String>,
    /// Another STS endpoint.
    #[serde(default)]
    pub sts_endpoint: Option<Located<String>>,
}

/// An on-prem HTTP service.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHttpBackend {
    /// `host:port` addresses (IPs or DNS names), each optionally with a weight.
    pub addresses: Located<Vec<Located<RawAddress>>>,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: Option<RawClientTls>,
    /// `http1` (default) or `http2` (prior knowledge, or ALPN over TLS).
    #[serde(default)]
    pub protocol: RawProtocol,
    /// How tries are spread over addresses.
    #[serde(default)]
    pub balancer: Located<RawBalancer>,
    /// TCP connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Located<ConfigDuration>,
    /// Connection pool.
    #[serde(default)]
    pub pool: RawPool,
    /// Active health checks.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// Passive outlier ejection.
    #[serde(default)]
    pub outlier: RawOutlier,
    /// How often DNS names are resolved again.
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh: Located<ConfigDuration>,
    /// Send this `Host` header instead of the client's.
    #[serde(default)]
    pub host_rewrite: Option<Located<String>>,
}

fn default_connect_timeout() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(1)))
}

fn default_dns_refresh() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(30)))
}

/// An address: `"host:port"` or `{address: "host:port", weight: 3}`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawAddress {
    /// `host:port`, weight 1.
    Plain(String),
    /// `host:port` with a weight.
    Weighted {
        /// `host:port`.
        address: String,
        /// Relative share of traffic.
        weight: u32,
    },
}

/// TLS to an upstream.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    /// PEM file of CA certificates to trust (default: the public web roots).
    #[serde(default)]
    pub ca_file: Option<Located<String>>,
    /// PEM client certificate chain, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<Located<String>>,
    /// PEM client key, for mutual TLS.
    #[serde(default)]
    pub key_file: Option<Located<String>>,
    /// Name for SNI and certificate verification (default: the first address's host).
    #[serde(default)]
    pub server_name: Option<Located<String>>,
}

/// HTTP version to the upstream.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2.
    Http2,
}

/// Load balancing.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawBalancer {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastRequest,
    /// Sticky by a key: `{consistent_hash: {header: x-user}}`, `{cookie: session}` or
    /// `{client_address: true}`.
    ConsistentHash(RawHashKey),
}

/// What consistent hashing keys on (exactly one).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawHashKey {
    /// A request header.
    #[serde(default)]
    pub header: Option<String>,
    /// A cookie.
    #[serde(default)]
    pub cookie: Option<String>,
    /// The client's IP address.
    #[serde(default)]
    pub client_address: bool,
}

/// Connection pool.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPool {
    /// How long an idle connection is kept.
    pub idle_timeout: Located<ConfigDuration>,
    /// Idle connections kept per address.
    pub max_idle_per_address: usize,
}

impl Default for RawPool {
    fn default() -> Self {
        Self {
            idle_timeout: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(90))),
            max_idle_per_address: 256,
        }
    }
}

/// Active health checks.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Path requested with GET; 2xx and 3xx are healthy.
    pub path: Located<String>,
    /// Time between probes.
    #[serde(default = "default_hc_interval")]
    pub interval: Located<ConfigDuration>,
    /// Time a probe may take.
    #[serde(default = "default_hc_timeout")]
    pub timeout: Located<ConfigDuration>,
    /// Good probes in a row to restore an address.
    #[serde(default = "default_two")]
    pub healthy_threshold: u32,
    /// Failed probes in a row to remove an address.
    #[serde(default = "default_three")]
    pub unhealthy_threshold: u32,
    /// `Host` header of probes.
    #[serde(default)]
    pub host: Option<String>,
}

fn default_hc_interval() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(5)))
}
fn default_hc_timeout() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(1)))
}
fn default_two() -> u32 {
    2
}
fn default_three() -> u32 {
    3
}

/// Passive outlier ejection.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutlier {
    /// Consecutive failures (connect errors, resets, 502/503/504) that eject an address.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times as long.
    pub base_ejection: Located<ConfigDuration>,
    /// Longest ejection.
    pub max_ejection: Located<ConfigDuration>,
}

impl Default for RawOutlier {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(30))),
            max_ejection: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(300))),
        }
    }
}

/// A route: which requests, and which backends serve them.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique id, used in metrics, logs and reports.
    pub id: Located<Id>,
    /// Which requests the route takes.
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    /// Backends in priority order.
    pub backends: Located<Vec<RawRouteBackend>>,
    /// Time for the whole request, all tries included.
    #[serde(default = "default_route_timeout")]
    pub timeout: Located<ConfigDuration>,
    /// Time for one try (default: the whole `timeout`).
    #[serde(default)]
    pub per_try_timeout: Option<Located<ConfigDuration>>,
    /// Retries and their budget.
    #[serde(default)]
    pub retry: RawRetry,
    /// Largest request body accepted (413 above it).
    #[serde(default = "default_max_body")]
    pub max_body: Located<ByteSize>,
    /// Request bodies up to this size are buffered so that they can be sent again to another
    /// backend; larger ones are streamed and get a single try.
    #[serde(default = "default_replay_buffer")]
    pub replay_buffer: Located<ByteSize>,
    /// The route's service-level objective, metered and enforced by the gateway.
    #[serde(default)]
    pub slo: Option<Located<RawSlo>>,
    /// Plugins run on each request, in order (and on each response, in reverse order).
    #[serde(default)]
    pub plugins: Option<Located<Vec<Located<String>>>>,
}

fn default_route_timeout() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(15)))
}
fn default_max_body() -> Located<ByteSize> {
    Located::unlocated(ByteSize(10 << 20))
}
fn default_replay_buffer() -> Located<ByteSize> {
    Located::unlocated(ByteSize(64 << 10))
}

/// Request matching: every given condition must hold.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// `api.example.com`, or `*.example.com` for any subdomain; any host when absent.
    #[serde(default)]
    pub host: Option<Located<String>>,
    /// `{prefix: /api}`, `{exact: /health}` or `{template: /users/{id}}`; `{prefix: /}` when absent.
    #[serde(default)]
    pub path: Option<Located<RawPathMatch>>,
    /// Allowed methods; any when absent.
    #[serde(default)]
    pub methods: Option<Located<Vec<String>>>,
    /// Required headers: `name: value` for an exact value, `name: "*"` for presence.
    #[serde(default)]
    pub headers: BTreeMap<String, Located<String>>,
}

/// How the path is matched.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawPathMatch {
    /// The path starts with these segments (`/api` matches `/api` and `/api/x`, not `/apix`).
    Prefix(String),
    /// The path is exactly this.
    Exact(String),
    /// Segments with `{name}` parameters (`/users/{id}`), or a trailing `{*rest}`.
    Template(String),
}

/// One backend of a route.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouteBackend {
    /// The backend's name under `backends`.
    pub backend: Located<String>,
    /// Lower is preferred; default: the position in the list.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Share among backends of equal priority.
    #[serde(default = "default_weight")]
    pub weight: Located<u32>,
    /// Makes this backend the route's canary: it gets a share of the route's traffic that grows
    /// step by step while it complies with the route's objective, and none once it breaches.
    /// At most one per route; the route needs an `slo`.
    #[serde(default)]
    pub canary: Option<Located<RawCanary>>,
}

fn default_weight() -> Located<u32> {
    Located::unlocated(1)
}

/// OpenTelemetry traces: a server span per request and a client span per backend try,
/// continuing the client's W3C `traceparent`, exported over OTLP off the request path.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    /// The collector: `http://collector:4318` for `http/protobuf` (spans are POSTed to
    /// `/v1/traces`), `http://collector:4317` for `grpc` (h2c).
    pub endpoint: Located<String>,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default)]
    pub protocol: RawOtlpProtocol,
    /// Share of ordinary requests kept (decided by the trace id, so every gateway keeps the
    /// same traces); default 1%.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: Located<Percent>,
    /// Requests always kept, whatever the ratio, decided when the request ends: `bad`,
    /// `throttled`, `cancelled`, `rejected` (shed or rejected), `slow` (over the route's latency
    /// threshold). Default: all of them.
    #[serde(default = "default_always_keep")]
    pub always_keep: Vec<Located<String>>,
    /// `service.name` of the spans; default `accord`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_sample_ratio() -> Located<Percent> {
    Located::unlocated(Percent(0.01))
}

fn default_always_keep() -> Vec<Located<String>> {
    ["bad", "throttled", "cancelled", "rejected", "slow"]
        .map(|s| Located::unlocated(s.to_owned()))
        .to_vec()
}

fn default_service_name() -> String {
    "accord".to_owned()
}

/// How spans are sent.
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RawOtlpProtocol {
    /// Protobuf over HTTP/1.1.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (HTTP/2 without TLS).
    #[serde(rename = "grpc")]
    Grpc,
}

/// Notifications of the SLA engine's events (burn-rate alerts, backend breaches, exhausted
/// budgets, canary breaches): when they fire and when they resolve.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// An Alertmanager (API v2), sent every firing event each `resend_interval` and each
    /// resolved one for 15 minutes, with Sloth's alert labels.
    #[serde(default)]
    pub alertmanager: Option<Located<RawAlertmanager>>,
    /// Webhooks: each event's firing and resolution as signed JSON, retried with backoff from
    /// a durable outbox until delivered.
    #[serde(default)]
    pub webhooks: Vec<Located<RawWebhook>>,
    /// The outbox's SQLite file (relative to the configuration; default
    /// `accord-outbox.db` next to it).
    #[serde(default)]
    pub outbox: Option<Located<String>>,
    /// How long a webhook delivery is retried before it is dropped (and logged); default 24h.
    #[serde(default = "default_max_age")]
    pub max_age: Located<ConfigDuration>,
}

fn default_max_age() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(86_400)))
}

/// An Alertmanager.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanager {
    /// Its base URL, e.g. `http://alertmanager:9093`.
    pub url: Located<String>,
    /// How often firing alerts are sent again (Alertmanager resolves an alert it stops
    /// hearing about); default 1m.
    #[serde(default = "default_resend")]
    pub resend_interval: Located<ConfigDuration>,
}

fn default_resend() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(60)))
}

/// A webhook receiver.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Where events are POSTed (`http://` or `https://`).
    pub url: Located<String>,
    /// Environment variable holding the HMAC-SHA256 key: each body is signed in
    /// `x-accord-signature-256: sha256=<hex>`.
    #[serde(default)]
    pub secret_env: Option<Located<String>>,
    /// File holding that key.
    #[serde(default)]
    pub secret_file: Option<Located<String>>,
    /// Event kinds to send (`burn_rate_alert`, `backend_breach`, `budget_exhausted`,
    /// `canary_breach`); default all.
    #[serde(default)]
    pub kinds: Vec<Located<String>>,
}

/// A canary release of one backend of a route.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    /// Its share of the route's traffic at each step, increasing, the last `100%`:
    /// `[1%, 5%, 25%, 50%, 100%]`.
    pub steps: Located<Vec<Located<Percent>>>,
    /// Compliant time needed at a step before the next (default 5m).
    #[serde(default = "default_step_for")]
    pub step_for: Located<ConfigDuration>,
    /// Canary requests needed at a step before it can be judged compliant (default 200).
    #[serde(default = "default_min_requests")]
    pub min_requests: Located<u64>,
    /// `baseline` (default): judged against the route's other backends over the same
    /// minutes; `objective`: against the route's objective.
    #[serde(default)]
    pub compare: RawCompare,
    /// `rollback` (default): share 0 at once; `pause`: keep the step's share, stop advancing.
    #[serde(default)]
    pub on_breach: RawOnBreach,
    /// Sticky assignment: the same key goes to the same version while the share does not
    /// shrink (`{header: x-user}`, `{cookie: session}`, `{client_address: true}`). Default: each
    /// request is drawn at random.
    #[serde(default)]
    pub sticky: Option<Located<RawHashKey>>,
}

fn default_step_for() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(300)))
}

fn default_min_requests() -> Located<u64> {
    Located::unlocated(200)
}

/// What a canary is judged against.
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawCompare {
    /// The route's other backends over the same minutes.
    #[default]
    Baseline,
    /// The route's objective.
    Objective,
}

/// What a canary's breach does.
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawOnBreach {
    /// Share 0 at once.
    #[default]
    Rollback,
    /// Keep the step's share, stop advancing.
    Pause,
}

/// Retries.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    /// Tries after the first.
    pub retries: u32,
    /// What is retried: `connect_failure`, `reset`, `timeout`, `throttled`, and status codes.
    pub on: Located<Vec<Located<String>>>,
    /// Also retry POST and PATCH on outcomes where the backend may have acted (reset, timeout,
    /// statuses). Connect failures and throttles are always retried.
    pub non_idempotent: bool,
    /// Retries in flight are at most this share of requests in flight …
    pub budget_ratio: Located<Percent>,
    /// … or this many, whichever is larger …
    pub budget_min_concurrent: usize,
    /// … and beyond both, this many retries per second (linkerd2-proxy's floor), so a burst of
    /// simultaneous failures — an upstream dying under many keep-alive connections — is still
    /// retried on a healthy backend. 0 turns the floor off.
    pub budget_min_per_second: u32,
}

impl Default for RawRetry {
    fn default() -> Self {
        let on = [
            "connect_failure",
            "reset",
            "timeout",
            "throttled",
            "502",
            "503",
            "504",
        ]
        .into_iter()
        .map(|s| Located::unlocated(s.to_owned()))
        .collect();
        Self {
            retries: 2,
            on: Located::unlocated(on),
            non_idempotent: false,
            budget_ratio: Located::unlocated(Percent(0.2)),
            budget_min_concurrent: 3,
            budget_min_per_second: 10,
        }
    }
}

/// A service-level objective (OpenSLO v1 semantics, `Occurrences` budgeting).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// Share of valid requests that must succeed, e.g. `99.9%`.
    #[serde(default)]
    pub availability: Option<Located<Percent>>,
    /// Share of successful requests that must finish within a threshold.
    #[serde(default)]
    pub latency: Option<Located<RawLatencyObjective>>,
    /// The window the objective covers: rolling, e.g. `30d` (the default) or `7d`; or `month`,
    /// the calendar month so far in `time_zone`.
    #[serde(default = "default_slo_window")]
    pub window: Located<String>,
    /// IANA time zone of a `month` window (default `UTC`).
    #[serde(default)]
    pub time_zone: Option<Located<String>>,
    /// Burn-rate alert tiers; default: the SRE workbook's (for a 30-day window: 14.4× over
    /// 1h/5m and 6× over 6h/30m page; 3× over 1d/2h and 1× over 3d/6h file a ticket).
    #[serde(default)]
    pub alerts: Option<Located<Vec<RawAlertTier>>>,
    /// What counts against the objective.
    #[serde(default)]
    pub classification: RawClassification,
    /// What the gateway does when the objective is at risk.
    #[serde(default)]
    pub enforcement: RawEnforcement,
}

fn default_slo_window() -> Located<String> {
    Located::unlocated("30d".into())
}

/// `target` of successful requests within `threshold`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyObjective {
    /// The latency threshold, e.g. `300ms`.
    #[serde(default)]
    pub threshold: Option<Located<ConfigDuration>>,
    /// Share of successful requests within it, e.g. `99%`.
    #[serde(default)]
    pub target: Option<Located<Percent>>,
}

/// One burn-rate alert tier.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlertTier {
    /// `page` or `ticket`.
    pub severity: RawSeverity,
    /// Fires at or above this burn rate over both windows.
    pub burn_rate: Located<f64>,
    /// The long window.
    pub long: Located<ConfigDuration>,
    /// The short window.
    pub short: Located<ConfigDuration>,
}

/// Alert severity.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawSeverity {
    /// Wake someone up.
    Page,
    /// File a ticket.
    Ticket,
}

/// How outcome classes count against the objective.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawClassification {
    /// `excluded` (default): throttled requests (429, provider throttles) neither spend nor
    /// earn budget; `bad`: they spend it.
    pub throttled: RawThrottled,
    /// `good` (default) or `bad`: client errors (4xx other than 429).
    pub client_errors: RawClientErrors,
    /// `excluded` (default): requests the client abandoned before its answer (status 499) are
    /// not valid availability events, as Google's SRE practice and Sloth's HTTP SLIs treat
    /// client cancellations; the latency objective still counts those that waited past its
    /// threshold as bad. `bad`: they spend the availability budget too.
    pub cancelled: RawCancelled,
}

/// How requests the client abandoned count against availability.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawCancelled {
    /// Not valid events (the latency objective still sees slow ones).
    #[default]
    Excluded,
    /// Bad events.
    Bad,
}

/// How throttles count.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawThrottled {
    /// Not valid events.
    #[default]
    Excluded,
    /// Bad events.
    Bad,
}

/// How client errors count.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawClientErrors {
    /// Good events: the gateway served them correctly.
    #[default]
    Good,
    /// Bad events.
    Bad,
}

/// Enforcement of the objective.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawEnforcement {
    /// Window over which each backend is judged against the objective.
    pub breach_window: Located<ConfigDuration>,
    /// Requests a backend must have served in that window to be judged.
    pub min_requests: u64,
    /// Share of requests still sent first to a breaching backend, to see it recover.
    pub probe: Located<Percent>,
    /// How long a breaching backend must comply before it gets its traffic back.
    pub recovery: Located<ConfigDuration>,
    /// Shed low-priority traffic while a page alert fires and no backend complies.
    pub shed: Option<RawShed>,
    /// Reject all but critical traffic while the error budget is exhausted.
    pub strict: bool,
    /// Where a request's priority comes from.
    pub priority: RawPriority,
}

impl Default for RawEnforcement {
    fn default() -> Self {
        Self {
            breach_window: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(120))),
            min_requests: 20,
            probe: Located::unlocated(Percent(0.05)),
            recovery: Located::unlocated(ConfigDuration(std::time::Duration::from_secs(120))),
            shed: None,
            strict: false,
            priority: RawPriority::default(),
        }
    }
}

/// Shedding.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShed {
    /// Share of low-priority requests shed, e.g. `50%`.
    pub fraction: Located<Percent>,
    /// `Retry-After` sent with a shed request.
    #[serde(default = "default_shed_retry_after")]
    pub retry_after: Located<ConfigDuration>,
}

fn default_shed_retry_after() -> Located<ConfigDuration> {
    Located::unlocated(ConfigDuration(std::time::Duration::from_secs(30)))
}

/// A request's priority: the value of a header (a priority, or a tenant's tier), mapped.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPriority {
    /// The header read.
    pub header: String,
    /// Values that make a request low priority (shed first).
    pub low: Vec<String>,
    /// Values that make a request critical (never shed or rejected).
    pub critical: Vec<String>,
}

impl Default for RawPriority {
    fn default() -> Self {
        Self {
            header: "x-accord-priority".into(),
            low: vec!["low".into()],
            critical: vec!["critical".into()],
        }
    }
}

/// A WebAssembly SLA policy plugin (a component of the `accord:policy` world).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// The component file; relative to the configuration file's directory.
    pub path: Located<String>,
    /// Its configuration, given to its `configure` as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Resources one call may use.
    #[serde(default)]
    pub limits: RawPluginLimits,
    /// `allow` (fail open, the default) or `reject` (fail closed: 503 `plugin_failed`).
    #[serde(default)]
    pub on_error: RawOnError,
    /// `pooled` (long-lived instances, the default) or `strict` (a fresh instance per request).
    #[serde(default)]
    pub isolation: RawIsolation,
    /// Buffer up to this much of each response body for the plugin's `on-response` to read
    /// (`response.body`), e.g. to check that it is well-formed JSON. A longer body is
    /// streamed unread. Default: none (responses stream straight through).
    #[serde(default)]
    pub response_body: Option<Located<ByteSize>>,
    /// Read up to this much of each request body before the plugin's `on-request`, for it to
    /// read (`request.body`), e.g. to validate a JSON body against a schema. A longer body is
    /// forwarded unread (the plugin sees none). Default: none (request bodies are not read
    /// before the plugins).
    #[serde(default)]
    pub request_body: Option<Located<ByteSize>>,
}

/// A plugin's limits.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPluginLimits {
    /// Wall time one call may take.
    pub time: Located<ConfigDuration>,
    /// Linear memory one instance may use.
    pub memory: Located<ByteSize>,
}

impl Default for RawPluginLimits {
    fn default() -> Self {
        Self {
            time: Located::unlocated(ConfigDuration(std::time::Duration::from_millis(10))),
            memory: Located::unlocated(ByteSize(16 << 20)),
        }
    }
}

/// What a failing plugin's requests get.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawOnError {
    /// Go on as if it allowed them.
    #[default]
    Allow,
    /// Refuse them with 503.
    Reject,
}

/// Instance sharing.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawIsolation {
    /// Long-lived instances, one call at a time each.
    #[default]
    Pooled,
    /// A fresh instance per request.
    Strict,
}
