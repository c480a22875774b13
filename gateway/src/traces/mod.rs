//! OpenTelemetry traces: a server span per request and a client span per backend try.
//!
//! * **Context.** A request's trace continues the client's W3C `traceparent` (its trace id,
//!   and the client's span as the server span's parent), or starts a new trace. The backend
//!   gets a `traceparent` naming the server span, so its spans join the same trace.
//! * **Recording** costs a few fields on the request's record and one entry per try; nothing
//!   is built unless the trace is kept.
//! * **Keeping** is decided when the request ends: always for the classes in `always_keep`
//!   (bad, throttled, cancelled, rejected) and for requests slower than their route's latency
//!   threshold; for the others, the client's sampled flag, or `sample_ratio` by the trace id
//!   (the same decision on every gateway for one trace).
//! * **Export** is off the request path: kept spans go through a bounded channel (full: dropped
//!   and counted) to a task that batches them (up to 512, or every second) into OTLP
//!   `ExportTraceServiceRequest`s, sent over HTTP/protobuf or gRPC ([`export`]).

mod export;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use accord_adapters::clock;
use accord_policies::Class;
use http::HeaderValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::model::Traces;

/// Spans waiting for export, at most: past it, kept spans are dropped (and counted).
const QUEUE: usize = 8192;

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub struct TraceStats {
    /// Spans sent to the collector.
    pub exported: AtomicU64,
    /// Spans dropped: the queue was full or the collector refused them.
    pub dropped: AtomicU64,
    /// Requests whose trace was kept.
    pub kept: AtomicU64,
}

/// The gateway's tracer: the settings and the way to the exporter task.
#[derive(Debug)]
pub struct Tracer {
    config: Traces,
    sender: mpsc::Sender<Span>,
    stats: Arc<TraceStats>,
}

impl Tracer {
    /// Starts the exporter task (it ends when the tracer is dropped, after a last batch).
    pub fn start(config: Traces) -> Arc<Tracer> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(TraceStats::default());
        tokio::spawn(export::run(config.clone(), receiver, stats.clone()));
        Arc::new(Tracer {
            config,
            sender,
            stats,
        })
    }

    /// The settings.
    pub fn config(&self) -> &Traces {
        &self.config
    }

    /// The exporter's counters.
    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }

    /// A request's trace context, from its `traceparent` when it has a valid one, begun as the
    /// request arrives: in the poll that read its head, whose reading of the request path's clock
    /// (`accord_adapters::clock`) is the request's start.
    pub fn begin(self: &Arc<Self>, traceparent: Option<&HeaderValue>) -> RequestTrace {
        let parent = traceparent.and_then(|v| parse_traceparent(v.to_str().ok()?));
        let (trace_id, parent_span, sampled) = match parent {
            Some((trace, span, flags)) => (trace, Some(span), flags & 1 == 1),
            None => (random_bytes::<16>(), None, false),
        };
        RequestTrace {
            tracer: self.clone(),
            trace_id,
            span_id: random_bytes::<8>(),
            parent_span,
            parent_sampled: sampled,
            start: SystemTime::now(),
            arrived: clock::now(),
            tries: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// One request's trace as it goes.
#[derive(Debug)]
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span: Option<[u8; 8]>,
    parent_sampled: bool,
    /// When the request arrived, on the wall clock: the server span's start.
    start: SystemTime,
    /// The same moment on the request path's monotonic clock, which times everything else: each
    /// span's other times are `start` plus their distance from it, so that a try's span lies
    /// within the request's whichever clock reading each came from.
    arrived: Instant,
    tries: std::sync::Mutex<Vec<TrySpan>>,
}

/// A backend try, as its client span will show it.
#[derive(Debug, Clone)]
pub struct TrySpan {
    /// The backend.
    pub backend: Arc<str>,
    /// Its provider (`http`, `lambda`, `azure`).
    pub provider: &'static str,
    /// How it ended (its status, the failure, or cancelled).
    pub result: accord_adapters::TryResult,
    /// How long it took.
    pub latency: Duration,
    /// When it ended, on the request path's clock (`accord_adapters::clock`).
    pub ended: Instant,
}

/// What the whole request came to, for the server span.
#[derive(Debug)]
pub struct RequestOutcome<'a> {
    /// `GET`, …
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The route, if one matched.
    pub route: Option<&'a str>,
    /// The backend that answered.
    pub backend: Option<&'a str>,
    /// The status sent.
    pub status: u16,
    /// How it counts.
    pub class: Class,
    /// The plugins' decisions and annotations, as in the access log (joined only for a kept
    /// trace).
    pub plugins: &'a [(String, String)],
    /// What SLA enforcement did to it (`reroute`, `shed`, `reject`), if anything.
    pub sla_action: Option<&'static str>,
    /// The request id.
    pub request_id: &'a str,
    /// The client's address.
    pub client: std::net::IpAddr,
    /// Over the route's latency threshold.
    pub slow: bool,
    /// How long it took.
    pub duration: Duration,
}

impl RequestTrace {
    /// The `traceparent` the backend gets: this request's server span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        let flags = if self.parent_sampled || self.ratio_sampled() {
            "01"
        } else {
            "00"
        };
        let mut value = String::with_capacity(55);
        value.push_str("00-");
        crate::hex::push(&mut value, &self.trace_id);
        value.push('-');
        crate::hex::push(&mut value, &self.span_id);
        value.push('-');
        value.push_str(flags);
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
    }

    fn ratio_sampled(&self) -> bool {
        // The trace id's last 8 bytes, as W3C's random part: the same decision everywhere.
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.trace_id[8..]);
        (u64::from_be_bytes(low) as f64) < self.tracer.config.sample_ratio * u64::MAX as f64
    }

    /// A try ended.
    pub fn record_try(&self, span: TrySpan) {
        let mut tries = self.tries.lock().unwrap_or_else(|p| p.into_inner());
        if tries.len() < 64 {
            tries.push(span);
        }
    }

    /// Whether the request's trace is kept.
    fn keep(&self, outcome: &RequestOutcome<'_>) -> bool {
        let config = &self.tracer.config;
        config.always_keep.contains(&outcome.class)
            || (config.keep_slow && outcome.slow)
            || self.parent_sampled
            || self.ratio_sampled()
    }

    /// The request ended: builds and queues its spans if the trace is kept, and returns its
    /// trace id (hex) then, for the duration histogram's exemplars.
    pub fn finish(&self, outcome: RequestOutcome<'_>) -> Option<String> {
        if !self.keep(&outcome) {
            return None;
        }
        self.tracer.stats.kept.fetch_add(1, Relaxed);
        let end = self.start + outcome.duration;
        let mut attributes = vec![
            attr("http.request.method", outcome.method),
            attr("url.path", outcome.path),
            int_attr("http.response.status_code", i64::from(outcome.status)),
            attr("accord.class", outcome.class.as_str()),
            attr("accord.request_id", outcome.request_id),
            attr("client.address", &outcome.client.to_string()),
        ];
        if let Some(route) = outcome.route {
            attributes.push(attr("http.route", route));
            attributes.push(attr("accord.route", route));
        }
        if let Some(backend) = outcome.backend {
            attributes.push(attr("accord.backend", backend));
        }
        if !outcome.plugins.is_empty() {
            let joined: Vec<String> = outcome
                .plugins
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attributes.push(attr("accord.plugins", &joined.join(";")));
        }
        if let Some(action) = outcome.sla_action {
            attributes.push(attr("accord.sla.action", action));
        }
        let tries = std::mem::take(&mut *self.tries.lock().unwrap_or_else(|p| p.into_inner()));
        attributes.push(int_attr("accord.tries", tries.len() as i64));
        let bad = matches!(outcome.class, Class::Bad);
        let mut spans = vec![Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!(
                "{} {}",
                outcome.method,
                outcome.route.unwrap_or("(no route)")
            ),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(end),
            attributes,
            status: Some(Status {
                code: if bad {
                    status::StatusCode::Error
                } else {
                    status::StatusCode::Unset
                } as i32,
                message: if bad {
                    format!("{} {}", outcome.status, outcome.class.as_str())
                } else {
                    String::new()
                },
            }),
            ..Span::default()
        }];
        for (n, t) in tries.iter().enumerate() {
            let ended = self.start + t.ended.saturating_duration_since(self.arrived);
            let start = ended
                .checked_sub(t.latency)
                .unwrap_or(ended)
                .max(self.start);
            let (result, answered) = match t.result {
                accord_adapters::TryResult::Answered(status) => {
                    (status.as_u16().to_string(), Some(status.as_u16()))
                }
                accord_adapters::TryResult::Failed(kind) => {
                    (format!("{kind:?}").to_lowercase(), None)
                }
                accord_adapters::TryResult::Cancelled => ("cancelled".to_owned(), None),
            };
            let mut attributes = vec![
                attr("accord.backend", &t.backend),
                attr("accord.provider", t.provider),
                int_attr("accord.retry", n as i64),
                attr("accord.try.result", &result),
            ];
            if let Some(code) = answered {
                attributes.push(int_attr("http.response.status_code", i64::from(code)));
            }
            let failed = answered.is_none_or(|s| s >= 500);
            spans.push(Span {
                trace_id: self.trace_id.to_vec(),
                span_id: random_bytes::<8>().to_vec(),
                parent_span_id: self.span_id.to_vec(),
                name: format!("try {}", t.backend),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: nanos(start),
                end_time_unix_nano: nanos(ended),
                attributes,
                status: Some(Status {
                    code: if failed {
                        status::StatusCode::Error
                    } else {
                        status::StatusCode::Unset
                    } as i32,
                    message: if failed { result } else { String::new() },
                }),
                ..Span::default()
            });
        }
        for span in spans {
            if self.tracer.sender.try_send(span).is_err() {
                self.tracer.stats.dropped.fetch_add(1, Relaxed);
            }
        }
        Some(crate::hex::encode(&self.trace_id))
    }
}

pub(super) fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    loop {
        for chunk in bytes.chunks_mut(8) {
            let random = fastrand::u64(..).to_le_bytes();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
        // All-zero ids are invalid.
        if bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` → (trace id, parent span id, flags); none when invalid.
fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let decode = |text: &str, out: &mut [u8]| -> Option<()> {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(())
    };
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    decode(trace, &mut trace_id)?;
    decode(span, &mut span_id)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id.iter().all(|b| *b == 0) || span_id.iter().all(|b| *b == 0) {
        return None;
    }
    Some((trace_id, span_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_strictly() {
        let (trace, span, flags) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            crate::hex::encode(&trace),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(crate::hex::encode(&span), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    /// The request path reads its clock once per poll, so its readings can be earlier than the
    /// wall clock's read beside them: every span time is the server span's start plus its
    /// distance from the arrival on the monotonic clock, and a try's span lies within the
    /// request's.
    #[tokio::test(start_paused = true)]
    async fn a_try_span_is_placed_by_the_request_path_s_clock_within_the_server_span() {
        let (sender, mut spans) = mpsc::channel(8);
        let tracer = Arc::new(Tracer {
            config: Traces {
                endpoint: http::Uri::from_static("http://127.0.0.1:4318"),
                grpc: false,
                sample_ratio: 1.0,
                always_keep: Vec::new(),
                keep_slow: false,
                service_name: "accord".to_owned(),
            },
            sender,
            stats: Arc::default(),
        });
        let trace = tracer.begin(None);
        let arrived = Instant::now();
        // A first try from the arrival to 3 ms, a second from 5 ms to 9 ms.
        for (ended, latency) in [(3, 3), (9, 4)] {
            trace.record_try(TrySpan {
                backend: Arc::from("b"),
                provider: "http",
                result: accord_adapters::TryResult::Answered(http::StatusCode::OK),
                latency: Duration::from_millis(latency),
                ended: arrived + Duration::from_millis(ended),
            });
        }
        let outcome = RequestOutcome {
            method: "GET",
            path: "/",
            route: Some("r"),
            backend: Some("b"),
            status: 200,
            class: Class::Good,
            plugins: &[],
            sla_action: None,
            request_id: "1",
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            slow: false,
            duration: Duration::from_millis(10),
        };
        assert!(trace.finish(outcome).is_some());
        let server = spans.recv().await.unwrap();
        let ms = |nanos: u64| (nanos - server.start_time_unix_nano) / 1_000_000;
        assert_eq!(ms(server.end_time_unix_nano), 10);
        let tries: Vec<_> = [spans.recv().await.unwrap(), spans.recv().await.unwrap()]
            .iter()
            .map(|t| (ms(t.start_time_unix_nano), ms(t.end_time_unix_nano)))
            .collect();
        assert_eq!(tries, [(0, 3), (5, 9)]);
    }
}
