//! The sync task: every `sync_interval`, publish this replica's rollups, read the cluster's,
//! file the other replicas' into the meters, and share events. Fail-open: when Redis cannot
//! be reached the replica keeps enforcing on what it knows (its own traffic plus what the
//! others had published) and writes the minutes it missed once Redis is back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use accord_policies::plugin::PluginShares;
use accord_policies::plugin::state::ValueEntry;
use accord_policies::sla::engine::BreachEvent;
use accord_policies::sla::meter::{MINUTES_KEPT, Meter, Minute, Rollup};
use accord_policies::sla::{RouteSla, SlaEngine};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::codec::{self, ReplicaRecord};
use super::events::{self, Events};
use super::keys::RouteKeys;
use super::redis::Redis;
use super::{ClusterStatus, ReplicaView};
use crate::config::model::Cluster;

/// Sealed minutes kept in Redis: the minute history every replica keeps, plus a margin.
const MINUTE_TTL: Duration = Duration::from_secs(MINUTES_KEPT as u64 * 60 + 600);

/// Route pipelines in flight at once.
const CONCURRENCY: usize = 64;

/// Starts syncing `engine` with the cluster, until `stop` says so (then it syncs once more).
pub fn spawn(
    config: &Cluster,
    engine: Arc<SlaEngine>,
    plugin_shares: PluginShares,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<ClusterStatus>, JoinHandle<()>) {
    let started_ms = engine.clock().now_ms();
    let key = format!("{}@{started_ms}", config.replica);
    let status = Arc::new(ClusterStatus::new(
        config.name.clone(),
        config.replica.clone(),
        key.clone(),
    ));
    let written_through = engine.with_sealed(|through, _| through);
    let mut sync = Sync {
        config: config.clone(),
        status: status.clone(),
        prefix: format!("accord:{}", config.name),
        key,
        started_ms,
        redis: None,
        epoch: None,
        written_through,
        routes: HashMap::new(),
        events: Events::new(started_ms),
        engine,
        plugin_shares,
        published_rates: HashMap::new(),
        canary_script: redis::Script::new(CANARY_CAS),
    };
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(sync.config.sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => sync.run_once().await,
                _ = stop.changed() => {
                    sync.run_once().await;
                    return;
                }
            }
        }
    });
    (status, task)
}

/// What this replica knows of one route's peers.
#[derive(Default)]
struct RouteSync {
    /// The [`RouteSla`] these watermarks are for: a new one (the objective changed on
    /// reload) starts with a full load.
    identity: usize,
    /// Per peer (replica key): the last minute of its sealed rollups filed here.
    read_through: HashMap<String, Minute>,
}

struct Sync {
    config: Cluster,
    status: Arc<ClusterStatus>,
    engine: Arc<SlaEngine>,
    prefix: String,
    key: String,
    started_ms: i64,
    redis: Option<Redis>,
    /// The value of the cluster's epoch key when first seen: when it changes, Redis lost its
    /// data (restarted without persistence) and this replica uploads its history again.
    epoch: Option<String>,
    /// The last minute whose rollups this replica has written.
    written_through: Minute,
    routes: HashMap<Arc<str>, RouteSync>,
    events: Events,
    /// Plugins' `cluster-rate` counts and `state`.
    plugin_shares: PluginShares,
    /// Per plugin, the keys whose rates this replica published last time.
    published_rates: HashMap<String, HashSet<String>>,
    /// Compare-and-set of a route's canary state.
    canary_script: redis::Script,
}

/// How long a canary's shared state outlives the last replica that wrote it.
const CANARY_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Sets KEYS[1] to ARGV[2] unless it holds a state of the same backend (ARGV[3]) with a
/// version at least ARGV[1]; returns what the key holds afterwards.
const CANARY_CAS: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, state = pcall(cjson.decode, held)
  if ok and state.backend == ARGV[3] and tonumber(state.version) >= tonumber(ARGV[1]) then
    return held
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
return ARGV[2]
";

/// A peer from the registry, as this sync sees it.
struct Peer {
    record: ReplicaRecord,
    fresh: bool,
}

impl Sync {
    async fn run_once(&mut self) {
        let started = tokio::time::Instant::now();
        let timeout = (self.config.sync_interval * 5).max(Duration::from_secs(3));
        let now_ms = self.engine.clock().now_ms();
        let result = match tokio::time::timeout(timeout, self.sync(now_ms)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match result {
            Ok(replicas) => self.status.synced(now_ms, replicas),
            Err(error) => {
                // Fail open: plugins limit on this replica's own counts until Redis is back.
                for (_, rates) in self.plugin_shares.rates.all() {
                    rates.set_remote(HashMap::new());
                }
                self.status.failed(now_ms, error)
            }
        }
        self.status.sync_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    async fn sync(&mut self, now_ms: i64) -> redis::RedisResult<Vec<ReplicaView>> {
        let redis = match &self.redis {
            Some(redis) => redis.clone(),
            None => {
                let redis = Redis::connect(
                    &self.config.redis,
                    self.config.password.as_ref(),
                    (self.config.sync_interval * 2).max(Duration::from_secs(1)),
                )
                .await?;
                self.redis = Some(redis.clone());
                redis
            }
        };
        let redis_time_ms = redis.time_ms().await?;
        self.check_epoch(&redis).await?;
        let peers = self.registry(&redis, now_ms, redis_time_ms).await?;
        let mut events = self.exchange(&redis, &peers, now_ms).await?;
        let linger = i64::try_from((self.config.sync_interval * 3).as_millis()).unwrap_or(i64::MAX)
            + i64::try_from(accord_policies::sla::EVALUATION_INTERVAL.as_millis()).unwrap_or(0);
        self.events
            .publish(
                &redis,
                &self.prefix,
                &self.config.replica,
                &self.engine,
                linger,
            )
            .await?;
        events.sort_by_key(|e| (e.started_ms, e.id));
        self.engine.events().set_cluster_view(events);
        self.share_plugin_rates(&redis, now_ms).await?;
        self.share_plugin_state(&redis, now_ms).await?;
        self.share_canaries(&redis).await?;
        Ok(self.views(&peers, now_ms))
    }

    /// Detects a Redis that lost the cluster's keys: the epoch key this replica saw is gone
    /// or different. Then everything kept (6 hours of minutes) is written again.
    async fn check_epoch(&mut self, redis: &Redis) -> redis::RedisResult<()> {
        let key = format!("{}:epoch", self.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(format!("{}-{}", self.key, fastrand::u64(..)))
            .arg("NX")
            .ignore()
            .get(&key);
        let (epoch,): (String,) = redis.query(&pipe).await?;
        match &self.epoch {
            Some(known) if *known != epoch => {
                tracing::warn!(cluster = %self.config.name, "cluster: redis lost the cluster's data; writing this replica's history again");
                self.written_through = self.engine.clock().minute() - MINUTES_KEPT as i64;
                // Peers' watermarks stay: what was filed here is still true.
            }
            _ => {}
        }
        self.epoch = Some(epoch);
        Ok(())
    }

    /// Writes this replica's record and reads everyone's; forgets replicas silent for longer
    /// than the minutes kept.
    async fn registry(
        &self,
        redis: &Redis,
        now_ms: i64,
        redis_time_ms: i64,
    ) -> redis::RedisResult<HashMap<String, Peer>> {
        let now = self.engine.clock().minute();
        let requests_5m = self
            .engine
            .routes()
            .iter()
            .map(|r| {
                r.meter()
                    .local_window_counts(now, Duration::from_secs(300))
                    .total()
            })
            .sum::<f64>() as u64;
        let record = ReplicaRecord {
            replica: self.config.replica.clone(),
            started_ms: self.started_ms,
            last_sync_ms: now_ms,
            requests: requests_5m,
            redis_time_ms,
        };
        let key = format!("{}:replicas", self.prefix);
        let mut pipe = redis::pipe();
        pipe.hset(
            &key,
            &self.key,
            serde_json::to_string(&record).unwrap_or_default(),
        )
        .ignore()
        .hgetall(&key);
        let (all,): (HashMap<String, String>,) = redis.query(&pipe).await?;
        let stale_after = i64::try_from(
            (self.config.sync_interval * 10)
                .max(Duration::from_secs(15))
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        let forget_after = MINUTE_TTL.as_millis() as i64;
        let mut peers = HashMap::new();
        let mut forgotten = Vec::new();
        for (replica_key, json) in all {
            let Ok(record) = serde_json::from_str::<ReplicaRecord>(&json) else {
                continue;
            };
            let silent = now_ms - record.last_sync_ms;
            if silent > forget_after {
                forgotten.push(replica_key);
                continue;
            }
            peers.insert(
                replica_key,
                Peer {
                    fresh: silent <= stale_after,
                    record,
                },
            );
        }
        if !forgotten.is_empty() {
            let mut pipe = redis::pipe();
            pipe.hdel(&key, forgotten).ignore();
            redis.query::<()>(&pipe).await?;
        }
        Ok(peers)
    }

    /// One atomic pipeline per route: this replica's sealed minutes since its last successful
    /// write (all of them after an outage, within the 6 hours kept), the hours they fall in,
    /// its live counts and its watermark; then the peers' watermarks, live counts, the route's
    /// events and the peers' new minutes (every minute and hour kept, for a route not loaded
    /// yet). Files what the peers wrote into the meters; returns the cluster's events.
    async fn exchange(
        &mut self,
        redis: &Redis,
        peers: &HashMap<String, Peer>,
        now_ms: i64,
    ) -> redis::RedisResult<Vec<Arc<BreachEvent>>> {
        let now = accord_policies::sla::clock::minute_of(now_ms);
        let routes = self.engine.routes();
        self.routes
            .retain(|id, _| routes.iter().any(|r| r.id() == id));
        let mut plans: HashMap<usize, ReadPlan> = routes
            .iter()
            .map(|route| {
                let state = self.routes.entry(route.id().clone()).or_default();
                (
                    Arc::as_ptr(route) as usize,
                    ReadPlan::new(route, state, peers, &self.key, now),
                )
            })
            .collect();
        let written_through = self.written_through;
        let (prefix, me) = (&self.prefix, &self.key);
        let (through, work, bytes) = self.engine.with_sealed(|through, routes| {
            let since = (written_through + 1).max(through + 1 - MINUTES_KEPT as i64);
            let new_minute = through > written_through;
            let mut bytes = 0;
            let work: Vec<(redis::Pipeline, Option<ReadPlan>)> = routes
                .iter()
                .map(|route| {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    bytes += write_route(&mut pipe, prefix, me, route, since, through, new_minute);
                    let plan = plans.remove(&(Arc::as_ptr(route) as usize));
                    if let Some(plan) = &plan {
                        plan.add_reads(&mut pipe, prefix);
                    }
                    (pipe, plan)
                })
                .collect();
            (through, work, bytes)
        });
        let queries: Vec<_> = work
            .iter()
            .map(|(pipe, _)| {
                let redis = redis.clone();
                async move { redis.query::<Vec<HashMap<String, String>>>(pipe).await }
            })
            .collect();
        let replies: Vec<redis::RedisResult<Vec<HashMap<String, String>>>> =
            futures_util::stream::iter(queries)
                .buffered(CONCURRENCY)
                .collect()
                .await;
        let replies: Vec<Vec<HashMap<String, String>>> =
            replies.into_iter().collect::<Result<_, _>>()?;
        let mut events = Vec::new();
        for ((_, plan), reply) in work.iter().zip(replies) {
            let Some(plan) = plan else {
                continue;
            };
            let Some(state) = self.routes.get_mut(plan.route.id()) else {
                continue;
            };
            events.extend(plan.apply(&self.key, state, peers, reply));
        }
        if through > written_through + 1 {
            let missed = u64::try_from(through - written_through - 1).unwrap_or(0);
            self.status
                .backfilled_minutes
                .fetch_add(missed, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(cluster = %self.config.name, minutes = missed, "cluster: wrote the minutes redis did not have");
        }
        self.written_through = through;
        self.status
            .bytes_written
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(events)
    }

    /// Publishes this replica's `cluster-rate` rates of the keys its plugins saw since the
    /// last sync (and withdraws the others), then reads every replica's and hands each plugin
    /// the sum of the others' per key. One pipeline per plugin.
    async fn share_plugin_rates(&mut self, redis: &Redis, now_ms: i64) -> redis::RedisResult<()> {
        let fresh_ms =
            i64::try_from((self.config.sync_interval * 3).as_millis()).unwrap_or(i64::MAX) + 1000;
        for (plugin, rates) in self.plugin_shares.rates.all() {
            let local = rates.take_local();
            let key = format!("{}:{{plugin:{plugin}}}:rates", self.prefix);
            let mut pipe = redis::pipe();
            let now_published: HashSet<String> = local.iter().map(|(k, _)| k.clone()).collect();
            let previous = self.published_rates.remove(&plugin).unwrap_or_default();
            let withdrawn: Vec<String> = previous
                .difference(&now_published)
                .map(|k| format!("{}|{k}", self.key))
                .collect();
            if !withdrawn.is_empty() {
                pipe.hdel(&key, withdrawn).ignore();
            }
            for (rate_key, rate) in &local {
                pipe.hset(
                    &key,
                    format!("{}|{rate_key}", self.key),
                    format!("{rate} {now_ms}"),
                )
                .ignore();
            }
            pipe.expire(&key, 3600).ignore().hgetall(&key);
            let (all,): (HashMap<String, String>,) = redis.query(&pipe).await?;
            self.published_rates.insert(plugin, now_published);
            let mut remote: HashMap<String, f64> = HashMap::new();
            for (field, value) in all {
                let Some((replica, rate_key)) = field.split_once('|') else {
                    continue;
                };
                if replica == self.key {
                    continue;
                }
                let Some((rate, at)) = value.split_once(' ') else {
                    continue;
                };
                let (Ok(rate), Ok(at)) = (rate.parse::<f64>(), at.parse::<i64>()) else {
                    continue;
                };
                if now_ms - at <= fresh_ms && rate.is_finite() && rate > 0.0 {
                    *remote.entry(rate_key.to_owned()).or_default() += rate;
                }
            }
            rates.set_remote(remote);
        }
        Ok(())
    }

    /// Shares each route's canary state, so that every replica sends the canary the same
    /// share: Redis holds the cluster's state, and a replica's is written only when it is newer
    /// (a higher version: it advanced, rolled back, or an operator drove it here) or about
    /// another backend (a new canary); otherwise the replica adopts what Redis holds. Two
    /// replicas that change it in the same sync interval: the first write wins, and the other
    /// adopts it (and judges again at its next evaluation).
    async fn share_canaries(&mut self, redis: &Redis) -> redis::RedisResult<()> {
        for route in self.engine.routes() {
            let Some(canary) = route.canary() else {
                continue;
            };
            let state = canary.state();
            let key = RouteKeys::new(&self.prefix, route.id()).canary();
            let mut call = self.canary_script.prepare_invoke();
            call.key(&key)
                .arg(state.version)
                .arg(serde_json::to_string(&state).unwrap_or_default())
                .arg(&state.backend)
                .arg(CANARY_TTL.as_secs());
            let held: String = redis.invoke(&call).await?;
            match serde_json::from_str::<accord_policies::sla::canary::CanaryState>(&held) {
                Ok(mut cluster) => {
                    // The last comparison is each replica's own (judged every evaluation).
                    cluster.last = state.last;
                    let differs = cluster.version != state.version
                        || cluster.timeline != state.timeline
                        || cluster.phase != state.phase;
                    if differs && canary.restore(cluster) {
                        tracing::info!(route = %route.id(), share = canary.share(), "cluster: canary state from another replica");
                    }
                }
                Err(e) => {
                    tracing::warn!(route = %route.id(), error = %e, "cluster: the canary state in redis is not readable; keeping this replica's")
                }
            }
        }
        Ok(())
    }

    /// Publishes the plugins' state changes since the last sync and takes in everyone's.
    ///
    /// One hash per plugin: a value is field `v|key`, written by whichever replica changed it
    /// (`written-ms expires-ms` then the value, `-` for a deletion; the later write wins when
    /// read); a counter is a field per replica, `c|key|replica`, with that replica's
    /// increments (`total expires-ms`), summed when read. Expired fields are removed by the
    /// replica that reads them.
    async fn share_plugin_state(&mut self, redis: &Redis, now_ms: i64) -> redis::RedisResult<()> {
        for (plugin, state) in self.plugin_shares.state.all() {
            let changes = state.take_changes(now_ms);
            let key = format!("{}:{{plugin:{plugin}}}:state", self.prefix);
            let mut pipe = redis::pipe();
            for (name, entry) in &changes.values {
                let value = entry
                    .value
                    .as_deref()
                    .map_or("-".to_owned(), |v| format!("={v}"));
                pipe.hset(
                    &key,
                    format!("v|{name}"),
                    format!("{} {} {value}", entry.written_ms, entry.expires_ms),
                )
                .ignore();
            }
            for (name, total, expires_ms) in &changes.counters {
                pipe.hset(
                    &key,
                    format!("c|{name}|{}", self.key),
                    format!("{total} {expires_ms}"),
                )
                .ignore();
            }
            pipe.expire(&key, 2 * 86_400).ignore().hgetall(&key);
            let (all,): (HashMap<String, String>,) = redis.query(&pipe).await?;
            let mut values = Vec::new();
            let mut counters: HashMap<String, (i64, i64)> = HashMap::new();
            let mut expired = Vec::new();
            for (field, text) in all {
                let mut parts = text.splitn(3, ' ');
                let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(first), Ok(expires_ms)) = (first.parse::<i64>(), second.parse::<i64>())
                else {
                    continue;
                };
                if expires_ms <= now_ms {
                    expired.push(field);
                    continue;
                }
                if let Some(name) = field.strip_prefix("v|") {
                    let value = match parts.next() {
                        Some(v) => v.strip_prefix('=').map(str::to_owned),
                        None => continue,
                    };
                    let entry = ValueEntry {
                        value,
                        written_ms: first,
                        expires_ms,
                    };
                    values.push((name.to_owned(), entry));
                } else if let Some(rest) = field.strip_prefix("c|")
                    && let Some((name, replica)) = rest.rsplit_once('|')
                    && replica != self.key
                {
                    let counter = counters.entry(name.to_owned()).or_default();
                    counter.0 = counter.0.saturating_add(first);
                    counter.1 = counter.1.max(expires_ms);
                }
            }
            if !expired.is_empty() {
                let mut prune = redis::pipe();
                prune.hdel(&key, expired).ignore();
                redis.query::<()>(&prune).await?;
            }
            state.merge_remote(values, counters, now_ms);
        }
        Ok(())
    }

    fn views(&self, peers: &HashMap<String, Peer>, now_ms: i64) -> Vec<ReplicaView> {
        let mut views: Vec<ReplicaView> = peers
            .iter()
            .map(|(key, peer)| ReplicaView {
                replica: peer.record.replica.clone(),
                key: key.clone(),
                started_ms: peer.record.started_ms,
                last_sync_ms: peer.record.last_sync_ms,
                requests_5m: peer.record.requests,
                status: if peer.fresh { "ok" } else { "stale" },
                this: *key == self.key,
                clock_offset_ms: if peer.record.redis_time_ms > 0 {
                    peer.record.last_sync_ms - peer.record.redis_time_ms
                } else {
                    0
                },
            })
            .collect();
        if !views.iter().any(|v| v.this) {
            views.push(ReplicaView {
                replica: self.config.replica.clone(),
                key: self.key.clone(),
                started_ms: self.started_ms,
                last_sync_ms: now_ms,
                requests_5m: 0,
                status: "ok",
                this: true,
                clock_offset_ms: 0,
            });
        }
        views.sort_by(|a, b| {
            (a.status, &a.replica, a.started_ms).cmp(&(b.status, &b.replica, b.started_ms))
        });
        views
    }
}

/// Adds this replica's writes for `route` to `pipe`: its sealed minutes from `since` through
/// `through`, the hours they fall in, its live counts (without their latency histogram: the
/// peers' percentiles include a minute once it is sealed) and its watermark; the keys' time to
/// live is set when they are created or, for the live counts and watermark, once a minute.
/// Returns the bytes of rollups written.
fn write_route(
    pipe: &mut redis::Pipeline,
    prefix: &str,
    me: &str,
    route: &RouteSla,
    since: Minute,
    through: Minute,
    new_minute: bool,
) -> usize {
    let keys = RouteKeys::new(prefix, route.id());
    let hour_ttl = route.objective().window.length() + Duration::from_secs(86_400);
    let mut minutes: BTreeMap<Minute, Vec<(String, String)>> = BTreeMap::new();
    let mut hours: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    let mut live_fields = Vec::new();
    let mut bytes = 0;
    for (name, meter) in route.meters() {
        let field = format!("{me}|{name}");
        let (sealed, sealed_hours) = meter.sealed_since(since);
        let mut written_hours = BTreeSet::new();
        for (minute, rollup) in sealed.iter().filter(|(m, _)| *m <= through) {
            let value = codec::encode(rollup);
            bytes += value.len();
            written_hours.insert(minute.div_euclid(60));
            minutes
                .entry(*minute)
                .or_default()
                .push((field.clone(), value));
        }
        for (hour, rollup) in sealed_hours
            .iter()
            .filter(|(h, _)| written_hours.contains(h))
        {
            let value = codec::encode(rollup);
            bytes += value.len();
            hours.entry(*hour).or_default().push((field.clone(), value));
        }
        let live = meter.live();
        if live.total() > 0 {
            let counts = Rollup {
                latency: Default::default(),
                ..live
            };
            let value = codec::encode_live(through + 1, &counts);
            bytes += value.len();
            live_fields.push((field, value));
        }
    }
    for (minute, fields) in &minutes {
        let key = keys.minute(*minute);
        pipe.hset_multiple(&key, fields).ignore();
        pipe.expire(&key, MINUTE_TTL.as_secs() as i64).ignore();
    }
    for (hour, fields) in &hours {
        let key = keys.hour(*hour);
        pipe.hset_multiple(&key, fields).ignore();
        pipe.expire(&key, hour_ttl.as_secs() as i64).ignore();
    }
    if !live_fields.is_empty() {
        pipe.hset_multiple(keys.live(), &live_fields).ignore();
    }
    pipe.hset(keys.through(), me, through).ignore();
    if new_minute {
        for key in [keys.live(), keys.through()] {
            pipe.expire(key, MINUTE_TTL.as_secs() as i64).ignore();
        }
    }
    bytes
}

/// What one route's read asks for.
struct ReadPlan {
    route: Arc<RouteSla>,
    /// A full load: every minute and hour kept, not only those since the last read.
    full: bool,
    minutes: std::ops::RangeInclusive<Minute>,
    hours: Vec<i64>,
}

impl ReadPlan {
    /// What to read for `route`: a full load when `state` is not for this [`RouteSla`] yet (a
    /// new route, or one whose objective changed), else the minutes since the oldest fresh
    /// peer's watermark.
    fn new(
        route: &Arc<RouteSla>,
        state: &mut RouteSync,
        peers: &HashMap<String, Peer>,
        me: &str,
        now: Minute,
    ) -> ReadPlan {
        let identity = Arc::as_ptr(route) as usize;
        let full = state.identity != identity;
        if full {
            *state = RouteSync {
                identity,
                read_through: HashMap::new(),
            };
        }
        let oldest = now + 1 - MINUTES_KEPT as i64;
        // From the oldest minute a fresh peer may have sealed that is not filed here yet (for
        // a peer not seen before, since it started).
        let first = if full {
            oldest
        } else {
            peers
                .iter()
                .filter(|(key, p)| p.fresh && key.as_str() != me)
                .map(|(key, p)| match state.read_through.get(key) {
                    Some(filed) => filed + 1,
                    None => accord_policies::sla::clock::minute_of(p.record.started_ms),
                })
                .min()
                .unwrap_or(now)
                .clamp(oldest, now)
        };
        let hours: Vec<i64> = if full {
            let keep = (route.objective().window.length().as_secs() / 3600) as i64 + 1;
            ((now.div_euclid(60) - keep)..=now.div_euclid(60)).collect()
        } else {
            Vec::new()
        };
        ReadPlan {
            route: route.clone(),
            full,
            minutes: first..=now,
            hours,
        }
    }

    /// `through`, `live`, the events, the minutes, then the hours, in the route's atomic
    /// pipeline: a peer's watermark and the minutes it covers are read as one snapshot.
    fn add_reads(&self, pipe: &mut redis::Pipeline, prefix: &str) {
        let keys = RouteKeys::new(prefix, self.route.id());
        pipe.hgetall(keys.through())
            .hgetall(keys.live())
            .hgetall(&keys.events);
        for minute in self.minutes.clone() {
            pipe.hgetall(keys.minute(minute));
        }
        for hour in &self.hours {
            pipe.hgetall(keys.hour(*hour));
        }
    }

    fn apply(
        &self,
        me: &str,
        state: &mut RouteSync,
        peers: &HashMap<String, Peer>,
        reply: Vec<HashMap<String, String>>,
    ) -> Vec<Arc<BreachEvent>> {
        let meters: HashMap<&str, &Meter> = self.route.meters().collect();
        let mut reply = reply.into_iter();
        let through: HashMap<String, Minute> = reply
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| key != me)
            .filter_map(|(key, m)| Some((key, m.parse().ok()?)))
            .collect();
        let live = reply.next().unwrap_or_default();
        let events = events::parse_route_events(self.route.id(), &reply.next().unwrap_or_default());
        if self.full {
            for meter in meters.values() {
                meter.clear_peers();
            }
        }
        let first = *self.minutes.start();
        for minute in self.minutes.clone() {
            for (field, value) in reply.next().unwrap_or_default() {
                let Some((key, meter, rollup)) = parse_field(me, &meters, &field, &value) else {
                    continue;
                };
                let written = through.get(key).copied().unwrap_or(Minute::MIN);
                let filed = state.read_through.get(key).copied().unwrap_or(first - 1);
                if minute > filed && minute <= written {
                    if self.full {
                        meter.restore_peer_minute(minute, &rollup);
                    } else {
                        meter.add_peer_minute(minute, &rollup);
                    }
                }
            }
        }
        for hour in &self.hours {
            for (field, value) in reply.next().unwrap_or_default() {
                if let Some((_, meter, rollup)) = parse_field(me, &meters, &field, &value) {
                    meter.restore_peer_hour(*hour, &rollup);
                }
            }
        }
        for (key, written) in &through {
            let filed = state.read_through.entry(key.clone()).or_insert(first - 1);
            *filed = (*filed).max(*written);
        }
        // Live counters: a fresh peer's count in their minute until sealed; a silent peer's
        // last ones are filed as its final minute.
        let mut live_by_meter: HashMap<&str, Vec<(Minute, Rollup)>> = HashMap::new();
        let mut adopted: Vec<(String, Minute)> = Vec::new();
        for (field, value) in &live {
            let Some((key, rest)) = field.split_once('|') else {
                continue;
            };
            if key == me {
                continue;
            }
            let Some((meter_name, meter)) = meters.get_key_value(rest) else {
                continue;
            };
            let Some((minute, rollup)) = codec::decode_live(value) else {
                continue;
            };
            let filed = state.read_through.get(key).copied().unwrap_or(first - 1);
            if minute <= filed {
                continue;
            }
            if peers.get(key).is_some_and(|p| p.fresh) {
                live_by_meter
                    .entry(meter_name)
                    .or_default()
                    .push((minute, rollup));
            } else {
                meter.add_peer_minute(minute, &rollup);
                adopted.push((key.to_owned(), minute));
            }
        }
        for (key, minute) in adopted {
            let filed = state.read_through.entry(key).or_insert(minute);
            *filed = (*filed).max(minute);
        }
        for (name, meter) in &meters {
            meter.set_peer_live(live_by_meter.remove(name).unwrap_or_default());
        }
        events
    }
}

/// `replica-key|meter` → the peer's key, the meter, the rollup; `None` for this replica's
/// own fields, unknown meters and unreadable values.
fn parse_field<'a, 'm>(
    me: &str,
    meters: &HashMap<&str, &'m Meter>,
    field: &'a str,
    value: &str,
) -> Option<(&'a str, &'m Meter, Rollup)> {
    let (key, meter) = field.split_once('|')?;
    if key == me {
        return None;
    }
    let meter = *meters.get(meter)?;
    Some((key, meter, codec::decode(value)?))
}
