//! The on-prem HTTP adapter: a pooled keep-alive client over a backend's endpoints, with load
//! balancing, TLS to the upstream, DNS re-resolution, active health checks and passive outlier
//! ejection.

mod balancer;
mod codec;
mod connector;
pub mod header_list;
mod health;
pub mod hop_by_hop;
mod pool;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HOST;
use http::{HeaderValue, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub(crate) use balancer::hash_key;
pub use balancer::{BalancerPolicy, Endpoint, HashKey};
pub use health::HealthCheck;

use crate::backend::{
    Adapter, Availability, Backend, BackgroundTasks, EndpointCounts, GatewayRequest, Provider,
    RequestContext, TryFuture,
};
use crate::body::BodyTooLarge;
use crate::box_in_place;
use crate::error::{BackendError, BackendErrorKind};
use crate::outlier::{FailureEffect, OutlierPolicy};
use crate::stats::BackendStats;
use crate::tls::{ClientTls, client_config};
use balancer::EndpointSet;
use codec::Http1Error;
use connector::Connector;
use pool::{ClientError, EndpointClient, Http1Pool};

/// One configured address of an HTTP backend: an IP or a DNS name, a port and a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAddress {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Share of traffic (relative).
    pub weight: u32,
}

/// Which HTTP version the gateway speaks to the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2: prior knowledge over plain TCP, ALPN `h2` over TLS.
    Http2,
}

/// Everything needed to build an HTTP backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpBackendConfig {
    /// Where the backend lives.
    pub addresses: Vec<EndpointAddress>,
    /// TLS to the upstream, if it speaks HTTPS.
    pub tls: Option<ClientTls>,
    /// HTTP version to the upstream.
    pub protocol: UpstreamProtocol,
    /// How tries are spread over endpoints.
    pub balancer: BalancerPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub pool_max_idle_per_endpoint: usize,
    /// Active health checking, if configured.
    pub health_check: Option<HealthCheck>,
    /// Passive outlier ejection.
    pub outlier: OutlierPolicy,
    /// How often DNS names are resolved again.
    pub dns_refresh: Duration,
    /// A `Host` header to send instead of the client's.
    pub host_rewrite: Option<String>,
}

pub use crate::backend::BuildError;

impl HttpBackendConfig {
    /// One managed service at `host:port`, with the defaults of an `http:` backend (the
    /// client of cloud adapters that speak HTTP, e.g. Azure).
    pub fn single(host: String, port: u16, tls: Option<ClientTls>) -> Self {
        Self {
            addresses: vec![EndpointAddress {
                host,
                port,
                weight: 1,
            }],
            tls,
            protocol: UpstreamProtocol::Http1,
            balancer: BalancerPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_endpoint: 256,
            health_check: None,
            outlier: OutlierPolicy::default(),
            dns_refresh: Duration::from_secs(30),
            host_rewrite: None,
        }
    }
}

/// The live state shared by the service, the health checker and the resolver.
struct Shared {
    id: Arc<str>,
    /// How each endpoint's HTTP/2 client is made (pool settings).
    http2: hyper_util::client::legacy::Builder,
    /// TLS for every endpoint's connector.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    config: HttpBackendConfig,
    endpoints: ArcSwap<EndpointSet>,
    cursor: AtomicUsize,
    stats: Arc<BackendStats>,
    host_rewrite: Option<HeaderValue>,
    scheme: http::uri::Scheme,
}

impl Availability for Shared {
    fn endpoint_counts(&self) -> EndpointCounts {
        let set = self.endpoints.load();
        EndpointCounts {
            total: set.endpoints.len(),
            available: set.endpoints.iter().filter(|e| e.is_available()).count(),
        }
    }
}

impl Shared {
    /// A client (with its own pool) whose connections all go to `addr`.
    fn client_for(&self, addr: SocketAddr) -> EndpointClient {
        let connector = Connector {
            addr,
            tls: self.tls.clone(),
            connect_timeout: self.config.connect_timeout,
        };
        match self.config.protocol {
            UpstreamProtocol::Http1 => EndpointClient::Http1(Arc::new(Http1Pool::new(
                connector,
                self.config.pool_max_idle_per_endpoint,
                self.config.pool_idle_timeout,
            ))),
            UpstreamProtocol::Http2 => EndpointClient::Http2(Box::new(self.http2.build(connector))),
        }
    }
}

/// The adapter's tower service.
#[derive(Clone)]
pub(crate) struct HttpService {
    shared: Arc<Shared>,
}

/// Builds an HTTP backend. Literal IP addresses are used at once; DNS names are resolved before
/// this returns (a name that does not resolve yet leaves the backend without endpoints, which
/// fails over, and is retried every `dns_refresh`).
pub async fn build(
    id: &str,
    config: HttpBackendConfig,
    stats: Arc<BackendStats>,
) -> Result<Backend, BuildError> {
    let reads_context = config.balancer.reads_client_address();
    let (service, availability, tasks) = build_service(id, config, stats.clone()).await?;
    Ok(
        Backend::new(id, Provider::Http, service, availability, stats, tasks)
            .reading_context(reads_context)
            .keeping_deadlines(true),
    )
}

/// The HTTP client service of a backend, its availability and its background tasks, for
/// adapters that speak HTTP to their service with something on top (Azure's authentication).
pub(crate) async fn build_service(
    id: &str,
    config: HttpBackendConfig,
    stats: Arc<BackendStats>,
) -> Result<(HttpService, Arc<dyn Availability>, BackgroundTasks), BuildError> {
    let error = |message: String| BuildError::new(id, message);
    let alpn = match config.protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
    };
    let tls = match &config.tls {
        None => None,
        Some(tls) => {
            let rustls_config = client_config(tls, alpn).map_err(|e| error(e.to_string()))?;
            let default_name = config
                .addresses
                .first()
                .map(|a| a.host.as_str())
                .unwrap_or_default();
            let name = tls.server_name.as_deref().unwrap_or(default_name);
            Some(connector::tls_connector(rustls_config, name).map_err(|e| error(e.to_string()))?)
        }
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(true);

    let host_rewrite = match &config.host_rewrite {
        None => None,
        Some(host) => Some(
            HeaderValue::from_str(host)
                .map_err(|_| error(format!("invalid host_rewrite {host:?}")))?,
        ),
    };
    let scheme = if config.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let shared = Arc::new(Shared {
        id: id.into(),
        http2: builder,
        tls,
        endpoints: ArcSwap::from_pointee(EndpointSet::default()),
        cursor: AtomicUsize::new(0),
        stats: stats.clone(),
        host_rewrite,
        scheme,
        config,
    });
    let needs_dns = resolve_all(&shared).await;

    let mut tasks = BackgroundTasks::default();
    if needs_dns {
        let resolver = shared.clone();
        tasks.push(
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(resolver.config.dns_refresh);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    resolve_all(&resolver).await;
                }
            })
            .abort_handle(),
        );
    }
    let service = HttpService {
        shared: shared.clone(),
    };
    if let Some(check) = shared.config.health_check.clone() {
        tasks.push(tokio::spawn(health::run(shared.clone(), check)).abort_handle());
    }
    if shared.config.protocol == UpstreamProtocol::Http1 {
        let reaper = shared.clone();
        tasks.push(
            tokio::spawn(async move {
                let period = (reaper.config.pool_idle_timeout / 2).max(Duration::from_secs(1));
                let mut ticker = tokio::time::interval(period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    for endpoint in &reaper.endpoints.load().endpoints {
                        endpoint.client.reap_idle();
                    }
                }
            })
            .abort_handle(),
        );
    }
    Ok((service, shared, tasks))
}

/// Resolves every address and installs the new endpoint set, keeping the live state of
/// endpoints whose address did not change. Returns whether any address is a DNS name.
async fn resolve_all(shared: &Shared) -> bool {
    let current = shared.endpoints.load_full();
    let mut endpoints = Vec::new();
    let mut has_names = false;
    for address in &shared.config.addresses {
        let addrs: Vec<SocketAddr> = match address.host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, address.port)],
            Err(_) => {
                has_names = true;
                match tokio::net::lookup_host((address.host.as_str(), address.port)).await {
                    Ok(found) => found.collect(),
                    Err(e) => {
                        // Keep what we had for this name rather than dropping a working endpoint.
                        tracing::warn!(backend = %shared.id, host = %address.host, error = %e, "DNS resolution failed");
                        current
                            .endpoints
                            .iter()
                            .filter(|ep| ep.addr.port() == address.port)
                            .map(|ep| ep.addr)
                            .collect()
                    }
                }
            }
        };
        for addr in addrs {
            if endpoints.iter().any(|e: &Arc<Endpoint>| e.addr == addr) {
                continue;
            }
            let existing = current
                .endpoints
                .iter()
                .find(|e| e.addr == addr && e.weight == address.weight.max(1));
            match existing {
                Some(endpoint) => endpoints.push(endpoint.clone()),
                None => match Endpoint::new(addr, address.weight, shared.client_for(addr)) {
                    Ok(endpoint) => endpoints.push(Arc::new(endpoint)),
                    Err(e) => {
                        tracing::warn!(backend = %shared.id, %addr, error = %e, "unusable address")
                    }
                },
            }
        }
    }
    let changed = endpoints.len() != current.endpoints.len()
        || endpoints
            .iter()
            .zip(current.endpoints.iter())
            .any(|(a, b)| !Arc::ptr_eq(a, b));
    if changed {
        tracing::info!(backend = %shared.id, endpoints = endpoints.len(), "endpoints updated");
        shared
            .endpoints
            .store(Arc::new(EndpointSet::new(endpoints)));
    }
    has_names
}

/// The adapter is called through a shared reference, not as a tower service (which a caller
/// through `&self` clones first): a try takes one handle on the backend's state, not two, and
/// each handle taken and dropped is two atomic read-modify-writes on the request path.
impl Adapter for HttpService {
    fn send(&self, request: GatewayRequest) -> TryFuture<'_> {
        HttpService::send(self, request)
    }
}

impl HttpService {
    /// Starts one try of `request`, borrowing the backend's state for it.
    pub(crate) fn send(&self, mut request: GatewayRequest) -> TryFuture<'_> {
        let shared = &*self.shared;
        Box::into_pin(box_in_place!(async move {
            let key = match &shared.config.balancer {
                BalancerPolicy::ConsistentHash(key) => hash_key(
                    key,
                    request.headers(),
                    request.forwarding(),
                    request
                        .extensions()
                        .get::<RequestContext>()
                        .map(|c| c.client),
                ),
                _ => None,
            };
            // The set is only read to pick from: a guard on it, not a handle of its own, which
            // would be two more atomic read-modify-writes per try.
            let picked = shared
                .endpoints
                .load()
                .pick(&shared.config.balancer, &shared.cursor, key)
                .cloned();
            let Some(endpoint) = picked else {
                return Err(BackendError::new(
                    BackendErrorKind::NoHealthyEndpoint,
                    format!("backend {} has no resolved endpoint", shared.id),
                ));
            };
            if let Some(host) = &shared.host_rewrite {
                request.headers_mut().insert(HOST, host.clone());
            }
            // HTTP/1.1 sends the `Host` header and an origin-form target; HTTP/2 sends the
            // host as `:authority`, from the URI (RFC 9113 §8.3.1), and no `Host`. Either way
            // the endpoint's client connects to the endpoint whatever the host says.
            let authority = |request: &GatewayRequest| {
                request
                    .headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| h.parse::<http::uri::Authority>().ok())
                    .or_else(|| request.uri().authority().cloned())
                    .unwrap_or_else(|| endpoint.authority.clone())
            };
            let path = |request: &GatewayRequest| {
                request
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
            };
            match shared.config.protocol {
                UpstreamProtocol::Http1 => {
                    // Changed only when it differs: a change copies the lent head.
                    if request.head().version != Version::HTTP_11 {
                        request.head_mut().version = Version::HTTP_11;
                    }
                    // The route's forwarding headers took the head's `Host` already, when
                    // it had one, and nothing since removed it (a rewrite above replaces it):
                    // not looked for again.
                    let has_host = request.forwarding().is_some_and(|f| f.host().is_some())
                        || request.headers().contains_key(HOST);
                    if !has_host {
                        let authority = authority(&request);
                        pool::ensure_host(&mut request, &authority);
                    }
                    // The gateway sends an origin-form target already; only another caller's
                    // absolute one is rebuilt.
                    let uri = request.uri();
                    if uri.scheme().is_some() || uri.authority().is_some() || uri.path().is_empty()
                    {
                        *request.uri_mut() = Uri::from(path(&request));
                    }
                }
                UpstreamProtocol::Http2 => {
                    let path = path(&request);
                    let authority = authority(&request);
                    let head = request.head_mut();
                    head.version = Version::HTTP_2;
                    head.headers.remove(HOST);
                    head.uri = Uri::builder()
                        .scheme(shared.scheme.clone())
                        .authority(authority)
                        .path_and_query(path)
                        .build()
                        .map_err(|e| {
                            BackendError::new(BackendErrorKind::Config, "cannot build upstream URI")
                                .with_source(e)
                        })?;
                }
            }

            let result = {
                // Released however the call ends, dropped with a departed client included.
                let _in_flight = endpoint.start_request();
                endpoint.client.request(request).await
            };

            match result {
                Ok(response) => {
                    if matches!(response.status().as_u16(), 502..=504) {
                        record_failure(shared, &endpoint);
                    } else {
                        endpoint.outlier.record_success();
                    }
                    Ok(response)
                }
                Err(error) => {
                    let error = classify(&shared.id, endpoint.addr, error);
                    // A try past its deadline is not held against the endpoint: the deadline
                    // is the route's (its SLO meter sees the slowness).
                    if error.fault() == crate::error::Fault::Upstream
                        && error.kind() != BackendErrorKind::Timeout
                    {
                        record_failure(shared, &endpoint);
                    }
                    Err(error)
                }
            }
        }))
    }
}

fn record_failure(shared: &Shared, endpoint: &Endpoint) {
    if let FailureEffect::Ejected(duration) =
        endpoint.outlier.record_failure(&shared.config.outlier)
    {
        shared.stats.ejections.fetch_add(1, Relaxed);
        tracing::warn!(backend = %shared.id, endpoint = %endpoint.addr, ?duration, "endpoint ejected after consecutive failures");
    }
}

/// Whether `err` is the peer's TLS alert refusing our client certificate. With TLS 1.3 it
/// arrives after the handshake, on the first read, wrapped in an `io::Error`.
fn tls_auth_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::AlertDescription as A;
    let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
        err.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    matches!(
        tls,
        Some(rustls::Error::AlertReceived(
            A::CertificateRequired
                | A::BadCertificate
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
        ))
    )
}

/// Turns a client error into a classified backend error.
fn classify(backend: &str, addr: SocketAddr, error: ClientError) -> BackendError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error.source);
    let mut kind = if error.connect {
        BackendErrorKind::Connect
    } else {
        BackendErrorKind::Reset
    };
    while let Some(err) = cause {
        if tls_auth_refused(err) {
            kind = BackendErrorKind::Auth;
            break;
        }
        if err.is::<BodyTooLarge>() {
            kind = BackendErrorKind::BodyTooLarge;
            break;
        }
        match err.downcast_ref::<Http1Error>() {
            Some(Http1Error::PastDeadline) => {
                kind = BackendErrorKind::Timeout;
                break;
            }
            Some(Http1Error::InvalidResponse(_)) => kind = BackendErrorKind::InvalidResponse,
            Some(Http1Error::ClientBody(_)) => kind = BackendErrorKind::ClientBody,
            _ => {}
        }
        if let Some(hyper_error) = err.downcast_ref::<hyper::Error>() {
            if hyper_error.is_parse() || hyper_error.is_parse_status() {
                kind = BackendErrorKind::InvalidResponse;
            } else if hyper_error.is_user()
                && std::error::Error::source(hyper_error).is_some()
                && !error.connect
            {
                // An error raised by the request body: the client's upload failed.
                kind = BackendErrorKind::ClientBody;
            }
        }
        cause = err.source();
    }
    let message = match kind {
        BackendErrorKind::Auth => format!(
            "backend {backend}: {addr} refused the gateway's TLS client certificate (check tls.cert_file and tls.key_file)"
        ),
        BackendErrorKind::Connect => format!("backend {backend}: cannot connect to {addr}"),
        BackendErrorKind::Timeout => {
            format!("backend {backend}: {addr} did not answer before the try's deadline")
        }
        BackendErrorKind::InvalidResponse => {
            format!("backend {backend}: invalid response from {addr}")
        }
        BackendErrorKind::BodyTooLarge => "request body exceeds the route's limit".to_owned(),
        BackendErrorKind::ClientBody => "the client's request body failed".to_owned(),
        _ => format!("backend {backend}: connection to {addr} failed before a complete response"),
    };
    BackendError::new(kind, message).with_source(error.source)
}
