//! Accord's HTTP/1.1 client codec: one exchange at a time on a pooled upstream connection, in
//! the task of the request that holds the connection.
//!
//! The request head is encoded into a buffer the connection keeps and written together with a
//! buffered body in one vectored write; a streamed body follows with the framing it needs
//! (`Content-Length` when known, chunked otherwise). The response head is parsed with
//! `httparse` straight from the connection's read buffer, its header values share that buffer,
//! and informational (1xx) answers are passed over. The response body is framed by RFC 9112
//! §6.3: no body (`HEAD`, 204, 304), `Content-Length`, chunked, or the end of the connection.
//! A response whose body is already in the read buffer gives its connection back before the
//! response is returned.
//!
//! `Connection` fields that only say `close` or `keep-alive`, and `Keep-Alive`, are read by the
//! codec and left out of the response head: they are about this connection, and the gateway
//! would only remove them again (except from a `101`, whose `Connection: upgrade` goes on).
//! When the other fields are all end-to-end (and at most one is `Content-Length`), they stay
//! where they are in the response head's bytes, unparsed: see [`crate::response`]. Otherwise
//! they are parsed into a map, for the gateway to strip.
//!
//! A connection can carry another request when the response ended cleanly with nothing left
//! unread, the request was written in full, and neither side asked to close it. An upstream that
//! answers before it has read the whole request body is answered, and its connection closed.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::connector::UpstreamIo;
use super::hop_by_hop;
use super::wire::{
    Chunk, Decoded, FieldAt, Framing, FramingError, HEAD_READ, NameCache, make_room, merge_lengths,
    parse_length, poll_write_all, put_decimal, put_field,
};
use crate::backend::GatewayRequest;
use crate::body::{RequestBody, full_body, response_body};
use crate::box_in_place;
use crate::error::BoxError;
use crate::response::{GatewayResponse, Noted, UpstreamFields, WireFields};

/// The largest response head accepted (status line and header fields).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields a response head may carry (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Http1Error {
    /// The upstream's answer is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The client's request body failed while it was being sent.
    #[error("the request body failed")]
    ClientBody(#[source] BoxError),
    /// The request cannot be sent as HTTP/1.1.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The upstream closed the connection before the response was complete.
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    /// Reading or writing the connection failed (TLS alerts arrive here too).
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    /// The try's deadline passed before the response head was complete.
    #[error("the upstream did not answer before the try's deadline")]
    PastDeadline,
}

impl Http1Error {
    fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidResponse(message.into())
    }

    fn framing(error: FramingError) -> Self {
        Self::InvalidResponse(error.0.to_owned())
    }
}

/// A failed exchange, and the request when none of it was written (it can be sent again on
/// another connection).
pub(crate) struct SendError {
    pub(crate) unsent: Option<GatewayRequest>,
    pub(crate) error: Http1Error,
}

/// A response head and how its body is framed.
pub(crate) struct ResponseHead {
    status: StatusCode,
    version: Version,
    fields: UpstreamFields,
    framing: Framing,
}

impl ResponseHead {
    /// The response, with `body`.
    fn into_response(self, body: crate::body::ResponseBody) -> GatewayResponse {
        GatewayResponse::from_head(self.status, self.version, self.fields, body)
    }
}

/// Where a connection's responses go when their bodies are complete.
pub(crate) trait ConnectionPool: Send + Sync {
    /// Takes back a connection whose exchange is complete.
    fn put(&self, conn: Box<Connection>);
}

/// An HTTP/1.1 connection to an upstream.
pub(crate) struct Connection {
    io: UpstreamIo,
    /// Bytes read and not yet consumed; response header values and body chunks are split
    /// off it without a copy.
    read: BytesMut,
    /// Where request heads are encoded (its allocation is reused once a head is written).
    head: BytesMut,
    /// Cleared when the connection must not carry another request.
    reusable: bool,
    /// The response header names the upstream has sent.
    names: NameCache,
    /// Watches the exchange's deadline (see [`poll_past`]).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    pub(crate) fn new(io: UpstreamIo) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            head: BytesMut::new(),
            reusable: true,
            names: NameCache::default(),
            timer: None,
        }
    }

    /// Whether the exchange left the connection able to carry another request: kept alive,
    /// with nothing unread.
    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable && self.read.is_empty()
    }

    /// Whether the connection can carry a new request now: reusable and still open. An
    /// upstream that closed the connection while it was idle is noticed here, without
    /// blocking.
    pub(crate) fn is_open(&mut self) -> bool {
        if !self.is_reusable() {
            return false;
        }
        let mut probe = [0u8; 1];
        // Anything but "would block" is the end of the stream, an error, or bytes nobody asked
        // for: none can be reused.
        if let UpstreamIo::Plain(tcp) = &self.io {
            // Answered from the reactor's readiness, without a system call or a waker, while
            // nothing has arrived: the usual case.
            return matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        // TLS may hold bytes of its own (a close_notify): asked through the stream.
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Sends `request` (origin-form target, `Host` set) and reads the response head. The body
    /// is read by [`receive`]'s body, which owns the connection until it ends.
    pub(crate) async fn send(
        &mut self,
        request: GatewayRequest,
    ) -> Result<ResponseHead, SendError> {
        let deadline = request.deadline();
        let body_framing = match self.encode_head(&request) {
            Ok(framing) => framing,
            Err(error) => {
                // Not sendable on any connection: not offered to another.
                self.head.clear();
                return Err(SendError {
                    unsent: None,
                    error,
                });
            }
        };
        let head_only = request.body().as_bytes().is_none() && !request.body().is_end_stream();
        let method = request.method().clone();
        let mut written = false;
        // In a block of its own: what is written is gone before the exchange, so that the
        // future keeps one write queue, not two.
        let sent = {
            let mut out: SmallVec<[Bytes; 3]> = SmallVec::new();
            out.push(self.head.split().freeze());
            // A buffered body goes out with the head; the request stays whole until a byte is
            // written, so that it can be sent again elsewhere.
            if let Some(bytes) = request.body().as_bytes() {
                out.push(bytes.clone());
            }
            std::future::poll_fn(|cx| {
                match poll_write_all(&mut self.io, cx, &mut out, &mut written) {
                    Poll::Pending => {
                        ready!(poll_past(&mut self.timer, deadline, cx));
                        Poll::Ready(Err(Http1Error::PastDeadline))
                    }
                    Poll::Ready(sent) => Poll::Ready(sent.map_err(Http1Error::from)),
                }
            })
            .await
        };
        if let Err(error) = sent {
            self.reusable = false;
            // Past its deadline, a try is not sent again elsewhere.
            let resendable = !written && !matches!(error, Http1Error::PastDeadline);
            return Err(SendError {
                unsent: resendable.then_some(request),
                error,
            });
        }
        let streamed = head_only.then(|| request.into_body());
        self.exchange(streamed, body_framing, &method, deadline)
            .await
            .map_err(|error| {
                self.reusable = false;
                SendError {
                    unsent: None,
                    error,
                }
            })
    }

    /// Streams the rest of the request body, if any, while reading the response head, until
    /// `deadline`.
    async fn exchange(
        &mut self,
        mut body: Option<RequestBody>,
        mut framing: Framing,
        method: &Method,
        deadline: Option<Instant>,
    ) -> Result<ResponseHead, Http1Error> {
        let mut out: SmallVec<[Bytes; 3]> = SmallVec::new();
        let mut written = true;
        std::future::poll_fn(|cx| {
            let polled =
                self.poll_exchange(cx, &mut body, &mut framing, &mut out, &mut written, method);
            if polled.is_pending() {
                ready!(poll_past(&mut self.timer, deadline, cx));
                return Poll::Ready(Err(Http1Error::PastDeadline));
            }
            polled
        })
        .await
    }

    /// One step of [`Connection::exchange`].
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut Option<RequestBody>,
        framing: &mut Framing,
        out: &mut SmallVec<[Bytes; 3]>,
        written: &mut bool,
        method: &Method,
    ) -> Poll<Result<ResponseHead, Http1Error>> {
        while let Some(stream) = body {
            if !out.is_empty() {
                match poll_write_all(&mut self.io, cx, out, written) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => break,
                }
            }
            if *framing == Framing::Empty {
                *body = None;
                break;
            }
            match Pin::new(stream).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(Http1Error::ClientBody(error)));
                }
                Poll::Ready(frame) => framing
                    .encode(frame.and_then(Result::ok), out)
                    .map_err(|e| Http1Error::InvalidRequest(e.0))?,
            }
        }
        let head = ready!(self.poll_response_head(cx, method))?;
        if body.is_some() {
            // Answered before the request was complete: the rest is never sent, so the
            // connection is in no state for another request.
            self.reusable = false;
        }
        Poll::Ready(Ok(head))
    }

    /// Encodes the request line and header fields, with the body framing the request needs.
    fn encode_head(&mut self, request: &GatewayRequest) -> Result<Framing, Http1Error> {
        let head = &mut self.head;
        head.reserve(512);
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        head.put_slice(request.method().as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(target.as_bytes());
        head.put_slice(b" HTTP/1.1\r\n");
        match request.forwarding() {
            Some(forwarding) => forwarding.encode_with(request.headers(), head),
            None => {
                for (name, value) in request.headers() {
                    put_field(head, name, value);
                }
            }
        }
        let body = request.body();
        let framing = match request.headers().get(CONTENT_LENGTH) {
            Some(value) => Framing::Length(
                parse_length(value.as_bytes())
                    .ok_or(Http1Error::InvalidRequest("invalid content-length"))?,
            ),
            None if body.is_end_stream() => {
                // RFC 9110 §8.6: a method whose requests usually carry a body says "none".
                let expects_body = matches!(
                    *request.method(),
                    Method::POST | Method::PUT | Method::PATCH
                );
                if expects_body {
                    head.put_slice(b"content-length: 0\r\n");
                }
                Framing::Empty
            }
            None => match body.size_hint().exact() {
                Some(length) => {
                    head.put_slice(b"content-length: ");
                    put_decimal(head, length);
                    head.put_slice(b"\r\n");
                    Framing::Length(length)
                }
                None => {
                    head.put_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked(Chunk::Size)
                }
            },
        };
        head.put_slice(b"\r\n");
        // A buffered body is written with the head, in full.
        Ok(match (framing, body.as_bytes()) {
            (Framing::Length(0), None) => Framing::Empty,
            (Framing::Length(length), Some(bytes)) if length == bytes.len() as u64 => {
                Framing::Empty
            }
            (Framing::Length(_), Some(_)) => {
                return Err(Http1Error::InvalidRequest(
                    "content-length does not match the body",
                ));
            }
            (framing, _) => framing,
        })
    }

    /// Reads until a final response head is complete, passing over 1xx answers.
    fn poll_response_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<ResponseHead, Http1Error>> {
        loop {
            if !self.read.is_empty() {
                match self.parse_response_head(method)? {
                    Parsed::Final(head) => return Poll::Ready(Ok(head)),
                    Parsed::Informational => continue,
                    Parsed::Partial if self.read.len() >= MAX_HEAD_BYTES => {
                        return Poll::Ready(Err(Http1Error::invalid(format!(
                            "response head larger than {} KiB",
                            MAX_HEAD_BYTES / 1024
                        ))));
                    }
                    Parsed::Partial => {}
                }
            }
            if ready!(self.poll_fill(cx, HEAD_READ))? == 0 {
                return Poll::Ready(Err(Http1Error::Closed));
            }
        }
    }

    fn parse_response_head(&mut self, method: &Method) -> Result<Parsed, Http1Error> {
        // The fields that frame the message are noted as they go by, not looked up after.
        // Those about this connection are left out; the rest are kept as they came when all
        // are end-to-end, and parsed into a map otherwise (a rare response). They are kept as
        // offsets into the buffer: the parsed fields borrow it, and it is split off (without
        // moving its bytes) once they are known.
        let (mut close, mut keep_alive_token) = (false, false);
        let (mut transfer_encoding, mut chunked) = (false, false);
        let mut length: Option<Option<u64>> = None;
        let mut lengths = 0;
        let (mut date, mut request_id) = (false, false);
        let mut kept: SmallVec<[FieldAt; 8]> = SmallVec::new();
        let (len, code, version, end_to_end) =
            {
                let mut headers =
                    [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
                let mut response = httparse::Response::new(&mut []);
                let len = match httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(&mut response, &self.read, &mut headers)
                {
                    Ok(httparse::Status::Complete(len)) => len,
                    Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
                    Err(error) => return Err(Http1Error::invalid(error.to_string())),
                };
                let code = response.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    self.read.advance(len);
                    return Ok(Parsed::Informational);
                }
                let base = self.read.as_ptr();
                let mut end_to_end = code != 101;
                kept.reserve(response.headers.len());
                for field in response.headers.iter() {
                    let (name, value) = (field.name.as_bytes(), field.value);
                    let at = FieldAt::of(field, base);
                    if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
                        length = Some(merge_lengths(length, value));
                        lengths += 1;
                        kept.push(at);
                        continue;
                    }
                    if name.len() == 4 && name.eq_ignore_ascii_case(b"date") {
                        date = true;
                        kept.push(at);
                        continue;
                    }
                    if name.len() == 12 && name.eq_ignore_ascii_case(b"x-request-id") {
                        request_id = true;
                        kept.push(at);
                        continue;
                    }
                    match hop_by_hop::position(name) {
                        None => kept.push(at),
                        Some(hop_by_hop::CONNECTION_AT) => {
                            let mut other = false;
                            for token in super::header_list::value_tokens(value) {
                                let is_close = token.eq_ignore_ascii_case(b"close");
                                let is_keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                                close |= is_close;
                                keep_alive_token |= is_keep_alive;
                                other |= !is_close && !is_keep_alive;
                            }
                            // A field that only manages this connection is the codec's, not the
                            // response's (an upgrade's, or one naming other fields, goes on).
                            if other || code == 101 {
                                end_to_end = false;
                                kept.push(at);
                            }
                        }
                        Some(hop_by_hop::KEEP_ALIVE_AT) if code != 101 => {}
                        Some(hop_by_hop::TRANSFER_ENCODING_AT) => {
                            transfer_encoding = true;
                            if let Some(last) = super::header_list::value_tokens(value).last() {
                                chunked = last.eq_ignore_ascii_case(b"chunked");
                            }
                            end_to_end = false;
                            kept.push(at);
                        }
                        Some(_) => {
                            end_to_end = false;
                            kept.push(at);
                        }
                    }
                }
                let version = match response.version {
                    Some(0) => Version::HTTP_10,
                    _ => Version::HTTP_11,
                };
                (len, code, version, end_to_end)
            };
        let head = self.read.split_to(len).freeze();
        let status = StatusCode::from_u16(code)
            .map_err(|_| Http1Error::invalid(format!("status code {code}")))?;

        let mut keep_alive = match version {
            Version::HTTP_10 => keep_alive_token && !close,
            _ => !close,
        };
        let framing = if *method == Method::HEAD || matches!(code, 101 | 204 | 304) {
            keep_alive &= code != 101;
            Framing::Empty
        } else if transfer_encoding {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which is dropped so
            // that it cannot frame the body again downstream; such a message ends its
            // connection.
            if lengths > 0 {
                kept.retain(|f| !head[f.name_range()].eq_ignore_ascii_case(b"content-length"));
                keep_alive = false;
            }
            if chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::UntilClose
            }
        } else if let Some(length) = length {
            Framing::Length(length.ok_or_else(|| Http1Error::invalid("content-length"))?)
        } else {
            Framing::UntilClose
        };
        if framing == Framing::UntilClose || !keep_alive {
            self.reusable = false;
        }

        let fields = if end_to_end && lengths <= 1 {
            let noted = Noted {
                content_length: length,
                date,
                request_id,
            };
            UpstreamFields::Wire(box_in_place!(WireFields::new(head, kept, noted)))
        } else {
            // Room for the response's `x-request-id`, so that adding it does not grow the map.
            let mut headers = HeaderMap::with_capacity(kept.len() + 1);
            for (index, field) in kept.iter().enumerate() {
                let field = field
                    .field(&head, index, &mut self.names)
                    .map_err(Http1Error::framing)?;
                headers.append(field.name, field.value);
            }
            UpstreamFields::Map(Box::new(headers))
        };
        Ok(Parsed::Final(ResponseHead {
            status,
            version,
            fields,
            framing,
        }))
    }

    /// Reads into the buffer, asking for at least `want` bytes of room. `Ok(0)` is the end of
    /// the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        make_room(&mut self.read, want);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// Ready once `deadline` has passed; never without one.
///
/// The connection's timer is armed at the first deadline it watches and moved only when it
/// fires before the deadline of the exchange now watched (or when a deadline comes earlier than
/// it), as nginx's timers are: the tries of a route, whose deadlines only move later, register
/// and cancel no timer each. A timer that fires early is re-armed once per deadline period.
fn poll_past(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(deadline) = deadline else {
        return Poll::Pending;
    };
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    loop {
        ready!(timer.as_mut().poll(cx));
        // It fired at its deadline or later.
        if timer.deadline() >= deadline {
            return Poll::Ready(());
        }
        timer.as_mut().reset(deadline);
    }
}

enum Parsed {
    Final(ResponseHead),
    Informational,
    Partial,
}

/// A response body read from its connection, which it gives back to the pool at its end. A
/// body dropped before its end closes the connection.
pub(crate) struct ResponseBody {
    conn: Option<Box<Connection>>,
    framing: Framing,
    pool: Weak<dyn ConnectionPool>,
}

/// The response an exchange received: its body whole when the read buffer already holds it
/// (the connection then goes back to `pool` at once, with no handle on the pool taken), or
/// streaming from the connection (the body holds a weak handle on the pool, which a reload
/// may drop meanwhile).
pub(crate) fn receive<P: ConnectionPool + 'static>(
    mut conn: Box<Connection>,
    head: ResponseHead,
    pool: &Arc<P>,
) -> GatewayResponse {
    let framing = head.framing;
    let whole = match framing {
        Framing::Empty => Some(Bytes::new()),
        Framing::Length(length) if length <= conn.read.len() as u64 => {
            Some(conn.read.split_to(length as usize).freeze())
        }
        _ => None,
    };
    match whole {
        Some(bytes) => {
            pool.put(conn);
            head.into_response(full_body(bytes))
        }
        None => head.into_response(response_body(ResponseBody {
            conn: Some(conn),
            framing,
            pool: Arc::downgrade(pool) as Weak<dyn ConnectionPool>,
        })),
    }
}

impl ResponseBody {
    /// The body is complete: its connection goes back to the pool.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.put(conn);
        }
    }

    /// The next frame, once the buffer holds something of it.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, Http1Error>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Ok(None));
            };
            match self
                .framing
                .decode(&mut conn.read)
                .map_err(Http1Error::framing)?
            {
                Decoded::Frame(frame) => {
                    if self.framing.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Ok(Some(frame)));
                }
                Decoded::End => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                Decoded::Fill(want) => {
                    if ready!(conn.poll_fill(cx, want))? == 0 {
                        if self.framing == Framing::UntilClose {
                            // The end of the connection is the end of the body.
                            self.conn = None;
                            self.framing = Framing::Empty;
                            return Poll::Ready(Ok(None));
                        }
                        return Poll::Ready(Err(Http1Error::Closed));
                    }
                }
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Http1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        match ready!(self.poll_next(cx)) {
            Ok(frame) => Poll::Ready(frame.map(Ok)),
            Err(error) => {
                // The connection is in an unknown state: closed.
                self.conn = None;
                self.framing = Framing::Empty;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::Request;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::forwarding::X_REQUEST_ID;
    use http::HeaderValue;

    /// A pool that keeps what it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<Connection>>);

    impl ConnectionPool for Kept {
        fn put(&self, mut conn: Box<Connection>) {
            if conn.is_open() {
                self.0.lock().unwrap().push(*conn);
            }
        }
    }

    impl Kept {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// A connection to a raw upstream socket the test drives.
    async fn connected() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (upstream, _) = listener.accept().await.unwrap();
        (Connection::new(UpstreamIo::Plain(client)), upstream)
    }

    /// Reads from the upstream side until `end` has arrived; returns all bytes read.
    async fn read_until(upstream: &mut TcpStream, end: &[u8]) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(end) {
            let n = upstream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(seen).unwrap()
    }

    fn get(path: &str) -> GatewayRequest {
        Request::get(path)
            .header("host", "up.test")
            .body(RequestBody::empty())
            .unwrap()
            .into()
    }

    /// Sends a GET, answers it with `answer` and keeps the connection open: the connection and
    /// what reading the response head gave.
    async fn head_of(answer: &'static str) -> (Connection, Result<ResponseHead, Http1Error>) {
        let (mut conn, mut upstream) = connected().await;
        tokio::spawn(async move {
            read_until(&mut upstream, b"\r\n\r\n").await;
            upstream.write_all(answer.as_bytes()).await.unwrap();
            let _ = upstream.read(&mut [0u8; 16]).await;
        });
        let head = conn.send(get("/")).await.map_err(|e| e.error);
        (conn, head)
    }

    /// Sends `request`, answers it with `answer` (closing after it when `close`), and returns
    /// what the upstream read, the status, the body, its trailers and the pool.
    async fn exchange(
        request: impl Into<GatewayRequest>,
        request_end: &'static [u8],
        answer: &'static str,
        close: bool,
    ) -> (
        String,
        u16,
        Result<(Bytes, Option<HeaderMap>), BoxError>,
        Arc<Kept>,
    ) {
        let (mut conn, mut upstream) = connected().await;
        let upstream_side = tokio::spawn(async move {
            let seen = read_until(&mut upstream, request_end).await;
            upstream.write_all(answer.as_bytes()).await.unwrap();
            if !close {
                // Kept open until the test ends, as an upstream's keep-alive does.
                tokio::spawn(async move {
                    let _ = upstream.read(&mut [0u8; 16]).await;
                });
            }
            seen
        });
        let head = conn
            .send(request.into())
            .await
            .map_err(|e| e.error)
            .unwrap();
        let seen = upstream_side.await.unwrap();
        let kept = Arc::new(Kept::default());
        let response = receive(Box::new(conn), head, &kept);
        let status = response.status();
        let body = response.into_body().collect().await.map(|c| {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        });
        (seen, status.as_u16(), body, kept)
    }

    #[tokio::test]
    async fn a_small_answer_is_read_whole_and_its_connection_pooled_at_once() {
        let (seen, status, body, kept) = exchange(
            get("/a?b=1"),
            b"\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: t\r\n\r\nok",
            false,
        )
        .await;
        assert_eq!(seen, "GET /a?b=1 HTTP/1.1\r\nhost: up.test\r\n\r\n");
        assert_eq!((status, body.unwrap().0), (200, Bytes::from("ok")));
        assert_eq!(kept.count(), 1);
    }

    /// An answer whose fields are all end-to-end goes on with its fields as they came (the
    /// gateway then copies them to the client); one with any hop-by-hop field has its fields
    /// in the map, where the gateway's strip of hop-by-hop fields sees them.
    #[tokio::test]
    async fn end_to_end_fields_are_kept_as_they_came_and_others_parsed_for_the_strip() {
        async fn response_to(answer: &'static str) -> GatewayResponse {
            let (_conn, head) = head_of(answer).await;
            head.unwrap().into_response(crate::body::empty_body())
        }
        let mut passed = response_to(
            "HTTP/1.1 200 OK\r\nServer: t\r\nConnection: keep-alive\r\nX-Mixed-Case: A b\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(passed.parsed_headers_mut().is_none());
        let mut written = BytesMut::new();
        passed.encode_fields(&mut written);
        assert_eq!(
            written,
            "Server: t\r\nX-Mixed-Case: A b\r\nContent-Length: 0\r\n".as_bytes()
        );
        assert_eq!(passed.headers()["x-mixed-case"], "A b");

        for hop in [
            "Proxy-Connection: keep-alive",
            "Upgrade: h2c",
            "TE: trailers",
        ] {
            let answer: &'static str =
                format!("HTTP/1.1 200 OK\r\nServer: t\r\n{hop}\r\nContent-Length: 0\r\n\r\n")
                    .leak();
            let mut parsed = response_to(answer).await;
            let map = parsed.parsed_headers_mut().expect(hop);
            assert_eq!(map.len(), 3, "{hop}: {map:?}");
            assert_eq!(map["server"], "t");
        }
        // Two `Content-Length` fields that agree frame the body; they are parsed too, so that
        // the server sees both.
        let mut twice =
            response_to("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(twice.parsed_headers_mut().map(|m| m.len()), Some(2));
    }

    #[tokio::test]
    async fn fields_about_the_connection_stay_with_the_codec() {
        async fn head_of(answer: &'static str) -> HeaderMap {
            let (mut conn, mut upstream) = connected().await;
            tokio::spawn(async move {
                read_until(&mut upstream, b"\r\n\r\n").await;
                upstream.write_all(answer.as_bytes()).await.unwrap();
                let _ = upstream.read(&mut [0u8; 16]).await;
            });
            let head = conn.send(get("/")).await.map_err(|e| e.error).unwrap();
            head.into_response(crate::body::empty_body())
                .into_http()
                .into_parts()
                .0
                .headers
        }
        let managed = head_of(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: t\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        assert!(
            !managed.contains_key(http::header::CONNECTION) && !managed.contains_key("keep-alive")
        );
        assert_eq!(managed["server"], "t");
        // One naming another field goes on, for the gateway to remove both.
        let naming = head_of(
            "HTTP/1.1 200 OK\r\nConnection: close, x-trace\r\nx-trace: 1\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        assert_eq!(naming[http::header::CONNECTION], "close, x-trace");
        let upgraded = head_of(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await;
        assert_eq!(upgraded[http::header::CONNECTION], "upgrade");
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded_with_its_trailers() {
        let (_, status, body, kept) = exchange(
            get("/"),
            b"\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-checksum: 7\r\n\r\n",
            false,
        )
        .await;
        let (bytes, trailers) = body.unwrap();
        assert_eq!((status, bytes), (200, Bytes::from("hello world")));
        assert_eq!(trailers.unwrap()["x-checksum"], "7");
        assert_eq!(kept.count(), 1, "a chunked body ends cleanly: pooled");
    }

    #[tokio::test]
    async fn an_answer_without_length_ends_with_its_connection() {
        let (_, status, body, kept) = exchange(
            get("/"),
            b"\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nuntil close",
            true,
        )
        .await;
        assert_eq!((status, body.unwrap().0), (200, Bytes::from("until close")));
        assert_eq!(kept.count(), 0);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let (_, _, body, kept) = exchange(
            get("/"),
            b"\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
            true,
        )
        .await;
        let error = body.unwrap_err();
        assert!(
            matches!(error.downcast_ref(), Some(Http1Error::Closed)),
            "{error:?}"
        );
        assert_eq!(kept.count(), 0);
    }

    #[tokio::test]
    async fn a_head_answer_has_no_body_whatever_its_length_says() {
        let request = Request::head("/")
            .header("host", "up.test")
            .body(RequestBody::empty())
            .unwrap();
        let (_, status, body, kept) = exchange(
            request,
            b"\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
            false,
        )
        .await;
        assert_eq!((status, body.unwrap().0), (200, Bytes::new()));
        assert_eq!(kept.count(), 1);
    }

    #[tokio::test]
    async fn the_fields_a_server_asks_about_are_noted_as_they_are_read() {
        let (_, head) =
            head_of("HTTP/1.1 200 OK\r\nServer: up\r\nDate: today\r\nContent-Length: 2\r\n\r\nok")
                .await;
        let mut response = head.unwrap().into_response(crate::body::empty_body());
        // Kept as the upstream sent them, not in a map.
        assert!(response.parsed_headers_mut().is_none());
        assert_eq!(response.content_length(), Some(Some(2)));
        assert!(response.has_header(&http::header::DATE));
        assert!(!response.has_header(&http::header::TRANSFER_ENCODING));
        assert!(!response.has_header(&X_REQUEST_ID));
        // The gateway's request id replaces the upstream's, which is noted too.
        let (_, head) =
            head_of("HTTP/1.1 200 OK\r\nX-Request-Id: up\r\nContent-Length: 0\r\n\r\n").await;
        let mut response = head.unwrap().into_response(crate::body::empty_body());
        assert!(response.parsed_headers_mut().is_none());
        assert!(response.has_header(&X_REQUEST_ID));
        response.insert_header(X_REQUEST_ID, HeaderValue::from_static("mine"));
        let mut out = BytesMut::new();
        response.encode_fields(&mut out);
        assert_eq!(out, "Content-Length: 0\r\nx-request-id: mine\r\n");
        let (_, head) = head_of("HTTP/1.1 204 No Content\r\nServer: up\r\n\r\n").await;
        let response = head.unwrap().into_response(crate::body::empty_body());
        assert_eq!(response.content_length(), None);
        assert!(!response.has_header(&http::header::DATE));
    }

    #[tokio::test]
    async fn transfer_encoding_overrides_content_length_and_ends_the_connection() {
        let (conn, head) = head_of(
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
             2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        let response = head.unwrap().into_response(crate::body::empty_body());
        assert!(!response.has_header(&CONTENT_LENGTH));
        assert!(!conn.reusable);
    }

    #[tokio::test]
    async fn a_buffered_body_goes_out_with_its_length() {
        let request = Request::post("/up")
            .header("host", "up.test")
            .body(RequestBody::full(Bytes::from("hello")))
            .unwrap();
        let (seen, status, _, _) = exchange(
            request,
            b"hello",
            "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(
            seen,
            "POST /up HTTP/1.1\r\nhost: up.test\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert_eq!(status, 201);
    }

    #[tokio::test]
    async fn a_streamed_body_of_unknown_length_is_sent_chunked() {
        let frames = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from("abc"))),
            Ok(Frame::data(Bytes::from("de"))),
        ]);
        let request = Request::post("/up")
            .header("host", "up.test")
            .body(RequestBody::stream(StreamBody::new(frames)))
            .unwrap();
        let (seen, status, _, kept) = exchange(
            request,
            b"0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(
            seen,
            "POST /up HTTP/1.1\r\nhost: up.test\r\ntransfer-encoding: chunked\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        );
        assert_eq!(status, 200);
        assert_eq!(kept.count(), 1);
    }

    #[tokio::test]
    async fn an_answer_before_the_request_body_ends_is_returned_and_the_connection_closed() {
        // A body that never ends: the upstream refuses it after the head.
        let request = Request::post("/up")
            .header("host", "up.test")
            .header("content-length", "1000000")
            .body(RequestBody::stream(StreamBody::new(
                futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>(),
            )))
            .unwrap();
        let (seen, status, body, kept) = exchange(
            request,
            b"\r\n\r\n",
            "HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            true,
        )
        .await;
        assert!(seen.contains("content-length: 1000000\r\n"), "{seen}");
        assert_eq!((status, body.unwrap().0), (413, Bytes::new()));
        assert_eq!(kept.count(), 0);
    }

    #[tokio::test]
    async fn content_lengths_that_agree_frame_the_body_and_others_are_invalid() {
        let (_, status, body, _) = exchange(
            get("/"),
            b"\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
            false,
        )
        .await;
        assert_eq!((status, body.unwrap().0), (200, Bytes::from("ok")));

        for conflicting in [
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        ] {
            let error = head_of(conflicting).await.1.err().unwrap();
            assert!(matches!(error, Http1Error::InvalidResponse(_)), "{error:?}");
        }
    }

    #[tokio::test]
    async fn an_invalid_answer_is_an_invalid_response() {
        let error = head_of("HTTP/1.1 2x0 OK\r\n\r\n").await.1.err().unwrap();
        assert!(matches!(error, Http1Error::InvalidResponse(_)), "{error:?}");
    }
}
