//! Outcome classes: what a finished request counts as against a route's objectives.

use accord_adapters::{BackendErrorKind, Fault};

/// What a request's outcome counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Served as the client asked.
    Good,
    /// The gateway or a backend failed it.
    Bad,
    /// A backend (or the gateway's protection) asked the client to slow down.
    Throttled,
    /// A policy refused it on purpose.
    Rejected,
    /// The client's request was at fault (4xx other than 429).
    ClientError,
    /// The client went away before it had its answer (nginx's 499): reset, HTTP/2
    /// `RST_STREAM`, closed connection. Counted against the latency objective when the client
    /// had waited longer than its threshold, and against availability when the route says so.
    Cancelled,
}

impl Class {
    /// Every class, in label order.
    pub const ALL: [Class; Class::COUNT] = [
        Class::Good,
        Class::Bad,
        Class::Throttled,
        Class::Rejected,
        Class::ClientError,
        Class::Cancelled,
    ];

    /// How many classes there are: the length of per-class counter arrays.
    pub const COUNT: usize = 6;

    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Bad => "bad",
            Self::Throttled => "throttled",
            Self::Rejected => "rejected",
            Self::ClientError => "client_error",
            Self::Cancelled => "cancelled",
        }
    }

    /// Position in [`Class::ALL`], for array-indexed counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Classifies a finished request by the status sent to the client and, when the gateway
/// answered for a failed backend, that failure's kind.
pub fn classify(status: http::StatusCode, failure: Option<BackendErrorKind>) -> Class {
    if let Some(kind) = failure {
        return match (kind, kind.fault()) {
            (BackendErrorKind::Throttled, _) => Class::Throttled,
            (_, Fault::Client) => Class::ClientError,
            _ => Class::Bad,
        };
    }
    match status.as_u16() {
        429 => Class::Throttled,
        400..=499 => Class::ClientError,
        500..=599 => Class::Bad,
        _ => Class::Good,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn statuses_and_failures_are_classified() {
        assert_eq!(classify(StatusCode::OK, None), Class::Good);
        assert_eq!(classify(StatusCode::NOT_FOUND, None), Class::ClientError);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, None),
            Class::Throttled
        );
        assert_eq!(classify(StatusCode::SERVICE_UNAVAILABLE, None), Class::Bad);
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, Some(BackendErrorKind::Reset)),
            Class::Bad
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(BackendErrorKind::Throttled)
            ),
            Class::Throttled
        );
        assert_eq!(
            classify(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(BackendErrorKind::BodyTooLarge)
            ),
            Class::ClientError
        );
    }
}
