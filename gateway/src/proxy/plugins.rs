//! The route's plugin chains.
//!
//! **Request plugins** (phase 4, after admission): each plugin of the route, in order, sees the
//! request head and the live SLA state. The first rejection answers the client at once (counted
//! as rejected); a reroute names the backend to try first; a failing plugin is skipped or, with
//! `on_error: reject`, refuses the request with 503 `plugin_failed`. A plugin's header changes
//! apply as soon as its call returns (the next plugin sees them; a failed call's are dropped).
//! The call context is kept for the response chain.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use accord_adapters::body::{empty_body, response_body};
use accord_adapters::clock;
use accord_adapters::{BackendErrorKind, BoxError, GatewayResponse, ResponseBody, box_in_place};
use accord_policies::plugin::{
    CallContext, Decision, HeaderEdit, Now, OnError, Rejection, RequestFacts, ResponseHead,
    SlaState, Verdict,
};
use accord_policies::{Class, classify};
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::grow;
use super::errors::ErrorCode;
use super::record::Record;
use crate::control::generation::LiveRoute;

/// What the request chain decided, when it let the request through.
pub(super) struct Allowed {
    /// The backend a plugin asked to try first.
    pub(super) preferred: Option<String>,
    /// The call context, for the response chain.
    pub(super) call: Box<CallContext>,
}

/// What the request plugins are given besides the head.
pub(super) struct RequestInputs<'a> {
    /// The body the client declared.
    pub(super) content_length: Option<u64>,
    /// The body, when the route reads it for its plugins and it fit.
    pub(super) body: Option<Bytes>,
    /// The peer that connected: its IP address as text.
    pub(super) client_ip: &'a http::HeaderValue,
}

/// The call context for the route's plugins, with the request head lent to it: moved into
/// the box as it is made, and out again by [`take_head`] once the request chain is done.
pub(super) fn lend_head(
    route: &LiveRoute,
    parts: Parts,
    inputs: RequestInputs<'_>,
    record: &Record,
) -> Box<CallContext> {
    // Shared, not copied: a plugin reads only the fields it asks for.
    let facts = RequestFacts {
        route: route.id().clone(),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        content_length: inputs.content_length,
        request_id: record.request_id_header().clone(),
        client_ip: inputs.client_ip.clone(),
    };
    let mut call = box_in_place!(CallContext::new(facts, route.backend_ids().clone()));
    call.sla = route.sla().cloned().map(SlaState::Live);
    call.request_body = inputs.body;
    // Put in once the box is made, so that the head is copied once, into the box: made with
    // the context, it is first copied to a local that outlives the allocation.
    call.request = Some(parts);
    call
}

/// The request head lent by [`lend_head`], given back; the request body the plugins read is
/// let go with it.
pub(super) fn take_head(call: &mut CallContext) -> Parts {
    call.request_body = None;
    let Some(parts) = call.request.take() else {
        // The host only reads the head it is lent (its edits are applied by `on_request`).
        unreachable!("the request head lent to the plugins was given back with their context");
    };
    parts
}

/// Runs the route's plugins on the request head lent to them in `call` (see the module doc).
/// `Continue` carries the backend a plugin asked to try first; `Break` the response that
/// refuses the request (boxed: it is the exception, and what the chain returns is moved).
///
/// A plugin whose calls never wait is called at once, on the request's stack
/// ([`Plugin::on_request_now`](accord_policies::plugin::Plugin::on_request_now)); only a call
/// that must run on a fiber, or find no instance ready, is awaited, and its future (a few KiB:
/// wasmtime's async calls) is boxed, so that the request pipeline's own future stays small: a
/// future is moved as it is built, and its size is paid on every request. The head stays in
/// the boxed context throughout, so the chain moves a pointer, not the head. The caller skips
/// the chain on a route without plugins.
pub(super) async fn on_request(
    route: &LiveRoute,
    mut call: Box<CallContext>,
    record: &mut Record,
) -> (
    Box<CallContext>,
    ControlFlow<Box<GatewayResponse>, Option<String>>,
) {
    let mut preferred = None;
    let mut refusal = None;
    let mut decisions = Vec::new();
    for plugin in route.plugins() {
        let (result, returned) = match plugin.on_request_now(call) {
            Now::Done(result, returned) => (result, returned),
            // Boxed: a fiber's call is the exception, and its future is a few KiB.
            Now::Later(call) => Box::pin(plugin.on_request(call)).await,
        };
        // A call can take long, within the poll: what follows is timed from after it.
        clock::mark_stale();
        call = returned;
        let lent = &mut *call;
        if result.is_err() {
            lent.request_edits.clear();
        }
        if !lent.request_edits.is_empty()
            && let Some(head) = &mut lent.request
        {
            HeaderEdit::apply_all(&mut lent.request_edits, &mut head.headers);
        }
        let name = plugin.spec().name.as_str();
        match result {
            Ok(Decision::Allow) => {}
            Ok(Decision::Reroute(backend)) => {
                decisions.push(decision(name, &format!("reroute {backend}")));
                preferred = Some(backend);
            }
            Ok(Decision::Reject(rejection)) => {
                decisions.push(decision(
                    name,
                    &format!("reject {} {}", rejection.status, rejection.reason),
                ));
                refusal = Some(Box::new(rejection_response(
                    &rejection,
                    name,
                    record.request_id(),
                )));
                break;
            }
            Err(error) => {
                decisions.push(decision(name, "failed"));
                tracing::warn!(request_id = %record.request_id(), route = %route.id(), error = %error, "plugin failed");
                if plugin.spec().on_error == OnError::Reject {
                    let message = format!(
                        "{} (plugin {})",
                        ErrorCode::PluginFailed.spec().meaning,
                        plugin.spec().name
                    );
                    refusal = Some(Box::new(
                        ErrorCode::PluginFailed.response(&message, record.request_id()),
                    ));
                    break;
                }
            }
        }
    }
    record.annotations = std::mem::take(&mut call.annotations);
    record.annotations.append(&mut decisions);
    match refusal {
        Some(response) => {
            record.class = Some(Class::Rejected);
            (call, ControlFlow::Break(response))
        }
        None => (call, ControlFlow::Continue(preferred)),
    }
}

/// The response to a plugin's rejection: its status, reason, headers and `Retry-After`.
fn rejection_response(rejection: &Rejection, plugin: &str, request_id: &str) -> GatewayResponse {
    let message = format!("{} (plugin {plugin})", rejection.reason);
    let retry_after = rejection
        .retry_after_seconds
        .map(|s| std::time::Duration::from_secs(u64::from(s)));
    let mut response =
        ErrorCode::PluginRejected.response_with_retry_after(&message, request_id, retry_after);
    if let Ok(status) = StatusCode::from_u16(rejection.status) {
        *response.status_mut() = status;
    }
    for header in &rejection.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(header.name.as_str()),
            HeaderValue::from_str(&header.value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// **Response plugins** (phase 8, once the response head is known, before it is sent): the
/// route's plugins that have `on-response` see it in reverse order; a reclassification decides how the request counts
/// against the route's objective (the client still gets the backend's response). Each call
/// runs at once when it can, as in [`on_request`]; the chain's future is boxed still, for its
/// read of the response body, which routes without response plugins should not carry.
pub(super) async fn on_response(
    route: &LiveRoute,
    call: Box<CallContext>,
    response: &mut GatewayResponse,
    record: &mut Record,
) {
    Box::into_pin(box_in_place!(call_on_response(
        route, call, response, record
    )))
    .await;
}

async fn call_on_response(
    route: &LiveRoute,
    mut call: Box<CallContext>,
    response: &mut GatewayResponse,
    record: &mut Record,
) {
    let class = classify(response.status(), None);
    let head = ResponseHead {
        status: response.status().as_u16(),
        backend: record.backend.as_deref().map(String::from),
        latency_ms: clock::since(record.started).as_secs_f64() * 1000.0,
        class: class.into(),
    };
    let inspect = route.response_body_limit();
    if inspect > 0 && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        match read_response_body(response, inspect).await {
            Ok(body) => call.response_body = body,
            Err(error) => {
                // The backend broke off while the body was being read: the client gets a 502
                // instead of a truncated body, and the request counts as failed.
                tracing::warn!(request_id = %record.request_id(), route = %route.id(), error = %error, "the response body failed while plugins read it");
                record.failure = Some(BackendErrorKind::Reset);
                let message = format!(
                    "{} (route {})",
                    ErrorCode::UpstreamReset.spec().meaning,
                    route.id()
                );
                *response = ErrorCode::UpstreamReset.response(&message, record.request_id());
                return;
            }
        }
    }
    let mut lent = Arc::new(std::mem::take(response.headers_mut()));
    call.response_headers = Some(lent.clone());
    let mut verdict = None;
    let mut verdicts = Vec::new();
    for plugin in route
        .plugins()
        .iter()
        .rev()
        .filter(|p| p.judges_responses())
    {
        let (result, returned) = match plugin.on_response_now(&head, call) {
            Now::Done(result, returned) => (result, returned),
            Now::Later(call) => Box::pin(plugin.on_response(&head, call)).await,
        };
        clock::mark_stale();
        call = returned;
        if result.is_err() {
            call.response_edits.clear();
        }
        if !call.response_edits.is_empty() {
            call.response_headers = None;
            if let Some(headers) = Arc::get_mut(&mut lent) {
                HeaderEdit::apply_all(&mut call.response_edits, headers);
            }
            call.response_headers = Some(lent.clone());
        }
        let name = plugin.spec().name.as_str();
        match result {
            Ok(Verdict::Keep) => {}
            Ok(Verdict::Good(reason)) => {
                verdicts.push(decision(name, &format!("good {reason}")));
                verdict = Some(Class::Good);
            }
            Ok(Verdict::Bad(reason)) => {
                verdicts.push(decision(name, &format!("bad {reason}")));
                verdict = Some(Class::Bad);
            }
            Err(error) => {
                verdicts.push(decision(name, "failed"));
                tracing::warn!(request_id = %record.request_id(), route = %route.id(), error = %error, "plugin failed on the response");
                if plugin.spec().on_error == OnError::Reject {
                    verdict = Some(Class::Bad);
                }
            }
        }
    }
    // The reclassification counts for the route and for the backend that answered.
    if verdict.is_some() {
        record.class = verdict;
    }
    record.settle_try(verdict);
    call.response_headers = None;
    call.response_body = None;
    *response.headers_mut() = Arc::try_unwrap(lent).unwrap_or_else(|shared| (*shared).clone());
    record.annotations.append(&mut call.annotations);
    record.annotations.append(&mut verdicts);
}

/// A plugin's decision or verdict, for the access log's `plugins=` field: `name=what`, with
/// the reason kept on one line and free of the field's `;` separator.
fn decision(plugin: &str, what: &str) -> (String, String) {
    let what: String = what
        .trim()
        .chars()
        .map(|c| match c {
            ';' => ',',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    (plugin.to_owned(), what)
}

/// Reads the response body for plugins when it is at most `limit` bytes, and puts back a body
/// that replays what was read (trailers included) followed by whatever was not.
async fn read_response_body(
    response: &mut GatewayResponse,
    limit: usize,
) -> Result<Option<Bytes>, BoxError> {
    if response.body().size_hint().lower() > limit as u64 {
        return Ok(None);
    }
    let mut body = std::mem::replace(response.body_mut(), empty_body());
    let mut read = BytesMut::new();
    let mut frames = VecDeque::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            read.extend_from_slice(data);
        }
        frames.push_back(frame);
        if read.len() > limit {
            complete = false;
            break;
        }
    }
    *response.body_mut() = response_body(ReplayedBody {
        frames,
        rest: (!complete).then_some(body),
    });
    Ok(complete.then(|| read.freeze()))
}

/// Frames already read, then the rest of the body.
struct ReplayedBody {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<ResponseBody>,
}

impl Body for ReplayedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        grow(&mut hint, buffered);
        hint
    }
}
