//! The endpoints of an HTTP backend and how one is chosen for each try.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};

use super::pool::EndpointClient;
use crate::forwarding::Forwarding;
use crate::outlier::OutlierDetector;
use http::HeaderName;

/// How a backend spreads tries over its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum BalancerPolicy {
    /// Weighted round robin (plain round robin when all weights are equal).
    #[default]
    RoundRobin,
    /// Power of two choices: of two random endpoints, the one with fewer requests in flight
    /// per unit of weight.
    LeastRequest,
    /// The same key goes to the same endpoint while it is available (weighted rendezvous
    /// hashing: adding or losing an endpoint moves only that endpoint's share of keys).
    ConsistentHash(HashKey),
}

impl BalancerPolicy {
    /// Whether picking an endpoint reads the client's address (the request's
    /// [`RequestContext`](crate::backend::RequestContext)).
    pub fn reads_client_address(&self) -> bool {
        matches!(self, BalancerPolicy::ConsistentHash(HashKey::ClientAddress))
    }
}

/// What consistent hashing hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    ClientAddress,
}

/// One resolved address of a backend, with its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// The address connections go to.
    pub addr: SocketAddr,
    /// Share of traffic relative to the backend's other endpoints.
    pub weight: u32,
    /// `ip:port`, for the request URI.
    pub(crate) authority: http::uri::Authority,
    /// Passive outlier state.
    pub(crate) outlier: OutlierDetector,
    /// Active health state (true until a health check says otherwise).
    pub(crate) healthy: AtomicBool,
    /// Consecutive health check results in the current direction.
    pub(crate) health_streak: AtomicU32,
    /// Requests in flight to this endpoint.
    pub(crate) in_flight: AtomicUsize,
    /// The endpoint's own connection pool.
    pub(crate) client: EndpointClient,
}

impl Endpoint {
    pub(crate) fn new(
        addr: SocketAddr,
        weight: u32,
        client: EndpointClient,
    ) -> Result<Self, http::uri::InvalidUri> {
        Ok(Self {
            client,
            addr,
            weight: weight.max(1),
            authority: addr.to_string().parse()?,
            outlier: OutlierDetector::default(),
            healthy: AtomicBool::new(true),
            health_streak: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Neither failing health checks nor ejected.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Relaxed) && !self.outlier.is_ejected()
    }

    /// Counts a request in flight to this endpoint until the guard drops.
    pub(crate) fn start_request(&self) -> EndpointRequest<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        EndpointRequest(self)
    }
}

/// A request in flight to an [`Endpoint`] (least-request balancing reads the count).
pub(crate) struct EndpointRequest<'a>(&'a Endpoint);

impl Drop for EndpointRequest<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A snapshot of a backend's endpoints, replaced whole when DNS changes.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    pub(crate) endpoints: Vec<std::sync::Arc<Endpoint>>,
    /// Weighted round-robin schedule: endpoint indexes, each repeated by its reduced weight.
    schedule: Vec<usize>,
}

impl EndpointSet {
    pub(crate) fn new(endpoints: Vec<std::sync::Arc<Endpoint>>) -> Self {
        let divisor = endpoints.iter().map(|e| e.weight).fold(0, gcd).max(1);
        let mut schedule = Vec::new();
        // Interleave so that heavy endpoints are spread out rather than served in bursts.
        let reduced: Vec<u32> = endpoints
            .iter()
            .map(|e| (e.weight / divisor).min(1000))
            .collect();
        let rounds = reduced.iter().copied().max().unwrap_or(0);
        for round in 0..rounds {
            for (i, weight) in reduced.iter().enumerate() {
                if round < *weight {
                    schedule.push(i);
                }
            }
        }
        Self {
            endpoints,
            schedule,
        }
    }

    /// Chooses an endpoint. Unavailable endpoints are skipped while any is available; when
    /// none is, every endpoint is a candidate (failing fast on a guess beats refusing outright).
    pub(crate) fn pick(
        &self,
        policy: &BalancerPolicy,
        cursor: &AtomicUsize,
        key: Option<u64>,
    ) -> Option<&std::sync::Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let any_available = self.endpoints.iter().any(|e| e.is_available());
        let eligible = |e: &Endpoint| !any_available || e.is_available();
        match policy {
            BalancerPolicy::RoundRobin => {
                let start = cursor.fetch_add(1, Relaxed);
                (0..self.schedule.len())
                    .map(|step| {
                        &self.endpoints[self.schedule[(start + step) % self.schedule.len()]]
                    })
                    .find(|e| eligible(e))
            }
            BalancerPolicy::LeastRequest => {
                let candidates: Vec<_> = self.endpoints.iter().filter(|e| eligible(e)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    n => {
                        let a = candidates[fastrand::usize(0..n)];
                        let b = candidates[fastrand::usize(0..n)];
                        let load = |e: &Endpoint| {
                            (e.in_flight.load(Relaxed) as u64 + 1) * 1000 / u64::from(e.weight)
                        };
                        Some(if load(b) < load(a) { b } else { a })
                    }
                }
            }
            BalancerPolicy::ConsistentHash(_) => {
                let key = key.unwrap_or_else(|| fastrand::u64(..));
                self.endpoints
                    .iter()
                    .filter(|e| eligible(e))
                    .map(|e| (rendezvous_score(key, e), e))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, e)| e)
            }
        }
    }
}

/// Weighted rendezvous score: -weight / ln(u), with u a uniform hash of (key, endpoint) in (0, 1).
fn rendezvous_score(key: u64, endpoint: &Endpoint) -> f64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    endpoint.addr.hash(&mut hasher);
    let u = ((hasher.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(endpoint.weight) / u.ln()
}

/// Hashes the part of a request that `key` names; `None` when the request does not carry it.
/// A forwarding header the request's `forwarding` has still to add is hashed as it will be sent.
pub(crate) fn hash_key(
    key: &HashKey,
    headers: &http::HeaderMap,
    forwarding: Option<&Forwarding>,
    client: Option<SocketAddr>,
) -> Option<u64> {
    let mut hasher = std::hash::DefaultHasher::new();
    match key {
        HashKey::Header(name) => match forwarding.filter(|f| f.adds(name)) {
            Some(forwarding) => forwarding
                .value(name, headers)?
                .as_bytes()
                .hash(&mut hasher),
            None => headers.get(name)?.as_bytes().hash(&mut hasher),
        },
        HashKey::Cookie(name) => {
            let value = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then_some(v)
                })?;
            value.hash(&mut hasher);
        }
        HashKey::ClientAddress => client?.ip().hash(&mut hasher),
    }
    Some(hasher.finish())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::super::pool::Http1Pool;
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn set(weights: &[u32]) -> EndpointSet {
        let endpoint = |i: usize, weight: u32| {
            let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 80));
            let connector = super::super::connector::Connector {
                addr,
                tls: None,
                connect_timeout: std::time::Duration::from_secs(1),
            };
            let pool = Http1Pool::new(connector, 1, std::time::Duration::from_secs(1));
            let client = EndpointClient::Http1(Arc::new(pool));
            Arc::new(Endpoint::new(addr, weight, client).unwrap())
        };
        EndpointSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| endpoint(i, *w))
                .collect(),
        )
    }

    fn spread(set: &EndpointSet, policy: &BalancerPolicy, n: usize) -> HashMap<SocketAddr, usize> {
        let cursor = AtomicUsize::new(0);
        let mut counts = HashMap::new();
        for _ in 0..n {
            *counts
                .entry(set.pick(policy, &cursor, None).unwrap().addr)
                .or_default() += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let endpoints = set(&[1, 3]);
        let counts = spread(&endpoints, &BalancerPolicy::RoundRobin, 400);
        assert_eq!(counts[&endpoints.endpoints[0].addr], 100);
        assert_eq!(counts[&endpoints.endpoints[1].addr], 300);
    }

    #[test]
    fn unavailable_endpoints_are_skipped_until_none_is_left() {
        let endpoints = set(&[1, 1, 1]);
        endpoints.endpoints[1].healthy.store(false, Relaxed);
        let counts = spread(&endpoints, &BalancerPolicy::RoundRobin, 30);
        assert!(!counts.contains_key(&endpoints.endpoints[1].addr));
        for e in &endpoints.endpoints {
            e.healthy.store(false, Relaxed);
        }
        assert_eq!(
            spread(&endpoints, &BalancerPolicy::RoundRobin, 30)
                .values()
                .sum::<usize>(),
            30
        );
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let endpoints = set(&[1, 1]);
        endpoints.endpoints[0].in_flight.store(50, Relaxed);
        // Power of two random choices: the idle endpoint wins whenever the two draws differ
        // (half the picks) and when both draws are it (a quarter), 3/4 in all. 2,000 picks put 1,400 five standard
        // deviations below the expected 1,500 (200 picks and 140 failed about one run in 20).
        let counts = spread(&endpoints, &BalancerPolicy::LeastRequest, 2000);
        assert!(counts[&endpoints.endpoints[1].addr] > 1400, "{counts:?}");
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_the_lost_share() {
        let endpoints = set(&[1, 1, 1, 1]);
        let policy = BalancerPolicy::ConsistentHash(HashKey::ClientAddress);
        let cursor = AtomicUsize::new(0);
        let before: Vec<_> = (0..1000u64)
            .map(|k| endpoints.pick(&policy, &cursor, Some(k)).unwrap().addr)
            .collect();
        let again: Vec<_> = (0..1000u64)
            .map(|k| endpoints.pick(&policy, &cursor, Some(k)).unwrap().addr)
            .collect();
        assert_eq!(before, again);
        let lost = endpoints.endpoints[2].addr;
        endpoints.endpoints[2].healthy.store(false, Relaxed);
        for (k, was) in before.iter().enumerate() {
            let now = endpoints
                .pick(&policy, &cursor, Some(k as u64))
                .unwrap()
                .addr;
            if *was != lost {
                assert_eq!(now, *was, "key {k} moved although its endpoint stayed");
            }
        }
    }

    #[test]
    fn cookie_and_header_keys_are_read_from_the_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, "a=1; session=abc".parse().unwrap());
        headers.insert("x-tenant", "t1".parse().unwrap());
        let cookie = hash_key(&HashKey::Cookie("session".into()), &headers, None, None);
        assert!(cookie.is_some());
        assert!(hash_key(&HashKey::Cookie("missing".into()), &headers, None, None).is_none());
        let header = hash_key(
            &HashKey::Header(HeaderName::from_static("x-tenant")),
            &headers,
            None,
            None,
        );
        assert!(header.is_some());
        assert_ne!(cookie, header);
    }
}
