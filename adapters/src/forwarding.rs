//! The forwarding headers a request gains on its way upstream: `X-Forwarded-For` (the client's
//! address appended to the list the client sent), `X-Forwarded-Proto` (the scheme the client
//! used) and `X-Forwarded-Host` (the `Host` the client asked for), each replacing what the client
//! sent under that name but the first.
//!
//! The route decides them once per request ([`Forwarding`]) and every try carries them beside
//! the lent head. They are written where the head leaves the gateway: an HTTP/1.1 upstream's
//! encoder writes them as it writes the head, so the head's header map is not changed for them
//! (three insertions into it cost more than the rest of preparing the head); the adapters that
//! hand a head on to another client (HTTP/2, a WebSocket handshake, Lambda's event) add them to
//! their copy with [`Forwarding::apply`]. Both give the same fields.
//!
//! An `x-request-id` the gateway generated travels the same way: the client did not send one,
//! so there is none in the head to replace, and nothing before the upstream reads the head for
//! it (a route with plugins has it put in the head for them instead: see
//! [`Forwarding::set_request_id`]).

use bytes::BytesMut;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http::wire::put_field;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`: the request's id, the client's or one the gateway generated.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The forwarding headers of one request.
#[derive(Clone, Debug)]
pub struct Forwarding {
    /// The client's IP address.
    client: HeaderValue,
    /// `http` or `https`.
    proto: &'static str,
    /// The `Host` the client sent (after the target's authority, if any, replaced it), taken
    /// before a backend rewrites it.
    host: Option<HeaderValue>,
    /// The `x-request-id` the gateway generated, when the head does not carry it.
    request_id: Option<HeaderValue>,
}

impl Forwarding {
    /// The forwarding headers of a request from `client` (its IP address as a header value)
    /// over `proto`, with the head's `headers` as the client sent them.
    pub fn new(client: HeaderValue, proto: &'static str, headers: &HeaderMap) -> Forwarding {
        Forwarding {
            client,
            proto,
            host: headers.get(HOST).filter(|h| h.to_str().is_ok()).cloned(),
            request_id: None,
        }
    }

    /// Adds `x-request-id` with the value `id` to these headers: an id the gateway generated for
    /// a request whose head has no `x-request-id` field (the head's would be sent too). Set in
    /// place rather than by a builder that returns a copy: the struct is 136 bytes.
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// The `Host` the client sent, taken from the head when the route prepared it (`None`
    /// when the head had none, or one that is not text).
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// Whether `name` is one of the three headers.
    pub fn names(name: &HeaderName) -> bool {
        *name == X_FORWARDED_FOR || *name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST
    }

    /// Whether `name` is a header these add: one of the three, or `x-request-id` when they
    /// carry a generated one.
    pub fn adds(&self, name: &HeaderName) -> bool {
        Forwarding::names(name) || (self.request_id.is_some() && *name == X_REQUEST_ID)
    }

    /// The value the header `name` these add will be sent with, for a request with `headers`
    /// (`None` for `X-Forwarded-Host` without a `Host`, and for a name they do not add).
    pub fn value(&self, name: &HeaderName, headers: &HeaderMap) -> Option<HeaderValue> {
        if *name == X_FORWARDED_FOR {
            Some(self.forwarded_for(headers))
        } else if *name == X_FORWARDED_PROTO {
            Some(HeaderValue::from_static(self.proto))
        } else if *name == X_FORWARDED_HOST {
            self.host.clone()
        } else if *name == X_REQUEST_ID {
            self.request_id.clone()
        } else {
            None
        }
    }

    /// Adds the headers to `headers`, for a client that is handed a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let forwarded_for = self.forwarded_for(headers);
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        match &self.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
    }

    /// Writes the header fields of `headers` as HTTP/1.1 fields, with the forwarding headers in
    /// place of the client's (and a generated `x-request-id` after them): the same fields as
    /// [`Forwarding::apply`] and then writing them.
    pub fn encode_with(&self, headers: &HeaderMap, out: &mut BytesMut) {
        let mut forwarded_for_written = false;
        for (name, value) in headers {
            // Compared by length first: most names are not compared at all.
            let len = name.as_str().len();
            if matches!(len, 15..=17) && Forwarding::names(name) {
                if *name == X_FORWARDED_FOR && !forwarded_for_written {
                    forwarded_for_written = true;
                    put_field(out, &X_FORWARDED_FOR, &self.forwarded_for(headers));
                }
                continue;
            }
            put_field(out, name, value);
        }
        if !forwarded_for_written {
            put_field(out, &X_FORWARDED_FOR, &self.client);
        }
        // The scheme's line is one of two, written whole.
        match self.proto {
            "https" => out.extend_from_slice(b"x-forwarded-proto: https\r\n"),
            "http" => out.extend_from_slice(b"x-forwarded-proto: http\r\n"),
            proto => put_field(out, &X_FORWARDED_PROTO, &HeaderValue::from_static(proto)),
        }
        if let Some(host) = &self.host {
            put_field(out, &X_FORWARDED_HOST, host);
        }
        if let Some(id) = &self.request_id {
            put_field(out, &X_REQUEST_ID, id);
        }
    }

    /// The client's `X-Forwarded-For` list (every field of it, in order) with the client's
    /// address appended; the address alone when there is none, or when one is not text.
    fn forwarded_for(&self, headers: &HeaderMap) -> HeaderValue {
        let mut sent = headers.get_all(X_FORWARDED_FOR).iter().peekable();
        if sent.peek().is_none() {
            return self.client.clone();
        }
        let mut list = Vec::with_capacity(64);
        for value in sent {
            if value.to_str().is_err() {
                return self.client.clone();
            }
            list.extend_from_slice(value.as_bytes());
            list.extend_from_slice(b", ");
        }
        list.extend_from_slice(self.client.as_bytes());
        HeaderValue::from_maybe_shared(bytes::Bytes::from(list))
            .unwrap_or_else(|_| self.client.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn client() -> HeaderValue {
        HeaderValue::from_static("10.0.0.7")
    }

    /// The fields [`Forwarding::encode_with`] writes, parsed back.
    fn encoded(forwarding: &Forwarding, headers: &HeaderMap) -> HeaderMap {
        let mut out = BytesMut::new();
        forwarding.encode_with(headers, &mut out);
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut text = out.to_vec();
        text.extend_from_slice(b"\r\n");
        let parsed = httparse::parse_headers(&text, &mut fields)
            .unwrap()
            .unwrap();
        let mut map = HeaderMap::new();
        for field in parsed.1 {
            map.append(
                HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(field.value).unwrap(),
            );
        }
        map
    }

    /// Both ways of adding the headers give the same fields.
    fn both(forwarding: &Forwarding, headers: &HeaderMap) -> HeaderMap {
        let mut applied = headers.clone();
        forwarding.apply(&mut applied);
        assert_eq!(encoded(forwarding, headers), applied);
        applied
    }

    #[test]
    fn forwarded_for_is_appended_and_the_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "api.example.com".parse().unwrap());
        headers.append(X_FORWARDED_FOR, "203.0.113.9".parse().unwrap());
        headers.append(X_FORWARDED_FOR, "198.51.100.2".parse().unwrap());
        headers.insert(X_FORWARDED_PROTO, "gopher".parse().unwrap());
        headers.insert(X_FORWARDED_HOST, "spoofed.example".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        let forwarding = Forwarding::new(client(), "https", &headers);
        let sent = both(&forwarding, &headers);
        assert_eq!(
            sent.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["203.0.113.9, 198.51.100.2, 10.0.0.7"]
        );
        assert_eq!(sent[X_FORWARDED_PROTO], "https");
        assert_eq!(sent[X_FORWARDED_HOST], "api.example.com");
        assert_eq!(sent["x-kept"], "1");
        assert_eq!(sent.len(), 5);
    }

    #[test]
    fn a_request_without_them_gets_them() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "api.example.com".parse().unwrap());
        let forwarding = Forwarding::new(client(), "http", &headers);
        let sent = both(&forwarding, &headers);
        assert_eq!(sent[X_FORWARDED_FOR], "10.0.0.7");
        assert_eq!(sent[X_FORWARDED_PROTO], "http");
        assert_eq!(sent[X_FORWARDED_HOST], "api.example.com");
    }

    #[test]
    fn the_host_is_the_clients_not_a_rewritten_one() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "api.example.com".parse().unwrap());
        let forwarding = Forwarding::new(client(), "http", &headers);
        headers.insert(HOST, "internal.backend".parse().unwrap());
        let sent = both(&forwarding, &headers);
        assert_eq!(sent[HOST], "internal.backend");
        assert_eq!(sent[X_FORWARDED_HOST], "api.example.com");
    }

    #[test]
    fn a_list_that_is_not_text_is_replaced_by_the_address() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        headers.insert(X_FORWARDED_HOST, "spoofed.example".parse().unwrap());
        let forwarding = Forwarding::new(client(), "http", &headers);
        let sent = both(&forwarding, &headers);
        assert_eq!(sent[X_FORWARDED_FOR], "10.0.0.7");
        assert!(
            !sent.contains_key(X_FORWARDED_HOST),
            "no Host, none forwarded"
        );
    }

    #[test]
    fn a_generated_request_id_is_added_as_the_others_are() {
        let headers = HeaderMap::new();
        let plain = Forwarding::new(client(), "http", &headers);
        assert!(!plain.adds(&X_REQUEST_ID));
        assert!(!both(&plain, &headers).contains_key(X_REQUEST_ID));

        let id = HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736");
        let mut forwarding = plain;
        forwarding.set_request_id(id.clone());
        assert!(forwarding.adds(&X_REQUEST_ID) && forwarding.adds(&X_FORWARDED_FOR));
        assert_eq!(forwarding.value(&X_REQUEST_ID, &headers), Some(id.clone()));
        let sent = both(&forwarding, &headers);
        assert_eq!(sent.get_all(X_REQUEST_ID).iter().collect::<Vec<_>>(), [&id]);
        assert_eq!(
            sent.len(),
            3,
            "for, proto and the id; no Host, no forwarded host"
        );
    }
}
