#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS on both sides: an HTTPS listener that negotiates HTTP/2 by ALPN, and an upstream that
//! requires mutual TLS, reached through a private CA and an SNI name.

use std::sync::Arc;

use accord_tests::pki::Pki;
use accord_tests::upstream::Upstream;
use accord_tests::{TestGateway, get};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[tokio::test]
async fn an_https_listener_speaks_http2_by_alpn() {
    let pki = Pki::new();
    let echo = Upstream::echo("echo").await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\n    tls: {{cert_file: {}, key_file: {}}}\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        echo.addr
    );
    let gateway = TestGateway::start(&yaml).await;

    let connector = TlsConnector::from(Arc::new(pki.client_config(&[b"h2", b"http/1.1"])));
    let tcp = TcpStream::connect(gateway.running.address()).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!(
        "https://localhost:{}/secure",
        gateway.running.address().port()
    ))
    .body(Full::<Bytes>::default())
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(body["uri"], "/secure");

    // A client that only speaks HTTP/1.1 gets HTTP/1.1 on the same listener.
    let connector = TlsConnector::from(Arc::new(pki.client_config(&[b"http/1.1"])));
    let tcp = TcpStream::connect(gateway.running.address()).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/h1")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_11);
}

/// An HTTPS upstream that requires a client certificate and reports whether it saw one.
async fn mtls_upstream(pki: &Pki) -> std::net::SocketAddr {
    let acceptor = TlsAcceptor::from(Arc::new(pki.server_config_requiring_client_cert()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let client_certs = tls.get_ref().1.peer_certificates().map_or(0, |c| c.len());
                let service = hyper::service::service_fn(
                    move |_request: http::Request<hyper::body::Incoming>| {
                        let body = format!("sni={sni} client_certs={client_certs}");
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_requiring_mutual_tls_is_reached_with_the_private_ca_and_sni() {
    let pki = Pki::new();
    let upstream = mtls_upstream(&pki).await;
    let backend = |with_client_cert: bool| {
        let identity = if with_client_cert {
            format!(
                ", cert_file: {}, key_file: {}",
                pki.client_cert.display(),
                pki.client_key.display()
            )
        } else {
            String::new()
        };
        format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  secure:\n    http:\n      addresses: [\"{upstream}\"]\n      tls: {{ca_file: {}, server_name: upstream.test{identity}}}\nroutes:\n  - id: secure\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: secure}}]\n",
            pki.ca.display()
        )
    };
    let gateway = TestGateway::start(&backend(true)).await;
    let reply = get(&gateway.url("/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "sni=upstream.test client_certs=1");

    let without_identity = TestGateway::start(&backend(false)).await;
    let reply = get(&without_identity.url("/")).await;
    assert_eq!(
        reply.status, 502,
        "the upstream refuses a gateway without a client certificate"
    );
    assert_eq!(reply.json()["code"], "upstream_auth_failed");
    assert_eq!(
        without_identity
            .metric(
                "accord_upstream_errors_total{backend=\"secure\",provider=\"http\",kind=\"auth\"}"
            )
            .await,
        1.0,
        "an auth failure is not retried"
    );
}

/// An HTTPS upstream speaking HTTP/1.1 and HTTP/2 (chosen by ALPN) that answers with the
/// version and the number of the TLS connection the request came on.
async fn counting_https_upstream(pki: &Pki) -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut config = pki.server_config();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let number = connections.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?} connection {number}", request.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstreams_keep_one_connection_alive_over_http1_and_speak_http2_by_alpn() {
    let pki = Pki::new();
    let upstream = counting_https_upstream(&pki).await;
    let config = |protocol: &str| {
        format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  secure:\n    http:\n      addresses: [\"{upstream}\"]\n      protocol: {protocol}\n      tls: {{ca_file: {}, server_name: upstream.test}}\nroutes:\n  - id: secure\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: secure}}]\n",
            pki.ca.display()
        )
    };
    let http1 = TestGateway::start(&config("http1")).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        let reply = get(&http1.url("/")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        answers.push(reply.text());
    }
    assert!(
        answers.iter().all(|a| a == "HTTP/1.1 connection 1"),
        "five requests over one kept-alive TLS connection: {answers:?}"
    );

    let http2 = TestGateway::start(&config("http2")).await;
    let reply = get(&http2.url("/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "HTTP/2.0 connection 2");
}
