//! Cluster mode end to end: three `accord run` processes sharing one SLA through a real
//! `redis-server` (and a real 3-master Redis Cluster), on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use accord_tests::redis::{RedisCluster, RedisServer};
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{AccordProcess, SteadyLoad, get};
use serde_json::Value;

/// Syncs this often in the tests.
const SYNC: Duration = Duration::from_millis(200);

/// One replica's configuration: route `orders` (and `extra_routes`) to `primary` then
/// `secondary`, with `slo`.
struct Replica<'a> {
    redis: &'a str,
    cluster: &'a str,
    name: &'a str,
    primary: SocketAddr,
    secondary: SocketAddr,
    slo: &'a str,
    extra_routes: &'a [&'a str],
}

impl Replica<'_> {
    async fn start(&self) -> AccordProcess {
        let yaml = |addr: SocketAddr, admin: SocketAddr| {
            let mut routes = format!(
                "  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: primary}}, {{backend: secondary}}]\n    slo: {}\n",
                self.slo
            );
            for id in self.extra_routes {
                routes.push_str(&format!(
                    "  - id: {id}\n    match: {{path: {{prefix: /{id}}}}}\n    backends: [{{backend: secondary}}]\n    slo: {{availability: 99%}}\n"
                ));
            }
            format!(
                "listeners: [{{address: \"{addr}\"}}]\nadmin: {{address: \"{admin}\"}}\nsla_history: {{enabled: false}}\n\
                 cluster: {{name: {}, redis: {}, replica: {}, sync_interval: {}ms}}\n\
                 backends:\n  primary: {{http: {{addresses: [\"{}\"]}}}}\n  secondary: {{http: {{addresses: [\"{}\"]}}}}\n\
                 routes:\n{routes}",
                self.cluster,
                if self.redis.starts_with('{') {
                    self.redis.to_owned()
                } else {
                    format!("\"{}\"", self.redis)
                },
                self.name,
                SYNC.as_millis(),
                self.primary,
                self.secondary,
            )
        };
        AccordProcess::start(yaml).await
    }
}

async fn sla(replica: &AccordProcess) -> Value {
    get(&format!("http://{}/sla", replica.admin)).await.json()
}

fn orders(document: &Value) -> &Value {
    document["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "orders"))
        .unwrap_or_else(|| panic!("no route orders in {document}"))
}

/// Requests of every class in the route's 5m window.
fn requests_5m(document: &Value) -> f64 {
    let window = orders(document)["windows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["window"] == "5m"))
        .cloned()
        .unwrap_or_default();
    window["requests"]["total"].as_f64().unwrap_or(-1.0)
}

/// Waits until `check` holds for every replica's `/sla` (up to `within`), or fails with the
/// last documents.
async fn until_all(replicas: &[&AccordProcess], within: Duration, check: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut documents = Vec::new();
        for replica in replicas {
            documents.push(sla(replica).await);
        }
        if documents.iter().all(&check) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let shown: Vec<String> = documents
                .iter()
                .map(|d| format!("{} {}", d["cluster"], requests_5m(d)))
                .collect();
            panic!("not reached within {within:?}:\n{}", shown.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send_n(replica: &AccordProcess, path: &str, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..n {
        let reply = get(&format!("http://{}{path}", replica.addr)).await;
        bodies.push(format!("{} {}", reply.status.as_u16(), reply.text()));
    }
    bodies
}

async fn healthy(name: &'static str) -> Upstream {
    Upstream::start(move |_| async move { respond(200, name) }).await
}

/// Sleeps until `margin` past the next minute boundary of the wall clock.
async fn past_next_minute(margin: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into_minute = Duration::from_millis((now.as_millis() % 60_000) as u64);
    tokio::time::sleep(Duration::from_secs(60) - into_minute + margin).await;
}

/// Scenario 1 on `redis`: traffic spread over three replicas; every replica reports the sum,
/// before and after the minute is sealed (each minute counted once).
async fn spread_traffic_is_summed(
    redis: &str,
    cluster: &str,
    extra_routes: &[&str],
) -> [AccordProcess; 3] {
    let (primary, secondary) = (healthy("primary").await, healthy("secondary").await);
    let replica = |name| Replica {
        redis,
        cluster,
        name,
        primary: primary.addr,
        secondary: secondary.addr,
        slo: "{availability: 99.9%}",
        extra_routes,
    };
    let (a, b, c) = (
        replica("a").start().await,
        replica("b").start().await,
        replica("c").start().await,
    );
    send_n(&a, "/", 10).await;
    send_n(&b, "/", 20).await;
    send_n(&c, "/", 30).await;
    until_all(&[&a, &b, &c], Duration::from_secs(10), |d| {
        requests_5m(d) == 60.0
            && d["cluster"]["routes"]["orders"]["cluster_requests_5m"] == 60.0
            && d["cluster"]["status"] == "ok"
            && d["cluster"]["replicas"].as_array().map(Vec::len) == Some(3)
    })
    .await;
    let document = sla(&b).await;
    assert_eq!(
        document["cluster"]["routes"]["orders"]["local_requests_5m"],
        20.0
    );
    let valid = &orders(&document)["indicators"][0]["valid_events"];
    assert_eq!(valid, 60.0, "the SLO window counts the cluster: {document}");
    // Across a sealed minute: still each request once, plus new ones.
    past_next_minute(Duration::from_millis(1500)).await;
    send_n(&c, "/", 6).await;
    until_all(&[&a, &b, &c], Duration::from_secs(10), |d| {
        requests_5m(d) == 66.0
    })
    .await;
    tokio::time::sleep(SYNC * 5).await;
    for replica in [&a, &b, &c] {
        assert_eq!(
            requests_5m(&sla(replica).await),
            66.0,
            "no minute counted twice"
        );
    }
    [a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn any_replica_reports_the_sum_of_the_traffic_sent_to_all() {
    let redis = RedisServer::start().await;
    let [a, _b, _c] = spread_traffic_is_summed(&redis.url(), "spread", &[]).await;
    // A replica started later loads the cluster's history, and `accord report` shows it all.
    let (primary, secondary) = (healthy("primary").await, healthy("secondary").await);
    let late = Replica {
        redis: &redis.url(),
        cluster: "spread",
        name: "late",
        primary: primary.addr,
        secondary: secondary.addr,
        slo: "{availability: 99.9%}",
        extra_routes: &[],
    }
    .start()
    .await;
    until_all(&[&late], Duration::from_secs(10), |d| {
        requests_5m(d) == 66.0
    })
    .await;
    until_all(&[&a], Duration::from_secs(10), |d| {
        d["cluster"]["replicas"].as_array().map(Vec::len) == Some(4)
    })
    .await;
    let report = std::process::Command::new(accord_tests::accord_binary())
        .args(["report", "--admin", &a.admin.to_string()])
        .output()
        .expect("accord report");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(text.contains("cluster spread (ok)"), "{text}");
    assert!(text.contains("a (this one): ok"), "{text}");
    assert!(text.contains("late: ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn the_same_on_a_redis_cluster_with_routes_spread_over_its_masters() {
    let cluster = RedisCluster::start().await;
    let routes = ["users", "search", "billing", "stock", "carts", "prices"];
    let [a, _b, _c] = spread_traffic_is_summed(&cluster.yaml(), "sharded", &routes).await;
    for route in routes {
        send_n(&a, &format!("/{route}"), 1).await;
    }
    tokio::time::sleep(SYNC * 5).await;
    let keys = cluster.keys_per_node();
    assert!(
        keys.iter().filter(|n| **n > 0).count() >= 2,
        "each route's keys share a hash tag, so routes spread over the masters: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn a_backend_failing_through_one_replica_is_avoided_by_all() {
    let redis = RedisServer::start().await;
    let broken = Upstream::start(|_| async { respond(500, "broken") }).await;
    let (primary, secondary) = (healthy("primary").await, healthy("secondary").await);
    let url = redis.url();
    // 2m, not 1m: the engine seals a minute at its first evaluation after the minute ends (up
    // to 5 s late), and what arrived meanwhile counts in the minute that ended; a 1m window
    // (the current minute only) would miss traffic sent in a minute's first seconds.
    let slo = "{availability: 99%, enforcement: {breach_window: 2m, min_requests: 20, probe: 0%, recovery: 10m}}";
    let replica = |name, primary| Replica {
        redis: &url,
        cluster: "steer",
        name,
        primary,
        secondary: secondary.addr,
        slo,
        extra_routes: &[],
    };
    // Replica a reaches "primary" through a path that fails; b and c reach it fine.
    let a = replica("a", broken.addr).start().await;
    let b = replica("b", primary.addr).start().await;
    let c = replica("c", primary.addr).start().await;
    assert!(send_n(&b, "/", 5).await.iter().all(|r| r == "200 primary"));
    send_n(&a, "/", 30).await;
    until_all(&[&b, &c], Duration::from_secs(15), |d| {
        orders(d)["backends"][0]["state"] == "breaching"
    })
    .await;
    for replica in [&b, &c] {
        let replies = send_n(replica, "/", 10).await;
        assert!(
            replies.iter().all(|r| r == "200 secondary"),
            "steered off primary by the cluster's verdict: {replies:?}"
        );
    }
    // One breach event for the cluster, acted on by every replica.
    until_all(&[&a, &b, &c], Duration::from_secs(10), |d| {
        let events: Vec<&Value> = orders(d)["events"]
            .as_array()
            .map(|e| e.iter().filter(|e| e["kind"] == "backend_breach").collect())
            .unwrap_or_default();
        events.len() == 1 && events[0]["replicas"].as_array().map(Vec::len) == Some(3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn a_budget_spent_anywhere_is_enforced_everywhere() {
    let redis = RedisServer::start().await;
    let broken = Upstream::start(|_| async { respond(500, "broken") }).await;
    let (primary, secondary) = (healthy("primary").await, healthy("secondary").await);
    let url = redis.url();
    let replica = |name, primary, secondary| Replica {
        redis: &url,
        cluster: "budget",
        name,
        primary,
        secondary,
        slo: "{availability: 99%, window: 1h, enforcement: {strict: true}}",
        extra_routes: &[],
    };
    let a = replica("a", broken.addr, broken.addr).start().await;
    let b = replica("b", primary.addr, secondary.addr).start().await;
    let c = replica("c", primary.addr, secondary.addr).start().await;
    assert!(send_n(&c, "/", 3).await.iter().all(|r| r == "200 primary"));
    send_n(&a, "/", 30).await;
    until_all(&[&a, &b, &c], Duration::from_secs(15), |d| {
        orders(d)["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "budget_exhausted"))
    })
    .await;
    for replica in [&b, &c] {
        let reply = get(&format!("http://{}/", replica.addr)).await;
        assert_eq!(reply.status, 503, "strict rejection: {}", reply.text());
        assert!(reply.text().contains("budget"), "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn redis_down_costs_no_request_and_nothing_is_lost_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let (primary, secondary) = (healthy("primary").await, healthy("secondary").await);
    let url = redis.url();
    let replica = |name| Replica {
        redis: &url,
        cluster: "faults",
        name,
        primary: primary.addr,
        secondary: secondary.addr,
        slo: "{availability: 99.9%}",
        extra_routes: &[],
    };
    let (a, b, c) = (
        replica("a").start().await,
        replica("b").start().await,
        replica("c").start().await,
    );
    let loads: Vec<SteadyLoad> = [&a, &b, &c]
        .iter()
        .map(|r| SteadyLoad::start(format!("http://{}/", r.addr), 2))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    until_all(&[&a, &b, &c], Duration::from_secs(10), |d| {
        d["cluster"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("degraded: redis unreachable since"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut served = 0;
    for load in loads {
        let (n, failed) = load.stop().await;
        assert_eq!(failed, 0, "requests failed while redis was down");
        served += n;
    }
    until_all(&[&a, &b, &c], Duration::from_secs(15), |d| {
        d["cluster"]["status"] == "ok" && requests_5m(d) == served as f64
    })
    .await;
    let metrics = get(&format!("http://{}/metrics", a.admin)).await.text();
    assert!(
        metrics.contains(
            "accord_cluster_syncs_total{cluster=\"faults\",replica=\"a\",result=\"failed\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn a_replica_killed_loses_at_most_one_sync_interval() {
    let redis = RedisServer::start().await;
    let (primary, secondary) = (healthy("primary").await, healthy("secondary").await);
    let url = redis.url();
    let replica = |name| Replica {
        redis: &url,
        cluster: "kill",
        name,
        primary: primary.addr,
        secondary: secondary.addr,
        slo: "{availability: 99.9%}",
        extra_routes: &[],
    };
    let (a, c) = (replica("a").start().await, replica("c").start().await);
    send_n(&c, "/", 30).await;
    until_all(&[&a], Duration::from_secs(10), |d| requests_5m(d) == 30.0).await;
    send_n(&c, "/", 5).await;
    // More than one sync interval later, kill -9: nothing after this is in flight.
    tokio::time::sleep(SYNC * 3).await;
    let pid = c.pid().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    // Its last counters stay counted, and once it is known to be gone they are filed as its
    // final minute: counted once.
    until_all(&[&a], Duration::from_secs(30), |d| {
        d["cluster"]["replicas"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["replica"] == "c" && r["status"] == "stale")
        })
    })
    .await;
    tokio::time::sleep(SYNC * 5).await;
    assert_eq!(requests_5m(&sla(&a).await), 35.0);
}

/// `tenant-quota` counts through `cluster-rate`: a tenant's rate is the cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and the wasm32-wasip2 plugins: ./scripts/test.sh"]
async fn a_tenant_quota_holds_across_replicas() {
    let redis = RedisServer::start().await;
    let app = healthy("app").await;
    let component = accord_tests::plugins::component("tenant-quota");
    let yaml = |name: &'static str| {
        let (url, component, app) = (redis.url(), component.clone(), app.addr);
        move |addr: SocketAddr, admin: SocketAddr| {
            format!(
                "listeners: [{{address: \"{addr}\"}}]\nadmin: {{address: \"{admin}\"}}\nsla_history: {{enabled: false}}\nlog: {{access_log: false}}\n\
                 cluster: {{name: quota, redis: \"{url}\", replica: {name}, sync_interval: {}ms}}\n\
                 plugins:\n  quota:\n    path: {}\n    config: {{default_limit: 1000, limits: {{acme: 10}}}}\n\
                 backends:\n  app: {{http: {{addresses: [\"{app}\"]}}}}\n\
                 routes:\n  - id: api\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    plugins: [quota]\n",
                SYNC.as_millis(),
                component.display()
            )
        }
    };
    let a = AccordProcess::start(yaml("a")).await;
    let b = AccordProcess::start(yaml("b")).await;
    // Seven requests a second for `seconds`: how many were refused with 429.
    let paced = |replica: SocketAddr, seconds: u64| async move {
        let client = accord_tests::client();
        let mut refused = 0;
        for _ in 0..seconds * 7 {
            let request = http::Request::get(format!("http://{replica}/"))
                .header("x-tenant", "acme")
                .body(http_body_util::Full::default())
                .expect("request");
            let reply = accord_tests::send_with(&client, request).await;
            match reply.status.as_u16() {
                200 => {}
                429 => refused += 1,
                other => panic!("unexpected status {other}: {}", reply.text()),
            }
            tokio::time::sleep(Duration::from_millis(1000 / 7)).await;
        }
        refused
    };
    // One replica alone stays under the tenant's limit of 10 a second.
    assert_eq!(
        paced(a.addr, 2).await,
        0,
        "7/s through one replica is allowed"
    );
    // Through both at once the tenant sends 14 a second: both replicas refuse some.
    let (through_a, through_b) = tokio::join!(paced(a.addr, 4), paced(b.addr, 4));
    assert!(
        through_a > 0 && through_b > 0,
        "the cluster's rate is over the limit: refused {through_a} through a, {through_b} through b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and the wasm32-wasip2 plugins: ./scripts/test.sh"]
async fn plugin_state_is_shared_by_every_replica() {
    let redis = RedisServer::start().await;
    let app = healthy("app").await;
    let component = accord_tests::plugins::component("idempotency");
    let yaml = |name: &'static str| {
        let (url, component, app) = (redis.url(), component.clone(), app.addr);
        move |addr: SocketAddr, admin: SocketAddr| {
            format!(
                "listeners: [{{address: \"{addr}\"}}]\nadmin: {{address: \"{admin}\"}}\nsla_history: {{enabled: false}}\nlog: {{access_log: false}}\n\
                 cluster: {{name: idem, redis: \"{url}\", replica: {name}, sync_interval: {}ms}}\n\
                 plugins:\n  idem:\n    path: {}\n\
                 backends:\n  app: {{http: {{addresses: [\"{app}\"]}}}}\n\
                 routes:\n  - id: pay\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    plugins: [idem]\n",
                SYNC.as_millis(),
                component.display()
            )
        }
    };
    let a = AccordProcess::start(yaml("a")).await;
    let b = AccordProcess::start(yaml("b")).await;
    let post = |replica: SocketAddr, key: &str| {
        let request = http::Request::post(format!("http://{replica}/"))
            .header("idempotency-key", key)
            .header("x-request-id", format!("first-{key}"))
            .body(http_body_util::Full::default())
            .expect("request");
        accord_tests::send(request)
    };
    assert_eq!(post(a.addr, "k-1").await.status, 200);
    // Within a sync interval or two, replica b knows the key a recorded.
    tokio::time::sleep(SYNC * 4).await;
    let repeat = post(b.addr, "k-1").await;
    assert_eq!(repeat.status, 409, "{}", repeat.text());
    assert!(repeat.text().contains("already used by request first-k-1"));
    // And the other way round.
    assert_eq!(post(b.addr, "k-2").await.status, 200);
    tokio::time::sleep(SYNC * 4).await;
    assert_eq!(post(a.addr, "k-2").await.status, 409);
    assert_eq!(
        post(a.addr, "k-3").await.status,
        200,
        "a new key goes through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh"]
async fn every_replica_sends_the_canary_the_same_share() {
    let redis = RedisServer::start().await;
    let v1 = healthy("v1").await;
    let v2 = healthy("v2").await;
    let token = accord_tests::file_holding("cluster-token");
    let yaml = |name: &'static str| {
        let (url, v1, v2, token) = (redis.url(), v1.addr, v2.addr, token.to_path_buf());
        move |addr: SocketAddr, admin: SocketAddr| {
            format!(
                "listeners: [{{address: \"{addr}\"}}]\nadmin: {{address: \"{admin}\", token_file: \"{}\"}}\nsla_history: {{enabled: false}}\nlog: {{access_log: false}}\n\
                 cluster: {{name: canary, redis: \"{url}\", replica: {name}, sync_interval: {}ms}}\n\
                 backends:\n  v1: {{http: {{addresses: [\"{v1}\"]}}}}\n  v2: {{http: {{addresses: [\"{v2}\"]}}}}\n\
                 routes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: v1}}, {{backend: v2, canary: {{steps: [5%, 50%, 100%], step_for: 1h}}}}]\n    slo: {{availability: 99.9%}}\n",
                token.display(),
                SYNC.as_millis(),
            )
        }
    };
    let a = AccordProcess::start(yaml("a")).await;
    let b = AccordProcess::start(yaml("b")).await;
    let drive = |replica: &AccordProcess, command: &str| {
        let request =
            http::Request::post(format!("http://{}/canary/orders/{command}", replica.admin))
                .header("authorization", "Bearer cluster-token")
                .body(http_body_util::Full::default())
                .expect("request");
        accord_tests::send(request)
    };
    let share = |replica: &AccordProcess| {
        let url = format!("http://{}/canary/orders", replica.admin);
        async move { get(&url).await.json()["share"].as_f64().unwrap() }
    };
    assert_eq!(share(&b).await, 0.05);
    // An operator promotes through replica a: b sends the canary 50% within a sync or two.
    assert_eq!(drive(&a, "promote").await.status, 200);
    tokio::time::sleep(SYNC * 4).await;
    assert_eq!(share(&b).await, 0.5);
    // And aborts through b: a stops sending it anything.
    assert_eq!(drive(&b, "abort").await.status, 200);
    tokio::time::sleep(SYNC * 4).await;
    assert_eq!(share(&a).await, 0.0);
    let timeline = get(&format!("http://{}/canary/orders", a.admin))
        .await
        .json()["timeline"]
        .clone();
    let whats: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, ["started", "advanced", "aborted"]);
    // A replica started now takes the cluster's state, not a fresh canary.
    let c = AccordProcess::start(yaml("c")).await;
    tokio::time::sleep(SYNC * 4).await;
    assert_eq!(share(&c).await, 0.0);
}

/// Three free consecutive loopback ports; the first.
fn three_free_ports() -> u16 {
    loop {
        let first = 30_000 + fastrand::u16(..20_000);
        if (first..first + 3).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return first;
        }
    }
}

/// `accord demo --replicas 3`: three gateways in cluster mode on the demo's simulated
/// services; every replica's report covers the whole cluster's traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: ./scripts/test.sh installs it"]
async fn the_demo_runs_three_replicas_sharing_one_sla() {
    let redis = RedisServer::start().await;
    let (listen, admin) = (three_free_ports(), three_free_ports());
    let mut demo = tokio::process::Command::new(accord_tests::accord_binary())
        .args([
            "demo",
            "--replicas",
            "3",
            "--rps",
            "30",
            "--duration",
            "60s",
        ])
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--redis", &redis.url()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("accord demo");
    let admins: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", admin + i)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut shared = 0;
        for admin in &admins {
            let Ok(Ok(reply)) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(admin.as_str()),
            )
            .await
            else {
                continue;
            };
            drop(reply);
            let document = get(&format!("http://{admin}/sla")).await.json();
            let cluster = &document["cluster"];
            let routes = cluster["routes"].as_object().cloned().unwrap_or_default();
            let spread = routes.values().any(|r| {
                let (local, all) = (
                    r["local_requests_5m"].as_f64().unwrap_or(0.0),
                    r["cluster_requests_5m"].as_f64().unwrap_or(0.0),
                );
                local > 0.0 && all > local * 2.0
            });
            if cluster["status"] == "ok"
                && cluster["replicas"].as_array().map(Vec::len) == Some(3)
                && spread
            {
                shared += 1;
            }
        }
        if shared == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo's replicas do not share their SLA"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = demo.kill().await;
}
