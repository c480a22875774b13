//! **Prepare the body** (phase 5, after the request plugins allowed the request): a body up to
//! the route's `replay_buffer` is read into memory so that another try can replay it; a larger
//! one is streamed to a single try, with the route's `max_body` enforced as it flows. The
//! result is a [`ReplayBody`], or why the body cannot be forwarded (too large: 413; the client's
//! stream failed: 400).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use accord_adapters::body::BodyTooLarge;
use accord_adapters::{BoxError, ReplayBody, RequestBody};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::stats::RouteStats;

/// Why a body could not be prepared.
pub(super) enum PrepareError {
    /// It passed the route's `max_body`.
    TooLarge,
    /// The client's stream failed.
    Client(BoxError),
}

/// Whether `body` is empty before a byte of it is read (its stream has ended, or `Content-Length`
/// says 0): there is nothing to prepare.
pub(super) fn known_empty<B: Body>(body: &B, content_length: Option<u64>) -> bool {
    body.is_end_stream() || content_length == Some(0)
}

/// Buffers the body up to `replay_limit` (replayable), or streams it with `max_body` enforced.
pub(super) async fn prepare<B>(
    mut body: B,
    content_length: Option<u64>,
    replay_limit: u64,
    max_body: u64,
    stats: &Arc<RouteStats>,
) -> Result<ReplayBody, PrepareError>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if known_empty(&body, content_length) {
        return Ok(ReplayBody::Buffered(Bytes::new()));
    }
    let stream = |prefix: Option<Bytes>, body: B| {
        let seen = prefix.as_ref().map_or(0, |p| p.len() as u64);
        ReplayBody::Streaming(Some(RequestBody::stream(LimitedBody {
            prefix,
            inner: body,
            seen,
            limit: max_body,
            stats: stats.clone(),
        })))
    };
    if content_length.is_some_and(|len| len > replay_limit) {
        return Ok(stream(None, body));
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| PrepareError::Client(e.into()))?;
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
            if buffer.len() as u64 > max_body {
                return Err(PrepareError::TooLarge);
            }
            if buffer.len() as u64 > replay_limit {
                stats.bytes_in.fetch_add(buffer.len() as u64, Relaxed);
                return Ok(stream(Some(buffer.freeze()), body));
            }
        }
    }
    stats.bytes_in.fetch_add(buffer.len() as u64, Relaxed);
    Ok(ReplayBody::Buffered(buffer.freeze()))
}

/// A streamed request body that fails with [`BodyTooLarge`] once it passes the route's limit.
struct LimitedBody<B> {
    prefix: Option<Bytes>,
    inner: B,
    seen: u64,
    limit: u64,
    stats: Arc<RouteStats>,
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    this.stats.bytes_in.fetch_add(data.len() as u64, Relaxed);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(prefix) = &self.prefix {
            let extra = prefix.len() as u64;
            grow(&mut hint, extra);
        }
        hint
    }
}

/// Adds `bytes` to both bounds of a size hint (the upper first: a lower bound may never pass
/// it).
pub(super) fn grow(hint: &mut SizeHint, bytes: u64) {
    if let Some(upper) = hint.upper() {
        hint.set_upper(upper + bytes);
    }
    hint.set_lower(hint.lower() + bytes);
}
