//! Rates shared by every replica of a cluster (`cluster-rate` in the WIT).
//!
//! Each replica counts locally, with the same estimator as `rate` (a sliding second over a
//! count-min sketch), and remembers which keys it saw. The cluster sync publishes those keys'
//! local rates every sync interval and hands back the sum of the other replicas' latest rates
//! per key ([`SharedRates::set_remote`]); a plugin reads its local rate plus that sum. Without
//! cluster mode the remote part stays empty and `cluster-rate` is `rate`.
//!
//! Overshoot: a replica learns of the others' traffic one sync interval late at most, so while
//! every one of N replicas starts sending a key's traffic at once, the cluster can admit up to
//! about N × the limit during the first sync interval (each replica sees only its own share),
//! then the limit; with steady traffic, the others' part is at most one interval old.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use pingora_limits::rate::{PROPORTIONAL_RATE_ESTIMATE_CALC_FN, Rate};

/// Keys remembered per sync interval, per plugin: beyond this, new keys are counted locally
/// but not shared until the next interval (memory and sync size stay bounded).
pub const MAX_KEYS_PER_SYNC: usize = 10_000;

/// One plugin's shared rates.
pub struct SharedRates {
    local: Rate,
    seen: Mutex<HashSet<String>>,
    remote: Mutex<HashMap<String, f64>>,
}

impl std::fmt::Debug for SharedRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRates").finish_non_exhaustive()
    }
}

impl Default for SharedRates {
    fn default() -> Self {
        Self {
            local: Rate::new(Duration::from_secs(1)),
            seen: Mutex::new(HashSet::new()),
            remote: Mutex::new(HashMap::new()),
        }
    }
}

impl SharedRates {
    /// Counts `events` for `key` here and returns the cluster's rate, these included.
    pub fn observe(&self, key: &str, events: u32) -> f64 {
        self.local.observe(&key, events as isize);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() < MAX_KEYS_PER_SYNC && !seen.contains(key) {
                seen.insert(key.to_owned());
            }
        }
        self.current(key)
    }

    /// The cluster's rate of `key`, without counting.
    pub fn current(&self, key: &str) -> f64 {
        let local = self
            .local
            .rate_with(&key, PROPORTIONAL_RATE_ESTIMATE_CALC_FN);
        let remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        local + remote.get(key).copied().unwrap_or(0.0)
    }

    /// The keys seen since the last call, with this replica's rate of each: what the sync
    /// publishes.
    pub fn take_local(&self) -> Vec<(String, f64)> {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        seen.into_iter()
            .map(|key| {
                let rate = self
                    .local
                    .rate_with(&key, PROPORTIONAL_RATE_ESTIMATE_CALC_FN);
                (key, rate)
            })
            .collect()
    }

    /// Replaces the other replicas' rates (summed per key).
    pub fn set_remote(&self, remote: HashMap<String, f64>) {
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = remote;
    }
}

/// Every plugin's shared rates, by plugin name: kept across reloads (a reloaded plugin keeps
/// its counts), and read by the cluster sync.
pub type SharedRateRegistry = super::ByPlugin<SharedRates>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_rate_is_the_local_rate_plus_the_others() {
        let rates = SharedRates::default();
        let alone = rates.observe("acme", 3);
        assert!(alone > 0.0);
        rates.set_remote(HashMap::from([("acme".to_owned(), 40.0)]));
        assert!((rates.current("acme") - alone - 40.0).abs() < 1e-9);
        assert_eq!(rates.current("other"), 0.0);
        let published = rates.take_local();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].0, "acme");
        assert!(rates.take_local().is_empty(), "taken once per sync");
    }
}
