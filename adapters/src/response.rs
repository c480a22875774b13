//! A backend's answer as it travels through the gateway: status, header fields, extensions and
//! body.
//!
//! An HTTP/1.1 upstream's header fields can stay as they came, in the bytes of its response
//! head (the upstream's *wire fields*), rather than be parsed into a [`HeaderMap`]: a proxied
//! response whose fields nobody reads goes back to the client by copying them. They are parsed
//! on first use: [`GatewayResponse::headers`], [`GatewayResponse::headers_mut`] and
//! [`GatewayResponse::into_http`] see every field, wherever it is kept. What a server needs to
//! write a response ([`content_length`](GatewayResponse::content_length),
//! [`has_header`](GatewayResponse::has_header), [`remove_header`](GatewayResponse::remove_header),
//! [`insert_header`](GatewayResponse::insert_header), [`encode_fields`](GatewayResponse::encode_fields))
//! works on either without parsing.
//!
//! The HTTP/1.1 codec keeps the wire fields only when they are all end-to-end (RFC 9110
//! §7.6.1): no hop-by-hop field, and no more than one `Content-Length`; any other response has
//! its fields parsed at once.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, DATE};
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use smallvec::SmallVec;

use crate::body::ResponseBody;
use crate::forwarding::X_REQUEST_ID;
use crate::http::wire::{FieldAt, parse_length, put_field};

/// A backend's answer.
///
/// Small (48 bytes): a response is moved by value from the adapter, through the try, the
/// failover and the pipeline's phases, to the server that writes it, about fifteen times. Its
/// header fields are boxed, wherever they are kept, so that each move copies a few words
/// in registers rather than calling `memcpy` on the 96 bytes of a `HeaderMap`.
pub struct GatewayResponse {
    status: StatusCode,
    version: Version,
    fields: UpstreamFields,
    extensions: Extensions,
    body: ResponseBody,
}

/// A response's header fields: an upstream's as it sent them when all are end-to-end, in a map
/// otherwise. Both boxed (see [`GatewayResponse`]).
pub(crate) enum UpstreamFields {
    Wire(Box<WireFields>),
    Map(Box<HeaderMap>),
}

/// Header fields as an HTTP/1.1 upstream sent them: where each name and value lies in the
/// response head's bytes (every one end-to-end, and valid: the parser checked their bytes),
/// then the fields the gateway added.
pub(crate) struct WireFields {
    head: Bytes,
    fields: SmallVec<[FieldAt; 8]>,
    added: SmallVec<[(HeaderName, HeaderValue); 2]>,
    /// What a server asks of every response it writes, noted as the fields are taken in.
    noted: Noted,
    /// Every field in a map, made when the response is read through a shared reference; dropped
    /// at any change.
    parsed: OnceLock<HeaderMap>,
}

/// The wire fields asked about on every response (to frame and date it, and to set the
/// gateway's request id in place of any the upstream sent): noted by the codec as it reads the
/// fields, rather than looked for among them each time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Noted {
    /// The `Content-Length` field: `Some(None)` when its value is not a length.
    pub(crate) content_length: Option<Option<u64>>,
    /// Whether a `Date` field came.
    pub(crate) date: bool,
    /// Whether an `x-request-id` field came: the gateway sets its own on every response.
    pub(crate) request_id: bool,
}

impl WireFields {
    /// The `fields` of `head`: end-to-end fields only (the codec keeps a head with any other
    /// as a map), with at most one `Content-Length`; `noted` is what they say of it and of
    /// `Date`.
    pub(crate) fn new(head: Bytes, fields: SmallVec<[FieldAt; 8]>, noted: Noted) -> Self {
        Self {
            head,
            fields,
            added: SmallVec::new(),
            noted,
            parsed: OnceLock::new(),
        }
    }

    fn name(&self, field: &FieldAt) -> &[u8] {
        &self.head[field.name_range()]
    }

    /// The wire field named `name` (lowercase, as a `HeaderName`'s bytes are).
    fn find(&self, name: &[u8]) -> Option<&FieldAt> {
        let first = *name.first()?;
        self.fields.iter().find(|f| {
            let range = f.name_range();
            // Names of the same length are told apart by their first byte, mostly.
            range.len() == name.len()
                && self.head[range.start].to_ascii_lowercase() == first
                && self.head[range].eq_ignore_ascii_case(name)
        })
    }

    fn has(&self, name: &HeaderName) -> bool {
        let came = if name == CONTENT_LENGTH {
            self.noted.content_length.is_some()
        } else if name == DATE {
            self.noted.date
        } else if name == X_REQUEST_ID {
            self.noted.request_id
        } else {
            // A hop-by-hop name is looked for too, and not found: the wire fields are
            // end-to-end. (Comparing the name with the eight first cost more than the search.)
            self.find(name.as_str().as_bytes()).is_some()
        };
        came || self.added.iter().any(|(n, _)| n == name)
    }

    fn remove(&mut self, name: &HeaderName) {
        if !self.has(name) {
            return;
        }
        let head = &self.head;
        let name_bytes = name.as_str().as_bytes();
        self.fields
            .retain(|f| !head[f.name_range()].eq_ignore_ascii_case(name_bytes));
        self.added.retain(|(n, _)| n != name);
        if name == CONTENT_LENGTH {
            self.noted.content_length = None;
        } else if name == DATE {
            self.noted.date = false;
        } else if name == X_REQUEST_ID {
            self.noted.request_id = false;
        }
        self.parsed.take();
    }

    /// Every field in a map.
    fn parse(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.fields.len() + self.added.len());
        for field in &self.fields {
            // The parser admitted only bytes a `HeaderName` and a `HeaderValue` admit, so
            // neither conversion fails.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(self.name(field)),
                HeaderValue::from_maybe_shared(self.head.slice(field.value_range())),
            ) {
                headers.append(name, value);
            }
        }
        for (name, value) in &self.added {
            headers.append(name, value.clone());
        }
        headers
    }

    /// Writes the fields as field lines. Consecutive lines that ended in CRLF go out in one
    /// copy, as they came.
    fn encode(&self, out: &mut BytesMut) {
        let mut run: Option<(usize, usize)> = None;
        for field in &self.fields {
            let (name, value) = (field.name_range(), field.value_range());
            match &mut run {
                Some((_, end))
                    if name.start == *end + 2 && self.head[*end..name.start] == *b"\r\n" =>
                {
                    *end = value.end;
                }
                _ => {
                    if let Some((start, end)) = run {
                        put_line(out, &self.head[start..end]);
                    }
                    // The name, the separator as sent and the value.
                    run = Some((name.start, value.end));
                }
            }
        }
        if let Some((start, end)) = run {
            put_line(out, &self.head[start..end]);
        }
        for (name, value) in &self.added {
            put_field(out, name, value);
        }
    }
}

/// Writes `line` and its CRLF.
fn put_line(out: &mut BytesMut, line: &[u8]) {
    out.reserve(line.len() + 2);
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

impl GatewayResponse {
    /// A response from an upstream's head.
    pub(crate) fn from_head(
        status: StatusCode,
        version: Version,
        fields: UpstreamFields,
        body: ResponseBody,
    ) -> Self {
        Self {
            status,
            version,
            fields,
            extensions: Extensions::new(),
            body,
        }
    }

    /// A `200 OK` with no header fields and `body`.
    pub fn new(body: ResponseBody) -> Self {
        Self::from_head(
            StatusCode::OK,
            Version::HTTP_11,
            UpstreamFields::Map(Box::default()),
            body,
        )
    }

    /// A response from its parts.
    pub fn from_parts(parts: http::response::Parts, body: ResponseBody) -> Self {
        Self {
            status: parts.status,
            version: parts.version,
            fields: UpstreamFields::Map(Box::new(parts.headers)),
            extensions: parts.extensions,
            body,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The status, to change.
    pub fn status_mut(&mut self) -> &mut StatusCode {
        &mut self.status
    }

    /// The HTTP version the backend answered with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Every header field (the wire fields parsed the first time, when they are that).
    pub fn headers(&self) -> &HeaderMap {
        match &self.fields {
            UpstreamFields::Map(headers) => headers,
            UpstreamFields::Wire(wire) => wire.parsed.get_or_init(|| wire.parse()),
        }
    }

    /// Every header field, to change (the wire fields are parsed into the map first).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        if let UpstreamFields::Wire(wire) = &mut self.fields {
            let headers = wire.parsed.take().unwrap_or_else(|| wire.parse());
            self.fields = UpstreamFields::Map(Box::new(headers));
        }
        match &mut self.fields {
            UpstreamFields::Map(headers) => headers,
            UpstreamFields::Wire(_) => unreachable!("the wire fields were parsed into a map"),
        }
    }

    /// The header fields when they are in a map; `None` while they are the upstream's wire
    /// fields, which are end-to-end only (see the module): a strip of hop-by-hop fields has
    /// nothing to do there.
    pub fn parsed_headers_mut(&mut self) -> Option<&mut HeaderMap> {
        match &mut self.fields {
            UpstreamFields::Map(headers) => Some(headers),
            UpstreamFields::Wire(_) => None,
        }
    }

    /// Whether a field named `name` is present.
    pub fn has_header(&self, name: &HeaderName) -> bool {
        match &self.fields {
            UpstreamFields::Map(headers) => headers.contains_key(name),
            UpstreamFields::Wire(wire) => wire.has(name),
        }
    }

    /// Removes every field named `name`.
    pub fn remove_header(&mut self, name: &HeaderName) {
        match &mut self.fields {
            UpstreamFields::Map(headers) => {
                headers.remove(name);
            }
            UpstreamFields::Wire(wire) => wire.remove(name),
        }
    }

    /// Removes every field named `name`, a hop-by-hop one (`hop_by_hop::NAMES`). The codec keeps
    /// a head that has one as a map, so among wire fields only an added one can carry it, and
    /// only those are searched.
    pub fn remove_hop_by_hop_header(&mut self, name: &HeaderName) {
        debug_assert!(
            crate::http::hop_by_hop::position(name.as_str().as_bytes()).is_some(),
            "{name} is not hop-by-hop: the wire fields may hold it, and only remove_header looks there"
        );
        match &mut self.fields {
            UpstreamFields::Map(headers) => {
                headers.remove(name);
            }
            UpstreamFields::Wire(wire) => {
                if wire.added.iter().any(|(n, _)| n == name) {
                    wire.added.retain(|(n, _)| n != name);
                    wire.parsed.take();
                }
            }
        }
    }

    /// Sets the field `name` to `value`, in place of any it had.
    pub fn insert_header(&mut self, name: HeaderName, value: HeaderValue) {
        match &mut self.fields {
            UpstreamFields::Map(headers) => {
                headers.insert(name, value);
            }
            UpstreamFields::Wire(wire) => {
                wire.remove(&name);
                wire.parsed.take();
                wire.added.push((name, value));
            }
        }
    }

    /// The body's length as `Content-Length` declares it: `None` without the field,
    /// `Some(None)` when its value is not a length.
    pub fn content_length(&self) -> Option<Option<u64>> {
        let wire = match &self.fields {
            UpstreamFields::Wire(wire) => wire,
            UpstreamFields::Map(headers) => {
                let value = headers.get(CONTENT_LENGTH)?;
                return Some(parse_length(value.as_bytes()));
            }
        };
        if let Some(length) = wire.noted.content_length {
            return Some(length);
        }
        let (_, value) = wire.added.iter().find(|(n, _)| n == CONTENT_LENGTH)?;
        Some(parse_length(value.as_bytes()))
    }

    /// Writes every field as an HTTP/1.1 field line; wire fields go as they came (the case of
    /// their names kept).
    pub fn encode_fields(&self, out: &mut BytesMut) {
        match &self.fields {
            UpstreamFields::Map(headers) => {
                for (name, value) in headers.iter() {
                    put_field(out, name, value);
                }
            }
            UpstreamFields::Wire(wire) => wire.encode(out),
        }
    }

    /// The extensions (an upgrade in progress, for one).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The extensions, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The body.
    pub fn body(&self) -> &ResponseBody {
        &self.body
    }

    /// The body, to read or replace.
    pub fn body_mut(&mut self) -> &mut ResponseBody {
        &mut self.body
    }

    /// The body, the rest dropped.
    pub fn into_body(self) -> ResponseBody {
        self.body
    }

    /// The same response with its body replaced by `f` of it.
    pub fn map_body(self, f: impl FnOnce(ResponseBody) -> ResponseBody) -> Self {
        Self {
            body: f(self.body),
            ..self
        }
    }

    /// An [`http::Response`], every field in its map.
    pub fn into_http(mut self) -> http::Response<ResponseBody> {
        let headers = std::mem::take(self.headers_mut());
        let mut response = http::Response::new(self.body);
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = headers;
        *response.extensions_mut() = self.extensions;
        response
    }
}

impl From<http::Response<ResponseBody>> for GatewayResponse {
    fn from(response: http::Response<ResponseBody>) -> Self {
        let (parts, body) = response.into_parts();
        Self::from_parts(parts, body)
    }
}

impl std::fmt::Debug for GatewayResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayResponse")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty_body;

    #[test]
    fn a_response_is_moved_as_a_few_words() {
        // Larger, and each of its moves through the pipeline is a call to `memcpy`.
        assert!(std::mem::size_of::<GatewayResponse>() <= 48);
    }

    /// A response whose fields are those of `head` (a status line and fields), as the codec
    /// keeps them.
    fn wire_response(head: &'static str) -> GatewayResponse {
        let head = Bytes::from_static(head.as_bytes());
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut headers);
        assert!(parsed.parse(&head).unwrap().is_complete());
        let fields = parsed
            .headers
            .iter()
            .map(|h| FieldAt::of(h, head.as_ptr()))
            .collect();
        let noted = Noted {
            content_length: parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| parse_length(h.value)),
            date: parsed
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("date")),
            request_id: parsed
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("x-request-id")),
        };
        GatewayResponse::from_head(
            StatusCode::OK,
            Version::HTTP_11,
            UpstreamFields::Wire(Box::new(WireFields::new(head.clone(), fields, noted))),
            empty_body(),
        )
    }

    fn encoded(response: &GatewayResponse) -> String {
        let mut out = BytesMut::new();
        response.encode_fields(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    const HEAD: &str = "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length:  2\r\nX-Request-Id: theirs\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n";

    #[test]
    fn wire_fields_are_read_and_written_as_they_came_without_a_map() {
        let response = wire_response(HEAD);
        assert_eq!(response.content_length(), Some(Some(2)));
        assert!(response.has_header(&HeaderName::from_static("server")));
        assert!(!response.has_header(&http::header::DATE));
        assert_eq!(
            encoded(&response),
            "Server: up\r\nContent-Length:  2\r\nX-Request-Id: theirs\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"
        );
        // Read through a shared reference, every field is there, in order.
        let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(response.headers().len(), 5);
    }

    #[test]
    fn an_inserted_field_replaces_the_upstreams_and_follows_the_wire_fields() {
        let mut response = wire_response(HEAD);
        assert!(response.parsed_headers_mut().is_none());
        let _ = response.headers(); // a parse made before the change is not kept
        response.insert_header(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("ours"),
        );
        response.remove_header(&http::header::SET_COOKIE);
        assert_eq!(
            encoded(&response),
            "Server: up\r\nContent-Length:  2\r\nx-request-id: ours\r\n"
        );
        assert_eq!(response.headers()["x-request-id"], "ours");
        assert_eq!(response.headers().len(), 3);
        // Changed through the map, the fields are all in the map from then on.
        response
            .headers_mut()
            .append("x-more", HeaderValue::from_static("1"));
        assert_eq!(
            encoded(&response),
            "server: up\r\ncontent-length: 2\r\nx-request-id: ours\r\nx-more: 1\r\n"
        );
        let http = response.into_http();
        assert_eq!(http.headers().len(), 4);
    }

    #[test]
    fn the_noted_fields_follow_their_removal() {
        let mut response =
            wire_response("HTTP/1.1 200 OK\r\nDATE: today\r\nContent-Length: 2\r\nVia: x\r\n\r\n");
        assert!(response.has_header(&DATE));
        assert!(response.has_header(&CONTENT_LENGTH));
        assert!(!response.has_header(&http::header::TRANSFER_ENCODING));
        response.remove_header(&DATE);
        response.remove_header(&CONTENT_LENGTH);
        assert!(!response.has_header(&DATE));
        assert_eq!(response.content_length(), None);
        assert_eq!(encoded(&response), "Via: x\r\n");
        response.insert_header(DATE, HeaderValue::from_static("now"));
        assert!(response.has_header(&DATE));
        assert_eq!(encoded(&response), "Via: x\r\ndate: now\r\n");
    }

    /// A hop-by-hop field is never among the wire fields (the codec keeps such a head as a
    /// map), so only an added one is removed; a response in a map loses it from the map.
    #[test]
    fn a_hop_by_hop_field_is_removed_where_it_can_be() {
        let te = http::header::TRANSFER_ENCODING;
        let mut response = wire_response("HTTP/1.1 200 OK\r\nVia: x\r\n\r\n");
        response.remove_hop_by_hop_header(&te);
        assert_eq!(encoded(&response), "Via: x\r\n");
        response.insert_header(te.clone(), HeaderValue::from_static("chunked"));
        assert!(response.has_header(&te));
        response.remove_hop_by_hop_header(&te);
        assert!(!response.has_header(&te));
        assert_eq!(encoded(&response), "Via: x\r\n");

        let mut mapped = GatewayResponse::from(
            http::Response::builder()
                .header(&te, "chunked")
                .header("via", "y")
                .body(empty_body())
                .unwrap(),
        );
        mapped.remove_hop_by_hop_header(&te);
        assert!(!mapped.has_header(&te));
        assert_eq!(mapped.headers().len(), 1);
    }

    #[test]
    fn a_content_length_that_is_not_a_length_is_told_apart_from_none() {
        let response = wire_response("HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\n");
        assert_eq!(response.content_length(), Some(None));
        let mut response = wire_response("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(response.content_length(), None);
        response.insert_header(CONTENT_LENGTH, HeaderValue::from(7u64));
        assert_eq!(response.content_length(), Some(Some(7)));
    }
}
