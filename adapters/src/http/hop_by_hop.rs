//! The header fields that describe one connection and are not forwarded (RFC 9110 §7.6.1):
//! the gateway removes them in both directions, and the HTTP/1.1 codec keeps an upstream's
//! fields as they came only when none of them is among these.

use http::HeaderName;

/// How many hop-by-hop names there are.
pub const COUNT: usize = 8;

/// The hop-by-hop names, lowercase: what [`NAMES`] are made of, and what [`position`] compares
/// bytes with (without a `HeaderName`'s lookup of a standard name's text).
const TEXT: [&str; COUNT] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The hop-by-hop names. (A `static`: a `const` array of names would be built and dropped at
/// every use.)
pub static NAMES: [HeaderName; COUNT] = [
    HeaderName::from_static(TEXT[0]),
    HeaderName::from_static(TEXT[1]),
    HeaderName::from_static(TEXT[2]),
    HeaderName::from_static(TEXT[3]),
    HeaderName::from_static(TEXT[4]),
    HeaderName::from_static(TEXT[5]),
    HeaderName::from_static(TEXT[6]),
    HeaderName::from_static(TEXT[7]),
];

/// Where `Connection` sits in [`NAMES`].
pub const CONNECTION_AT: usize = 0;
/// Where `Keep-Alive` sits in [`NAMES`].
pub const KEEP_ALIVE_AT: usize = 1;
/// Where `Proxy-Connection` sits in [`NAMES`].
pub const PROXY_CONNECTION_AT: usize = 2;
/// Where `Proxy-Authenticate` sits in [`NAMES`].
pub const PROXY_AUTHENTICATE_AT: usize = 3;
/// Where `Proxy-Authorization` sits in [`NAMES`].
pub const PROXY_AUTHORIZATION_AT: usize = 4;
/// Where `TE` sits in [`NAMES`].
pub const TE_AT: usize = 5;
/// Where `Transfer-Encoding` sits in [`NAMES`].
pub const TRANSFER_ENCODING_AT: usize = 6;
/// Where `Upgrade` sits in [`NAMES`].
pub const UPGRADE_AT: usize = 7;

/// Which of the [`NAMES`] a message carries: noted as its fields are read, so that the hop-by-hop
/// fields are not looked for again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present(u8);

impl Present {
    /// Notes the name at `at` in [`NAMES`].
    pub fn insert(&mut self, at: usize) {
        self.0 |= 1 << at;
    }

    /// Whether the name at `at` in [`NAMES`] is there.
    pub fn contains(self, at: usize) -> bool {
        self.0 & (1 << at) != 0
    }

    /// Whether none is.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Which of the [`NAMES`] `name` is, in any case. The length picks the one or two names it can
/// be, so most names are compared with none.
#[inline]
pub fn position(name: &[u8]) -> Option<usize> {
    let (first, second) = match name.len() {
        2 => (TE_AT, None),
        7 => (UPGRADE_AT, None),
        10 => (CONNECTION_AT, Some(KEEP_ALIVE_AT)),
        16 => (PROXY_CONNECTION_AT, None),
        17 => (TRANSFER_ENCODING_AT, None),
        18 => (PROXY_AUTHENTICATE_AT, None),
        19 => (PROXY_AUTHORIZATION_AT, None),
        _ => return None,
    };
    let is = |at: usize| is_lowercase_of(name, TEXT[at].as_bytes()).then_some(at);
    is(first).or_else(|| second.and_then(is))
}

/// Whether the field name `name` (a token, as the parsers admit) is `lower` in any case, where
/// `lower` is lowercase letters and `-`. Setting the 0x20 bit lowercases a letter and leaves `-`
/// as it is; no other token byte becomes a lowercase letter or `-` by it (`eq_ignore_ascii_case`
/// measured twice the cost, a branch per byte).
#[inline]
fn is_lowercase_of(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(&n, &l)| n | 0x20 == l)
}

#[cfg(test)]
mod tests {
    use http::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
    };

    use super::*;

    #[test]
    fn the_text_and_positions_are_those_of_the_names() {
        for (at, (name, text)) in NAMES.iter().zip(TEXT).enumerate() {
            assert_eq!(name.as_str(), text, "{name}");
            assert_eq!(position(name.as_str().to_uppercase().as_bytes()), Some(at));
        }
        assert_eq!(NAMES[CONNECTION_AT], CONNECTION);
        assert_eq!(NAMES[PROXY_AUTHENTICATE_AT], PROXY_AUTHENTICATE);
        assert_eq!(NAMES[PROXY_AUTHORIZATION_AT], PROXY_AUTHORIZATION);
        assert_eq!(NAMES[KEEP_ALIVE_AT], "keep-alive");
        assert_eq!(NAMES[TE_AT], TE);
        assert_eq!(NAMES[TRANSFER_ENCODING_AT], TRANSFER_ENCODING);
        assert_eq!(NAMES[UPGRADE_AT], UPGRADE);
        assert_eq!(position(b"Keep-Alive"), Some(KEEP_ALIVE_AT));
        assert_eq!(position(b"Proxy-Connection"), Some(2));
        assert_eq!(position(b"Content-Length"), None);
        // Token bytes that the 0x20 bit changes are not taken for a letter.
        assert_eq!(position(b"T^"), None);
        assert_eq!(position(b"Upgrad_"), None);
        assert_eq!(position(b"Keep^Alive"), None);
    }

    #[test]
    fn a_present_set_holds_what_was_inserted() {
        let mut present = Present::default();
        assert!(present.is_empty());
        present.insert(UPGRADE_AT);
        present.insert(CONNECTION_AT);
        assert!(!present.is_empty());
        assert!(present.contains(UPGRADE_AT) && present.contains(CONNECTION_AT));
        assert!(
            (0..COUNT)
                .filter(|&i| present.contains(i))
                .eq([CONNECTION_AT, UPGRADE_AT])
        );
    }
}
