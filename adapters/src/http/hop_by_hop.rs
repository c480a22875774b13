//! The header fields that describe one connection and are not forwarded (RFC 9110 §7.6.1):
//! the gateway removes them in both directions, and the HTTP/1.1 codec keeps an upstream's
//! fields as they came only when none of them is among these.

use http::HeaderName;
use http::header::{
    CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
};

/// How many hop-by-hop names there are.
pub const COUNT: usize = 8;

/// The hop-by-hop names. (A `static`: a `const` array of names would be built and dropped at
/// every use.)
pub static NAMES: [HeaderName; COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// The lengths of the [`NAMES`]: most names are compared with none of them.
const LENGTHS: [usize; COUNT] = [10, 10, 16, 18, 19, 2, 17, 7];

/// Where `Connection` sits in [`NAMES`].
pub const CONNECTION_AT: usize = 0;
/// Where `Keep-Alive` sits in [`NAMES`].
pub const KEEP_ALIVE_AT: usize = 1;
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

/// Which of the [`NAMES`] `name` is, in any case.
#[inline]
pub fn position(name: &[u8]) -> Option<usize> {
    if !LENGTHS.contains(&name.len()) {
        return None;
    }
    NAMES
        .iter()
        .position(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lengths_and_positions_are_those_of_the_names() {
        for (name, length) in NAMES.iter().zip(LENGTHS) {
            assert_eq!(name.as_str().len(), length, "{name}");
        }
        assert_eq!(NAMES[CONNECTION_AT], CONNECTION);
        assert_eq!(NAMES[KEEP_ALIVE_AT], "keep-alive");
        assert_eq!(NAMES[TE_AT], TE);
        assert_eq!(NAMES[TRANSFER_ENCODING_AT], TRANSFER_ENCODING);
        assert_eq!(NAMES[UPGRADE_AT], UPGRADE);
        assert_eq!(position(b"Keep-Alive"), Some(KEEP_ALIVE_AT));
        assert_eq!(position(b"Proxy-Connection"), Some(2));
        assert_eq!(position(b"Content-Length"), None);
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
