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
}

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
        static SOURCES: OnceLock<Mutex<HashMap<EntraCredentialConfig, TokenSource>>> =
            OnceLock::new();
        let sources = SOURCES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut sources = sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(source) = sources.get(config) {
            return Ok(source.clone());
        }
        let source = TokenSource {
            credential: build(config)?,
            description: config.describe().into(),
        };
        sources.insert(config.clone(), source.clone());
        Ok(source)
    }

    /// What the credential is, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// A token for `scope` (from the cache unless it expires within five minutes).
    pub async fn token(&self, scope: &str) -> Result<String, BackendError> {
        match self.credential.get_token(&[scope], None).await {
            Ok(token) => Ok(token.token.secret().to_owned()),
            Err(e) => Err(BackendError::new(
                BackendErrorKind::Auth,
                format!(
                    "cannot get an Entra ID token for scope {scope} with {}: {}",
                    self.description,
                    first_line(&e.to_string())
                ),
            )),
        }
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
