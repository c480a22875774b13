//! **Admit** (phase 3, once the route is known, before any plugin runs or any body byte is
//! read): a declared `Content-Length` over the route's `max_body` is refused with 413; a route
//! with an objective protects its error budget — low-priority requests are shed (503
//! `load_shed`, `Retry-After`) while a page alert fires and no backend complies, and a strict
//! route with a spent budget serves only critical requests (503 `error_budget_exhausted`).
//! `Break` carries the refusal; shed and refused requests count as rejected, never as good.

use std::ops::ControlFlow;

use accord_adapters::GatewayResponse;
use accord_policies::Class;
use accord_policies::sla::Admission;
use http::request::Parts;

use super::errors::ErrorCode;
use super::record::Record;
use crate::control::generation::LiveRoute;

/// Admits the request to `route`, or answers why not.
pub(super) fn admit(
    route: &LiveRoute,
    parts: &Parts,
    content_length: Option<u64>,
    record: &mut Record,
) -> ControlFlow<GatewayResponse> {
    let limits = route.config();
    if let (Some(sla), Some(slo)) = (route.sla(), &limits.slo) {
        record.sla = Some(sla.clone());
        let refused = match sla.admit(|| slo.priority.classify(&parts.headers)) {
            Admission::Admit => None,
            Admission::Shed { retry_after } => Some((ErrorCode::LoadShed, Some(retry_after))),
            Admission::Reject => Some((ErrorCode::BudgetExhausted, None)),
        };
        if let Some((code, retry_after)) = refused {
            record.class = Some(Class::Rejected);
            let message = format!("{} (route {})", code.spec().meaning, route.id());
            return ControlFlow::Break(code.response_with_retry_after(
                &message,
                record.request_id(),
                retry_after,
            ));
        }
    }
    if content_length.is_some_and(|len| len > limits.max_body) {
        return ControlFlow::Break(body_too_large(route, record));
    }
    ControlFlow::Continue(())
}

/// 413 for a body over the route's `max_body`.
pub(super) fn body_too_large(route: &LiveRoute, record: &Record) -> GatewayResponse {
    let message = format!(
        "the request body exceeds this route's limit of {} bytes",
        route.config().max_body
    );
    ErrorCode::BodyTooLarge.response(&message, record.request_id())
}
