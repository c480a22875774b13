//! A real nginx (Debian's package) as an upstream, started per test with its own config on a
//! free loopback port and stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx.
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its document root (tests may put files there).
    pub root: PathBuf,
    child: Child,
    /// Master and workers are gone (killed and the master reaped).
    killed: bool,
    _dir: tempfile::TempDir,
}

/// Where Debian installs nginx.
pub fn binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Nginx {
    /// Starts nginx with `server_body` inside its `server { }` block (listen, root and logging
    /// are set here). Panics with an install hint when nginx is missing.
    pub async fn start(server_body: &str) -> Nginx {
        let Some(nginx) = binary() else {
            panic!(
                "nginx is not installed: run ./scripts/test.sh (it installs the test peers), or apt-get install nginx"
            );
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("root dir");
        let addr = crate::dead_address();
        // Started as root, nginx would hand its workers to `nobody`, who cannot write the
        // private temp directory (WebDAV uploads land there): keep them as the current user.
        let user = if running_as_root() {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  log_format requests '$request|$host|$content_length';\n  access_log {dir}/access.log requests;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
               fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
               keepalive_requests 10000;\n\
               server {{\n    listen {addr};\n    root {root};\n{server_body}\n  }}\n}}\n",
            dir = dir.path().display(),
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        #[allow(clippy::zombie_processes)] // waited for in Drop
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Nginx {
                    addr,
                    root,
                    child,
                    killed: false,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx did not start listening on {addr}; see its error log above");
    }
}

impl Nginx {
    /// The requests nginx has served so far, one `request line|host|content-length` each,
    /// from its access log.
    pub fn requests(&self) -> Vec<String> {
        let log = self
            .root
            .parent()
            .map(|dir| dir.join("access.log"))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }

    /// The requests served after the first `seen`, once nginx has logged at least `expected`
    /// of them (it writes a line after the response, so a client can be answered first), or
    /// what is there after two seconds.
    pub async fn requests_after(&self, seen: usize, expected: usize) -> Vec<String> {
        for _ in 0..40 {
            let now = self.requests();
            if now.len() >= seen + expected {
                return now.into_iter().skip(seen).collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.requests().into_iter().skip(seen).collect()
    }

    /// Kills nginx at once, master and workers (`kill -9`), as a crashing upstream dies: open
    /// connections are reset, new ones refused.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        // The master first: killed while it lives, a worker is replaced by a new one, which
        // the master's death then orphans. The workers are listed before, while it lives.
        let master = self.child.id();
        let workers = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        let master = master.to_string();
        for pid in std::iter::once(master.as_str()).chain(workers.split_whitespace()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = self.child.wait();
        self.killed = true;
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|uids| uids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Drop for Nginx {
    /// Master and workers both: killing the master alone leaves its worker running, orphaned,
    /// after the test (every suite run left about thirty behind).
    fn drop(&mut self) {
        self.kill();
    }
}
