//! The exporter task: kept spans batched (up to [`BATCH`], or every second) into OTLP
//! `ExportTraceServiceRequest`s and sent to the collector over HTTP/protobuf (`POST
//! /v1/traces`) or gRPC (`TraceService/Export` over h2c). A batch the collector refuses is
//! dropped and counted: traces are diagnostics, not records.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::sync::mpsc;

use super::TraceStats;
use crate::config::model::Traces;

/// Spans per export, at most.
pub const BATCH: usize = 512;

/// Runs until every sender is gone, then sends what is left.
pub async fn run(config: Traces, mut receiver: mpsc::Receiver<Span>, stats: Arc<TraceStats>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = receiver.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= BATCH {
                        send(&config, std::mem::take(&mut batch), &stats).await;
                    }
                }
                None => {
                    if !batch.is_empty() {
                        send(&config, batch, &stats).await;
                    }
                    return;
                }
            },
            _ = ticker.tick() => {
                if !batch.is_empty() {
                    send(&config, std::mem::take(&mut batch), &stats).await;
                }
            }
        }
    }
}

/// The request for a batch: one resource (the gateway), one scope (`accord`).
pub fn request(config: &Traces, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let string = super::attr;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", &config.service_name),
                    string("telemetry.sdk.name", "accord"),
                    string("telemetry.sdk.language", "rust"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "accord".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

async fn send(config: &Traces, spans: Vec<Span>, stats: &TraceStats) {
    let count = spans.len() as u64;
    let message = request(config, spans).encode_to_vec();
    let result = if config.grpc {
        send_grpc(&config.endpoint, message).await
    } else {
        let url = format!(
            "{}/v1/traces",
            config.endpoint.to_string().trim_end_matches('/')
        );
        match url.parse() {
            Ok(uri) => {
                crate::outbound::post_as(&uri, "application/x-protobuf", &[], Bytes::from(message))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(format!("{url}: {e}")),
        }
    };
    match result {
        Ok(()) => {
            stats.exported.fetch_add(count, Relaxed);
        }
        Err(e) => {
            stats.dropped.fetch_add(count, Relaxed);
            tracing::warn!(endpoint = %config.endpoint, spans = count, error = %e, "traces: the collector did not take a batch");
        }
    }
}

/// One unary gRPC call over h2c: the message framed (no compression, 4-byte length), success
/// when the trailers say `grpc-status: 0`.
async fn send_grpc(endpoint: &http::Uri, message: Vec<u8>) -> Result<(), String> {
    let host = endpoint
        .host()
        .ok_or("the endpoint has no host")?
        .to_owned();
    let port = endpoint.port_u16().unwrap_or(4317);
    let call = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut framed = BytesMut::with_capacity(message.len() + 5);
        framed.put_u8(0);
        framed.put_u32(u32::try_from(message.len()).map_err(|_| "batch too large")?);
        framed.put_slice(&message);
        let request = http::Request::post(format!(
            "http://{host}:{port}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(framed.freeze()))
        .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response failed: {e}"))?;
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match (status.as_u16(), grpc_status.as_deref()) {
            (200, Some("0")) => Ok(()),
            (code, grpc) => Err(format!(
                "HTTP {code}, grpc-status {}",
                grpc.unwrap_or("missing")
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "no answer within 10s".to_owned())?
}
