//! Header fields that hold a comma-separated list of tokens (RFC 9110 §5.6.1): `Connection`,
//! `TE`, `Transfer-Encoding`, `Upgrade`. Read as bytes, each token trimmed, empty ones skipped:
//! the gateway reads them on every message, on both sides.

use http::{HeaderMap, HeaderName};

/// The tokens of one field value.
pub fn value_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// The tokens of every `name` field of `headers`, in order.
pub fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value_tokens(value.as_bytes()))
}

/// Whether a `name` field of `headers` lists `token` (compared without regard to case).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use http::header::CONNECTION;

    use super::*;

    #[test]
    fn tokens_are_trimmed_and_empty_ones_skipped_across_field_lines() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, "keep-alive, ,Upgrade ".parse().unwrap());
        headers.append(CONNECTION, "x-hop".parse().unwrap());
        let all: Vec<&[u8]> = tokens(&headers, &CONNECTION).collect();
        assert_eq!(all, [&b"keep-alive"[..], b"Upgrade", b"x-hop"]);
        assert!(has_token(&headers, &CONNECTION, b"upgrade"));
        assert!(!has_token(&headers, &CONNECTION, b"close"));
        assert_eq!(tokens(&HeaderMap::new(), &CONNECTION).count(), 0);
    }
}
