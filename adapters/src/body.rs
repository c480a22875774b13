//! Request and response bodies as they travel through the gateway.
//!
//! A request body is either fully buffered (small bodies: cheap to replay on another backend) or
//! a stream that can be sent once. The gateway buffers up to the route's replay limit so that a
//! POST can fail over; larger bodies are streamed and get a single try.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

use crate::error::BoxError;

/// The body of a response from any backend.
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// Wraps any body into a [`ResponseBody`].
pub fn response_body<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A response body holding the given bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    response_body(http_body_util::Full::new(bytes.into()))
}

/// An empty response body.
pub fn empty_body() -> ResponseBody {
    response_body(http_body_util::Empty::new())
}

/// The body of a request on its way to a backend.
pub struct RequestBody {
    inner: Inner,
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Empty,
        }
    }

    /// A body whose bytes are all in memory.
    pub fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return Self::empty();
        }
        Self {
            inner: Inner::Full(Some(bytes)),
        }
    }

    /// A body that is still arriving from the client.
    pub fn stream<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Inner::Stream(body.map_err(Into::into).boxed()),
        }
    }

    /// The buffered bytes, when the whole body is in memory (adapters that must send the body in
    /// one piece, like a Lambda invoke, use this and otherwise collect the stream).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Full(Some(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(body) => body.size_hint(),
        }
    }
}

/// The source of request bodies for successive tries of one request.
///
/// A buffered body can be replayed any number of times; a streamed one is handed out once.
pub enum ReplayBody {
    /// The whole body is in memory.
    Buffered(Bytes),
    /// The body is streamed; `None` once it has been handed to a try.
    Streaming(Option<RequestBody>),
}

impl ReplayBody {
    /// The body for the next try, or `None` if the body cannot be sent again.
    pub fn next_try(&mut self) -> Option<RequestBody> {
        match self {
            Self::Buffered(bytes) => Some(RequestBody::full(bytes.clone())),
            Self::Streaming(body) => body.take(),
        }
    }

    /// Whether another try could be given a body.
    pub fn can_replay(&self) -> bool {
        match self {
            Self::Buffered(_) => true,
            Self::Streaming(body) => body.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_bodies_replay_and_streams_do_not() {
        let mut buffered = ReplayBody::Buffered(Bytes::from_static(b"hello"));
        for _ in 0..3 {
            let body = buffered.next_try().unwrap();
            assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        }
        let mut streamed = ReplayBody::Streaming(Some(RequestBody::full(Bytes::from_static(b"x"))));
        assert!(streamed.next_try().is_some());
        assert!(!streamed.can_replay());
        assert!(streamed.next_try().is_none());
    }
}

/// The error a request body raises when it grows past the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit, in bytes.
    pub limit: u64,
}
