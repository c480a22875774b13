//! Simulated on-prem services for the demo: in-process HTTP servers whose latency and failures
//! follow a script of phases that repeats.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How a simulated service behaves during one phase.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Typical latency.
    pub latency: Duration,
    /// Extra random latency, up to this much.
    pub jitter: Duration,
    /// Share of requests answered with 503.
    pub error_rate: f64,
}

/// A phase of a script: a behaviour held for a while.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// How long the phase lasts.
    pub duration: Duration,
    /// What the service does meanwhile.
    pub behaviour: Behaviour,
}

/// Serves `handle` on an ephemeral loopback port (HTTP/1.1 and h2c) until the process ends.
pub async fn serve<F, Fut>(handle: F) -> std::io::Result<SocketAddr>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            let service = hyper::service::service_fn(move |request| {
                let response = handle(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts a simulated service; it runs until the process ends.
pub async fn spawn(name: &'static str, script: Vec<Phase>) -> std::io::Result<SocketAddr> {
    let script = Arc::new(script);
    let started = Instant::now();
    serve(move |request: Request<hyper::body::Incoming>| {
        let behaviour = current(&script, started.elapsed());
        async move {
            let extra = behaviour.jitter.mul_f64(fastrand::f64());
            tokio::time::sleep(behaviour.latency + extra).await;
            let failed = fastrand::f64() < behaviour.error_rate;
            let status = if failed {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let body = serde_json::json!({
                "service": name,
                "method": request.method().as_str(),
                "path": request.uri().path(),
                "ok": !failed,
            });
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
    })
    .await
}

fn current(script: &[Phase], elapsed: Duration) -> Behaviour {
    let cycle: Duration = script.iter().map(|p| p.duration).sum();
    if script.is_empty() || cycle.is_zero() {
        return Behaviour {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_rate: 0.0,
        };
    }
    let mut at = Duration::from_nanos((elapsed.as_nanos() % cycle.as_nanos()) as u64);
    for phase in script {
        if at < phase.duration {
            return phase.behaviour;
        }
        at -= phase.duration;
    }
    script[0].behaviour
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_repeat() {
        let fast = Behaviour {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            error_rate: 0.0,
        };
        let broken = Behaviour {
            error_rate: 1.0,
            ..fast
        };
        let script = [
            Phase {
                duration: Duration::from_secs(10),
                behaviour: fast,
            },
            Phase {
                duration: Duration::from_secs(5),
                behaviour: broken,
            },
        ];
        assert_eq!(current(&script, Duration::from_secs(3)).error_rate, 0.0);
        assert_eq!(current(&script, Duration::from_secs(12)).error_rate, 1.0);
        assert_eq!(current(&script, Duration::from_secs(16)).error_rate, 0.0);
    }
}
