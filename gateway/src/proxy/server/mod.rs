//! Listeners: accept connections (up to `limits.max_connections`), terminate TLS with ALPN,
//! serve HTTP/1.1 ([`http1`], the gateway's own server) and HTTP/2 (hyper's; h2c by its
//! preface, or `h2` by ALPN), and drain on shutdown.

mod http1;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use accord_adapters::clock;
use accord_adapters::{BoxError, GatewayResponse};
use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

pub use self::http1::{ClientStream, ClientUpgrade, RequestBody as Http1Body, RequestBodyError};

use crate::config::model::Limits;
use crate::proxy::{Connection, HeadNotes};
use crate::stats::GatewayStats;

/// What serves the requests of one listener.
pub type Handler = Arc<
    dyn Fn(
            Request<ClientBody>,
            Connection,
            Option<HeadNotes>,
        ) -> Pin<Box<dyn Future<Output = GatewayResponse> + Send>>
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

/// The HTTP/2 server settings the limits ask for.
fn http2_builder(limits: &Limits) -> http2::Builder<StreamExecutor> {
    let mut builder = http2::Builder::new(StreamExecutor);
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    builder
}

/// Spawns each HTTP/2 stream's task as the connection's own is spawned: each poll of it reads
/// the clock once (see `accord_adapters::clock`).
#[derive(Clone, Copy)]
struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(clock::read_once_per_poll(future));
    }
}

/// The body of a client's request, as the server it came through reads it.
pub enum ClientBody {
    /// From an HTTP/1.1 connection ([`http1`]).
    Http1(Http1Body),
    /// From an HTTP/2 stream (hyper).
    Http2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
        }
    }
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
    let http2 = Arc::new(http2_builder(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // HTTP/2 connections are drained by hyper's graceful shutdown; HTTP/1.1 connections end
    // on their own once `shutdown` turns, and each holds a sender of `open` until it ends.
    let graceful = GracefulShutdown::new();
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let settings = http1::Settings {
        max_head: limits.max_header_size.max(8192),
        header_read_timeout: limits.header_read_timeout,
    };

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
        let served = Served {
            conn: Connection::new(client, scheme),
            handler: handler.clone(),
            http2: http2.clone(),
            watcher: graceful.watcher(),
            settings,
            shutdown: shutdown.clone(),
        };
        let tls = tls.clone();
        let open = open.clone();
        // Each poll of the connection reads the clock once, however many times its request
        // path asks for the time (see `accord_adapters::clock`).
        tokio::spawn(clock::read_once_per_poll(async move {
            // Held until the connection ends, however it ends.
            let _held = (permit, active, open);
            served.serve(stream, tls).await;
        }));
    }

    drop(listener);
    drop(open);
    let drained = async {
        graceful.shutdown().await;
        let _ = all_closed.recv().await;
    };
    if tokio::time::timeout(limits.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace period; closing them");
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a plain-text client that starts with it
/// speaks HTTP/2 with prior knowledge (h2c).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one accepted connection is served with.
struct Served {
    conn: Connection,
    handler: Handler,
    http2: Arc<http2::Builder<StreamExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    settings: http1::Settings,
    shutdown: watch::Receiver<bool>,
}

impl Served {
    /// Serves one client connection, over TLS when there is an acceptor (the handshake
    /// bounded by the header read timeout), until it ends or the shutdown closes it.
    /// Serves one connection. Only plaintext HTTP/1.1 is served inline; HTTP/2 and TLS are
    /// boxed: a connection's task is as large as the largest way it may be served (7.8 KiB
    /// with them inline, for every connection), and most connections are plaintext HTTP/1.1.
    async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let timeout = self.settings.header_read_timeout;
        let Some(acceptor) = tls else {
            let (read, write) = stream.into_split();
            let mut reader = http1::Reader::new(Box::new(read), BytesMut::new());
            let writer: http1::Writer = Box::new(write);
            match tokio::time::timeout(timeout, sniff_preface(&mut reader)).await {
                Ok(Ok(true)) => {
                    Box::pin(self.serve_http2(http1::ClientStream::new(reader, writer))).await;
                }
                Ok(Ok(false)) => self.serve_http1(reader, writer).await,
                Ok(Err(_)) | Err(_) => {}
            }
            return;
        };
        Box::pin(self.serve_tls(stream, acceptor)).await;
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        let client = self.conn.client;
        let timeout = self.settings.header_read_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    self.serve_http2(tls_stream).await;
                } else {
                    let (read, write) = tokio::io::split(tls_stream);
                    let reader = http1::Reader::new(Box::new(read), BytesMut::new());
                    self.serve_http1(reader, Box::new(write)).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
        }
    }

    async fn serve_http1(self, reader: Box<http1::Reader>, writer: http1::Writer) {
        http1::serve(
            reader,
            writer,
            self.conn,
            self.handler,
            self.settings,
            self.shutdown,
        )
        .await;
    }

    async fn serve_http2<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let client = self.conn.client;
        let conn = self.conn;
        let handler = self.handler;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = handler(request.map(ClientBody::Http2), conn.clone(), None);
            async move { Ok::<_, Infallible>(response.await.into_http()) }
        });
        let connection = self.http2.serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(%client, error = %e, "connection ended with an error");
        }
    }
}

/// Reads until the first bytes tell whether they are the HTTP/2 preface (`false`: HTTP/1);
/// what was read stays in the reader's buffer.
async fn sniff_preface(reader: &mut http1::Reader) -> io::Result<bool> {
    loop {
        let first = reader.buffered();
        if first.len() >= PREFACE.len() {
            return Ok(first.starts_with(PREFACE));
        }
        if !PREFACE.starts_with(first) {
            return Ok(false);
        }
        if reader.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
