//! The HTTP transport azure_identity uses to reach Entra ID (and the managed identity
//! endpoints): hyper with the gateway's rustls settings, so the trusted roots are the same as
//! everywhere else in the gateway (and a private CA can be added for a sovereign or test
//! authority).

use std::sync::Arc;
use std::time::Duration;

use azure_core::error::{Error, ErrorKind};
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::request::{Body, Request};
use azure_core::http::{AsyncRawResponse, HttpClient, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::ClientTls;

/// Token requests are small: a slow authority is an error, not a hang.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A hyper client speaking HTTP and HTTPS.
#[derive(Debug)]
pub(super) struct HyperTransport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HyperTransport {
    /// A transport trusting the public web roots, or only `ca_file` when given.
    pub(super) fn new(ca_file: Option<std::path::PathBuf>) -> Result<Arc<Self>, String> {
        let tls = crate::tls::client_config(
            &ClientTls {
                ca_file,
                client_identity: None,
                server_name: None,
            },
            // hyper-rustls sets ALPN itself (and refuses a configuration that has it).
            Vec::new(),
        )
        .map_err(|e| e.to_string())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Arc::new(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }))
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            Body::Bytes(bytes) => Bytes::copy_from_slice(bytes),
            _ => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not used for token requests",
                ));
            }
        };
        let mut builder = http::Request::builder()
            .method(request.method().as_ref())
            .uri(request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outgoing = builder
            .body(Full::new(body))
            .map_err(|e| Error::new(ErrorKind::DataConversion, e))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(outgoing))
            .await
            .map_err(|_| Error::with_message(ErrorKind::Io, "the token request timed out"))?
            .map_err(|e| Error::new(ErrorKind::Io, e))?;
        let status = StatusCode::from(response.status().as_u16());
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                );
            }
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::new(ErrorKind::Io, e))?
            .to_bytes();
        Ok(AsyncRawResponse::from_bytes(status, headers, bytes))
    }
}
