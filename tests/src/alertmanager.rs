//! Real Alertmanager (Debian's `prometheus-alertmanager`) for the notification tests: one
//! instance on a free loopback port, without gossip, routing every alert to a webhook
//! receiver at once (1 s group wait and interval), resolved notifications included.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running Alertmanager.
pub struct Alertmanager {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one that sends every group to `webhook` (a URL).
    pub async fn start(webhook: &str) -> Alertmanager {
        let binary = PathBuf::from("/usr/bin/prometheus-alertmanager");
        assert!(
            binary.exists(),
            "prometheus-alertmanager is not installed: run ./scripts/test.sh (it installs the test peers)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: test\n  group_by: [alertname, sloth_id, backend]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      - url: \"{webhook}\"\n        send_resolved: true\n"
            ),
        )
        .expect("write alertmanager.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let alertmanager = Alertmanager {
            port,
            child,
            _dir: dir,
        };
        crate::wait_ready(port, "/-/ready", "alertmanager").await;
        alertmanager
    }

    /// A URL on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The alerts it holds (`GET /api/v2/alerts`).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        crate::get(&self.url("/api/v2/alerts"))
            .await
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
