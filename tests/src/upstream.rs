//! Upstreams scripted per test: an HTTP server whose handler is a closure, and a raw TCP server
//! for responses that are broken on purpose.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// A request as the upstream saw it, body read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub uri: http::Uri,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Version.
    pub version: http::Version,
}

/// A running scripted upstream.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests answered so far.
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts an HTTP/1.1 + h2c server answering with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let counter = counter.clone();
                let service =
                    hyper::service::service_fn(move |request: http::Request<Incoming>| {
                        let handler = handler.clone();
                        let counter = counter.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            counter.fetch_add(1, Ordering::SeqCst);
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                                version: parts.version,
                            };
                            Ok::<_, Infallible>(handler(seen).await)
                        }
                    });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, hits }
    }

    /// Answers every request with `status` and a body naming `name`.
    pub async fn fixed(name: &'static str, status: u16) -> Upstream {
        Upstream::start(move |_| async move { respond(status, name) }).await
    }

    /// Echoes the request as JSON: method, path, headers, body length, version.
    pub async fn echo(name: &'static str) -> Upstream {
        Upstream::start(move |seen| async move {
            let headers: serde_json::Map<String, serde_json::Value> = seen
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_owned()),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "service": name,
                "method": seen.method.as_str(),
                "uri": seen.uri.to_string(),
                "headers": headers,
                "body_len": seen.body.len(),
                "body": String::from_utf8_lossy(&seen.body),
                "version": format!("{:?}", seen.version),
            });
            json_response(200, &body)
        })
        .await
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A response with `status` and the text `body`.
pub fn respond(status: u16, body: &str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
    response
}

/// A JSON response.
pub fn json_response(status: u16, body: &serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut response = respond(status, &body.to_string());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A raw TCP server: `script` gets each accepted connection and does whatever it likes.
pub async fn raw<F, Fut>(script: F) -> Upstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw upstream");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(stream));
        }
    });
    Upstream { addr, hits }
}

/// Reads a request head from a raw connection (until the blank line).
pub async fn read_head(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
