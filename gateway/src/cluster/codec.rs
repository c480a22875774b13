//! How rollups and replica records are written in Redis: short text a person can read with
//! `redis-cli`, e.g. `12,1,0,0,3,0;11;0;40:5,41:7` (requests by class in [`Class::ALL`] order;
//! within threshold; cancelled slow; latency `bin:count` pairs).

use accord_policies::Class;
use accord_policies::sla::histogram::Histogram;
use accord_policies::sla::meter::{Minute, Rollup};
use serde::{Deserialize, Serialize};

/// A rollup as text.
pub fn encode(rollup: &Rollup) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    for (i, n) in rollup.by_class.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{n}");
    }
    let _ = write!(
        out,
        ";{};{};",
        rollup.within_threshold, rollup.cancelled_slow
    );
    for (i, (bin, n)) in rollup.latency.bins.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{bin}:{n}");
    }
    out
}

/// A rollup read back; `None` for text this version does not understand.
pub fn decode(text: &str) -> Option<Rollup> {
    let mut parts = text.split(';');
    let mut rollup = Rollup::default();
    let classes: Vec<u64> = parts
        .next()?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // A newer writer with more classes is not summed into the wrong ones.
    if classes.len() != Class::COUNT {
        return None;
    }
    rollup.by_class.copy_from_slice(&classes);
    rollup.within_threshold = parts.next()?.parse().ok()?;
    rollup.cancelled_slow = parts.next()?.parse().ok()?;
    let bins = parts.next()?;
    if !bins.is_empty() {
        let mut histogram = Histogram::default();
        for pair in bins.split(',') {
            let (bin, n) = pair.split_once(':')?;
            let bin: u16 = bin.parse().ok()?;
            if usize::from(bin) >= accord_policies::sla::histogram::BINS {
                return None;
            }
            histogram.bins.push((bin, n.parse().ok()?));
        }
        histogram.bins.sort_unstable_by_key(|(bin, _)| *bin);
        rollup.latency = histogram;
    }
    Some(rollup)
}

/// A replica's live (unsealed) counters: the minute they belong to, then the rollup.
pub fn encode_live(minute: Minute, rollup: &Rollup) -> String {
    format!("{minute} {}", encode(rollup))
}

/// Reads [`encode_live`]'s text.
pub fn decode_live(text: &str) -> Option<(Minute, Rollup)> {
    let (minute, rollup) = text.split_once(' ')?;
    Some((minute.parse().ok()?, decode(rollup)?))
}

/// What a replica says of itself in the cluster's registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaRecord {
    /// Its configured name.
    pub replica: String,
    /// When the process started (ms since the epoch): with the name, the key of its data.
    pub started_ms: i64,
    /// Its last successful sync (ms since the epoch, its clock).
    pub last_sync_ms: i64,
    /// Requests it metered since it started, over every route.
    pub requests: u64,
    /// The Redis server's clock at that sync, to show clock skew.
    #[serde(default)]
    pub redis_time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollups_round_trip() {
        let rollup = Rollup {
            by_class: [12, 1, 0, 0, 3, 2],
            within_threshold: 11,
            cancelled_slow: 1,
            latency: Histogram {
                bins: vec![(40, 5), (41, 7), (300, 1)],
            },
        };
        let text = encode(&rollup);
        assert_eq!(text, "12,1,0,0,3,2;11;1;40:5,41:7,300:1");
        assert_eq!(decode(&text), Some(rollup.clone()));
        assert_eq!(
            decode_live(&encode_live(29_000_000, &rollup)),
            Some((29_000_000, rollup))
        );
        let empty = Rollup::default();
        assert_eq!(decode(&encode(&empty)), Some(empty));
    }

    #[test]
    fn foreign_text_is_refused_not_misread() {
        for text in [
            "",
            "1,2,3",
            "1,2,3,4,5,6,7;0;0;",
            "1,2,3,4,5,x;0;0;",
            "1,2,3,4,5,6;0;0;99999:1",
            "1,2,3,4,5,6;0;0;4",
            "1,2,3,4,5,6;0",
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
        assert_eq!(decode_live("12"), None);
    }
}
