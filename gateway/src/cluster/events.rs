//! One event log for the cluster. Every replica reaches the same verdicts from the same
//! totals and opens its own local event; the sync publishes it with a script that makes the
//! first replica's event the cluster's and adds the later ones to its `replicas`. A replica
//! that opens the same event shortly after another closed it (its verdict lagged by a sync)
//! joins the closed event instead of opening a second one.

use std::collections::HashMap;
use std::sync::Arc;

use accord_policies::sla::SlaEngine;
use accord_policies::sla::engine::{BreachEvent, RestoredEvent, Trigger};
use redis::Script;
use serde::{Deserialize, Serialize};

use super::keys::RouteKeys;
use super::redis::Redis;

/// Events kept per route in Redis.
const EVENTS_KEPT: u64 = 100;

const OPEN: &str = r"
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  local recent = redis.call('HGET', KEYS[2], ARGV[1])
  if recent then
    local sep = string.find(recent, ':', 1, true)
    if tonumber(ARGV[4]) - tonumber(string.sub(recent, sep + 1)) <= tonumber(ARGV[5]) then
      id = string.sub(recent, 1, sep - 1)
    end
  end
end
if not id then
  id = tostring(redis.call('HINCRBY', KEYS[3], 'seq', 1))
  redis.call('HSET', KEYS[3], id, ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[1], id)
  local old = tonumber(id) - tonumber(ARGV[6])
  if old > 0 then
    redis.call('HDEL', KEYS[3], tostring(old), old .. ':replicas', old .. ':affected', old .. ':ended')
  end
end
local field = id .. ':replicas'
local replicas = redis.call('HGET', KEYS[3], field)
if not replicas then
  redis.call('HSET', KEYS[3], field, ARGV[2])
elseif not string.find(',' .. replicas .. ',', ',' .. ARGV[2] .. ',', 1, true) then
  redis.call('HSET', KEYS[3], field, replicas .. ',' .. ARGV[2])
end
return tonumber(id)
";

const CLOSE: &str = r"
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], id .. ':' .. ARGV[3])
  redis.call('HSET', KEYS[3], id .. ':ended', ARGV[3])
end
return 1
";

/// What is stored of an event (the parts that do not change).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    backend: Option<String>,
    kind: accord_policies::sla::engine::EventKind,
    severity: Option<accord_policies::sla::Severity>,
    action: accord_policies::sla::engine::Action,
    trigger: Trigger,
    started_ms: i64,
}

/// A local event once published.
#[derive(Debug)]
struct Published {
    identity: String,
    id: u64,
    ended: bool,
    affected: u64,
}

/// Publishes this replica's events and reads the cluster's.
pub struct Events {
    open: Script,
    close: Script,
    published: HashMap<u64, Published>,
    /// Local events opened before this time are not published (restored ones).
    since_ms: i64,
}

impl Events {
    pub fn new(since_ms: i64) -> Self {
        Self {
            open: Script::new(OPEN),
            close: Script::new(CLOSE),
            published: HashMap::new(),
            since_ms,
        }
    }

    /// Publishes what changed in the local log since the last call: new events, ends, and the
    /// requests they affected here.
    pub async fn publish(
        &mut self,
        redis: &Redis,
        prefix: &str,
        replica: &str,
        engine: &SlaEngine,
        linger_ms: i64,
    ) -> redis::RedisResult<()> {
        let local = engine.events().local(None);
        for event in &local {
            if event.started_ms < self.since_ms {
                continue;
            }
            let keys = RouteKeys::new(prefix, &event.route);
            if !self.published.contains_key(&event.id) {
                let identity = identity(event);
                let stored = Stored {
                    backend: event.backend.as_deref().map(str::to_owned),
                    kind: event.kind,
                    severity: event.severity,
                    action: event.action,
                    trigger: event.trigger.clone(),
                    started_ms: event.started_ms,
                };
                let json = serde_json::to_string(&stored).unwrap_or_default();
                let mut call = self.open.prepare_invoke();
                call.key(&keys.open)
                    .key(&keys.closed)
                    .key(&keys.events)
                    .arg(&identity)
                    .arg(replica)
                    .arg(json)
                    .arg(event.started_ms)
                    .arg(linger_ms)
                    .arg(EVENTS_KEPT);
                let id: u64 = redis.invoke(&call).await?;
                self.published.insert(
                    event.id,
                    Published {
                        identity,
                        id,
                        ended: false,
                        affected: 0,
                    },
                );
            }
            let Some(published) = self.published.get_mut(&event.id) else {
                continue;
            };
            let affected = event
                .requests_affected
                .load(std::sync::atomic::Ordering::Relaxed);
            if affected > published.affected {
                let mut pipe = redis::pipe();
                pipe.hincr(
                    &keys.events,
                    format!("{}:affected", published.id),
                    affected - published.affected,
                )
                .ignore();
                redis.query::<()>(&pipe).await?;
                published.affected = affected;
            }
            let ended_ms = event.ended_ms.load(std::sync::atomic::Ordering::Relaxed);
            if ended_ms != 0 && !published.ended {
                let mut call = self.close.prepare_invoke();
                call.key(&keys.open)
                    .key(&keys.closed)
                    .key(&keys.events)
                    .arg(&published.identity)
                    .arg(published.id.to_string())
                    .arg(ended_ms);
                redis.invoke::<i64>(&call).await?;
                published.ended = true;
            }
        }
        // Forget events that left the local log.
        let ids: std::collections::HashSet<u64> = local.iter().map(|e| e.id).collect();
        self.published.retain(|id, _| ids.contains(id));
        Ok(())
    }
}

/// What makes two replicas' events the same event: the kind, the backend or the alert tier.
fn identity(event: &BreachEvent) -> String {
    format!(
        "{:?}|{}|{:?}|{:?}|{}",
        event.kind,
        event.backend.as_deref().unwrap_or(""),
        event.trigger.indicator,
        event.severity,
        event.trigger.window_seconds
    )
}

/// A route's events from its `events` hash.
pub(super) fn parse_route_events(
    route: &Arc<str>,
    fields: &HashMap<String, String>,
) -> Vec<Arc<BreachEvent>> {
    let mut events = Vec::new();
    for (field, json) in fields {
        let Ok(id) = field.parse::<u64>() else {
            continue;
        };
        let Ok(stored) = serde_json::from_str::<Stored>(json) else {
            tracing::warn!(route = %route, field, "cluster: unreadable event skipped");
            continue;
        };
        let get = |suffix: &str| fields.get(&format!("{id}:{suffix}"));
        let replicas = get("replicas")
            .map(|r| r.split(',').map(Arc::from).collect())
            .unwrap_or_default();
        events.push(Arc::new(BreachEvent::restored(
            RestoredEvent {
                id,
                route: route.to_string(),
                backend: stored.backend,
                kind: stored.kind,
                severity: stored.severity,
                action: stored.action,
                trigger: stored.trigger,
                started_ms: stored.started_ms,
                ended_ms: get("ended").and_then(|e| e.parse().ok()).unwrap_or(0),
                requests_affected: get("affected").and_then(|a| a.parse().ok()).unwrap_or(0),
            },
            replicas,
        )));
    }
    events
}
