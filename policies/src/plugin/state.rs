//! Key-value state with expiry (`state` in the WIT), shared by every instance of a plugin and,
//! in cluster mode, by every replica.
//!
//! Two kinds of keys, kept apart: **values** (`set`, `get`, `delete`), last-writer-wins, and
//! **counters** (`incr`), which add every replica's increments. Each replica keeps its own copy
//! in memory (the request path never waits for Redis); the cluster sync publishes the keys this
//! replica changed since the last sync and takes in the others' ([`PluginState::take_changes`],
//! [`PluginState::merge_remote`]), so another replica's write is seen at most one sync interval
//! late. Expiry reads the gateway's clock (a test's paused clock included).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Keys a plugin may hold (values and counters each).
pub const MAX_KEYS: usize = 100_000;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Longest time to live (a day), also what `ttl-ms: 0` means.
pub const MAX_TTL_MS: u64 = 86_400_000;

/// A value as a replica last wrote it; `None` is a deletion (kept until it expires, so that a
/// replica that has not seen it yet learns of it).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueEntry {
    /// The value, or `None` for a deletion.
    pub value: Option<String>,
    /// When it was written (ms since the epoch): the later write wins.
    pub written_ms: i64,
    /// When it expires.
    pub expires_ms: i64,
}

#[derive(Debug, Clone, Default)]
struct Counter {
    /// This replica's increments.
    local: i64,
    /// The other replicas' increments, as of the last sync.
    remote: i64,
    expires_ms: i64,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<String, ValueEntry>,
    counters: HashMap<String, Counter>,
    changed_values: HashSet<String>,
    changed_counters: HashSet<String>,
}

/// One plugin's state.
#[derive(Debug, Default)]
pub struct PluginState {
    inner: Mutex<Inner>,
}

/// What this replica changed since the last sync: values (with their write time) and its own
/// counter totals.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StateChanges {
    /// Changed values, deletions included.
    pub values: Vec<(String, ValueEntry)>,
    /// This replica's total and expiry for each changed counter.
    pub counters: Vec<(String, i64, i64)>,
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a key must be 1 to {MAX_KEY_BYTES} bytes (this one is {})",
            key.len()
        ));
    }
    Ok(())
}

fn expiry(now_ms: i64, ttl_ms: u64) -> i64 {
    let ttl = if ttl_ms == 0 {
        MAX_TTL_MS
    } else {
        ttl_ms.min(MAX_TTL_MS)
    };
    now_ms.saturating_add(ttl as i64)
}

impl PluginState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`, unless absent, deleted or expired.
    pub fn get(&self, key: &str, now_ms: i64) -> Option<String> {
        let inner = self.lock();
        let entry = inner.values.get(key)?;
        (entry.expires_ms > now_ms)
            .then(|| entry.value.clone())
            .flatten()
    }

    /// Sets `key` for `ttl_ms` (0: the longest).
    pub fn set(&self, key: &str, value: &str, ttl_ms: u64, now_ms: i64) -> Result<(), String> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "a value must be at most {MAX_VALUE_BYTES} bytes (this one is {})",
                value.len()
            ));
        }
        let mut inner = self.lock();
        if !inner.values.contains_key(key) && inner.values.len() >= MAX_KEYS {
            Self::expire(&mut inner, now_ms);
            if inner.values.len() >= MAX_KEYS {
                return Err(format!("the plugin already holds {MAX_KEYS} keys"));
            }
        }
        inner.values.insert(
            key.to_owned(),
            ValueEntry {
                value: Some(value.to_owned()),
                written_ms: now_ms,
                expires_ms: expiry(now_ms, ttl_ms),
            },
        );
        inner.changed_values.insert(key.to_owned());
        Ok(())
    }

    /// Removes `key`; true if it was set (and not expired).
    pub fn delete(&self, key: &str, now_ms: i64) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.values.get_mut(key) else {
            return false;
        };
        let was_set = entry.value.is_some() && entry.expires_ms > now_ms;
        *entry = ValueEntry {
            value: None,
            written_ms: now_ms,
            expires_ms: entry.expires_ms.max(now_ms + 1),
        };
        inner.changed_values.insert(key.to_owned());
        was_set
    }

    /// Adds `delta` to counter `key` (absent or expired: from 0, living `ttl_ms`) and returns
    /// the cluster-wide total.
    pub fn incr(&self, key: &str, delta: i64, ttl_ms: u64, now_ms: i64) -> Result<i64, String> {
        check_key(key)?;
        let mut inner = self.lock();
        if !inner.counters.contains_key(key) && inner.counters.len() >= MAX_KEYS {
            Self::expire(&mut inner, now_ms);
            if inner.counters.len() >= MAX_KEYS {
                return Err(format!("the plugin already holds {MAX_KEYS} counters"));
            }
        }
        let counter = inner.counters.entry(key.to_owned()).or_default();
        if counter.expires_ms <= now_ms {
            *counter = Counter {
                local: 0,
                remote: 0,
                expires_ms: expiry(now_ms, ttl_ms),
            };
        }
        counter.local = counter.local.saturating_add(delta);
        let total = counter.local.saturating_add(counter.remote);
        inner.changed_counters.insert(key.to_owned());
        Ok(total)
    }

    fn expire(inner: &mut Inner, now_ms: i64) {
        inner.values.retain(|_, e| e.expires_ms > now_ms);
        inner.counters.retain(|_, c| c.expires_ms > now_ms);
    }

    /// What changed since the last call (what the cluster sync publishes); expired keys are
    /// dropped on the way.
    pub fn take_changes(&self, now_ms: i64) -> StateChanges {
        let mut inner = self.lock();
        Self::expire(&mut inner, now_ms);
        let values = std::mem::take(&mut inner.changed_values);
        let counters = std::mem::take(&mut inner.changed_counters);
        StateChanges {
            values: values
                .into_iter()
                .filter_map(|k| inner.values.get(&k).cloned().map(|e| (k, e)))
                .collect(),
            counters: counters
                .into_iter()
                .filter_map(|k| {
                    let c = inner.counters.get(&k)?;
                    Some((k, c.local, c.expires_ms))
                })
                .collect(),
        }
    }

    /// Takes in the other replicas' state: their values (a later write wins) and, per counter,
    /// the sum of their increments with the latest expiry.
    pub fn merge_remote(
        &self,
        values: Vec<(String, ValueEntry)>,
        counters: HashMap<String, (i64, i64)>,
        now_ms: i64,
    ) {
        let mut inner = self.lock();
        for (key, remote) in values {
            if remote.expires_ms <= now_ms {
                continue;
            }
            match inner.values.get(&key) {
                Some(local) if local.written_ms >= remote.written_ms => {}
                _ if inner.values.len() >= MAX_KEYS && !inner.values.contains_key(&key) => {}
                _ => {
                    inner.values.insert(key, remote);
                }
            }
        }
        for counter in inner.counters.values_mut() {
            counter.remote = 0;
        }
        for (key, (sum, expires_ms)) in counters {
            if expires_ms <= now_ms {
                continue;
            }
            if !inner.counters.contains_key(&key) && inner.counters.len() >= MAX_KEYS {
                continue;
            }
            let counter = inner.counters.entry(key).or_insert_with(|| Counter {
                expires_ms,
                ..Counter::default()
            });
            counter.remote = sum;
            counter.expires_ms = counter.expires_ms.max(expires_ms);
        }
    }
}

/// Every plugin's state, by plugin name: kept across reloads, and read by the cluster sync.
pub type PluginStateRegistry = super::ByPlugin<PluginState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_and_deletions_are_kept_as_changes() {
        let state = PluginState::default();
        state.set("a", "1", 1000, 0).unwrap();
        assert_eq!(state.get("a", 999).as_deref(), Some("1"));
        assert_eq!(state.get("a", 1000), None, "expired");
        assert!(!state.delete("a", 1000), "an expired key was not set");
        state.set("b", "2", 0, 0).unwrap();
        assert!(state.delete("b", 10));
        assert_eq!(state.get("b", 11), None);
        let changes = state.take_changes(11);
        let b = changes.values.iter().find(|(k, _)| k == "b").unwrap();
        assert_eq!(b.1.value, None, "a deletion is published");
        assert!(state.take_changes(11).values.is_empty(), "taken once");
    }

    #[test]
    fn limits_are_refused_with_the_reason() {
        let state = PluginState::default();
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(
            state
                .set(&long, "v", 0, 0)
                .unwrap_err()
                .contains("1 to 256 bytes")
        );
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(state.set("k", &big, 0, 0).unwrap_err().contains("4096"));
        assert!(state.incr("", 1, 0, 0).is_err());
    }

    #[test]
    fn counters_add_every_replicas_increments_and_restart_after_expiry() {
        let state = PluginState::default();
        assert_eq!(state.incr("tenant", 2, 60_000, 0), Ok(2));
        state.merge_remote(
            Vec::new(),
            HashMap::from([("tenant".to_owned(), (5, 60_000))]),
            1,
        );
        assert_eq!(state.incr("tenant", 1, 60_000, 2), Ok(8));
        let changes = state.take_changes(2);
        assert_eq!(changes.counters, vec![("tenant".to_owned(), 3, 60_000)]);
        assert_eq!(state.incr("tenant", 1, 60_000, 60_000), Ok(1), "expired");
    }

    #[test]
    fn the_later_write_wins_whichever_replica_made_it() {
        let state = PluginState::default();
        state.set("k", "here", 0, 100).unwrap();
        let remote = |value: &str, written_ms| ValueEntry {
            value: Some(value.into()),
            written_ms,
            expires_ms: 1_000_000,
        };
        state.merge_remote(vec![("k".into(), remote("older", 50))], HashMap::new(), 200);
        assert_eq!(state.get("k", 200).as_deref(), Some("here"));
        state.merge_remote(
            vec![("k".into(), remote("newer", 150))],
            HashMap::new(),
            200,
        );
        assert_eq!(state.get("k", 200).as_deref(), Some("newer"));
    }
}
