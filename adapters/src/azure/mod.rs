//! The Azure adapter: Azure Functions, Azure AI services and any Azure REST API as backends,
//! authenticated the way Azure expects — a function key, an API key, or an Entra ID token
//! ([`credential`]).
//!
//! An Azure backend is the on-prem HTTP adapter's pooled HTTPS client to the service's host,
//! with a layer on top ([`AzureService`]) that sets the request's path, adds the credential,
//! and classifies Azure's answers: 401/403 are [`BackendErrorKind::Auth`] (never retried; the
//! message names the credential and scope, never its value), 429 is
//! [`BackendErrorKind::Throttled`] with its `Retry-After`. 5xx answers and connection failures
//! stay what they are for the route's retries and failover.

pub mod credential;
mod transport;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use http::header::{AUTHORIZATION, HOST, RETRY_AFTER};
use tower::Service;

use crate::backend::{
    Backend, BackendFuture, BuildError, GatewayRequest, GatewayResponse, Provider,
};
use crate::error::{BackendError, BackendErrorKind};
use crate::http::{HttpBackendConfig, HttpService};
use crate::secret::Secret;
use crate::stats::BackendStats;
use credential::TokenSource;

pub use credential::{EntraCredentialConfig, EntraCredentialKind, UserAssigned};

/// The Entra ID scope of Azure AI services.
pub const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// An Azure backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureBackendConfig {
    /// Which kind of service (for the `provider` label and messages).
    pub service: AzureService,
    /// The HTTPS client to the service's host (one address, TLS with the host as SNI).
    pub http: HttpBackendConfig,
    /// The host the service is reached at (`Host` and SNI).
    pub host: String,
    /// How the upstream path is made from the request's.
    pub path: UpstreamPath,
    /// How requests are authenticated.
    pub auth: AzureAuth,
}

/// The kinds of Azure backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureService {
    /// An Azure Functions HTTP trigger.
    Function,
    /// An Azure AI services endpoint.
    Ai,
    /// Any other Azure REST API.
    Rest,
}

/// How the upstream path is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPath {
    /// Always this path (a function's `/api/<name>`); the request's query is kept.
    Fixed(String),
    /// This prefix, then the request's path and query.
    Prefix(String),
}

/// How an Azure backend authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// A key in a header: `x-functions-key`, `api-key` or `Ocp-Apim-Subscription-Key`.
    Key {
        /// The header.
        header: http::HeaderName,
        /// The key.
        key: Secret,
        /// Where it came from (`key_env ORDERS_KEY`), for messages.
        source: String,
    },
    /// An Entra ID bearer token.
    Entra {
        /// The credential.
        credential: EntraCredentialConfig,
        /// The token's scope (`<app id URI>/.default`).
        scope: String,
    },
}

/// Builds an Azure backend.
pub async fn build(
    id: &str,
    config: AzureBackendConfig,
    stats: Arc<BackendStats>,
) -> Result<Backend, BuildError> {
    let auth = match &config.auth {
        AzureAuth::Key {
            header,
            key,
            source,
        } => Auth::Key {
            header: header.clone(),
            value: HeaderValue::from_str(key.expose())
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| {
                    BuildError::new(
                        id,
                        format!("the key from {source} is not a valid header value"),
                    )
                })?,
            source: source.clone(),
        },
        AzureAuth::Entra { credential, scope } => {
            let tokens = TokenSource::for_config(credential).map_err(|e| BuildError::new(id, e))?;
            // Fetch a first token now, off the request path: a credential that cannot get one
            // says so at once (the requests will say it again).
            let probe = tokens.clone();
            let (backend, probed_scope) = (id.to_owned(), scope.clone());
            tokio::spawn(async move {
                if let Err(e) = probe.token(&probed_scope).await {
                    tracing::error!(backend = %backend, "{}", e.detailed_message());
                }
            });
            Auth::Entra {
                tokens,
                scope: scope.clone(),
            }
        }
    };
    let (inner, availability, tasks) =
        crate::http::build_service(id, config.http.clone(), stats.clone()).await?;
    let host = HeaderValue::from_str(&config.host)
        .map_err(|_| BuildError::new(id, format!("invalid host {:?}", config.host)))?;
    let service = AzureLayerService {
        inner,
        shared: Arc::new(Shared {
            id: id.into(),
            host,
            path: config.path.clone(),
            auth,
        }),
    };
    Ok(
        Backend::new(id, Provider::Azure, service, availability, stats, tasks)
            .reading_context(config.http.balancer.reads_client_address()),
    )
}

enum Auth {
    Key {
        header: http::HeaderName,
        value: HeaderValue,
        source: String,
    },
    Entra {
        tokens: TokenSource,
        scope: String,
    },
}

impl Auth {
    fn describe(&self) -> String {
        match self {
            Auth::Key { header, source, .. } => format!("the key in {header} (from {source})"),
            Auth::Entra { tokens, scope } => {
                format!("the token of {} for scope {scope}", tokens.description())
            }
        }
    }
}

struct Shared {
    id: Arc<str>,
    host: HeaderValue,
    path: UpstreamPath,
    auth: Auth,
}

/// The HTTP client service with Azure's path, authentication and answers on top.
#[derive(Clone)]
struct AzureLayerService {
    inner: HttpService,
    shared: Arc<Shared>,
}

impl Service<GatewayRequest> for AzureLayerService {
    type Response = GatewayResponse;
    type Error = BackendError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: GatewayRequest) -> Self::Future {
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let path = upstream_path(&shared.path, request.uri());
            *request.uri_mut() = path.parse().map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Config,
                    format!("invalid upstream path {path:?}"),
                )
                .with_source(e)
            })?;
            let headers = request.headers_mut();
            headers.insert(HOST, shared.host.clone());
            // The client's own credentials are not Azure's business.
            headers.remove(AUTHORIZATION);
            match &shared.auth {
                Auth::Key { header, value, .. } => {
                    headers.insert(header.clone(), value.clone());
                }
                Auth::Entra { tokens, scope } => {
                    let token = tokens.token(scope).await?;
                    let mut value =
                        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                            BackendError::new(
                                BackendErrorKind::Auth,
                                "the Entra ID token is not a valid header value",
                            )
                        })?;
                    value.set_sensitive(true);
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
            let response = inner.send(request).await?;
            classify(&shared, response)
        })
    }
}

fn upstream_path(path: &UpstreamPath, uri: &http::Uri) -> String {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    match path {
        UpstreamPath::Fixed(fixed) => format!("{fixed}{query}"),
        UpstreamPath::Prefix(prefix) => {
            let rest = uri.path();
            if prefix.is_empty() {
                format!("{rest}{query}")
            } else if rest == "/" {
                format!("{prefix}{query}")
            } else {
                format!("{prefix}{rest}{query}")
            }
        }
    }
}

/// Azure's refusals and throttles become classified failures; everything else is the answer.
fn classify(shared: &Shared, response: GatewayResponse) -> Result<GatewayResponse, BackendError> {
    let status = response.status().as_u16();
    match status {
        401 | 403 => {
            let detail = response
                .headers()
                .get("www-authenticate")
                .or_else(|| response.headers().get("x-ms-error-code"))
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(": {v}"))
                .unwrap_or_default();
            Err(BackendError::new(
                BackendErrorKind::Auth,
                format!(
                    "Azure refused {} ({status}) for backend {}{detail}",
                    shared.auth.describe(),
                    shared.id
                ),
            ))
        }
        429 => {
            let mut error = BackendError::new(
                BackendErrorKind::Throttled,
                format!("Azure throttled backend {} (429)", shared.id),
            );
            if let Some(after) = retry_after(response.headers()) {
                error = error.with_retry_after(after);
            }
            Err(error)
        }
        _ => Ok(response),
    }
}

/// `Retry-After` (seconds), or Azure's `retry-after-ms` / `x-ms-retry-after-ms`.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    number("retry-after-ms")
        .or_else(|| number("x-ms-retry-after-ms"))
        .map(Duration::from_millis)
        .or_else(|| number(RETRY_AFTER.as_str()).map(Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_are_fixed_or_prefixed_and_keep_the_query() {
        let uri: http::Uri = "/orders/42?x=1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            upstream_path(&UpstreamPath::Fixed("/api/orders".into()), &uri),
            "/api/orders?x=1"
        );
        assert_eq!(
            upstream_path(&UpstreamPath::Prefix("/container".into()), &uri),
            "/container/orders/42?x=1"
        );
        assert_eq!(
            upstream_path(&UpstreamPath::Prefix(String::new()), &uri),
            "/orders/42?x=1"
        );
        let root: http::Uri = "/".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            upstream_path(&UpstreamPath::Prefix("/c".into()), &root),
            "/c"
        );
    }

    #[test]
    fn retry_after_reads_seconds_or_azure_milliseconds() {
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
    }
}
