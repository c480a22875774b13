//! An OTLP trace receiver for the tests (no collector binary is installable here): HTTP/protobuf
//! (`POST /v1/traces`) and gRPC (`TraceService/Export` over h2c) on one scripted upstream,
//! decoding the real protobuf with `opentelemetry-proto`.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::upstream::Upstream;

/// A received span with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    /// The span.
    pub span: Span,
    /// How it came: `http` or `grpc`.
    pub via: &'static str,
}

/// The receiver.
pub struct OtlpReceiver {
    /// Its server.
    pub upstream: Upstream,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpReceiver {
    /// Starts one on a free loopback port.
    pub async fn start() -> OtlpReceiver {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let store = spans.clone();
        let upstream = Upstream::start(move |seen| {
            let store = store.clone();
            async move {
                let grpc = seen.uri.path()
                    == "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
                let bytes = if grpc {
                    // One uncompressed message: flag 0, a 4-byte big-endian length.
                    assert_eq!(seen.body[0], 0, "uncompressed");
                    let len = u32::from_be_bytes([seen.body[1], seen.body[2], seen.body[3], seen.body[4]]) as usize;
                    assert_eq!(len, seen.body.len() - 5, "one framed message");
                    seen.body.slice(5..)
                } else {
                    assert_eq!(seen.uri.path(), "/v1/traces");
                    assert_eq!(seen.headers["content-type"], "application/x-protobuf");
                    seen.body.clone()
                };
                let request = ExportTraceServiceRequest::decode(bytes).expect("valid OTLP protobuf");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            store.lock().unwrap_or_else(|p| p.into_inner()).push(ReceivedSpan {
                                service: service.clone(),
                                span,
                                via: if grpc { "grpc" } else { "http" },
                            });
                        }
                    }
                }
                let mut response = http::Response::new(http_body_util::Full::default());
                if grpc {
                    let headers = response.headers_mut();
                    headers.insert("content-type", http::HeaderValue::from_static("application/grpc"));
                    headers.insert("grpc-status", http::HeaderValue::from_static("0"));
                }
                response
            }
        })
        .await;
        OtlpReceiver { upstream, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A string attribute's value.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
