//! Listeners: accept connections (up to `limits.max_connections`), terminate TLS with ALPN,
//! serve HTTP/1.1 and HTTP/2 (h2c by preface) with upgrades, and drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use accord_adapters::ResponseBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::model::Limits;
use crate::proxy::Connection;
use crate::stats::GatewayStats;

/// What serves the requests of one listener.
pub type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
            Connection,
        ) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
        + Send
        + Sync,
>;

/// A TLS acceptor for a certificate and key, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = accord_adapters::tls::load_certs(cert)?;
    let key = accord_adapters::tls::load_key(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(accord_adapters::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds `address`, naming it in the error.
pub async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address} ({what}): {e}"))
}

/// The HTTP/1.1 and HTTP/2 server settings the limits ask for.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    builder
}

/// A client connection counted as open until dropped.
struct OpenConnection(Arc<GatewayStats>);

impl OpenConnection {
    fn new(stats: Arc<GatewayStats>) -> Self {
        stats.connections_accepted.fetch_add(1, Relaxed);
        stats.connections_active.fetch_add(1, Relaxed);
        Self(stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Relaxed);
    }
}

/// Serves `listener` until `shutdown` turns true, then lets in-flight requests finish for up to
/// `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stats: Option<Arc<GatewayStats>>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let scheme = if tls.is_some() { "https" } else { "http" };

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(stats) = &stats {
                stats.connections_rejected.fetch_add(1, Relaxed);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let active = stats.clone().map(OpenConnection::new);
        let conn = Connection::new(client, scheme);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = handler(request, conn.clone());
            async move { Ok::<_, Infallible>(response.await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // Held until the connection ends, however it ends.
            let _held = (permit, active);
            serve_connection(
                stream,
                client,
                tls,
                &builder,
                service,
                watcher,
                handshake_timeout,
            )
            .await;
        });
    }

    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace period; closing them");
    }
}

/// One client connection, over TLS when there is an acceptor (the handshake bounded by
/// `handshake_timeout`), until it ends or the graceful shutdown closes it.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    handshake_timeout: std::time::Duration,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ResponseBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let served = match tls {
        None => {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(connection.into_owned()).await
        }
        Some(acceptor) => {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                    Ok(())
                }
                Err(_) => {
                    tracing::debug!(%client, "TLS handshake timed out");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(%client, error = %e, "connection ended with an error");
    }
}
