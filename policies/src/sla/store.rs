//! Durable SLA history in an embedded SQLite database (WAL mode).
//!
//! Every flush upserts, for each route and each backend of a route, the minute rollups since
//! the last flush and the hour rollups they touch — the live counters of the current minute
//! included — in one transaction, off the request path. A crash therefore loses at most what
//! was recorded since the last flush (the flush interval, 10 s by default). Minute rows are
//! kept for 6 hours (the short windows), hour rows for the longest SLO window plus a day.
//! Breach events are stored too. On start, the engine's meters and event log are restored.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use rusqlite::{Connection, params};

use super::engine::{Action, EventKind, SlaEngine, Trigger};
use super::histogram::Histogram;
use super::meter::{MINUTES_KEPT, Meter, Minute, Rollup};
use super::objective::{Indicator, Severity};
use crate::Class;

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[error("SLA history store {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// What a load restored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Rollup rows restored.
    pub rollups: usize,
    /// Events restored.
    pub events: usize,
    /// Canaries restored (mid-step, where they were).
    pub canaries: usize,
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    flushed_through: Mutex<Option<Minute>>,
}

/// The page cache is kept small (128 KiB, not SQLite's 2 MiB): the store is written once a
/// minute and read at start and for long report windows, and the operating system caches the
/// file anyway; a gateway should not keep megabytes resident for it.
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA cache_size = -128;
CREATE TABLE IF NOT EXISTS rollups (
    route TEXT NOT NULL,
    backend TEXT NOT NULL,           -- '' for the route itself
    resolution TEXT NOT NULL,        -- 'm' (minute) or 'h' (hour)
    start INTEGER NOT NULL,          -- minutes or hours since the Unix epoch
    good INTEGER NOT NULL, bad INTEGER NOT NULL, throttled INTEGER NOT NULL,
    rejected INTEGER NOT NULL, client_error INTEGER NOT NULL,
    within_threshold INTEGER NOT NULL,
    latency BLOB NOT NULL,           -- (u16 bin, u64 count) pairs, little-endian
    cancelled INTEGER NOT NULL DEFAULT 0,
    cancelled_slow INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (route, backend, resolution, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_start ON rollups (resolution, start);
CREATE TABLE IF NOT EXISTS canaries (
    route TEXT PRIMARY KEY,
    state TEXT NOT NULL              -- the canary's state, JSON
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL, backend TEXT, kind TEXT NOT NULL, severity TEXT, action TEXT NOT NULL,
    indicator TEXT NOT NULL, measured REAL NOT NULL, limit_value REAL NOT NULL,
    window_seconds INTEGER NOT NULL,
    started_ms INTEGER NOT NULL, ended_ms INTEGER, requests_affected INTEGER NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let error = |source| StoreError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(error)?;
        conn.execute_batch(SCHEMA).map_err(error)?;
        add_missing_columns(&conn).map_err(error)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            flushed_through: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// Restores the history of every route the engine knows, and the event log.
    pub fn load(&self, engine: &SlaEngine) -> Result<Loaded, StoreError> {
        let now = engine.clock().minute();
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut loaded = Loaded::default();
        for route in engine.routes() {
            let keep_hours = route.objective().window.length().as_secs() / 3600 + 1;
            for (backend, meter) in route.meters() {
                loaded.rollups += load_rows(
                    &conn,
                    route.id(),
                    backend,
                    "m",
                    now - MINUTES_KEPT as i64,
                    meter,
                )
                .map_err(|e| self.error(e))?;
                loaded.rollups += load_rows(
                    &conn,
                    route.id(),
                    backend,
                    "h",
                    now.div_euclid(60) - keep_hours as i64,
                    meter,
                )
                .map_err(|e| self.error(e))?;
            }
        }
        loaded.events = self.load_events(&conn, engine).map_err(|e| self.error(e))?;
        loaded.canaries = load_canaries(&conn, engine).map_err(|e| self.error(e))?;
        *self
            .flushed_through
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(loaded)
    }

    fn load_events(&self, conn: &Connection, engine: &SlaEngine) -> rusqlite::Result<usize> {
        let mut statement = conn.prepare(
            "SELECT id, route, backend, kind, severity, action, indicator, measured, limit_value,
                    window_seconds, started_ms, ended_ms, requests_affected
             FROM events ORDER BY id DESC LIMIT 1000",
        )?;
        let restart_ms = engine.clock().now_ms();
        let rows = statement.query_map([], |row| {
            Ok(super::engine::RestoredEvent {
                id: row.get::<_, i64>(0)? as u64,
                route: row.get::<_, String>(1)?,
                backend: row.get::<_, Option<String>>(2)?,
                kind: parse_kind(&row.get::<_, String>(3)?),
                severity: row
                    .get::<_, Option<String>>(4)?
                    .as_deref()
                    .and_then(parse_severity),
                action: parse_action(&row.get::<_, String>(5)?),
                trigger: Trigger {
                    indicator: if row.get::<_, String>(6)? == "latency" {
                        Indicator::Latency
                    } else {
                        Indicator::Availability
                    },
                    measured: row.get(7)?,
                    limit: row.get(8)?,
                    window_seconds: row.get::<_, i64>(9)? as u64,
                },
                started_ms: row.get(10)?,
                // An event still open at the last flush ended, at the latest, at this restart:
                // breach states start afresh and reopen events if the breach goes on.
                ended_ms: row.get::<_, Option<i64>>(11)?.unwrap_or(restart_ms),
                requests_affected: row.get::<_, i64>(12)? as u64,
            })
        })?;
        let mut events: Vec<_> = rows.collect::<rusqlite::Result<_>>()?;
        events.reverse();
        let count = events.len();
        engine.events().restore(events);
        Ok(count)
    }

    /// Writes everything recorded since the last flush. Blocking: call it off the request path.
    pub fn flush(&self, engine: &SlaEngine) -> Result<usize, StoreError> {
        let now = engine.clock().minute();
        let since = self
            .flushed_through
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(now - MINUTES_KEPT as i64);
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let mut rows = 0;
        let mut longest_hours = 0;
        for route in engine.routes() {
            longest_hours =
                longest_hours.max(route.objective().window.length().as_secs() / 3600 + 24);
            for (backend, meter) in route.meters() {
                let (minutes, hours) = meter.export(since, now);
                for (minute, rollup) in &minutes {
                    upsert(&tx, route.id(), backend, "m", *minute, rollup)
                        .map_err(|e| self.error(e))?;
                }
                for (hour, rollup) in &hours {
                    upsert(&tx, route.id(), backend, "h", *hour, rollup)
                        .map_err(|e| self.error(e))?;
                }
                rows += minutes.len() + hours.len();
            }
        }
        for route in engine.routes() {
            if let Some(canary) = route.canary() {
                let state = serde_json::to_string(&canary.state()).unwrap_or_default();
                tx.execute(
                    "INSERT OR REPLACE INTO canaries (route, state) VALUES (?1, ?2)",
                    params![route.id().as_ref(), state],
                )
                .map_err(|e| self.error(e))?;
            }
        }
        for event in engine.events().list(None) {
            tx.execute(
                "INSERT OR REPLACE INTO events (id, route, backend, kind, severity, action, indicator,
                    measured, limit_value, window_seconds, started_ms, ended_ms, requests_affected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    event.id as i64,
                    event.route.as_ref(),
                    event.backend.as_deref(),
                    kind_name(event.kind),
                    event.severity.map(severity_name),
                    action_name(event.action),
                    if event.trigger.indicator == Indicator::Latency { "latency" } else { "availability" },
                    event.trigger.measured,
                    event.trigger.limit,
                    event.trigger.window_seconds as i64,
                    event.started_ms,
                    match event.ended_ms.load(Relaxed) {
                        0 => None,
                        ms => Some(ms as i64),
                    },
                    event.requests_affected.load(Relaxed) as i64,
                ],
            )
            .map_err(|e| self.error(e))?;
        }
        tx.execute(
            "DELETE FROM rollups WHERE (resolution = 'm' AND start < ?1) OR (resolution = 'h' AND start < ?2)",
            params![now - MINUTES_KEPT as i64 - 60, now.div_euclid(60) - longest_hours as i64],
        )
        .map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        // The current minute is written again next time (it is still filling).
        *self
            .flushed_through
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(rows)
    }
}

fn load_rows(
    conn: &Connection,
    route: &str,
    backend: &str,
    resolution: &str,
    from: i64,
    meter: &Meter,
) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(
        "SELECT start, good, bad, throttled, rejected, client_error, within_threshold, latency,
                cancelled, cancelled_slow
         FROM rollups WHERE route = ?1 AND backend = ?2 AND resolution = ?3 AND start >= ?4 ORDER BY start",
    )?;
    let rows = statement.query_map(params![route, backend, resolution, from], |row| {
        let start: i64 = row.get(0)?;
        let mut rollup = Rollup::default();
        let count = |column: usize| row.get::<_, i64>(column).map(|v| v.max(0) as u64);
        rollup.by_class = [
            count(1)?,
            count(2)?,
            count(3)?,
            count(4)?,
            count(5)?,
            count(8)?,
        ];
        rollup.within_threshold = count(6)?;
        rollup.cancelled_slow = count(9)?;
        rollup.latency = decode_histogram(&row.get::<_, Vec<u8>>(7)?);
        Ok((start, rollup))
    })?;
    let mut count = 0;
    for row in rows {
        let (start, rollup) = row?;
        match resolution {
            "m" => meter.restore_minute(start, &rollup),
            _ => meter.restore_hour(start, &rollup),
        }
        count += 1;
    }
    Ok(count)
}

/// Brings a database written by an older Accord up to the current schema: columns added since
/// are added with their defaults, so its history keeps loading.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('rollups')")?;
    let present: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for column in ["cancelled", "cancelled_slow"] {
        if !present.iter().any(|p| p == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE rollups ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

fn upsert(
    tx: &rusqlite::Transaction<'_>,
    route: &str,
    backend: &str,
    resolution: &str,
    start: i64,
    rollup: &Rollup,
) -> rusqlite::Result<()> {
    let c = |class: Class| rollup.count(class) as i64;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO rollups (route, backend, resolution, start, good, bad, throttled,
            rejected, client_error, within_threshold, latency, cancelled, cancelled_slow)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        route,
        backend,
        resolution,
        start,
        c(Class::Good),
        c(Class::Bad),
        c(Class::Throttled),
        c(Class::Rejected),
        c(Class::ClientError),
        rollup.within_threshold as i64,
        encode_histogram(&rollup.latency),
        c(Class::Cancelled),
        rollup.cancelled_slow as i64,
    ])?;
    Ok(())
}

fn encode_histogram(h: &Histogram) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.bins.len() * 10);
    for (bin, count) in &h.bins {
        out.extend_from_slice(&bin.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

fn decode_histogram(bytes: &[u8]) -> Histogram {
    let bins = bytes
        .chunks_exact(10)
        .map(|c| {
            let bin = u16::from_le_bytes([c[0], c[1]]);
            let mut count = [0u8; 8];
            count.copy_from_slice(&c[2..10]);
            (bin, u64::from_le_bytes(count))
        })
        .collect();
    Histogram { bins }
}

/// Restores each route's canary where it was, if the route still has that canary.
fn load_canaries(conn: &Connection, engine: &SlaEngine) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare("SELECT route, state FROM canaries")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut restored = 0;
    for row in rows {
        let (route, state) = row?;
        let (Some(route), Ok(state)) = (engine.get(&route), serde_json::from_str(&state)) else {
            continue;
        };
        if let Some(canary) = route.canary()
            && canary.restore(state)
        {
            restored += 1;
        }
    }
    Ok(restored)
}

fn kind_name(kind: EventKind) -> &'static str {
    kind.as_str()
}

fn parse_kind(text: &str) -> EventKind {
    EventKind::from_name(text).unwrap_or(EventKind::BackendBreach)
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Page => "page",
        Severity::Ticket => "ticket",
    }
}

fn parse_severity(text: &str) -> Option<Severity> {
    match text {
        "page" => Some(Severity::Page),
        "ticket" => Some(Severity::Ticket),
        _ => None,
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Reroute => "reroute",
        Action::Shed => "shed",
        Action::Reject => "reject",
        Action::Alert => "alert",
        Action::Rollback => "rollback",
        Action::Pause => "pause",
    }
}

fn parse_action(text: &str) -> Action {
    match text {
        "reroute" => Action::Reroute,
        "shed" => Action::Shed,
        "reject" => Action::Reject,
        "rollback" => Action::Rollback,
        "pause" => Action::Pause,
        _ => Action::Alert,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;
    use crate::sla::objective::Objective;
    use crate::sla::{Clock, Enforcement};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_canary_restarts_where_it_was_mid_step() {
        let dir = std::env::temp_dir().join(format!("accord-canary-{}", fastrand::u64(..)));
        let path = dir.join("sla.db");
        let spec = crate::sla::canary::CanarySpec {
            steps: vec![0.1, 0.5, 1.0],
            step_for: Duration::from_secs(300),
            min_requests: 10,
            compare: crate::sla::canary::Compare::Objective,
            on_breach: crate::sla::canary::OnBreach::Rollback,
        };
        let start = 1_767_225_600_000;
        {
            let engine = SlaEngine::new(Clock::starting_at(start));
            let route = engine.route(
                &Arc::from("orders"),
                Objective::availability(0.999, Duration::from_secs(86_400)),
                Enforcement::default(),
                &[Arc::from("v1"), Arc::from("v2")],
            );
            let canary = route.set_canary(Some((1, spec.clone()))).unwrap();
            canary
                .command(crate::sla::canary::Command::Promote, start + 1000)
                .unwrap();
            let store = Store::open(&path).unwrap();
            store.flush(&engine).unwrap();
        }
        let engine = SlaEngine::new(Clock::starting_at(start + 60_000));
        let route = engine.route(
            &Arc::from("orders"),
            Objective::availability(0.999, Duration::from_secs(86_400)),
            Enforcement::default(),
            &[Arc::from("v1"), Arc::from("v2")],
        );
        let canary = route.set_canary(Some((1, spec))).unwrap();
        assert_eq!(canary.share(), 0.1, "before the load: a fresh canary");
        let loaded = Store::open(&path).unwrap().load(&engine).unwrap();
        assert_eq!(loaded.canaries, 1);
        assert_eq!(canary.share(), 0.5);
        assert_eq!(
            canary.state().step_started_ms,
            start + 1000,
            "mid-step, as it was"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn engine(start_ms: i64) -> (SlaEngine, Arc<super::super::RouteSla>) {
        let engine = SlaEngine::new(Clock::starting_at(start_ms));
        let window = Duration::from_secs(30 * 86_400);
        let objective = Objective::availability(0.999, window);
        let route = engine.route(
            &Arc::from("orders"),
            objective,
            Enforcement::default(),
            &[Arc::from("primary")],
        );
        (engine, route)
    }

    #[tokio::test(start_paused = true)]
    async fn history_survives_a_restart_including_the_unsealed_minute() {
        let dir = std::env::temp_dir().join(format!("accord-store-{}", fastrand::u64(..)));
        let path = dir.join("sla.db");
        let start = 1_767_225_600_000;
        {
            let (engine, route) = engine(start);
            let store = Store::open(&path).unwrap();
            store.load(&engine).unwrap();
            engine.tick();
            // Two hours of traffic: 10 requests a minute, one of them bad.
            for _ in 0..120 {
                for i in 0..10 {
                    let class = if i == 0 { Class::Bad } else { Class::Good };
                    route.record(class, Duration::from_millis(30), false);
                    route.record_try(0, class, Duration::from_millis(30));
                }
                tokio::time::advance(Duration::from_secs(60)).await;
                engine.tick();
                store.flush(&engine).unwrap();
            }
            // Five more requests in the current minute, flushed but never sealed: the crash.
            for _ in 0..5 {
                route.record(Class::Good, Duration::from_millis(30), false);
            }
            store.flush(&engine).unwrap();
        }
        let (engine, route) = engine(start + 120 * 60_000 + 30_000);
        let store = Store::open(&path).unwrap();
        let loaded = store.load(&engine).unwrap();
        assert!(loaded.rollups > 120, "{loaded:?}");
        let now = engine.clock().minute();
        let day = route.meter().window(now, Duration::from_secs(86_400));
        assert_eq!(day.count(Class::Bad), 120.0);
        assert_eq!(day.count(Class::Good), 1085.0);
        let hour = route.meter().window(now, Duration::from_secs(3600));
        assert_eq!(
            hour.total(),
            595.0,
            "the last hour, exact to the minute: 59 minutes and the unsealed one"
        );
        assert_eq!(
            route.backends()[0]
                .meter()
                .window(now, Duration::from_secs(86_400))
                .total(),
            1200.0
        );
        assert!(
            day.latency.quantile(0.99).is_some(),
            "latency histograms are restored"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
