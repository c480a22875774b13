//! `accord run --watch`: reload when the configuration file changes. The file is read and
//! hashed every interval, so every way a file changes is seen the same way — an editor's
//! in-place write, a rename over it, and the symlink swap by which Kubernetes updates a mounted
//! ConfigMap (`accord.yaml -> ..data/accord.yaml`, `..data` re-pointed atomically), which
//! changes neither the file's path nor, reliably, any timestamp one could watch.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::gateway::Gateway;

/// Reloads `gateway` whenever the content behind `path` changes, checking every `every`. A
/// content that fails to reload is not retried until it changes again; a file that cannot be
/// read (mid-swap, say) is skipped until it can.
pub async fn watch(gateway: Arc<Gateway>, path: PathBuf, every: Duration) {
    let mut last = fingerprint(&path);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(now) = fingerprint(&path) else {
            continue;
        };
        if last != Some(now) {
            last = Some(now);
            tracing::info!(path = %path.display(), "the configuration changed: reloading");
            let _ = gateway.reload().await;
        }
    }
}

/// A hash of the file's content, or `None` when it cannot be read.
fn fingerprint(path: &std::path::Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}
