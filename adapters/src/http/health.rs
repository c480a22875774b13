//! Active health checks: each endpoint is probed on an interval; it turns unhealthy after
//! `unhealthy_threshold` failed probes in a row and healthy again after `healthy_threshold`
//! good ones.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{Endpoint, Shared};
use crate::body::RequestBody;
use http::Uri;

/// How endpoints are probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) requested with GET.
    pub path: String,
    /// Time between probes of one endpoint.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    /// Good probes in a row that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// `Host` header for probes; defaults to the configured host name.
    pub host: Option<String>,
}

pub(super) async fn run(shared: Arc<Shared>, check: HealthCheck) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let set = shared.endpoints.load_full();
        let probes = set.endpoints.iter().map(|endpoint| {
            let (shared, check) = (&shared, &check);
            async move {
                let ok = probe(shared, check, endpoint).await;
                update(shared, check, endpoint, ok);
            }
        });
        futures_util::future::join_all(probes).await;
    }
}

async fn probe(shared: &Shared, check: &HealthCheck, endpoint: &Endpoint) -> bool {
    let uri = Uri::builder()
        .scheme(shared.scheme.clone())
        .authority(endpoint.authority.clone())
        .path_and_query(check.path.as_str())
        .build();
    let Ok(uri) = uri else { return false };
    let host = check
        .host
        .clone()
        .or_else(|| shared.config.host_rewrite.clone())
        .or_else(|| shared.config.addresses.first().map(|a| a.host.clone()))
        .unwrap_or_default();
    let request = http::Request::get(uri)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "accord-health-check")
        .body(RequestBody::empty());
    let Ok(request) = request else { return false };
    match tokio::time::timeout(check.timeout, endpoint.client.request(request.into())).await {
        Ok(Ok(response)) => {
            let ok = response.status().is_success() || response.status().is_redirection();
            // Drain the body so the connection goes back to the pool.
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            ok
        }
        _ => false,
    }
}

fn update(shared: &Shared, check: &HealthCheck, endpoint: &Endpoint, ok: bool) {
    if !ok {
        shared.stats.health_check_failures.fetch_add(1, Relaxed);
    }
    let healthy = endpoint.healthy.load(Relaxed);
    if ok == healthy {
        endpoint.health_streak.store(0, Relaxed);
        return;
    }
    let streak = endpoint.health_streak.fetch_add(1, Relaxed) + 1;
    let threshold = if healthy {
        check.unhealthy_threshold
    } else {
        check.healthy_threshold
    };
    if streak >= threshold.max(1) {
        endpoint.healthy.store(ok, Relaxed);
        endpoint.health_streak.store(0, Relaxed);
        if ok {
            tracing::info!(backend = %shared.id, endpoint = %endpoint.addr, "endpoint passed health checks: restored");
        } else {
            tracing::warn!(backend = %shared.id, endpoint = %endpoint.addr, "endpoint failed health checks: removed from rotation");
        }
    }
}
