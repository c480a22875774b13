//! The webhook outbox: deliveries waiting to be made, in SQLite, so that a receiver that is
//! down for minutes — or a gateway restart — loses none. Each (receiver, event, state) is
//! queued once: the `sent` table remembers what was ever queued.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY,            -- receiver | event id | state
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS queued (
    key TEXT PRIMARY KEY,            -- what was ever queued, delivered or not
    at_ms INTEGER NOT NULL
);
";

/// One delivery waiting to be made.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Receiver, event and state: the de-duplication key.
    pub key: String,
    /// Where it goes.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// When it was queued.
    pub created_ms: i64,
    /// Attempts made.
    pub attempts: u32,
}

/// The outbox file.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)
            .and_then(|c| c.execute_batch(SCHEMA).map(|()| c))
            .map_err(|e| format!("notification outbox {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, e: rusqlite::Error) -> String {
        format!("notification outbox {}: {e}", self.path.display())
    }

    /// Queues a delivery unless `key` was ever queued; true when it was queued now.
    pub fn queue_once(
        &self,
        key: &str,
        url: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<bool, String> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO queued (key, at_ms) VALUES (?1, ?2)",
                params![key, now_ms],
            )
            .map_err(|e| self.error(e))?
            == 1;
        if fresh {
            tx.execute(
                "INSERT INTO outbox (key, url, body, created_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![key, url, body, now_ms],
            )
            .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(fresh)
    }

    /// Deliveries due now, oldest first (at most `limit`).
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Pending>, String> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT key, url, body, created_ms, attempts FROM outbox WHERE next_ms <= ?1
                 ORDER BY created_ms LIMIT ?2",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![now_ms, limit as i64], |row| {
                Ok(Pending {
                    key: row.get(0)?,
                    url: row.get(1)?,
                    body: row.get(2)?,
                    created_ms: row.get(3)?,
                    attempts: row.get::<_, i64>(4)? as u32,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.error(e))
    }

    /// Removes a delivered (or dropped) delivery.
    pub fn remove(&self, key: &str) -> Result<(), String> {
        self.conn()
            .execute("DELETE FROM outbox WHERE key = ?1", params![key])
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Records a failed attempt; the next one is due at `next_ms`.
    pub fn failed(&self, key: &str, next_ms: i64, error: &str) -> Result<(), String> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 WHERE key = ?1",
                params![key, next_ms, error],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Deliveries waiting.
    pub fn pending(&self) -> Result<u64, String> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| {
                row.get::<_, i64>(0)
            })
            .optional()
            .map(|n| n.unwrap_or(0) as u64)
            .map_err(|e| self.error(e))
    }

    /// Forgets what was queued before `before_ms` (events that old are never queued again).
    pub fn forget_before(&self, before_ms: i64) -> Result<(), String> {
        self.conn()
            .execute("DELETE FROM queued WHERE at_ms < ?1", params![before_ms])
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_queued_once_survives_a_reopen_and_is_retried_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let outbox = Outbox::open(&path).unwrap();
            assert!(
                outbox
                    .queue_once("hook|7|firing", "http://x", "{}", 1000)
                    .unwrap()
            );
            assert!(
                !outbox
                    .queue_once("hook|7|firing", "http://x", "{}", 2000)
                    .unwrap(),
                "once"
            );
            outbox
                .failed("hook|7|firing", 5000, "connection refused")
                .unwrap();
            assert!(outbox.due(4999, 10).unwrap().is_empty());
        }
        let outbox = Outbox::open(&path).unwrap();
        let due = outbox.due(5000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1);
        outbox.remove("hook|7|firing").unwrap();
        assert_eq!(outbox.pending().unwrap(), 0);
        assert!(
            !outbox
                .queue_once("hook|7|firing", "http://x", "{}", 6000)
                .unwrap(),
            "delivered: never again"
        );
    }
}
