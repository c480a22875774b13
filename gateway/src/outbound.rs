//! One HTTP POST to a receiver outside the data plane (a notification receiver, an OTLP
//! collector), over `http://` or `https://` verified against the public web roots, on a
//! connection of its own: such posts are few, and a receiver that hangs must not hold anything
//! else up.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one delivery may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs the JSON `body` with `headers` to `url`; `Ok(status)` when the receiver answered 2xx.
pub async fn post(url: &Uri, headers: &[(&str, String)], body: Bytes) -> Result<u16, String> {
    post_as(url, "application/json", headers, body).await
}

/// POSTs `body` of `content_type` to `url`; `Ok(status)` when the receiver answered 2xx.
pub async fn post_as(
    url: &Uri,
    content_type: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<u16, String> {
    match tokio::time::timeout(TIMEOUT, post_inner(url, content_type, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
    }
}

async fn post_inner(
    url: &Uri,
    content_type: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<u16, String> {
    let host = url.host().ok_or("the URL has no host")?.to_owned();
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let mut request = Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            url.authority().map_or(host.clone(), |a| a.to_string()),
        )
        .header(http::header::CONTENT_TYPE, content_type)
        .header(
            http::header::USER_AGENT,
            concat!("accord/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("invalid request: {e}"))?;
    let status = if https {
        let config = accord_adapters::tls::client_config(
            &accord_adapters::tls::ClientTls::default(),
            vec![b"http/1.1".to_vec()],
        )
        .map_err(|e| format!("TLS: {e}"))?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("TLS name {host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}
