//! A simulated AWS Lambda Invoke endpoint for the demo: it answers `Invoke` for any function
//! the way Lambda does — an API Gateway 2.0 response built from the event, a throttle
//! (`TooManyRequestsException` with `Retry-After`) or a function error
//! (`X-Amz-Function-Error`) — following a script of phases that repeats. The gateway reaches it
//! through the real Lambda adapter (aws-sdk-lambda, SigV4 signing); the signature is not
//! checked here (the test suite's fake does that).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::time::Instant;

/// How the simulated function behaves during one phase.
#[derive(Clone, Copy, Debug)]
pub struct FunctionBehaviour {
    /// Typical duration of an invocation.
    pub latency: Duration,
    /// Share of invocations Lambda throttles.
    pub throttle_rate: f64,
    /// Share of invocations that raise an error.
    pub error_rate: f64,
}

/// A phase of the script.
#[derive(Clone, Copy, Debug)]
pub struct FunctionPhase {
    /// How long it lasts.
    pub duration: Duration,
    /// What the function does meanwhile.
    pub behaviour: FunctionBehaviour,
}

/// Starts the endpoint on an ephemeral loopback port; it runs until the process ends.
pub async fn spawn(script: Vec<FunctionPhase>) -> std::io::Result<SocketAddr> {
    let script = Arc::new(script);
    let started = Instant::now();
    super::upstream::serve(move |request: Request<hyper::body::Incoming>| {
        let behaviour = current(&script, started.elapsed());
        invoke(request, behaviour)
    })
    .await
}

async fn invoke(
    request: Request<hyper::body::Incoming>,
    behaviour: FunctionBehaviour,
) -> Response<Full<Bytes>> {
    let function = request
        .uri()
        .path()
        .trim_start_matches("/2015-03-31/functions/")
        .trim_end_matches("/invocations")
        .to_owned();
    let event: serde_json::Value = match request.into_body().collect().await {
        Ok(body) => serde_json::from_slice(&body.to_bytes()).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let roll = fastrand::f64();
    if roll < behaviour.throttle_rate {
        return reply(
            429,
            &[
                ("x-amzn-errortype", "TooManyRequestsException"),
                ("retry-after", "2"),
            ],
            r#"{"Type":"User","message":"Rate Exceeded.","Reason":"ConcurrentInvocationLimitExceeded"}"#.into(),
        );
    }
    tokio::time::sleep(behaviour.latency.mul_f64(0.5 + fastrand::f64())).await;
    if roll < behaviour.throttle_rate + behaviour.error_rate {
        return reply(
            200,
            &[("x-amz-function-error", "Unhandled")],
            r#"{"errorType":"Runtime.Timeout","errorMessage":"the quotes table did not answer"}"#
                .into(),
        );
    }
    let body = serde_json::json!({
        "service": format!("lambda:{function}"),
        "path": event["rawPath"],
        "request_id": event["requestContext"]["requestId"],
        "quote": fastrand::u32(100..10_000) as f64 / 100.0,
    });
    let output = serde_json::json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
    });
    reply(
        200,
        &[("x-amz-executed-version", "$LATEST")],
        output.to_string(),
    )
}

fn reply(status: u16, headers: &[(&str, &str)], body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(*name),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn current(script: &[FunctionPhase], elapsed: Duration) -> FunctionBehaviour {
    let cycle: Duration = script.iter().map(|p| p.duration).sum();
    let idle = FunctionBehaviour {
        latency: Duration::ZERO,
        throttle_rate: 0.0,
        error_rate: 0.0,
    };
    if cycle.is_zero() {
        return idle;
    }
    let mut at = Duration::from_nanos((elapsed.as_nanos() % cycle.as_nanos()) as u64);
    for phase in script {
        if at < phase.duration {
            return phase.behaviour;
        }
        at -= phase.duration;
    }
    idle
}
