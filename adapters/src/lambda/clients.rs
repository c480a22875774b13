//! Shared `aws-sdk-lambda` clients: one per region, endpoint and credential set, for the whole
//! process, so that backends (and reloads) share connections and cached credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_lambda::config::retry::RetryConfig;

use super::{LambdaBackendConfig, LambdaCredentials};

/// A shared client.
#[derive(Clone, Debug)]
pub struct LambdaClient(Arc<aws_sdk_lambda::Client>);

impl LambdaClient {
    /// The SDK client.
    pub fn sdk(&self) -> &aws_sdk_lambda::Client {
        &self.0
    }
}

/// What makes two backends' clients the same.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: Option<String>,
    endpoint: Option<String>,
    credentials: LambdaCredentials,
}

fn cache() -> &'static Mutex<HashMap<ClientKey, LambdaClient>> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientKey, LambdaClient>>> = OnceLock::new();
    CLIENTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The client for a backend: shared with every backend of the same region, endpoint and
/// credentials. Errors say why none can be made (no region).
pub(super) async fn client(config: &LambdaBackendConfig) -> Result<LambdaClient, String> {
    let region = config
        .region
        .clone()
        .or_else(|| region_of_arn(&config.function));
    let key = ClientKey {
        region: region.clone(),
        endpoint: config.endpoint.clone(),
        credentials: config.credentials.clone(),
    };
    if let Some(client) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(client.clone());
    }
    let sdk_config = sdk_config(&config.credentials, region.as_deref()).await?;
    if sdk_config.region().is_none() {
        return Err(format!(
            "no AWS region for function {}: set region, use a full ARN, or set AWS_REGION",
            config.function
        ));
    }
    let mut builder = aws_sdk_lambda::config::Builder::from(&sdk_config)
        // Retries, timeouts and failover are the route's.
        .retry_config(RetryConfig::disabled());
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    let client = LambdaClient(Arc::new(aws_sdk_lambda::Client::from_conf(builder.build())));
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(client.clone());
    Ok(client)
}

/// The region in `arn:aws:lambda:<region>:<account>:function:<name>`.
fn region_of_arn(function: &str) -> Option<String> {
    let mut fields = function.split(':');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some("arn"), Some(_partition), Some("lambda"), Some(region)) if !region.is_empty() => {
            Some(region.to_owned())
        }
        _ => None,
    }
}

/// The SDK configuration for a credential source: the default chain, a profile, static keys,
/// or a role assumed on top of one of those.
async fn sdk_config(
    credentials: &LambdaCredentials,
    region: Option<&str>,
) -> Result<SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    match credentials {
        LambdaCredentials::Default => Ok(loader.load().await),
        LambdaCredentials::Profile {
            name,
            credentials_file,
            config_file,
        } => {
            loader = loader.profile_name(name);
            if credentials_file.is_some() || config_file.is_some() {
                loader = with_profile_files(loader, credentials_file, config_file);
            }
            Ok(loader.load().await)
        }
        LambdaCredentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => Ok(loader
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                access_key_id.expose(),
                secret_access_key.expose(),
                session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "accord-configuration",
            )))
            .load()
            .await),
        LambdaCredentials::AssumeRole {
            role_arn,
            external_id,
            session_name,
            sts_endpoint,
            source,
        } => {
            let mut base = Box::pin(sdk_config(source, region)).await?;
            if let Some(endpoint) = sts_endpoint {
                base = base.into_builder().endpoint_url(endpoint).build();
            }
            let mut provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
                .session_name(session_name.clone().unwrap_or_else(|| "accord".into()));
            if let Some(id) = external_id {
                provider = provider.external_id(id);
            }
            let provider = provider.configure(&base).build().await;
            Ok(loader.credentials_provider(provider).load().await)
        }
    }
}

/// The SDK's HTTPS client (Lambda, STS, IMDS and the other credential sources): rustls with
/// ring and the system's roots.
fn https_client() -> aws_sdk_lambda::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Points the loader at other profile files. The loader still takes these under deprecated
/// names for aws-runtime's types.
#[allow(deprecated)]
fn with_profile_files(
    loader: aws_config::ConfigLoader,
    credentials_file: &Option<std::path::PathBuf>,
    config_file: &Option<std::path::PathBuf>,
) -> aws_config::ConfigLoader {
    use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
    let mut files = ProfileFiles::builder();
    if let Some(file) = credentials_file {
        files = files.with_file(ProfileFileKind::Credentials, file);
    }
    if let Some(file) = config_file {
        files = files.with_file(ProfileFileKind::Config, file);
    }
    loader.profile_files(files.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_a_full_arn() {
        assert_eq!(
            region_of_arn("arn:aws:lambda:eu-west-1:123456789012:function:orders").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of_arn("arn:aws:lambda:eu-west-1:123456789012:function:orders:live").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_arn("orders"), None);
        assert_eq!(region_of_arn("123456789012:function:orders"), None);
    }
}
