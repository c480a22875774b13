//! A running gateway's admin API, as the commands that read or drive it reach it (`report`,
//! `canary`, `gate`): the address and token from the configuration file, or `--admin`.

use std::path::Path;

use anyhow::Context as _;
use http::{Method, StatusCode};

use crate::config::{self, ProcessEnvironment};

/// Where the admin API is and how to authorize.
#[derive(Debug, Clone)]
pub struct AdminClient {
    address: String,
    token: Option<String>,
}

impl AdminClient {
    /// The admin API of the configuration at `config` (when it can be read), or at `admin`;
    /// `127.0.0.1:9901` when neither says. The token is the configuration's, or else the
    /// `ACCORD_ADMIN_TOKEN` environment variable's.
    pub fn new(config: &Path, admin: Option<String>) -> Self {
        let loaded = config::load(config, &ProcessEnvironment).ok();
        let address = match (admin, &loaded) {
            (Some(address), _) => address,
            (None, Some(config)) => config.admin.address.to_string(),
            (None, None) => "127.0.0.1:9901".to_owned(),
        };
        let token = loaded
            .as_ref()
            .and_then(|c| c.admin.token.as_ref())
            .map(|t| t.expose().to_owned())
            .or_else(|| {
                std::env::var("ACCORD_ADMIN_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
            });
        Self { address, token }
    }

    /// Calls `method path` and returns the status and the JSON body (any status: the caller
    /// decides what a 409 means).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.address));
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = client
            .request(request.body(http_body_util::Empty::new())?)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is the gateway running? --admin sets the address)",
                    self.address
                )
            })?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes();
        let value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "the admin API at {} answered {status} with something that is not JSON: {}",
                self.address,
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((status, value))
    }
}
