//! Real Redis (Debian's `redis-server`) for the cluster tests: one server on a free loopback
//! port, which a test can kill and start again, or a 3-master Redis Cluster made with
//! `redis-cli --cluster create`. Nothing is persisted; everything stops when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian installs the server.
fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed: run ./scripts/test.sh (it installs the test peers), or apt-get install redis-server"
    );
    path
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..20_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// One `redis-server`.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    cluster: bool,
    _scratch: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a server without persistence on a free port.
    pub async fn start() -> RedisServer {
        let scratch = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: scratch.path().to_path_buf(),
            cluster: false,
            _scratch: Some(scratch),
        };
        server.run().await;
        server
    }

    async fn start_in(dir: &Path, cluster: bool) -> RedisServer {
        let port = free_port();
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            cluster,
            _scratch: None,
        };
        server.run().await;
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let mut command = Command::new(binary("redis-server"));
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file"]);
            command.arg(self.dir.join("nodes.conf"));
        }
        self.child = Some(command.spawn().expect("start redis-server"));
        for _ in 0..100 {
            if self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis-cli -p <port> args…`: its output, or `None` when it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(binary("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        (out.status.success() && !String::from_utf8_lossy(&out.stdout).starts_with("Could not"))
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kill -9`: every key is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty).
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters (no replicas), slots spread by `redis-cli`.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three nodes and joins them into one cluster; waits until every node says
    /// `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_in(dir.path(), true).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(binary("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..200 {
            if nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            }) {
                return RedisCluster { nodes, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster did not reach cluster_state:ok");
    }

    /// The YAML of `cluster.redis` for it.
    pub fn yaml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("{{cluster: [{}]}}", urls.join(", "))
    }

    /// Keys stored on each node (`DBSIZE`).
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                n.cli(&["DBSIZE"])
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}
