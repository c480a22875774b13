//! The admin API, on its own listener (default `127.0.0.1:9901`):
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /healthz` | liveness: 200 while the process serves |
//! | `GET /readyz` | readiness: 200 with per-route backend availability; 503 while draining |
//! | `GET /metrics` | Prometheus text |
//! | `GET /config` | the effective configuration as JSON (secret *references* only) |
//! | `POST /reload` | re-read and apply the configuration; 422 with every error if invalid |
//! | `GET /sla` | every route's SLA report (JSON; schema in `docs/sla-report.md`), and the cluster's status in cluster mode |
//! | `GET /sla/routes/{id}` | one route's SLA report |
//! | `GET /sla/routes/{id}/history?minutes=120` | minute-by-minute history for charts (≤ 360 minutes) |
//! | `GET /sla/routes/{id}/gate?min_budget=25%` | the release gate: 200 `{"allow": true, …}`, or 409 with every reason |
//! | `GET /canary/{route}` | the route's canary: phase, share, step, last comparison, timeline |
//! | `POST /canary/{route}/promote\|pause\|resume\|abort` | drive it (409 with why when the command does not apply) |
//! | `GET /dashboard` | the SLA dashboard (HTML, assets embedded) |
//!
//! `POST` endpoints need `Authorization: Bearer <token>` when a token is configured; every
//! endpoint needs it when the admin listener is not on loopback.

pub mod exposition;
pub mod metrics;
pub mod sla;

use std::sync::Arc;

use accord_adapters::GatewayResponse;
use accord_adapters::body::full_body;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::control::generation::Generation;
use crate::control::reload::{ReloadError, ReloadReport};
use crate::proxy::errors::ErrorCode;
use crate::proxy::server::{ClientBody, Handler};
use crate::stats::Registry;

/// The dashboard page: one file, its styles and script inline, nothing fetched from elsewhere.
const DASHBOARD: &str = include_str!("dashboard/index.html");

/// What the admin API reads and drives: the running gateway, seen through the few things its
/// endpoints need.
pub trait AdminState: Send + Sync + 'static {
    /// The configuration generation serving now.
    fn generation(&self) -> Arc<Generation>;
    /// The gateway's counters.
    fn registry(&self) -> &Registry;
    /// The SLA engine.
    fn sla(&self) -> &accord_policies::sla::SlaEngine;
    /// Whether the gateway is draining (not ready).
    fn is_draining(&self) -> bool;
    /// The cluster, in cluster mode.
    fn cluster(&self) -> Option<&crate::cluster::ClusterStatus>;
    /// The notifier's counters, when notifications are configured.
    fn notifications(&self) -> Option<&crate::notify::NotifyStats>;
    /// Reads the configuration again and swaps it in.
    fn reload(&self)
    -> impl std::future::Future<Output = Result<ReloadReport, ReloadError>> + Send;
}

/// The admin API's request handler.
pub fn handler<S: AdminState>(gateway: Arc<S>, loopback: bool) -> Handler {
    Arc::new(move |request, _conn, _notes| {
        let gateway = gateway.clone();
        Box::pin(async move { respond(&*gateway, loopback, request).await })
    })
}

async fn respond(
    gateway: &impl AdminState,
    loopback: bool,
    request: Request<ClientBody>,
) -> GatewayResponse {
    let generation = gateway.generation();
    let method = request.method().clone();
    let path = request.uri().path();
    if method != Method::GET || !loopback {
        let token = generation.config().admin.token.as_ref();
        if let Some(refusal) = unauthorized(&request, token.map(|t| t.expose())) {
            return refusal;
        }
    }
    match (method, path) {
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n", "text/plain"),
        (Method::GET, "/readyz") => readiness(gateway, &generation),
        (Method::GET, "/metrics") => {
            // OpenMetrics (with exemplars) when the scraper asks for it, as Prometheus does with
            // `--enable-feature=exemplar-storage`.
            let openmetrics = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let mut page = if openmetrics {
                exposition::Exposition::openmetrics()
            } else {
                exposition::Exposition::new()
            };
            metrics::render(&mut page, &generation, gateway.registry());
            sla::render_metrics(
                &mut page,
                gateway.sla(),
                generation.config().admin.sloth_series,
            );
            if let Some(cluster) = gateway.cluster() {
                metrics::render_cluster(&mut page, cluster);
            }
            if let Some(tracer) = generation.tracer() {
                metrics::render_traces(&mut page, tracer.stats());
            }
            if let Some(notifications) = gateway.notifications() {
                metrics::render_notifications(&mut page, notifications);
            }
            let content_type = if openmetrics {
                exposition::OPENMETRICS
            } else {
                "text/plain; version=0.0.4"
            };
            text(StatusCode::OK, &page.finish(), content_type)
        }
        (Method::GET, "/dashboard") => dashboard(),
        (Method::GET, "/sla") => json(
            StatusCode::OK,
            &sla::document(gateway.sla(), gateway.cluster()),
        ),
        (Method::GET, path) if path.starts_with("/sla/routes/") => {
            sla_route(gateway.sla(), sla_route_path(path), request.uri().query())
        }
        (method @ (Method::GET | Method::POST), path) if path.starts_with("/canary/") => {
            canary(gateway.sla(), &method, path)
        }
        (Method::GET, "/config") => json(StatusCode::OK, &generation.config().effective),
        (Method::POST, "/reload") => reload(gateway).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/config" | "/reload") => {
            ErrorCode::MethodNotAllowed.response(&format!("{path} does not take this method"), "-")
        }
        _ => ErrorCode::NotFound.response(&format!("no admin endpoint {path}"), "-"),
    }
}

/// 401 unless the request carries the admin token (and there is one).
fn unauthorized<B>(request: &Request<B>, token: Option<&str>) -> Option<GatewayResponse> {
    if authorized(request, token) {
        return None;
    }
    let message = match token {
        Some(_) => "this endpoint needs Authorization: Bearer <admin token>",
        None => {
            "this endpoint needs an admin token, and none is configured (admin.token_env or admin.token_file)"
        }
    };
    Some(ErrorCode::Unauthorized.response(message, "-"))
}

/// `GET /readyz`: 200 with each route's available backends, 503 while draining.
fn readiness(gateway: &impl AdminState, generation: &Generation) -> GatewayResponse {
    let routes: Vec<_> = generation
        .routes()
        .iter()
        .map(|route| {
            let backends = route.failover().backends();
            let available = backends.iter().filter(|b| b.backend.is_available()).count();
            serde_json::json!({ "route": route.id().as_ref(), "backends": backends.len(), "available_backends": available })
        })
        .collect();
    let draining = gateway.is_draining();
    let body = serde_json::json!({ "ready": !draining, "draining": draining, "routes": routes });
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &body)
}

/// `GET /dashboard`: the page, which may run only its own inline script.
fn dashboard() -> GatewayResponse {
    let mut response = text(StatusCode::OK, DASHBOARD, "text/html; charset=utf-8");
    response.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// `GET /sla/routes/{id}` and `GET /sla/routes/{id}/history?minutes=N` (5 to 360, 120 by
/// default).
fn sla_route(
    engine: &accord_policies::sla::SlaEngine,
    path: SlaRoutePath<'_>,
    query: Option<&str>,
) -> GatewayResponse {
    match path {
        SlaRoutePath::History(id) => {
            let minutes = query
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("minutes=")))
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or(120)
                .clamp(5, 360);
            match engine.get(id) {
                Some(route) => {
                    let now = engine.clock().minute();
                    let history =
                        accord_policies::sla::report::RouteHistory::build(&route, now, minutes);
                    json(
                        StatusCode::OK,
                        &serde_json::to_value(history).unwrap_or_default(),
                    )
                }
                None => no_slo(id),
            }
        }
        SlaRoutePath::Gate(id) => gate(engine, id, query),
        SlaRoutePath::Report(id) => match sla::report(engine, id) {
            Some(report) => json(
                StatusCode::OK,
                &serde_json::to_value(report).unwrap_or_default(),
            ),
            None => no_slo(id),
        },
    }
}

/// `POST /reload`: 200 with what changed, or 422 with every error.
async fn reload(gateway: &impl AdminState) -> GatewayResponse {
    let errors = match gateway.reload().await {
        Ok(report) => {
            return json(
                StatusCode::OK,
                &serde_json::json!({ "reloaded": true, "report": report }),
            );
        }
        Err(ReloadError::Invalid(errors)) => serde_json::json!({
            "file": errors.file,
            "errors": errors.errors,
        }),
        Err(error @ ReloadError::Build(_)) => {
            serde_json::json!({ "errors": [{ "message": error.describe() }] })
        }
    };
    let mut body = serde_json::json!({
        "code": ErrorCode::InvalidConfig.spec().code,
        "message": ErrorCode::InvalidConfig.spec().meaning,
    });
    if let (Some(body), Some(errors)) = (body.as_object_mut(), errors.as_object()) {
        body.extend(errors.clone());
    }
    json(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

/// `GET /canary/{route}` (the canary's report) and `POST /canary/{route}/{command}`.
fn canary(
    engine: &accord_policies::sla::SlaEngine,
    method: &Method,
    path: &str,
) -> GatewayResponse {
    use accord_policies::sla::canary::Command;
    let rest = path.strip_prefix("/canary/").unwrap_or_default();
    let (id, command) = match (method, rest.rsplit_once('/')) {
        (&Method::POST, Some((id, command))) => (id, Some(command)),
        (&Method::GET, _) => (rest, None),
        _ => {
            return ErrorCode::NotFound.response(
                "POST /canary/{route}/promote|pause|resume|abort drives a canary",
                "-",
            );
        }
    };
    let Some(canary) = engine.get(id).and_then(|route| route.canary()) else {
        return ErrorCode::NotFound.response(&format!("route {id:?} has no canary"), "-");
    };
    let Some(command) = command else {
        return json(
            StatusCode::OK,
            &serde_json::to_value(canary.report()).unwrap_or_default(),
        );
    };
    let Some(parsed) = Command::parse(command) else {
        return ErrorCode::NotFound.response(
            &format!("no canary command {command:?}: promote, pause, resume or abort"),
            "-",
        );
    };
    match canary.command(parsed, engine.clock().now_ms()) {
        Ok(_) => {
            tracing::info!(route = %id, backend = %canary.state().backend, command, share = canary.share(), "canary: operator command");
            json(
                StatusCode::OK,
                &serde_json::to_value(canary.report()).unwrap_or_default(),
            )
        }
        Err(why) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({ "code": "canary_conflict", "message": why, "canary": canary.report() }),
        ),
    }
}

/// `GET /sla/routes/{id}/gate?min_budget=25%`: 200 when a release may go ahead, 409 with every
/// reason when not, 400 for a floor that is not a percentage.
fn gate(
    engine: &accord_policies::sla::SlaEngine,
    id: &str,
    query: Option<&str>,
) -> GatewayResponse {
    let Some(route) = engine.get(id) else {
        return no_slo(id);
    };
    let floor = query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("min_budget=")))
        .map(|v| v.replace("%25", "%"));
    let min_budget = match floor
        .as_deref()
        .map(str::parse::<crate::config::types::Percent>)
    {
        None => 0.0,
        Some(Ok(percent)) => percent.0,
        Some(Err(why)) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "code": "invalid_request", "message": format!("min_budget: {why}") }),
            );
        }
    };
    let verdict = accord_policies::sla::gate::gate(&route, min_budget);
    let status = if verdict.allow {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    json(status, &serde_json::to_value(verdict).unwrap_or_default())
}

/// What a path under `/sla/routes/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum SlaRoutePath<'a> {
    /// `/sla/routes/{id}`.
    Report(&'a str),
    /// `/sla/routes/{id}/history`.
    History(&'a str),
    /// `/sla/routes/{id}/gate`.
    Gate(&'a str),
}

/// Splits a path under `/sla/routes/` without slicing by index: `/sla/routes/history` is the
/// report of a route called `history` (it once panicked, the prefix and suffix overlapping).
fn sla_route_path(path: &str) -> SlaRoutePath<'_> {
    let rest = path.strip_prefix("/sla/routes/").unwrap_or(path);
    if let Some(id) = rest.strip_suffix("/history") {
        return SlaRoutePath::History(id);
    }
    match rest.strip_suffix("/gate") {
        Some(id) => SlaRoutePath::Gate(id),
        None => SlaRoutePath::Report(rest),
    }
}

fn no_slo(id: &str) -> GatewayResponse {
    ErrorCode::NotFound.response(&format!("route {id:?} has no SLO (or does not exist)"), "-")
}

/// Constant-time comparison of the bearer token.
fn authorized<B>(request: &Request<B>, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let Some(given) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn text(status: StatusCode, body: &str, content_type: &'static str) -> GatewayResponse {
    let mut response = Response::new(full_body(body.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.into()
}

fn json(status: StatusCode, body: &serde_json::Value) -> GatewayResponse {
    text(status, &format!("{body:#}\n"), "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_route_paths_split_without_overlap() {
        assert_eq!(
            sla_route_path("/sla/routes/history"),
            SlaRoutePath::Report("history")
        );
        assert_eq!(
            sla_route_path("/sla/routes/orders/history"),
            SlaRoutePath::History("orders")
        );
        assert_eq!(
            sla_route_path("/sla/routes//history"),
            SlaRoutePath::History("")
        );
        assert_eq!(sla_route_path("/sla/routes/"), SlaRoutePath::Report(""));
        assert_eq!(
            sla_route_path("/sla/routes/orders"),
            SlaRoutePath::Report("orders")
        );
    }
}
