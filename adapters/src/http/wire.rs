//! HTTP/1.1 on the wire, for both of the gateway's sides: the upstream codec (requests out,
//! responses in) and the listener's server (requests in, responses out).
//!
//! A message body is delimited by its [`Framing`] (RFC 9112 §6): none, `Content-Length`,
//! chunked, or the end of the connection. [`Framing::decode`] splits the next frame off a read
//! buffer without copying it; [`Framing::encode`] queues a frame for a vectored write in the
//! framing the head declared; [`poll_write_all`] writes such a queue.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use smallvec::{Array, SmallVec};
use tokio::io::AsyncWrite;

use super::hop_by_hop;

/// What a body read asks for when nothing says how much is coming: one page. Bodies of known
/// length read up to [`MAX_READ`] at once.
pub const READ_SIZE: usize = 4 * 1024;
/// What a head read asks for: enough for most heads (with a small body after them), and what
/// every idle connection holds, so kept small (nginx's `client_header_buffer_size` is 1k too);
/// a longer head grows the buffer as it arrives.
pub const HEAD_READ: usize = 1024;
/// The most a body read asks for at once.
pub const MAX_READ: usize = 64 * 1024;
/// The least spare room a head read is made with: below it, the buffer grows (or is replaced).
const MIN_SPARE: usize = 256;
/// The longest chunk-size line accepted (the size in hex, and any chunk extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most trailer fields after a chunked body.
const MAX_TRAILERS: usize = 32;
/// The largest trailer section accepted.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// How a message body is delimited on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, or no more of it.
    Empty,
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, at this point of it.
    Chunked(Chunk),
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// At the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// What [`Framing::decode`] found in the buffer.
#[derive(Debug)]
pub enum Decoded {
    /// The next frame, split off the buffer.
    Frame(Frame<Bytes>),
    /// The body is complete.
    End,
    /// More bytes are needed: read, with room for about this many. A read that finds the end
    /// of the stream ends an [`Framing::UntilClose`] body, and cuts short any other.
    Fill(usize),
}

/// A body that breaks its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FramingError(pub &'static str);

impl Framing {
    /// Whether the body is complete.
    pub fn is_done(self) -> bool {
        self == Framing::Empty
    }

    /// What is known of the rest of the body's length.
    pub fn size_hint(self) -> SizeHint {
        match self {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// Takes the next frame of the body off `read` (see [`Decoded`]); the framing moves on.
    pub fn decode(&mut self, read: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match *self {
                Framing::Empty => return Ok(Decoded::End),
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if read.is_empty() {
                        // Room for one byte more than the rest: the read that ends the body
                        // then comes back short of its room, which tells the reactor that the
                        // socket is drained (a full read leaves it marked readable, and the
                        // connection's next read, or a pooled one's probe, a system call that
                        // finds nothing).
                        return Ok(Decoded::Fill(
                            left.saturating_add(1).min(MAX_READ as u64) as usize
                        ));
                    }
                    let take = left.min(read.len() as u64);
                    let data = read.split_to(take as usize).freeze();
                    let left = left - take;
                    *self = match *self {
                        Framing::Length(_) if left == 0 => Framing::Empty,
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(left)),
                    };
                    return Ok(Decoded::Frame(Frame::data(data)));
                }
                Framing::UntilClose => {
                    if read.is_empty() {
                        return Ok(Decoded::Fill(MAX_READ / 4));
                    }
                    return Ok(Decoded::Frame(Frame::data(read.split().freeze())));
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(read) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        read.advance(used);
                        *self = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if read.len() < MAX_CHUNK_LINE => {
                        return Ok(Decoded::Fill(READ_SIZE));
                    }
                    _ => return Err(FramingError("invalid chunk size")),
                },
                Framing::Chunked(Chunk::DataEnd) => {
                    if read.len() < 2 {
                        return Ok(Decoded::Fill(READ_SIZE));
                    }
                    if &read[..2] != b"\r\n" {
                        return Err(FramingError("chunk data not ended by CRLF"));
                    }
                    read.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                    return match httparse::parse_headers(read, &mut fields) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for field in fields {
                                if let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(field.name.as_bytes()),
                                    HeaderValue::from_bytes(field.value),
                                ) {
                                    trailers.append(name, value);
                                }
                            }
                            read.advance(used);
                            *self = Framing::Empty;
                            Ok(if trailers.is_empty() {
                                Decoded::End
                            } else {
                                Decoded::Frame(Frame::trailers(trailers))
                            })
                        }
                        Ok(httparse::Status::Partial) if read.len() < MAX_TRAILER_BYTES => {
                            Ok(Decoded::Fill(READ_SIZE))
                        }
                        _ => Err(FramingError("invalid trailer fields")),
                    };
                }
            }
        }
    }

    /// Queues one frame of an outgoing body in this framing; `None` is the body's end. A
    /// body that does not match its declared length is refused.
    pub fn encode<A: Array<Item = Bytes>>(
        &mut self,
        frame: Option<Frame<Bytes>>,
        out: &mut SmallVec<A>,
    ) -> Result<(), FramingError> {
        match (frame, *self) {
            (Some(frame), Framing::Length(left)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    let len = data.len() as u64;
                    if len > left {
                        return Err(FramingError("the body is longer than its content-length"));
                    }
                    *self = if len == left {
                        Framing::Empty
                    } else {
                        Framing::Length(left - len)
                    };
                    out.push(data);
                }
                Ok(())
            }
            (Some(frame), Framing::Chunked(_)) => {
                match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        let mut size = BytesMut::with_capacity(20);
                        put_hex(&mut size, data.len() as u64);
                        size.put_slice(b"\r\n");
                        out.push(size.freeze());
                        out.push(data);
                        out.push(Bytes::from_static(b"\r\n"));
                    }
                    Ok(_) => {}
                    Err(frame) => {
                        // Trailers end the body.
                        let mut last = BytesMut::from(&b"0\r\n"[..]);
                        if let Ok(trailers) = frame.into_trailers() {
                            for (name, value) in &trailers {
                                last.put_slice(name.as_str().as_bytes());
                                last.put_slice(b": ");
                                last.put_slice(value.as_bytes());
                                last.put_slice(b"\r\n");
                            }
                        }
                        last.put_slice(b"\r\n");
                        out.push(last.freeze());
                        *self = Framing::Empty;
                    }
                }
                Ok(())
            }
            (None, Framing::Chunked(_)) => {
                out.push(Bytes::from_static(b"0\r\n\r\n"));
                *self = Framing::Empty;
                Ok(())
            }
            (None, Framing::Length(0)) => {
                *self = Framing::Empty;
                Ok(())
            }
            (None, Framing::Length(_)) => {
                Err(FramingError("the body is shorter than its content-length"))
            }
            (Some(frame), Framing::UntilClose) => {
                if let Ok(data) = frame.into_data() {
                    out.push(data);
                }
                Ok(())
            }
            (None, Framing::UntilClose) | (_, Framing::Empty) => {
                *self = Framing::Empty;
                Ok(())
            }
        }
    }
}

/// Writes `out` in full (vectored), then flushes. `written` is set once any byte is written.
pub fn poll_write_all<W: AsyncWrite + Unpin + ?Sized, A: Array<Item = Bytes>>(
    io: &mut W,
    cx: &mut Context<'_>,
    out: &mut SmallVec<A>,
    written: &mut bool,
) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        let mut n = {
            let slices: SmallVec<[IoSlice<'_>; 8]> = out.iter().map(|b| IoSlice::new(b)).collect();
            ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *written = true;
        while n > 0 {
            if n >= out[0].len() {
                n -= out[0].len();
                out.remove(0);
            } else {
                out[0].advance(n);
                n = 0;
            }
        }
    }
    Pin::new(io).poll_flush(cx)
}

/// The offsets of a parsed header field's name and value in the buffer it was parsed from:
/// the parser's fields borrow the buffer, which is split off (without moving its bytes) once
/// they are known, and each value then shares it.
#[derive(Clone, Copy, Default)]
pub struct FieldAt {
    name: (u32, u32),
    value: (u32, u32),
}

impl FieldAt {
    /// Where `field` lies in the buffer that starts at `base`.
    pub fn of(field: &httparse::Header<'_>, base: *const u8) -> FieldAt {
        let at = |s: &[u8]| (s.as_ptr() as usize - base as usize) as u32;
        let name = at(field.name.as_bytes());
        let value = at(field.value);
        FieldAt {
            name: (name, name + field.name.len() as u32),
            value: (value, value + field.value.len() as u32),
        }
    }

    /// Where the name lies.
    pub fn name_range(&self) -> std::ops::Range<usize> {
        self.name.0 as usize..self.name.1 as usize
    }

    /// Where the value lies.
    pub fn value_range(&self) -> std::ops::Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }

    /// The `index`-th field of a head, its value sharing `head` and its name from `names`.
    pub fn field(
        self,
        head: &Bytes,
        index: usize,
        names: &mut NameCache,
    ) -> Result<Field, FramingError> {
        let (name, hop_by_hop) = names.name(index, &head[self.name_range()])?;
        let value = HeaderValue::from_maybe_shared(head.slice(self.value_range()))
            .map_err(|_| FramingError("invalid header value"))?;
        Ok(Field {
            name,
            value,
            hop_by_hop,
        })
    }
}

/// A header field read off a head.
pub struct Field {
    /// The name, lowercase.
    pub name: HeaderName,
    /// The value, sharing the head's bytes.
    pub value: HeaderValue,
    /// Where its name sits among [`hop_by_hop::NAMES`], when it is one of them.
    pub hop_by_hop: Option<usize>,
}

/// The header names one connection's peer has sent, by their bytes as sent. A peer sends the
/// same names, in the same order, on message after message: a name found here is not parsed
/// again (`HeaderName::from_bytes` lowercases and looks up every name), nor compared with the
/// hop-by-hop names again, and the `index`-th field's name is looked for where the previous
/// message had it first.
#[derive(Default)]
pub struct NameCache {
    names: Vec<(Box<[u8]>, HeaderName, Option<usize>)>,
}

impl NameCache {
    /// The most names kept: a peer that sends more names than this, or new ones on every
    /// message, has the rest parsed each time.
    const CAPACITY: usize = 24;

    /// The header name `raw`, the `index`-th of its head, and where it sits among
    /// [`hop_by_hop::NAMES`] if it is one of them.
    pub fn name(
        &mut self,
        index: usize,
        raw: &[u8],
    ) -> Result<(HeaderName, Option<usize>), FramingError> {
        if let Some((_, name, hop)) = self.names.get(index).filter(|(seen, ..)| **seen == *raw) {
            return Ok((name.clone(), *hop));
        }
        if let Some((_, name, hop)) = self.names.iter().find(|(seen, ..)| **seen == *raw) {
            return Ok((name.clone(), *hop));
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| FramingError("invalid header name"))?;
        let hop = hop_by_hop::position(raw);
        if self.names.len() < Self::CAPACITY {
            self.names.push((raw.into(), name.clone(), hop));
        }
        Ok((name, hop))
    }
}

/// Makes room in a connection's read buffer for a read of `want` bytes. A head read (at most
/// [`READ_SIZE`]) reads into the room the buffer has left while that is at least [`MIN_SPARE`]:
/// the messages split off the buffer share its allocation while they live, so asking for a
/// full [`READ_SIZE`] each time would allocate a new buffer per message in flight (two per
/// proxied request under load, one on each side) instead of reusing the one a connection has.
pub fn make_room(buf: &mut BytesMut, want: usize) {
    let spare = buf.capacity() - buf.len();
    if spare >= want || (want <= READ_SIZE && spare >= MIN_SPARE) {
        return;
    }
    buf.reserve(want);
}

/// Writes one `name: value` header field line.
#[inline]
pub fn put_field(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6).
pub fn parse_length(bytes: &[u8]) -> Option<u64> {
    // At most 19 digits: never past `u64::MAX`.
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// The length so far after one more `Content-Length` field: each field may be a list, and all
/// values must agree (RFC 9110 §8.6); `None` once any is invalid or differs.
pub fn merge_lengths(so_far: Option<Option<u64>>, value: &[u8]) -> Option<u64> {
    let mut merged = so_far.unwrap_or(None);
    let first = so_far.is_none();
    for (i, item) in value.split(|&b| b == b',').enumerate() {
        let item = item.trim_ascii();
        let parsed = (!item.is_empty() && item.len() <= 19 && item.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
            .flatten()?;
        if first && i == 0 {
            merged = Some(parsed);
        } else if merged != Some(parsed) {
            return None;
        }
    }
    merged
}

/// Appends `n` in decimal, without going through `fmt`.
pub fn put_decimal(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

/// Appends `n` in lower-case hexadecimal (a chunk size).
fn put_hex(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_read_uses_the_room_left_before_allocating_again() {
        let mut buf = BytesMut::new();
        make_room(&mut buf, HEAD_READ);
        assert!(buf.capacity() >= HEAD_READ);
        let start = buf.as_ptr() as usize;
        buf.extend_from_slice(&[b'x'; 200]);
        // A message taken off the front shares the allocation while it lives.
        let message = buf.split_to(200).freeze();
        make_room(&mut buf, HEAD_READ);
        assert_eq!(
            buf.as_ptr() as usize,
            start + 200,
            "the same allocation, not a new one"
        );
        // Until too little is left; a body read asks for what it wants.
        buf.extend_from_slice(&vec![b'y'; buf.capacity() - 100]);
        make_room(&mut buf, HEAD_READ);
        assert!(buf.capacity() - buf.len() >= HEAD_READ);
        let mut body = BytesMut::with_capacity(READ_SIZE);
        make_room(&mut body, MAX_READ);
        assert!(body.capacity() >= MAX_READ);
        drop(message);
    }

    #[test]
    fn a_body_of_known_length_is_read_with_room_for_more_than_its_rest() {
        // The last read of the body then comes back short, which tells the reactor that the
        // socket is drained: a pooled connection's probe when it is next taken, and the next
        // head read on a client's, find it idle without a system call. A read that filled its
        // room exactly would leave the socket marked readable, and cost a read that finds
        // nothing.
        let mut empty = BytesMut::new();
        for (framing, room) in [
            (Framing::Length(16_384), 16_385),
            (Framing::Chunked(Chunk::Data(100)), 101),
            (Framing::Length(10 * MAX_READ as u64), MAX_READ),
        ] {
            let mut framing = framing;
            assert!(
                matches!(framing.decode(&mut empty), Ok(Decoded::Fill(want)) if want == room),
                "{framing:?}"
            );
        }
    }

    #[test]
    fn a_cached_name_is_the_name_parsed() {
        let mut names = NameCache::default();
        let sent = [
            "Content-Type",
            "X-Custom",
            "content-type",
            "Date",
            "Connection",
        ];
        for _ in 0..3 {
            for (index, raw) in sent.iter().enumerate() {
                let (name, hop) = names.name(index, raw.as_bytes()).unwrap();
                assert_eq!(name, HeaderName::from_bytes(raw.as_bytes()).unwrap());
                assert_eq!(hop, hop_by_hop::position(raw.as_bytes()));
            }
        }
        // In another order, and past the cache's capacity.
        for i in 0..(NameCache::CAPACITY * 2) {
            let raw = format!("X-Name-{i}");
            let (name, _) = names.name(0, raw.as_bytes()).unwrap();
            assert_eq!(name.as_str(), raw.to_ascii_lowercase());
        }
        assert_eq!(names.name(1, b"Date").unwrap().0, http::header::DATE);
        assert_eq!(
            names.name(2, b"Keep-Alive").unwrap().1,
            Some(hop_by_hop::KEEP_ALIVE_AT),
            "noted for a name past the capacity too"
        );
        assert_eq!(names.names.len(), NameCache::CAPACITY);
        assert!(names.name(0, b"bad name").is_err());
    }

    fn decode_all(framing: &mut Framing, input: &[u8]) -> Result<(Vec<u8>, bool), FramingError> {
        let mut read = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match framing.decode(&mut read)? {
                Decoded::Frame(frame) => {
                    if let Ok(data) = frame.into_data() {
                        body.extend_from_slice(&data);
                    }
                }
                Decoded::End => return Ok((body, true)),
                Decoded::Fill(_) => return Ok((body, false)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_and_stop_at_their_end() {
        let mut framing = Framing::Chunked(Chunk::Size);
        let (body, done) = decode_all(
            &mut framing,
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(body, b"hello world");
        assert!(done && framing.is_done());
        let mut framing = Framing::Chunked(Chunk::Size);
        assert_eq!(
            decode_all(&mut framing, b"FFFFFFFFFFFFFFFFFFFF\r\nhello").unwrap_err(),
            FramingError("invalid chunk size")
        );
        let mut framing = Framing::Chunked(Chunk::Size);
        assert!(decode_all(&mut framing, b"5\r\nhelloXX").is_err());
    }

    #[test]
    fn a_length_is_digits_only_and_at_most_nineteen_of_them() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"16384"), Some(16384));
        assert_eq!(
            parse_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"10000000000000000000",
            b"+1",
            b"1 ",
            b"0x10",
            b"-0",
        ] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_length_body_takes_only_its_length() {
        let mut framing = Framing::Length(5);
        let mut read = BytesMut::from(&b"helloGET /"[..]);
        let Decoded::Frame(frame) = framing.decode(&mut read).unwrap() else {
            panic!("a frame")
        };
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(framing.is_done());
        assert_eq!(&read[..], b"GET /");
    }

    #[test]
    fn encoding_frames_the_body_as_declared() {
        let mut out: SmallVec<[Bytes; 3]> = SmallVec::new();
        let mut chunked = Framing::Chunked(Chunk::Size);
        chunked
            .encode(Some(Frame::data(Bytes::from(vec![b'x'; 26]))), &mut out)
            .unwrap();
        chunked.encode(None, &mut out).unwrap();
        let wire: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(
            wire,
            [&b"1a\r\n"[..], &[b'x'; 26], b"\r\n0\r\n\r\n"].concat()
        );
        let mut length = Framing::Length(3);
        assert!(
            length
                .encode(Some(Frame::data(Bytes::from_static(b"four"))), &mut out)
                .is_err()
        );
        let mut length = Framing::Length(3);
        assert!(length.encode(None, &mut out).is_err());
        let mut nothing = Framing::Length(0);
        assert!(nothing.encode(None, &mut out).is_ok() && nothing.is_done());
    }
}
