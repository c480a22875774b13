//! The listener's HTTP/1.1 server: one client connection, its requests in turn, in the
//! connection's own task.
//!
//! A request head is parsed with `httparse` straight from the connection's read buffer, and its
//! header values share that buffer. The handler's future is polled by this task, which
//! meanwhile watches the connection: a client that closes it (or resets it) before its answer
//! drops the future, which records the request as cancelled. The response head is encoded into
//! a buffer the connection keeps and written with the first part of the body in one vectored
//! write.
//!
//! A request body owns the connection's read side while it is read, and gives it back at its
//! end: a request without a body costs no channel and no lock. The rest of the behaviour is
//! what hyper's server does, which this replaces for HTTP/1 (HTTP/2 stays on hyper):
//!
//! - **Framing** (RFC 9112 §6): `Transfer-Encoding` must end in `chunked` and wins over
//!   `Content-Length`, which is removed, and the connection then closes after the response;
//!   `Content-Length` fields must agree; an HTTP/1.0 request may not be chunked. Anything
//!   else ambiguous is refused with 400, and the connection closed.
//! - **Limits**: a head larger than the limit gets 431; a head that does not arrive within the
//!   header read timeout (counted from when the connection starts waiting for it, so an idle
//!   keep-alive connection is closed too) closes the connection.
//! - **Keep-alive**: HTTP/1.1 unless `Connection: close`, HTTP/1.0 with `keep-alive`; not
//!   after a response whose request body was left unread, nor once the listener shuts down.
//! - `Expect: 100-continue` is answered when the handler first reads the body.
//! - **Upgrades**: a request asking for one carries a [`ClientUpgrade`]; after a `101` response
//!   it resolves to the connection ([`ClientStream`]), bytes already read included.
//! - Responses get a `Date` when they have none, and are framed by `Content-Length` when the
//!   length is known, chunked otherwise (HTTP/1.0: until the connection closes).

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use accord_adapters::GatewayResponse;
use accord_adapters::clock;
use accord_adapters::http::header_list::value_tokens;
use accord_adapters::http::hop_by_hop::{CONNECTION_AT, Present, TRANSFER_ENCODING_AT, UPGRADE_AT};
use accord_adapters::http::wire::{
    Chunk, Decoded, Field, FieldAt, Framing, FramingError, HEAD_READ, NameCache, make_room,
    merge_lengths, poll_write_all, put_decimal,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch};
use tokio::time::Sleep;

use super::{ClientBody, Handler};
use crate::proxy::headers::REQUEST_ID;
use crate::proxy::{Connection, HeadNotes};

/// The most header fields a request head may carry (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The most header fields the gateway adds to a request's map before it is forwarded
/// (`x-request-id` for a route with plugins, `traceparent`, `Host`; the forwarding headers, and a
/// generated `x-request-id` otherwise, are written with the head).
const ADDED_BY_GATEWAY: usize = 3;
/// The most response body bytes gathered into one write.
const GATHER: usize = 64 * 1024;

/// The read side of a client connection: the stream and the bytes read and not yet used.
pub(super) struct Reader {
    io: Box<dyn AsyncRead + Send + Sync + Unpin>,
    buf: BytesMut,
}

/// The write side of a client connection.
pub(super) type Writer = Box<dyn AsyncWrite + Send + Sync + Unpin>;

impl Reader {
    /// A reader of `io`, with `buf` already read from it.
    pub(super) fn new(io: Box<dyn AsyncRead + Send + Sync + Unpin>, buf: BytesMut) -> Box<Self> {
        Box::new(Reader { io, buf })
    }

    /// Reads into the buffer, with room for at least `want` bytes. `Ok(0)` is the end of the
    /// stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        make_room(&mut self.buf, want);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Reads more into the buffer; `Ok(0)` is the end of the stream.
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx, HEAD_READ)).await
    }

    /// What was read and not yet used.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// The settings one connection is served with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    /// The largest request head.
    pub(super) max_head: usize,
    /// Time to receive a request head, counted from when the connection waits for it.
    pub(super) header_read_timeout: Duration,
}

/// Why a request head is refused.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(StatusCode, &'static str);

/// A parsed request head and what the connection needs to know of it.
struct Head {
    request: Request<()>,
    framing: Framing,
    /// The client lets the connection carry another request.
    keep_alive: bool,
    expects_continue: bool,
    wants_upgrade: bool,
    /// What the pipeline would otherwise look for in the head again.
    notes: HeadNotes,
}

/// Polls the connection's head timer only when it does not hold this task's waker yet
/// (`waits`), or has fired since: polling it again would only register the same waker again.
fn poll_timer(timer: Pin<&mut Sleep>, waits: &mut bool, cx: &mut Context<'_>) -> Poll<()> {
    if *waits && !timer.is_elapsed() {
        return Poll::Pending;
    }
    *waits = true;
    timer.poll(cx)
}

/// Whether the gateway is shutting down, asked twice per request. The value is read (under the
/// channel's lock: two atomic read-modify-writes) only once it has changed, which is one atomic
/// load: this connection's receiver is only ever borrowed, never marked as having seen a value,
/// so a change since the channel was made shows.
fn shutting_down(shutdown: &watch::Receiver<bool>) -> bool {
    shutdown.has_changed().unwrap_or(true) && *shutdown.borrow()
}

/// Serves the HTTP/1.1 requests of one connection until it ends, its head read timeout
/// passes, or `shutdown` turns true while it is idle.
pub(super) async fn serve(
    reader: Box<Reader>,
    mut writer: Writer,
    conn: Connection,
    handler: Handler,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) {
    let mut reader = Some(reader);
    let mut head_buf = BytesMut::new();
    let timer = tokio::time::sleep(settings.header_read_timeout);
    tokio::pin!(timer);
    // Whether the timer holds this task's waker: it keeps it until it fires or is reset, so
    // it is polled once per arming, not once per request.
    let mut timer_waits = false;
    // One wait for the shutdown per connection, not one per request: it stays registered
    // while requests are served, and is polled only while the connection is idle.
    let mut stop = shutdown.clone();
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopping);
    // The header names this client sends, parsed once.
    let mut names = NameCache::default();
    loop {
        // Read a request head.
        let Some(mut current) = reader.take() else {
            return;
        };
        let deadline = clock::now() + settings.header_read_timeout;
        let head = loop {
            if !current.buf.is_empty() {
                match parse_head(&mut current.buf, settings.max_head, &mut names) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(Refusal(status, why)) => {
                        tracing::debug!(client = %conn.client, %status, why, "request refused");
                        refuse(&mut writer, status).await;
                        return;
                    }
                }
            }
            let idle = current.buf.is_empty();
            tokio::select! {
                biased;
                read = poll_fn(|cx| current.poll_fill(cx, HEAD_READ)) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = poll_fn(|cx| poll_timer(timer.as_mut(), &mut timer_waits, cx)) => {
                    if clock::now() >= deadline {
                        tracing::debug!(client = %conn.client, "no request head within the header read timeout");
                        return;
                    }
                    timer.as_mut().reset(deadline);
                    timer_waits = false;
                }
                () = &mut stopping, if idle => return,
            }
        };

        // Hand it to the handler, the body reading from the connection.
        let Head {
            request,
            framing,
            keep_alive,
            expects_continue,
            wants_upgrade,
            notes,
        } = head;
        let method_is_head = request.method() == Method::HEAD;
        let version = request.version();
        let (mut returned, mut continue_asked, body) = if framing.is_done() {
            reader = Some(current);
            (None, None, RequestBody::empty())
        } else {
            let (back, returned) = oneshot::channel();
            let (asked, continue_asked) = if expects_continue {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let body = RequestBody {
                reader: Some(current),
                framing,
                back: Some(back),
                continue_asked: asked,
            };
            (Some(returned), continue_asked, body)
        };
        let mut request = request.map(|()| ClientBody::Http1(body));
        let upgrade = wants_upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            request
                .extensions_mut()
                .insert(ClientUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        let mut future = handler(request, conn.clone(), Some(notes));

        // Poll it, watching the client: the body's reader coming back, `100 Continue` asked
        // for, the client closing.
        let mut continuing: SmallVec<[Bytes; 3]> = SmallVec::new();
        let response = poll_fn(|cx| {
            if let Poll::Ready(response) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if let Some(rx) = &mut returned
                && let Poll::Ready(back) = Pin::new(rx).poll(cx)
            {
                reader = back.ok();
                returned = None;
            }
            if let Some(rx) = &mut continue_asked
                && let Poll::Ready(asked) = Pin::new(rx).poll(cx)
            {
                continue_asked = None;
                if asked.is_ok() {
                    continuing.push(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                }
            }
            if !continuing.is_empty() {
                match poll_write_all(&mut writer, cx, &mut continuing, &mut false) {
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
            }
            if let Some(watched) = &mut reader {
                // Bytes that arrive are kept (a pipelined request); the end of the stream, or
                // an error, means the client is gone.
                while watched.buf.len() < settings.max_head {
                    match watched.poll_fill(cx, HEAD_READ) {
                        Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending => break,
                    }
                }
            }
            Poll::Pending
        })
        .await;
        drop(future);
        if !continuing.is_empty()
            && poll_fn(|cx| poll_write_all(&mut writer, cx, &mut continuing, &mut false))
                .await
                .is_err()
        {
            return;
        }
        let Some(response) = response else {
            tracing::debug!(client = %conn.client, "the client closed the connection before its answer");
            return;
        };

        // Write the response.
        let status = response.status();
        let upgrading = status == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_some();
        let mut keep_alive = keep_alive && !shutting_down(&shutdown) && !upgrading;
        if let Some(mut rx) = returned.take()
            && let Ok(back) = rx.try_recv()
        {
            reader = Some(back);
        }
        if reader.is_none() {
            // The body was not read to its end (or was dropped unread): what is left of it
            // stands between this response and the next request, so the connection closes
            // after it.
            keep_alive = false;
        }
        let written = write_response(
            &mut writer,
            &mut head_buf,
            response,
            method_is_head,
            version,
            keep_alive,
        )
        .await;
        let keep_alive = match written {
            Ok(keep_alive) => keep_alive,
            Err(e) => {
                tracing::debug!(client = %conn.client, error = %e, "writing the response failed");
                return;
            }
        };
        if upgrading {
            if let (Some(upgrade), Some(reader)) = (upgrade, reader.take()) {
                let _ = upgrade.send(ClientStream::new(reader, writer));
            }
            return;
        }
        if !keep_alive || shutting_down(&shutdown) {
            let _ = poll_fn(|cx| Pin::new(&mut writer).poll_shutdown(cx)).await;
            return;
        }
    }
}

/// Parses a request head off the front of `buf`: `None` until it is complete.
fn parse_head(
    buf: &mut BytesMut,
    max_head: usize,
    names: &mut NameCache,
) -> Result<Option<Head>, Refusal> {
    let too_large = Refusal(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "head too large",
    );
    // As many as the head has (not zeroed for the most it may have).
    let mut fields: SmallVec<[FieldAt; 16]> = SmallVec::new();
    let (len, method, target, version, count) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(too_large),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(too_large),
            Err(_) => {
                return Err(Refusal(StatusCode::BAD_REQUEST, "malformed request head"));
            }
        };
        if len > max_head {
            return Err(too_large);
        }
        let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
            .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "invalid method"))?;
        let base = buf.as_ptr();
        let path = request.path.unwrap_or_default();
        let at = path.as_ptr() as usize - base as usize;
        fields.extend(request.headers.iter().map(|h| FieldAt::of(h, base)));
        let version = match request.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (
            len,
            method,
            at..at + path.len(),
            version,
            request.headers.len(),
        )
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "invalid request target"))?;

    // The fields that frame the message are noted as they go by, not looked up after.
    // Room for what the gateway adds, so that adding it does not grow the map.
    let mut headers = HeaderMap::with_capacity(count + ADDED_BY_GATEWAY);
    let (mut close, mut keep_alive_token, mut upgrade_token) = (false, false, false);
    let mut expects_continue = false;
    let mut length: Option<Option<u64>> = None;
    let mut present = Present::default();
    let mut request_id_sent = false;
    for (index, field) in fields.iter().enumerate() {
        let Field {
            name,
            value,
            hop_by_hop,
        } = field
            .field(&head, index, names)
            .map_err(|FramingError(why)| Refusal(StatusCode::BAD_REQUEST, why))?;
        if let Some(at) = hop_by_hop {
            present.insert(at);
            if at == CONNECTION_AT {
                for token in value_tokens(value.as_bytes()) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                    upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
        } else if name == CONTENT_LENGTH {
            length = Some(merge_lengths(length, value.as_bytes()));
        } else if name == EXPECT {
            expects_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == REQUEST_ID {
            request_id_sent = true;
        }
        headers.append(name, value);
    }
    let (transfer_encoding, upgrade) = (
        present.contains(TRANSFER_ENCODING_AT),
        present.contains(UPGRADE_AT),
    );

    let mut keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    let framing = if transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        let chunked = accord_adapters::http::header_list::tokens(&headers, &TRANSFER_ENCODING)
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        if !chunked {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "transfer-encoding does not end in chunked",
            ));
        }
        // Transfer-Encoding wins; the Content-Length is removed so that it cannot frame the
        // body again upstream, and such a request ends its connection (RFC 9112 §6.3).
        if headers.remove(CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        Framing::Chunked(Chunk::Size)
    } else {
        match length {
            None | Some(Some(0)) => Framing::Empty,
            Some(Some(length)) => Framing::Length(length),
            Some(None) => {
                return Err(Refusal(StatusCode::BAD_REQUEST, "invalid content-length"));
            }
        }
    };

    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expects_continue: expects_continue && version == Version::HTTP_11,
        wants_upgrade: upgrade && upgrade_token,
        notes: HeadNotes {
            hop_by_hop: present,
            content_length: match framing {
                Framing::Length(length) => Some(length),
                _ if length == Some(Some(0)) && !transfer_encoding => Some(0),
                _ => None,
            },
            request_id_sent,
        },
    }))
}

/// Answers a request head that cannot be served, and ends the connection.
async fn refuse(writer: &mut Writer, status: StatusCode) {
    let mut head = BytesMut::with_capacity(128);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\ndate: ");
    head.put_slice(date().as_bytes());
    head.put_slice(b"\r\n\r\n");
    let mut out: SmallVec<[Bytes; 3]> = SmallVec::new();
    out.push(head.freeze());
    let _ = poll_fn(|cx| poll_write_all(writer, cx, &mut out, &mut false)).await;
    let _ = poll_fn(|cx| Pin::new(&mut *writer).poll_shutdown(cx)).await;
}

/// Writes `response` in full. Returns whether the connection may carry another request:
/// `keep_alive` unless the body had to be delimited by the connection's end.
async fn write_response(
    writer: &mut Writer,
    head: &mut BytesMut,
    mut response: GatewayResponse,
    method_is_head: bool,
    version: Version,
    mut keep_alive: bool,
) -> io::Result<bool> {
    let status = response.status();
    head.reserve(256);
    if status == StatusCode::OK {
        head.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        head.put_slice(b"HTTP/1.1 ");
        head.put_slice(status.as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.put_slice(b"\r\n");
    }
    // The body's framing is the server's to choose.
    response.remove_hop_by_hop_header(&TRANSFER_ENCODING);
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = response.content_length();
    let mut framing = if bodiless {
        response.remove_header(&CONTENT_LENGTH);
        Framing::Empty
    } else {
        match declared {
            Some(Some(0)) => Framing::Empty,
            Some(Some(length)) => Framing::Length(length),
            Some(None) => {
                response.remove_header(&CONTENT_LENGTH);
                framing_for(response.body().size_hint(), version, head)
            }
            None => framing_for(response.body().size_hint(), version, head),
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    response.encode_fields(head);
    if !response.has_header(&DATE) {
        head.put_slice(b"date: ");
        head.put_slice(date().as_bytes());
        head.put_slice(b"\r\n");
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        match (keep_alive, version) {
            (false, _) => head.put_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => head.put_slice(b"connection: keep-alive\r\n"),
            (true, _) => {}
        }
    }
    head.put_slice(b"\r\n");
    if method_is_head {
        framing = Framing::Empty;
    }

    let mut body = response.into_body();
    let mut out: SmallVec<[Bytes; 8]> = SmallVec::new();
    out.push(head.split().freeze());
    let mut queued = 0;
    let mut written = false;
    poll_fn(|cx| {
        loop {
            // What the body has ready goes out in one write with the head (a frame at most 3
            // slices when chunked), up to `GATHER` bytes.
            while !framing.is_done() && out.len() + 3 <= out.inline_size() && queued < GATHER {
                match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        queued += frame.data_ref().map_or(0, Bytes::len);
                        framing.encode(Some(frame), &mut out)
                    }
                    Poll::Ready(None) => framing.encode(None, &mut out),
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(io::Error::other(e)));
                    }
                    Poll::Pending => break,
                }
                .map_err(io::Error::other)?;
            }
            if out.is_empty() {
                return if framing.is_done() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            ready!(poll_write_all(writer, cx, &mut out, &mut written))?;
            queued = 0;
            if framing.is_done() {
                return Poll::Ready(Ok(()));
            }
        }
    })
    .await?;
    Ok(keep_alive)
}

/// The framing of a body with no `Content-Length`, declared in `head`.
fn framing_for(hint: SizeHint, version: Version, head: &mut BytesMut) -> Framing {
    match hint.exact() {
        Some(length) => {
            head.put_slice(b"content-length: ");
            put_decimal(head, length);
            head.put_slice(b"\r\n");
            if length == 0 {
                Framing::Empty
            } else {
                Framing::Length(length)
            }
        }
        None if version == Version::HTTP_10 => Framing::UntilClose,
        None => {
            head.put_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked(Chunk::Size)
        }
    }
}

/// The `Date` value of now, formatted once a second.
fn date() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, value)| {
        if *at != second {
            *at = second;
            *value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        }
        value.clone()
    })
}

/// The body of a request read from an HTTP/1.1 connection. It owns the connection's read side
/// until its end, when it gives it back; a body dropped before its end leaves the connection
/// to close after its response.
pub struct RequestBody {
    reader: Option<Box<Reader>>,
    framing: Framing,
    back: Option<oneshot::Sender<Box<Reader>>>,
    /// Tells the connection to send `100 Continue`, at the first read.
    continue_asked: Option<oneshot::Sender<()>>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The body breaks its framing.
    #[error("invalid request body: {0}")]
    Framing(#[from] FramingError),
    /// The client closed the connection before the body was complete.
    #[error("the client closed the connection before the request body was complete")]
    Closed,
    /// Reading the connection failed.
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
}

impl RequestBody {
    fn empty() -> RequestBody {
        RequestBody {
            reader: None,
            framing: Framing::Empty,
            back: None,
            continue_asked: None,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, RequestBodyError>> {
        if let Some(asked) = self.continue_asked.take() {
            let _ = asked.send(());
        }
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Poll::Ready(Ok(None));
            };
            match self.framing.decode(&mut reader.buf)? {
                Decoded::Frame(frame) => {
                    if self.framing.is_done() {
                        self.give_back();
                    }
                    return Poll::Ready(Ok(Some(frame)));
                }
                Decoded::End => {
                    self.give_back();
                    return Poll::Ready(Ok(None));
                }
                Decoded::Fill(want) => {
                    if ready!(reader.poll_fill(cx, want))? == 0 {
                        return Poll::Ready(Err(RequestBodyError::Closed));
                    }
                }
            }
        }
    }

    /// The body is complete: the connection can read the next request.
    fn give_back(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            let _ = back.send(reader);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match ready!(self.poll_next(cx)) {
            Ok(frame) => Poll::Ready(frame.map(Ok)),
            Err(error) => {
                // The connection is in an unknown state: it closes after the response.
                self.reader = None;
                self.back = None;
                self.framing = Framing::Empty;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

/// The connection of a request that asked for an upgrade, once its `101` response is written:
/// a request extension (extensions are `Clone`; the first to ask gets the connection).
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<ClientStream>>>>);

impl ClientUpgrade {
    /// The connection, once the `101` response is written; an error if the request was
    /// answered otherwise, or the connection ended first.
    pub async fn upgraded(self) -> io::Result<ClientStream> {
        let receiver = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let upgraded = match receiver {
            Some(receiver) => receiver.await.ok(),
            None => None,
        };
        upgraded.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the client connection was not upgraded",
            )
        })
    }
}

/// A client connection with the bytes already read from it in front: an upgraded connection,
/// or one found to speak HTTP/2 by its preface.
pub struct ClientStream {
    reader: Box<Reader>,
    writer: Writer,
}

impl ClientStream {
    pub(super) fn new(reader: Box<Reader>, writer: Writer) -> Self {
        ClientStream { reader, writer }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let reader = &mut self.reader;
        if !reader.buf.is_empty() {
            let n = reader.buf.len().min(buf.remaining());
            buf.put_slice(&reader.buf[..n]);
            reader.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut reader.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use accord_adapters::http::hop_by_hop;
    use http::header::HOST;
    use tokio::time::Instant;

    use super::*;

    fn parse(raw: &str) -> Result<Option<Head>, Refusal> {
        parse_head(&mut BytesMut::from(raw), 8192, &mut NameCache::default())
    }

    #[test]
    fn a_connection_sees_the_shutdown_through_its_receivers_clones() {
        let (stop, watching) = watch::channel(false);
        // As the listener's loop does: it waits on its receiver, and each connection gets a
        // clone of it.
        let mut listener = watching.clone();
        let before = listener.clone();
        assert!(!shutting_down(&before));
        stop.send(true).unwrap();
        assert!(
            shutting_down(&before),
            "a receiver cloned before the shutdown sees it"
        );
        assert!(*listener.borrow_and_update());
        drop(stop);
        assert!(
            shutting_down(&before),
            "and still does once the gateway is gone"
        );
        let (stop, unchanged) = watch::channel(false);
        drop(stop);
        assert!(
            !shutting_down(&unchanged),
            "a channel that never turned is no shutdown"
        );
    }

    #[test]
    fn a_head_is_parsed_with_its_framing() {
        let head = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri(), "/a?b=1");
        assert_eq!(head.request.headers()[HOST], "x");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let old = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
        assert_eq!(old.framing, Framing::Empty);
    }

    /// What the pipeline would look for again is noted as the fields go by: which hop-by-hop
    /// fields came (in any case), the declared length, and whether the client sent an id.
    #[test]
    fn the_head_notes_its_hop_by_hop_fields_declared_length_and_id() {
        let plain = parse("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain.notes.hop_by_hop, Present::default());
        assert_eq!(plain.notes.content_length, None);
        assert!(plain.notes.request_id_sent);

        let upgrade = "GET / HTTP/1.1\r\nconnection: keep-alive, Upgrade\r\nUPGRADE: websocket\r\nKeep-Alive: 5\r\nContent-Length: 0\r\n\r\n";
        let head = parse(upgrade).unwrap().unwrap();
        let present = head.notes.hop_by_hop;
        let noted: Vec<_> = (0..hop_by_hop::COUNT)
            .filter(|&at| present.contains(at))
            .collect();
        assert_eq!(
            noted,
            [CONNECTION_AT, hop_by_hop::KEEP_ALIVE_AT, UPGRADE_AT]
        );
        assert_eq!(head.notes.content_length, Some(0));
        assert!(head.wants_upgrade);
        assert!(!head.notes.request_id_sent);

        let sized = parse("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(sized.notes.content_length, Some(5));
        let chunked =
            parse("POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(chunked.notes.content_length, None, "the length was dropped");
        assert!(chunked.notes.hop_by_hop.contains(TRANSFER_ENCODING_AT));
    }

    #[test]
    fn ambiguous_framing_is_refused_or_ends_the_connection() {
        let bad = StatusCode::BAD_REQUEST;
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
        ] {
            assert_eq!(parse(raw).err().map(|r| r.0), Some(bad), "{raw:?}");
        }
        let both =
            parse("POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(both.framing, Framing::Chunked(Chunk::Size));
        assert!(both.request.headers().get(CONTENT_LENGTH).is_none());
        assert!(!both.keep_alive);
    }

    #[test]
    fn a_head_over_the_limit_gets_431() {
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            parse(&huge).err().map(|r| r.0),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert_eq!(
            parse(&partial).err().map(|r| r.0),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    // The connection loop, driven through a real socket.

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use accord_adapters::body::{full_body, response_body};
    use http::header::{CONNECTION, UPGRADE};
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const SETTINGS: Settings = Settings {
        max_head: 8192,
        header_read_timeout: Duration::from_secs(5),
    };

    /// A client connected to `serve` running `handler`; the sender shuts the listener down.
    async fn connect<F, Fut>(handler: F) -> (TcpStream, watch::Sender<bool>)
    where
        F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = GatewayResponse> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer): (TcpStream, SocketAddr) = listener.accept().await.unwrap();
        let handler: Handler = Arc::new(move |request, _conn, _notes| Box::pin(handler(request)));
        let (stop, shutdown) = watch::channel(false);
        let (read, write) = stream.into_split();
        tokio::spawn(serve(
            Reader::new(Box::new(read), BytesMut::new()),
            Box::new(write),
            Connection::new(peer, "http"),
            handler,
            SETTINGS,
            shutdown,
        ));
        (client, stop)
    }

    /// Echoes the method, target and body.
    async fn echo(request: Request<ClientBody>) -> GatewayResponse {
        let line = format!("{} {} ", request.method(), request.uri());
        let body = request.into_body().collect().await.unwrap().to_bytes();
        GatewayResponse::new(full_body([line.as_bytes(), &body].concat()))
    }

    /// Everything the server sends until it closes the connection.
    async fn read_to_close(client: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut seen))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8(seen).unwrap()
    }

    /// Reads until `count` responses (ending in `end`) have arrived.
    async fn read_until(client: &mut TcpStream, end: &str, count: usize) -> String {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while seen.matches(end).count() < count {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {seen:?}");
            seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        seen
    }

    #[tokio::test]
    async fn requests_follow_each_other_and_pipelined_ones_are_answered_in_order() {
        let (mut client, _stop) = connect(echo).await;
        client
            .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
        let seen = read_until(&mut client, "\r\n\r\n", 2).await;
        let seen = if seen.ends_with("POST /two abc") {
            seen
        } else {
            seen + &read_until(&mut client, "abc", 1).await
        };
        assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
        let first = seen.find("GET /one ").unwrap();
        assert!(first < seen.find("POST /two abc").unwrap(), "{seen}");
        assert!(seen.contains("content-length: 9\r\n") && seen.contains("date: "));
        assert!(!seen.contains("connection: close"));
        // A chunked body on the same connection, then `Connection: close`.
        client
            .write_all(b"POST /three HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        let last = read_to_close(&mut client).await;
        assert!(last.ends_with("\r\n\r\nPOST /three abcde"), "{last}");
        assert!(last.contains("connection: close\r\n"), "{last}");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_cancels_its_request() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let (mut client, _stop) = connect(move |_request| {
            struct Guard(Arc<AtomicBool>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let guard = Guard(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                GatewayResponse::new(full_body("never"))
            }
        })
        .await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        drop(client);
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the handler's future outlived its client");
    }

    #[tokio::test]
    async fn continue_is_sent_when_the_body_is_read_and_an_unread_body_closes_the_connection() {
        let (mut client, _stop) = connect(|request: Request<ClientBody>| async move {
            if request.uri() == "/refuse" {
                let mut response = GatewayResponse::new(full_body("no"));
                *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                return response;
            }
            echo(request).await
        })
        .await;
        client
            .write_all(b"PUT /take HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .await
            .unwrap();
        let interim = read_until(&mut client, "\r\n\r\n", 1).await;
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"ok").await.unwrap();
        let answer = read_until(&mut client, "PUT /take ok", 1).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        // Answered without reading the body: no `100 Continue`, and the connection ends.
        client
            .write_all(b"PUT /refuse HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .await
            .unwrap();
        let refused = read_to_close(&mut client).await;
        assert!(
            refused.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{refused}"
        );
        assert!(refused.contains("connection: close\r\n"), "{refused}");
        assert!(!refused.contains("100 Continue"), "{refused}");
    }

    #[tokio::test]
    async fn a_body_dropped_unread_before_the_answer_closes_the_connection_and_says_so() {
        let (mut client, _stop) = connect(|request: Request<ClientBody>| async move {
            drop(request);
            tokio::time::sleep(Duration::from_millis(20)).await;
            GatewayResponse::new(full_body("later"))
        })
        .await;
        client
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
            .await
            .unwrap();
        let answer = read_to_close(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_declared_empty_body_ends_with_its_head() {
        let (mut client, _stop) = connect(|request: Request<ClientBody>| async move {
            let mut response = GatewayResponse::new(accord_adapters::body::empty_body());
            *response.status_mut() = StatusCode::CREATED;
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            response.headers_mut().insert(
                "x-path",
                HeaderValue::from_str(request.uri().path()).unwrap(),
            );
            response
        })
        .await;
        client
            .write_all(b"PUT /a HTTP/1.1\r\nContent-Length: 0\r\n\r\nPUT /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let seen = read_until(&mut client, "\r\n\r\n", 2).await;
        assert_eq!(
            seen.matches("HTTP/1.1 201 Created\r\n").count(),
            2,
            "{seen}"
        );
        assert!(seen.contains("x-path: /b\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn bodies_of_unknown_length_are_chunked_or_end_the_connection_and_head_gets_none() {
        let streamed = || {
            let frames = futures_util::stream::iter(
                ["ab", "cd"]
                    .map(|s| Ok::<_, accord_adapters::BoxError>(Frame::data(Bytes::from(s)))),
            );
            GatewayResponse::new(response_body(StreamBody::new(frames)))
        };
        let (mut client, _stop) = connect(move |_request| {
            let response = streamed();
            async move { response }
        })
        .await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let chunked = read_until(&mut client, "0\r\n\r\n", 1).await;
        assert!(
            chunked.contains("transfer-encoding: chunked\r\n"),
            "{chunked}"
        );
        assert!(
            chunked.ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
            "{chunked}"
        );
        client.write_all(b"HEAD / HTTP/1.1\r\n\r\n").await.unwrap();
        let head = read_until(&mut client, "\r\n\r\n", 1).await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let old = read_to_close(&mut client).await;
        assert!(old.contains("connection: close\r\n"), "{old}");
        assert!(old.ends_with("\r\n\r\nabcd"), "{old}");
        assert!(!old.contains("transfer-encoding"), "{old}");
    }

    #[tokio::test]
    async fn an_upgraded_connection_carries_the_bytes_that_followed_the_request() {
        let (mut client, _stop) = connect(|mut request: Request<ClientBody>| async move {
            let upgrade = request.extensions_mut().remove::<ClientUpgrade>().unwrap();
            tokio::spawn(async move {
                let mut upgraded = upgrade.upgraded().await.unwrap();
                let mut first = [0u8; 5];
                upgraded.read_exact(&mut first).await.unwrap();
                upgraded.write_all(&first).await.unwrap();
            });
            let mut response = GatewayResponse::new(accord_adapters::body::empty_body());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("echo"));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            response
        })
        .await;
        client
            .write_all(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nhel")
            .await
            .unwrap();
        let head = read_until(&mut client, "\r\n\r\n", 1).await;
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        client.write_all(b"lo").await.unwrap();
        let echoed = read_until(&mut client, "hello", 1).await;
        assert_eq!(echoed, "hello");
    }

    /// The connection's head timer, armed when it opened, fires while the connection waits for
    /// its second request, before that wait's deadline: it is moved to that deadline, and the
    /// connection still closes there.
    #[tokio::test(start_paused = true)]
    async fn the_head_timer_moved_to_a_later_wait_still_closes_the_connection() {
        let (mut client, _stop) = connect(echo).await;
        let opened = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = read_until(&mut client, "GET / ", 1).await;
        let waiting = Instant::now();
        assert_eq!(read_to_close(&mut client).await, "");
        assert!(waiting.elapsed() >= SETTINGS.header_read_timeout);
        assert!(opened.elapsed() < SETTINGS.header_read_timeout * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_at_the_header_timeout_or_at_shutdown() {
        let (mut client, _stop) = connect(echo).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = read_until(&mut client, "GET / ", 1).await;
        let before = Instant::now();
        let rest = read_to_close(&mut client).await;
        assert_eq!(rest, "");
        assert!(before.elapsed() >= SETTINGS.header_read_timeout);

        let (mut client, stop) = connect(echo).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = read_until(&mut client, "GET / ", 1).await;
        let before = Instant::now();
        stop.send_replace(true);
        assert_eq!(read_to_close(&mut client).await, "");
        assert!(before.elapsed() < SETTINGS.header_read_timeout);
    }
}
