//! Cluster mode: N replicas, one SLA. Every `sync_interval` each replica publishes its own
//! minute rollups (per route and per backend) to Redis and reads the others', which its
//! meters then include in every window; budgets, burn rates, alerts, breach verdicts and
//! shedding all come from the cluster's totals. The request path never waits on Redis: it
//! records into local counters, and only the sync task talks to Redis.
//!
//! Keys (`<c>` the cluster name, `<r>` a route id; `{<r>}` is a Redis Cluster hash tag, so a
//! route's keys share a slot and each route's sync is one atomic pipeline on one node):
//!
//! | key | type | fields → value | kept |
//! | --- | --- | --- | --- |
//! | `accord:<c>:replicas` | hash | replica key → [`codec::ReplicaRecord`] JSON | pruned after 6 h silent |
//! | `accord:<c>:{<r>}:m:<minute>` | hash | `replica key\|meter` → sealed minute rollup | 6 h + 10 min |
//! | `accord:<c>:{<r>}:h:<hour>` | hash | `replica key\|meter` → the replica's hour rollup | the SLO window + 1 day |
//! | `accord:<c>:{<r>}:live` | hash | `replica key\|meter` → `minute rollup` (unsealed) | 6 h |
//! | `accord:<c>:{<r>}:through` | hash | replica key → last minute whose rollups are written | 6 h |
//! | `accord:<c>:{<r>}:events`, `:open`, `:closed` | hashes | the route's cluster events | last 100 events |
//!
//! A replica key is `name@start-ms`: each process writes only its own fields, so a retried or
//! repeated write replaces rather than adds, and two processes never share a field. The meter
//! is `""` for the route and the backend id for a backend.
//!
//! Exactly once: a reader adds a peer's sealed minute `m` when `through` says it is written
//! and the reader has not yet passed `m` for that peer (its own watermark per route and peer).
//! A peer's live counters count as their minute until it is sealed. A peer that stops
//! syncing (killed, partitioned) keeps its last live counters, which readers then file as
//! sealed: at most one sync interval of its traffic is lost.

pub mod codec;
mod events;
mod keys;
pub mod redis;
mod sync;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

pub use sync::spawn;

/// What the cluster looks like from this replica: served by the admin API, the report and
/// `/metrics`.
#[derive(Debug)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub name: String,
    /// This replica's name.
    pub replica: String,
    /// This replica's key (`name@start-ms`).
    pub key: String,
    state: Mutex<State>,
    /// Successful syncs.
    pub syncs_ok: AtomicU64,
    /// Failed syncs.
    pub syncs_failed: AtomicU64,
    /// Total time spent in syncs, in microseconds.
    pub sync_micros: AtomicU64,
    /// Minutes written again after Redis came back.
    pub backfilled_minutes: AtomicU64,
    /// Bytes of rollups written (values only).
    pub bytes_written: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct State {
    /// Since when Redis has been unreachable, and why.
    down: Option<(i64, String)>,
    last_sync_ms: Option<i64>,
    replicas: Vec<ReplicaView>,
}

/// One replica as the registry shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaView {
    /// Its name.
    pub replica: String,
    /// `name@start-ms`.
    pub key: String,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// Its last successful sync.
    pub last_sync_ms: i64,
    /// Requests it metered in the last 5 minutes (all routes).
    pub requests_5m: u64,
    /// `ok`, or `stale` when it has not synced for a while (stopped, killed or cut off).
    pub status: &'static str,
    /// Whether this is the replica answering.
    pub this: bool,
    /// Its clock minus Redis's, in ms, at its last sync.
    pub clock_offset_ms: i64,
}

/// The `cluster` object of `GET /sla` and `/healthz`.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// The cluster's name.
    pub name: String,
    /// This replica's name.
    pub replica: String,
    /// `ok`, or `degraded: redis unreachable since … (why)`.
    pub status: String,
    /// This replica's last successful sync.
    pub last_sync_ms: Option<i64>,
    /// Every replica in the registry.
    pub replicas: Vec<ReplicaView>,
}

impl ClusterStatus {
    pub(crate) fn new(name: String, replica: String, key: String) -> Self {
        Self {
            name,
            replica,
            key,
            state: Mutex::new(State::default()),
            syncs_ok: AtomicU64::new(0),
            syncs_failed: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            backfilled_minutes: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the last sync reached Redis.
    pub fn is_ok(&self) -> bool {
        self.state().down.is_none()
    }

    /// The report.
    pub fn report(&self) -> ClusterReport {
        let state = self.state().clone();
        ClusterReport {
            name: self.name.clone(),
            replica: self.replica.clone(),
            status: match &state.down {
                None => "ok".to_owned(),
                Some((since, why)) => format!(
                    "degraded: redis unreachable since {} ({why})",
                    jiff::Timestamp::from_millisecond(*since)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                ),
            },
            last_sync_ms: state.last_sync_ms,
            replicas: state.replicas,
        }
    }

    fn synced(&self, at_ms: i64, replicas: Vec<ReplicaView>) {
        let mut state = self.state();
        if let Some((since, _)) = state.down.take() {
            tracing::info!(
                cluster = %self.name,
                down_for_ms = at_ms - since,
                "cluster: redis reachable again; SLA state is shared"
            );
        }
        state.last_sync_ms = Some(at_ms);
        state.replicas = replicas;
        self.syncs_ok.fetch_add(1, Relaxed);
    }

    fn failed(&self, at_ms: i64, error: String) {
        let mut state = self.state();
        if state.down.is_none() {
            tracing::warn!(
                cluster = %self.name,
                %error,
                "cluster: redis unreachable; enforcing on this replica's view until it returns"
            );
            state.down = Some((at_ms, error));
        } else if let Some((_, why)) = &mut state.down {
            *why = error;
        }
        self.syncs_failed.fetch_add(1, Relaxed);
    }
}
