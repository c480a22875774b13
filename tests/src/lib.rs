#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: failing loudly is its job
//! The end-to-end test harness: start a real gateway from YAML on loopback ports, scripted
//! upstreams (well-behaved or broken on purpose), an HTTP client, and real peers (nginx).
#![forbid(unsafe_code)]

pub mod alertmanager;
pub mod aws;
pub mod azure;
pub mod nginx;
pub mod otlp;
pub mod pki;
pub mod plugins;
pub mod prometheus;
pub mod redis;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use accord::config::{self, ProcessEnvironment};
use accord::{ConfigSource, Gateway, Running};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A gateway running in this process, configured from a file in a temporary directory (so that
/// tests can rewrite it and reload).
pub struct TestGateway {
    /// The running gateway.
    pub running: Running,
    /// The configuration file.
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway from YAML. Use `127.0.0.1:0` for listener and admin addresses.
    pub async fn start(yaml: &str) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("accord.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let config = config::load(&config_path, &ProcessEnvironment)
            .unwrap_or_else(|e| panic!("test config invalid:\n{}", e.render()));
        let running = Gateway::start(
            config,
            ConfigSource::File(config_path.clone()),
            Arc::new(ProcessEnvironment),
        )
        .await
        .expect("gateway starts");
        TestGateway {
            running,
            config_path,
            _dir: dir,
        }
    }

    /// `http://<first listener>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.address(), path)
    }

    /// `http://<admin>` followed by `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.admin, path)
    }

    /// Replaces the configuration file (the next reload reads it).
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, yaml).expect("rewrite config");
    }

    /// The value of one metrics series, e.g. `accord_retries_total{route="r"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = get(&self.admin_url("/metrics")).await.text();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("series {series} not found in /metrics"))
    }
}

/// A finished response, body read.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: http::StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// HTTP version of the response.
    pub version: http::Version,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A shared HTTP/1.1 client (keep-alive).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and reads the whole response.
pub async fn send(request: http::Request<Full<Bytes>>) -> Reply {
    send_with(&client(), request).await
}

/// Sends a request with the given client and reads the whole response.
pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("response within 30s")
        .expect("request succeeds");
    let version = response.version();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        version,
    }
}

/// GET a URL.
pub async fn get(url: &str) -> Reply {
    send(
        http::Request::get(url)
            .body(Full::default())
            .expect("request"),
    )
    .await
}

/// A backend's requests by class over the breach window, from a route's SLA report
/// (`GET /sla/routes/{id}`).
pub fn backend_requests(report: &serde_json::Value, backend: &str) -> serde_json::Value {
    report["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["backend"] == backend)
        .unwrap_or_else(|| panic!("no backend {backend} in {report}"))["window"]["requests"]
        .clone()
}

/// A request builder with a body.
pub fn request(method: &str, url: &str, body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.into()))
        .expect("request")
}

/// An address on which nothing listens (bound, then closed).
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A temporary file holding `contents` (an admin token, say); removed when dropped.
pub fn file_holding(contents: &str) -> tempfile::TempPath {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), contents).expect("write the temporary file");
    file.into_temp_path()
}

/// Two distinct addresses on which nothing listens. Two calls of [`dead_address`] can return
/// the same port (the first is closed before the second is bound), which made a gateway's
/// admin address its listener's, a configuration it refuses.
pub fn two_dead_addresses() -> (SocketAddr, SocketAddr) {
    let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let second = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (
        first.local_addr().expect("addr"),
        second.local_addr().expect("addr"),
    )
}

/// Whether process `pid` has a socket listening on 127.0.0.1:`port` (from `/proc`: the
/// listening sockets' inodes, and the process's descriptors).
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A: LISTEN), inode.
            let inode = fields.get(9)?;
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            inodes
                .iter()
                .any(|inode| target.as_os_str() == inode.as_str())
        })
    })
}

/// Waits until a peer on 127.0.0.1:`port` answers 200 on `path` (up to 30 s), or panics
/// naming `what`.
pub async fn wait_ready(port: u16, path: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if listening && get(&format!("http://127.0.0.1:{port}{path}")).await.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Whether peer tests must fail rather than skip when a peer is missing (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Steady load on a URL from a few concurrent clients, until stopped: for reload tests.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl SteadyLoad {
    /// Starts `clients` loops of GET `url`, each on its own keep-alive client.
    pub fn start(url: String, clients: usize) -> SteadyLoad {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let workers = (0..clients)
            .map(|_| {
                let (url, stop, failures, served) =
                    (url.clone(), stop.clone(), failures.clone(), served.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::SeqCst) {
                        let request = http::Request::get(url.as_str())
                            .body(Full::default())
                            .expect("request");
                        if send_with(&client, request).await.status != 200 {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        SteadyLoad {
            stop,
            failures,
            served,
            workers,
        }
    }

    /// Stops the clients and returns `(served, failed)`.
    pub async fn stop(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        (
            self.served.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

/// The `accord` binary that `cargo test --workspace` built next to the test executables (the
/// gateway crate's own tests need it, so it is always built with them).
pub fn accord_binary() -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("accord")))
        .expect("the test executable has a target directory");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p accord` (or run ./scripts/test.sh)",
        binary.display()
    );
    binary
}

/// `accord run` as a process of its own, on a configuration written to a scratch directory;
/// killed when dropped.
pub struct AccordProcess {
    /// The traffic listener.
    pub addr: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    log: Option<std::path::PathBuf>,
}

impl AccordProcess {
    /// Starts `accord run` with `yaml(listener, admin)` and waits until it listens.
    pub async fn start(yaml: impl Fn(SocketAddr, SocketAddr) -> String) -> AccordProcess {
        Self::spawn(yaml, false).await
    }

    /// Like [`AccordProcess::start`], with its output (logs, access log) kept for
    /// [`AccordProcess::log`].
    pub async fn start_logged(yaml: impl Fn(SocketAddr, SocketAddr) -> String) -> AccordProcess {
        Self::spawn(yaml, true).await
    }

    /// What the process has written so far (with [`AccordProcess::start_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// Starts the process on two free ports and waits until it listens on the traffic one (the
    /// gateway binds its admin port first). A port found free can be taken by another test's
    /// process before this one binds it (the process then exits, while a connection to the port
    /// reaches the other process): the listener is confirmed to be this process's own, and on a
    /// lost port it starts again on new ones.
    async fn spawn(yaml: impl Fn(SocketAddr, SocketAddr) -> String, logged: bool) -> AccordProcess {
        for _ in 0..3 {
            let (addr, admin) = two_dead_addresses();
            let dir = tempfile::tempdir().expect("temp dir");
            let config = dir.path().join("accord.yaml");
            std::fs::write(&config, yaml(addr, admin)).expect("write config");
            let log = logged.then(|| dir.path().join("accord.log"));
            let output = |inherit: bool| match &log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(std::process::Stdio::from)
                    .expect("log file"),
                None if inherit => std::process::Stdio::inherit(),
                None => std::process::Stdio::null(),
            };
            let mut child = tokio::process::Command::new(accord_binary())
                .args(["run", "-c"])
                .arg(&config)
                .env_remove("RUST_LOG")
                .stdout(output(false))
                .stderr(output(true))
                .kill_on_drop(true)
                .spawn()
                .expect("start accord");
            let pid = child.id().expect("a running child has an id");
            for _ in 0..200 {
                if let Some(status) = child.try_wait().expect("child status") {
                    eprintln!(
                        "accord exited ({status}) before listening on {addr}: starting it again on new ports"
                    );
                    break;
                }
                if listens(pid, addr.port()) {
                    return AccordProcess {
                        addr,
                        admin,
                        child,
                        _dir: dir,
                        log,
                    };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if child.try_wait().expect("child status").is_none() {
                panic!("accord did not start listening on {addr}");
            }
        }
        panic!("accord lost its ports to other processes three times");
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_told_apart_from_another_process_s() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(
            listens(std::process::id(), port),
            "this process's own listener"
        );
        // PID 1 (init) does not hold it; and nothing listens once it is closed.
        assert!(!listens(1, port));
        drop(listener);
        assert!(!listens(std::process::id(), port));
    }
}
