//! **Forward** (phase 6) and **respond** (phase 7).
//!
//! Forward: the route's [`Failover`](accord_adapters::Failover) tries its backends in priority
//! order under the route's deadline, retry policy and retry budget; the record observes every
//! try as it ends, so each backend is metered for each try (a try in flight when the client
//! leaves counts as cancelled, and its upstream call is dropped with the client).
//!
//! Respond: the backend's response goes back with hop-by-hop headers stripped and the request
//! id added (a WebSocket handshake the backend accepted is tunnelled both ways); a failure
//! becomes a JSON error from [`super::errors`], with `Retry-After` when the backend gave one.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use accord_adapters::{BackendErrorKind, Forwarded, GatewayResponse, PreparedHead, ReplayBody};
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use super::errors::ErrorCode;
use super::headers;
use super::record::Record;
use super::server::ClientUpgrade;
use crate::control::generation::LiveRoute;

/// Sends the request to the route's backends; the outcome is noted on the record.
pub(super) async fn forward<'r>(
    route: &'r LiveRoute,
    head: Arc<PreparedHead>,
    body: ReplayBody,
    preferred: Option<&str>,
    record: &mut Record,
) -> Forwarded<'r> {
    let deadline = record.started + route.config().timeout;
    let forwarded = route
        .failover()
        .forward_preferring(head, body, deadline, preferred, &mut *record)
        .await;
    record.tries = forwarded.tries;
    record.answered_by(forwarded.backend.map(|b| b.id()));
    record.steered = forwarded.steered;
    if forwarded.tries > 1 {
        route
            .stats()
            .retries
            .fetch_add(u64::from(forwarded.tries - 1), Relaxed);
    }
    if forwarded.budget_exhausted {
        route.stats().retry_budget_exhausted.fetch_add(1, Relaxed);
    }
    forwarded
}

/// The client's response to what forwarding came to.
pub(super) fn respond(
    route: &LiveRoute,
    result: Result<accord_adapters::GatewayResponse, accord_adapters::BackendError>,
    client_upgrade: Option<ClientUpgrade>,
    record: &mut Record,
) -> GatewayResponse {
    match result {
        Ok(mut response) => {
            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client_upgrade) = client_upgrade
            {
                // hyper finds the upgrade in an `http::Response`'s extensions.
                let mut upgrading = Response::new(());
                if let Some(upgrade) = response.extensions_mut().remove::<OnUpgrade>() {
                    upgrading.extensions_mut().insert(upgrade);
                }
                tunnel(
                    client_upgrade,
                    hyper::upgrade::on(upgrading),
                    record.request_id().to_owned(),
                );
            } else if let Some(headers) = response.parsed_headers_mut() {
                headers::strip_hop_by_hop(headers, false);
            }
            response.insert_header(headers::REQUEST_ID, record.request_id_header().clone());
            response
        }
        Err(error) => {
            let code = ErrorCode::for_backend_error(&error);
            tracing::warn!(
                request_id = %record.request_id(),
                route = %route.id(),
                backend = record.backend.as_deref().unwrap_or("-"),
                kind = error.kind().as_str(),
                error = %error.detailed_message(),
                "request failed"
            );
            record.failure = Some(error.kind());
            if error.kind() == BackendErrorKind::BodyTooLarge {
                return super::admit::body_too_large(route, record);
            }
            let message = format!("{} (route {})", code.spec().meaning, route.id());
            code.response_with_retry_after(&message, record.request_id(), error.retry_after())
        }
    }
}

/// Splices the client's and the backend's upgraded connections together.
fn tunnel(client: ClientUpgrade, upstream: hyper::upgrade::OnUpgrade, request_id: String) {
    tokio::spawn(async move {
        let (mut client, upstream) = match tokio::join!(client.upgraded(), upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(e), _) => {
                tracing::debug!(%request_id, error = %e, "upgrade failed");
                return;
            }
            (_, Err(e)) => {
                tracing::debug!(%request_id, error = %e, "upgrade failed");
                return;
            }
        };
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%request_id, error = %e, "tunnel closed with an error");
        }
    });
}
