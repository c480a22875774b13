//! Notifications: the SLA engine's events pushed to the tools that reach people.
//!
//! Every second the notifier reads the event log (the cluster's, in cluster mode) and:
//!
//! * **Alertmanager** (API v2, `POST /api/v2/alerts`): every open event is sent each
//!   `resend_interval` (and at once when it opens) with `endsAt` four intervals ahead, and every
//!   event that ended within the last 15 minutes with its end time, so that Alertmanager
//!   resolves it — the way Prometheus itself talks to Alertmanager: stateless, so an
//!   Alertmanager that was down catches up at the next send. Labels as Sloth's alerts have
//!   them (`alertname`, `sloth_id`, `sloth_service`, `sloth_slo`, `sloth_severity`), plus
//!   `route`, `backend` and `kind`.
//! * **Webhooks**: each event's `firing` and `resolved` as JSON, signed with HMAC-SHA256
//!   (`x-accord-signature-256: sha256=<hex>` over the body), queued once per receiver in a
//!   durable SQLite outbox and retried with exponential backoff (1 s, doubling, at most 5 min)
//!   until delivered or `max_age` old. Delivery is at least once: the body's `id` (the same
//!   from every replica of a cluster) lets a receiver drop duplicates.

pub mod outbox;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use accord_policies::sla::Severity;
use accord_policies::sla::SlaEngine;
use accord_policies::sla::engine::{BreachEvent, EventKind};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::model::{Notifications, WebhookTarget};
use outbox::Outbox;

/// How long Alertmanager keeps hearing of a resolved event.
const RESOLVED_FOR_MS: i64 = 15 * 60_000;
/// Longest wait between two attempts of a webhook delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Deliveries attempted per tick.
const BATCH: usize = 100;

/// What the notifier did, for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Webhook deliveries the receiver accepted.
    pub delivered: AtomicU64,
    /// Webhook attempts that failed (each is retried).
    pub failed_attempts: AtomicU64,
    /// Webhook deliveries given up after `max_age`.
    pub dropped: AtomicU64,
    /// Deliveries waiting in the outbox.
    pub pending: AtomicU64,
    /// Alertmanager posts accepted.
    pub alertmanager_sent: AtomicU64,
    /// Alertmanager posts that failed (the next send carries the same alerts).
    pub alertmanager_failed: AtomicU64,
}

/// Starts the notifier; it stops (after one last round) when `stop` says so.
pub fn spawn(
    config: Notifications,
    outbox_path: std::path::PathBuf,
    engine: Arc<SlaEngine>,
    source: String,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<NotifyStats>, JoinHandle<()>)> {
    let outbox = Arc::new(Outbox::open(&outbox_path).map_err(anyhow::Error::msg)?);
    let stats = Arc::new(NotifyStats::default());
    let mut notifier = Notifier {
        config,
        outbox,
        engine,
        source,
        stats: stats.clone(),
        last_alertmanager_ms: i64::MIN,
        last_open: HashSet::new(),
        queued: HashSet::new(),
    };
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => notifier.round().await,
                _ = stop.changed() => {
                    notifier.round().await;
                    return;
                }
            }
        }
    });
    Ok((stats, task))
}

struct Notifier {
    config: Notifications,
    outbox: Arc<Outbox>,
    engine: Arc<SlaEngine>,
    /// Names this gateway (or cluster) in payloads and de-duplication ids.
    source: String,
    stats: Arc<NotifyStats>,
    last_alertmanager_ms: i64,
    /// Events open at the last Alertmanager send: a change is sent at once.
    last_open: HashSet<u64>,
    /// Outbox keys this process has queued (or found queued), so that each round writes only
    /// what is new; the outbox's own `queued` table covers restarts.
    queued: HashSet<String>,
}

impl Notifier {
    async fn round(&mut self) {
        let now_ms = self.engine.clock().now_ms();
        let events = self.engine.events().list(None);
        if self.config.alertmanager.is_some() {
            self.alertmanager(&events, now_ms).await;
        }
        if !self.config.webhooks.is_empty() {
            if let Err(e) = self.queue_webhooks(&events, now_ms).await {
                tracing::warn!(error = %e, "notifications: cannot queue webhook deliveries");
            }
            self.deliver_webhooks(now_ms).await;
        }
    }

    // === Alertmanager ===

    async fn alertmanager(&mut self, events: &[Arc<BreachEvent>], now_ms: i64) {
        let Some(target) = &self.config.alertmanager else {
            return;
        };
        let resend_ms = target.resend_interval.as_millis() as i64;
        let open: HashSet<u64> = events
            .iter()
            .filter(|e| e.ended_ms.load(Relaxed) == 0)
            .map(|e| e.id)
            .collect();
        let due =
            now_ms.saturating_sub(self.last_alertmanager_ms) >= resend_ms || open != self.last_open;
        if !due {
            return;
        }
        let alerts: Vec<serde_json::Value> = events
            .iter()
            .filter(|e| {
                let ended = e.ended_ms.load(Relaxed) as i64;
                ended == 0 || now_ms - ended <= RESOLVED_FOR_MS
            })
            .map(|e| alertmanager_alert(e, now_ms, resend_ms * 4, &self.source))
            .collect();
        if alerts.is_empty() && self.last_open.is_empty() {
            self.last_alertmanager_ms = now_ms;
            return;
        }
        let url = format!(
            "{}/api/v2/alerts",
            target.url.to_string().trim_end_matches('/')
        );
        let body = Bytes::from(serde_json::to_vec(&alerts).unwrap_or_default());
        let result = match url.parse() {
            Ok(uri) => crate::outbound::post(&uri, &[], body).await,
            Err(e) => Err(format!("{url}: {e}")),
        };
        match result {
            Ok(_) => {
                self.stats.alertmanager_sent.fetch_add(1, Relaxed);
                self.last_alertmanager_ms = now_ms;
                self.last_open = open;
            }
            Err(e) => {
                self.stats.alertmanager_failed.fetch_add(1, Relaxed);
                // Try again at the next round rather than after a whole interval.
                tracing::warn!(url = %url, error = %e, "notifications: alertmanager did not take the alerts");
            }
        }
    }

    // === Webhooks ===

    async fn queue_webhooks(
        &mut self,
        events: &[Arc<BreachEvent>],
        now_ms: i64,
    ) -> Result<(), String> {
        let max_age_ms = self.config.max_age.as_millis() as i64;
        let mut queue: Vec<(String, String, String)> = Vec::new();
        let mut current = HashSet::new();
        for event in events {
            let ended = event.ended_ms.load(Relaxed) as i64;
            let last_change = if ended == 0 { event.started_ms } else { ended };
            if now_ms - last_change > max_age_ms {
                continue;
            }
            for (i, hook) in self.config.webhooks.iter().enumerate() {
                if !hook.kinds.is_empty() && !hook.kinds.contains(&event.kind) {
                    continue;
                }
                let mut states = vec!["firing"];
                if ended != 0 {
                    states.push("resolved");
                }
                for state in states {
                    let id = format!("{}-{}-{state}", self.source, event.id);
                    let key = format!("{i}|{}|{id}", hook.url);
                    current.insert(key.clone());
                    if self.queued.contains(&key) {
                        continue;
                    }
                    let body = webhook_body(event, state, &id, &self.source, now_ms);
                    queue.push((key, hook.url.to_string(), body));
                }
            }
        }
        // Keys of events that aged out are not needed any more.
        self.queued.retain(|k| current.contains(k));
        let keys: Vec<String> = queue.iter().map(|(key, _, _)| key.clone()).collect();
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || {
            for (key, url, body) in queue {
                outbox.queue_once(&key, &url, &body, now_ms)?;
            }
            outbox.forget_before(now_ms - 2 * max_age_ms)
        })
        .await
        .map_err(|e| e.to_string())??;
        // Only once they are in the outbox: a failed write is tried again next round.
        self.queued.extend(keys);
        Ok(())
    }

    async fn deliver_webhooks(&self, now_ms: i64) {
        let outbox = self.outbox.clone();
        let due = match tokio::task::spawn_blocking(move || outbox.due(now_ms, BATCH)).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "notifications: cannot read the outbox");
                return;
            }
            Err(_) => return,
        };
        let max_age_ms = self.config.max_age.as_millis() as i64;
        for pending in due {
            let hook = self
                .config
                .webhooks
                .iter()
                .find(|h| h.url.to_string() == pending.url);
            let outcome = if now_ms - pending.created_ms > max_age_ms {
                Outcome::Expired
            } else {
                match (hook, pending.url.parse::<http::Uri>()) {
                    (Some(hook), Ok(uri)) => {
                        match crate::outbound::post(
                            &uri,
                            &signature_headers(hook, &pending),
                            Bytes::from(pending.body.clone()),
                        )
                        .await
                        {
                            Ok(_) => Outcome::Delivered,
                            Err(e) => Outcome::Failed(e),
                        }
                    }
                    // The receiver is no longer configured.
                    _ => Outcome::Expired,
                }
            };
            let outbox = self.outbox.clone();
            let key = pending.key.clone();
            let attempts = pending.attempts;
            let result = match outcome {
                Outcome::Delivered => {
                    self.stats.delivered.fetch_add(1, Relaxed);
                    tokio::task::spawn_blocking(move || outbox.remove(&key)).await
                }
                Outcome::Expired => {
                    self.stats.dropped.fetch_add(1, Relaxed);
                    tracing::warn!(url = %pending.url, key = %pending.key, attempts, "notifications: webhook delivery given up after max_age");
                    tokio::task::spawn_blocking(move || outbox.remove(&key)).await
                }
                Outcome::Failed(error) => {
                    self.stats.failed_attempts.fetch_add(1, Relaxed);
                    let backoff = Duration::from_secs(1)
                        .saturating_mul(1 << attempts.min(16))
                        .min(MAX_BACKOFF);
                    if attempts == 0 {
                        tracing::warn!(url = %pending.url, error = %error, "notifications: webhook delivery failed; retrying with backoff");
                    }
                    let next = now_ms + backoff.as_millis() as i64;
                    tokio::task::spawn_blocking(move || outbox.failed(&key, next, &error)).await
                }
            };
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, "notifications: cannot update the outbox");
            }
        }
        let outbox = self.outbox.clone();
        if let Ok(Ok(pending)) = tokio::task::spawn_blocking(move || outbox.pending()).await {
            self.stats.pending.store(pending, Relaxed);
        }
    }
}

enum Outcome {
    Delivered,
    Failed(String),
    Expired,
}

/// The alert's name and severity: burn-rate alerts as the rules `accord slo rules` writes name
/// them; an exhausted budget pages; breaches make tickets (the gateway already acted on them).
fn alert_identity(event: &BreachEvent) -> (&'static str, &'static str) {
    match (event.kind, event.severity) {
        (EventKind::BurnRateAlert, Some(Severity::Page)) => ("AccordSLOPageBurnRate", "page"),
        (EventKind::BurnRateAlert, _) => ("AccordSLOTicketBurnRate", "ticket"),
        (EventKind::BudgetExhausted, _) => ("AccordErrorBudgetExhausted", "page"),
        (EventKind::BackendBreach, _) => ("AccordBackendBreach", "ticket"),
        (EventKind::CanaryBreach, _) => ("AccordCanaryBreach", "ticket"),
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| "1970-01-01T00:00:00Z".into(), |t| t.to_string())
}

/// One alert of Alertmanager's API v2.
fn alertmanager_alert(
    event: &BreachEvent,
    now_ms: i64,
    hold_ms: i64,
    source: &str,
) -> serde_json::Value {
    let (name, severity) = alert_identity(event);
    let sli = event.trigger.indicator.as_str();
    let ended = event.ended_ms.load(Relaxed) as i64;
    let mut labels = serde_json::json!({
        "alertname": name,
        "sloth_id": format!("{}-{sli}", event.route),
        "sloth_service": &*event.route,
        "sloth_slo": sli,
        "sloth_severity": severity,
        "route": &*event.route,
        "kind": event.kind.as_str(),
        "accord": source,
    });
    if let Some(backend) = &event.backend {
        labels["backend"] = serde_json::json!(&**backend);
    }
    serde_json::json!({
        "labels": labels,
        "annotations": {
            "summary": summary(event),
            "event_id": event.id.to_string(),
        },
        "startsAt": rfc3339(event.started_ms),
        "endsAt": rfc3339(if ended == 0 { now_ms + hold_ms } else { ended }),
    })
}

/// A sentence for people.
fn summary(event: &BreachEvent) -> String {
    let t = &event.trigger;
    let sli = t.indicator.as_str();
    let window =
        accord_policies::sla::objective::format_duration(Duration::from_secs(t.window_seconds));
    match event.kind {
        EventKind::BurnRateAlert => format!(
            "route {} is burning its {sli} error budget at {:.1}x over {window} (limit {:.1}x)",
            event.route, t.measured, t.limit
        ),
        EventKind::BudgetExhausted => format!(
            "route {} has spent its {sli} error budget ({:.0}% consumed)",
            event.route,
            t.measured * 100.0
        ),
        EventKind::BackendBreach => format!(
            "backend {} of route {} breaches the {sli} objective ({:.2}% against {:.2}% over {window}); traffic moved",
            event.backend.as_deref().unwrap_or("?"),
            event.route,
            t.measured * 100.0,
            t.limit * 100.0
        ),
        EventKind::CanaryBreach => format!(
            "canary {} of route {} breached ({sli} {:.2}% bad against {:.2}%)",
            event.backend.as_deref().unwrap_or("?"),
            event.route,
            t.measured * 100.0,
            t.limit * 100.0
        ),
    }
}

/// A webhook's JSON body.
fn webhook_body(event: &BreachEvent, state: &str, id: &str, source: &str, now_ms: i64) -> String {
    let ended = event.ended_ms.load(Relaxed) as i64;
    serde_json::json!({
        "id": id,
        "source": source,
        "state": state,
        "event_id": event.id,
        "kind": event.kind.as_str(),
        "route": &*event.route,
        "backend": event.backend.as_deref(),
        "severity": alert_identity(event).1,
        "action": event.action,
        "trigger": event.trigger,
        "summary": summary(event),
        "started_ms": event.started_ms,
        "ended_ms": (ended != 0).then_some(ended),
        "requests_affected": event.requests_affected.load(Relaxed),
        "queued_ms": now_ms,
    })
    .to_string()
}

/// `x-accord-signature-256: sha256=<hex of HMAC-SHA256(secret, body)>`, and the event id.
fn signature_headers(
    hook: &WebhookTarget,
    pending: &outbox::Pending,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![(
        "x-accord-delivery",
        pending
            .key
            .rsplit('|')
            .next()
            .unwrap_or_default()
            .to_owned(),
    )];
    if let Some(secret) = &hook.secret {
        headers.push((
            "x-accord-signature-256",
            sign(secret.expose(), pending.body.as_bytes()),
        ));
    }
    headers
}

/// `sha256=<hex>` of HMAC-SHA256 over `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", crate::hex::encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
