//! Real Prometheus (Debian's `prometheus` and `promtool`) for the rules tests: a server on a
//! free loopback port with a scratch TSDB, scraping one target every second and evaluating
//! rule files every second. Stops when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed: run ./scripts/test.sh (it installs the test peers), or apt-get install prometheus"
    );
    path
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `promtool check rules FILE`: `Ok(output)` when the rules are valid.
pub fn check_rules(file: &Path) -> Result<String, String> {
    let output = Command::new(binary("promtool"))
        .args(["check", "rules"])
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A running Prometheus.
pub struct Prometheus {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (`host:port`, path `/metrics`) every second with `rules` loaded, and
    /// sends alerts to `alertmanager` (`host:port`) when given.
    pub async fn start(target: &str, rules: &[PathBuf], alertmanager: Option<&str>) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let rule_files: Vec<String> = rules
            .iter()
            .map(|r| format!("  - {}\n", r.display()))
            .collect();
        let alerting = alertmanager.map_or(String::new(), |am| {
            format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{am}\"]\n")
        });
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}{alerting}scrape_configs:\n  - job_name: accord\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rule_files.concat()
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new(binary("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            port,
            child,
            _dir: dir,
        };
        crate::wait_ready(port, "/-/ready", "prometheus").await;
        prometheus
    }

    /// An instant query's result vector (`data.result`).
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            urlencode(expr)
        );
        let reply = crate::get(&url).await.json();
        assert_eq!(reply["status"], "success", "{expr}: {reply}");
        reply["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first sample's value of `expr`, if it has one.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        self.query(expr)
            .await
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
