//! Entra ID credentials (azure_identity): client secret, managed identity, workload identity.
//!
//! One credential object per configuration, shared by every backend that names it and kept
//! across reloads (a process-wide registry), so its token cache is shared: azure_identity
//! caches a token per scope, refreshes it five minutes before it expires, and lets one caller
//! fetch while the others wait — one token request per expiry, whatever the load. Tokens never
//! leave this module except into the `Authorization` header.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::transport::HyperTransport;
use crate::error::{BackendError, BackendErrorKind};
use crate::secret::Secret;

/// A named Entra ID credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntraCredentialConfig {
    /// Its name in the configuration (for messages).
    pub name: String,
    /// How it authenticates.
    pub kind: EntraCredentialKind,
    /// The authority (default `https://login.microsoftonline.com`; sovereign clouds have their
    /// own). Must be HTTPS.
    pub authority_host: Option<String>,
    /// A CA (PEM) to trust for the authority instead of the public roots.
    pub ca_file: Option<PathBuf>,
}

/// The kinds of Entra ID credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntraCredentialKind {
    /// An app registration's client secret.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The secret.
        secret: Secret,
    },
    /// The managed identity of the machine, App Service or container the gateway runs on.
    ManagedIdentity {
        /// A user-assigned identity; none for the system-assigned one.
        user_assigned: Option<UserAssigned>,
    },
    /// Workload identity federation (AKS): a federated token file exchanged for a token.
    WorkloadIdentity {
        /// Tenant id (default `AZURE_TENANT_ID`).
        tenant_id: Option<String>,
        /// Client id (default `AZURE_CLIENT_ID`).
        client_id: Option<String>,
        /// The federated token file (default `AZURE_FEDERATED_TOKEN_FILE`).
        token_file: Option<PathBuf>,
    },
}

/// A user-assigned managed identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserAssigned {
    /// By client id.
    ClientId(String),
    /// By object (principal) id.
    ObjectId(String),
    /// By Azure resource id.
    ResourceId(String),
}

impl EntraCredentialConfig {
    /// What it is, for messages (never a secret).
    pub fn describe(&self) -> String {
        match &self.kind {
            EntraCredentialKind::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => format!(
                "credential {} (client secret of app {client_id} in tenant {tenant_id})",
                self.name
            ),
            EntraCredentialKind::ManagedIdentity { user_assigned } => match user_assigned {
                None => format!(
                    "credential {} (system-assigned managed identity)",
                    self.name
                ),
                Some(id) => format!(
                    "credential {} (user-assigned managed identity {id:?})",
                    self.name
                ),
            },
            EntraCredentialKind::WorkloadIdentity { client_id, .. } => format!(
                "credential {} (workload identity{})",
                self.name,
                client_id
                    .as_ref()
                    .map(|c| format!(" of app {c}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Gets tokens for one credential.
#[derive(Clone)]
pub struct TokenSource {
    credential: Arc<dyn TokenCredential>,
    description: Arc<str>,
    name: Arc<str>,
    state: Arc<TokenState>,
}

/// What a token source remembers between requests, per scope: the token until five minutes
/// before it expires, and a refusal until its back-off ends. Fetches are single-flight: while
/// one request asks Entra, the others wait for its answer instead of asking too.
#[derive(Debug, Default)]
struct TokenState {
    fetching: tokio::sync::Mutex<()>,
    scopes: Mutex<HashMap<String, ScopeState>>,
    requested_ok: std::sync::atomic::AtomicU64,
    requested_refused: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct ScopeState {
    /// The token and until when it is served from here.
    token: Option<(String, Instant)>,
    /// The last refusal's message, until when it is answered without asking again, and the
    /// back-off that set it (doubled at each refusal in a row, 1 s up to 60 s).
    refusal: Option<(String, Instant, Duration)>,
}

/// Token requests a credential made to its identity provider, by result, for `/metrics`
/// (`accord_credential_token_requests_total{credential,result}`): `(credential, ok, refused)`.
pub fn token_request_counts() -> Vec<(String, u64, u64)> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(sources) = SOURCES.get() else {
        return Vec::new();
    };
    let sources = sources.lock().unwrap_or_else(|p| p.into_inner());
    let mut counts: Vec<(String, u64, u64)> = sources
        .values()
        .map(|s| {
            (
                s.name.to_string(),
                s.state.requested_ok.load(Relaxed),
                s.state.requested_refused.load(Relaxed),
            )
        })
        .collect();
    counts.sort();
    counts
}

/// Every token source, shared by the backends that use the same credential and across reloads.
static SOURCES: OnceLock<Mutex<HashMap<EntraCredentialConfig, TokenSource>>> = OnceLock::new();

const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.description)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// The shared source for a credential configuration.
    pub fn for_config(config: &EntraCredentialConfig) -> Result<TokenSource, String> {
        let sources = SOURCES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut sources = sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(source) = sources.get(config) {
            return Ok(source.clone());
        }
        let source = TokenSource {
            credential: build(config)?,
            description: config.describe().into(),
            name: config.name.as_str().into(),
            state: Arc::default(),
        };
        sources.insert(config.clone(), source.clone());
        Ok(source)
    }

    /// What the credential is, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// A token for `scope`: from the cache unless it expires within five minutes; else one
    /// request to the identity provider however many callers want it at once. After a refusal,
    /// callers get the refusal at once, without asking again, until a back-off (1 s, doubling
    /// to 60 s) ends: a wrong secret must not turn every client request into a token request,
    /// which real Entra answers by throttling.
    pub async fn token(&self, scope: &str) -> Result<String, BackendError> {
        if let Some(answer) = self.remembered(scope) {
            return answer;
        }
        let _single_flight = self.state.fetching.lock().await;
        if let Some(answer) = self.remembered(scope) {
            return answer;
        }
        use std::sync::atomic::Ordering::Relaxed;
        let fetched = self
            .credential
            .get_token(&[scope], None)
            .await
            .and_then(|token| {
                if token.token.secret().is_empty() {
                    Err(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        "the identity provider answered an empty access token",
                    ))
                } else {
                    Ok(token)
                }
            });
        let mut scopes = self.scopes();
        let state = scopes.entry(scope.to_owned()).or_default();
        match fetched {
            Ok(token) => {
                self.state.requested_ok.fetch_add(1, Relaxed);
                let secret = token.token.secret().to_owned();
                let lifetime = token.expires_on.unix_timestamp()
                    - azure_core::time::OffsetDateTime::now_utc().unix_timestamp();
                let fresh_for = Duration::from_secs(u64::try_from(lifetime).unwrap_or(0))
                    .saturating_sub(REFRESH_BEFORE_EXPIRY);
                state.token = Some((secret.clone(), Instant::now() + fresh_for));
                state.refusal = None;
                Ok(secret)
            }
            Err(e) => {
                self.state.requested_refused.fetch_add(1, Relaxed);
                let message = format!(
                    "cannot get an Entra ID token for scope {scope} with {}: {}",
                    self.description,
                    first_line(&e.to_string())
                );
                let backoff = state
                    .refusal
                    .as_ref()
                    .map_or(FIRST_BACKOFF, |(_, _, last)| (*last * 2).min(MAX_BACKOFF));
                state.refusal = Some((message.clone(), Instant::now() + backoff, backoff));
                Err(BackendError::new(BackendErrorKind::Auth, message).with_source(e))
            }
        }
    }

    /// The cached token, or the refusal still in its back-off, for `scope`.
    fn remembered(&self, scope: &str) -> Option<Result<String, BackendError>> {
        let scopes = self.scopes();
        let state = scopes.get(scope)?;
        let now = Instant::now();
        if let Some((token, fresh_until)) = &state.token
            && *fresh_until > now
        {
            return Some(Ok(token.clone()));
        }
        match &state.refusal {
            Some((message, until, _)) if *until > now => Some(Err(BackendError::new(
                BackendErrorKind::Auth,
                format!(
                    "{message} (refused recently: asking again in {} ms)",
                    until.saturating_duration_since(now).as_millis()
                ),
            ))),
            _ => None,
        }
    }

    fn scopes(&self) -> std::sync::MutexGuard<'_, HashMap<String, ScopeState>> {
        self.state.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// azure_identity's messages end with a troubleshooting link on its own lines.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

fn build(config: &EntraCredentialConfig) -> Result<Arc<dyn TokenCredential>, String> {
    let error = |e: azure_core::Error| format!("{}: {e}", config.describe());
    let transport = HyperTransport::new(config.ca_file.clone())
        .map_err(|e| format!("{}: {e}", config.describe()))?;
    let client_options = ClientOptions {
        transport: Some(Transport::new(transport)),
        // Retrying belongs to the route; a refused token request fails at once.
        retry: RetryOptions::none(),
        cloud: config.authority_host.as_ref().map(|host| {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.clone();
            Arc::new(CloudConfiguration::Custom(custom))
        }),
        ..Default::default()
    };
    Ok(match &config.kind {
        EntraCredentialKind::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            secret.expose().to_owned().into(),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map_err(error)?,
        EntraCredentialKind::ManagedIdentity { user_assigned } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: user_assigned.as_ref().map(|id| match id {
                    UserAssigned::ClientId(v) => UserAssignedId::ClientId(v.clone()),
                    UserAssigned::ObjectId(v) => UserAssignedId::ObjectId(v.clone()),
                    UserAssigned::ResourceId(v) => UserAssignedId::ResourceId(v.clone()),
                }),
                client_options,
            }))
            .map_err(error)?
        }
        EntraCredentialKind::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options },
            client_id: client_id.clone(),
            tenant_id: tenant_id.clone(),
            token_file_path: token_file.clone(),
        }))
        .map_err(error)?,
    })
}
