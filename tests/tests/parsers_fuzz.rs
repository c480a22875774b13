#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests over the parsers users and upstreams control, seeded from the corpus in
//! `tests/fuzz-corpus/` (plus the shipped examples and the golden error cases) and mutated:
//! the configuration loader, Lambda's output mapping, the Entra ID token endpoint's answers and
//! a plugin's outputs. None may panic; bad input is a clear error and the gateway keeps serving.
//! A short run is part of `./scripts/test.sh`; `PROPTEST_CASES` makes it longer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accord::config::{self, ProcessEnvironment};
use accord_adapters::lambda::PayloadFormat;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files of `dirs` (relative to the repository) whose names end in `ext`, read.
fn seeds(dirs: &[&str], ext: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(root().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {dirs:?}");
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    DropLine(usize),
    RepeatLine(usize),
    SwapLines(usize, usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens = prop_oneof![
        Just(b": ".to_vec()),
        Just(b"\n- ".to_vec()),
        Just(b"{".to_vec()),
        Just(b"]".to_vec()),
        Just(b"&a ".to_vec()),
        Just(b"*a".to_vec()),
        Just(b"%".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"99999999999999999999".to_vec()),
        Just("é\u{0}".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::RepeatLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        (any::<usize>(), tokens).prop_map(|(at, t)| Mutation::Insert(at, t)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for m in mutations {
        let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        let n = lines.len().max(1);
        match m {
            Mutation::DropLine(i) => {
                lines.remove(i % n);
            }
            Mutation::RepeatLine(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
            Mutation::Flip(at, bit) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] ^= 1 << (bit % 8);
                }
                continue;
            }
            Mutation::Insert(at, token) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, token.iter().copied());
                continue;
            }
            Mutation::Truncate(at) => {
                bytes.truncate(at % (bytes.len() + 1));
                continue;
            }
        }
        bytes = lines.join(&b'\n');
    }
    bytes
}

/// A seed picked from `seeds`, mutated a few times.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (0..seeds.len(), proptest::collection::vec(mutation(), 0..4))
        .prop_map(move |(i, m)| apply(&seeds[i], &m))
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Arbitrary YAML never panics the loader; what it refuses comes with at least one error, each
/// placed within the file (line 0 only for problems with no place, such as a missing field).
#[test]
fn the_configuration_loader_never_panics_and_locates_its_errors() {
    let seeds = seeds(
        &[
            "examples",
            "gateway/tests/config-errors",
            "tests/fuzz-corpus/config",
        ],
        ".yaml",
    );
    let input = prop_oneof![
        4 => mutated(seeds),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ];
    runner(400)
        .run(&input, |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let lines = text.lines().count() as u64 + 1;
            if let Err(errors) = config::from_str(&text, &ProcessEnvironment) {
                prop_assert!(!errors.errors.is_empty(), "refused without a reason");
                for e in &errors.errors {
                    prop_assert!(!e.message.is_empty());
                    prop_assert!(e.line <= lines, "{e:?} is past the end ({lines} lines)");
                }
                prop_assert!(!errors.render().is_empty());
            }
            Ok(())
        })
        .unwrap();
}

/// Whatever a function returns, the output mapping answers a response with a valid status, or
/// an error that says why — never a panic.
#[test]
fn lambda_output_mapping_never_panics() {
    let seeds = seeds(&["tests/fuzz-corpus/lambda-output"], ".json");
    let scalar = prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
    ];
    let value = scalar.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".{0,10}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let field = prop_oneof![
        Just("statusCode"),
        Just("headers"),
        Just("multiValueHeaders"),
        Just("cookies"),
        Just("body"),
        Just("isBase64Encoded"),
    ];
    let shaped = proptest::collection::btree_map(field, value, 0..6).prop_map(|m| {
        serde_json::to_vec(&serde_json::Value::Object(
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ))
        .unwrap()
    });
    let input = prop_oneof![3 => shaped, 2 => mutated(seeds), 1 => proptest::collection::vec(any::<u8>(), 0..100)];
    runner(600)
        .run(&(input, any::<bool>()), |(payload, v1)| {
            let format = if v1 {
                PayloadFormat::V1
            } else {
                PayloadFormat::V2
            };
            match accord_adapters::lambda::response::map(&payload, format) {
                Ok(response) => prop_assert!((100..=999).contains(&response.status().as_u16())),
                Err(why) => prop_assert!(!why.is_empty()),
            }
            Ok(())
        })
        .unwrap();
}

/// An HTTPS token endpoint answering whatever the test sets: `(status, body)`.
async fn scripted_token_endpoint(
    pki: &accord_tests::pki::Pki,
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_request| {
                    let (status, body) = answer.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://{addr}")
}

/// Whatever the token endpoint answers, a token request ends in a token or an auth failure that
/// names the credential — never a panic. Each case is a credential of its own (no cache).
#[test]
fn entra_token_answers_never_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pki = accord_tests::pki::Pki::new();
    let answer = Arc::new(Mutex::new((200u16, Vec::new())));
    let authority = runtime.block_on(scripted_token_endpoint(&pki, answer.clone()));
    let seeds: Vec<(u16, Vec<u8>)> = seeds(&["tests/fuzz-corpus/entra-token"], ".txt")
        .into_iter()
        .map(|seed| {
            let text = String::from_utf8(seed).unwrap();
            let (status, body) = text.split_once('\n').unwrap();
            (status.trim().parse().unwrap(), body.as_bytes().to_vec())
        })
        .collect();
    let bodies: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
    let input = (
        prop_oneof![
            Just(200u16),
            Just(400),
            Just(401),
            Just(429),
            Just(500),
            100u16..600
        ],
        prop_oneof![3 => mutated(bodies), 1 => proptest::collection::vec(any::<u8>(), 0..80)],
    );
    let credential = |case: u32| accord_adapters::azure::EntraCredentialConfig {
        name: format!("fuzz-{case}"),
        kind: accord_adapters::azure::EntraCredentialKind::ClientSecret {
            tenant_id: "tenant".into(),
            client_id: format!("client-{case}"),
            secret: accord_adapters::Secret::new("secret".into()),
        },
        authority_host: Some(authority.clone()),
        ca_file: Some(pki.ca.clone()),
    };
    let token = |case: u32| {
        let source =
            accord_adapters::azure::credential::TokenSource::for_config(&credential(case)).unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), source.token("api://x/.default"))
                .await
                .expect("an answer within 10 s")
        })
    };
    // The endpoint is really reached: a well-formed answer is a token.
    *answer.lock().unwrap() = seeds
        .iter()
        .find(|(_, body)| body.windows(8).any(|w| w == b"eyJ0eXAi"))
        .cloned()
        .unwrap();
    assert_eq!(token(u32::MAX).unwrap(), "eyJ0eXAi.abc.def");
    let cases = std::sync::atomic::AtomicU32::new(0);
    runner(120)
        .run(&input, |(status, body)| {
            *answer.lock().unwrap() = (status, body);
            let case = cases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let token = token(case);
            if let Ok(token) = &token {
                prop_assert!(!token.is_empty(), "an empty token is refused, not sent");
            }
            if let Err(e) = token {
                prop_assert_eq!(e.kind(), accord_adapters::BackendErrorKind::Auth);
                prop_assert!(e.to_string().contains(&format!("fuzz-{case}")), "{}", e);
            }
            Ok(())
        })
        .unwrap();
}

/// Whatever a plugin returns — any status, reason, header name and value (CR, LF, NUL, not
/// UTF-8), Retry-After, reroute target or verdict — the client gets an HTTP answer and the
/// gateway keeps serving.
#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn plugin_outputs_never_break_a_response() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (gateway, _app) = runtime.block_on(async {
        let app = accord_tests::upstream::Upstream::fixed("app", 200).await;
        let yaml = format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: true\nplugins:\n  emit:\n    path: {}\nbackends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: r\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    plugins: [emit]\n    slo: {{availability: 99%}}\n",
            accord_tests::plugins::component("misbehave").display(),
            app.addr
        );
        (accord_tests::TestGateway::start(&yaml).await, app)
    });
    // The plugin really emits what it is asked to.
    runtime.block_on(async {
        let teapot = accord_tests::send(
            http::Request::get(gateway.url("/fuzz"))
                .header("x-misbehave", "emit")
                .header("x-emit-status", "418")
                .header("x-emit-reason", "short%20and%20stout")
                .header("x-emit-header-name", "x-pot")
                .header("x-emit-header-value", "tea")
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(teapot.status, 418, "{}", teapot.text());
        assert_eq!(teapot.header("x-pot"), Some("tea"));
        assert!(teapot.text().contains("short and stout"));
    });
    // Percent-encoded, so any byte can be asked for.
    let encoded = proptest::collection::vec(any::<u8>(), 0..24).prop_map(|bytes| {
        bytes
            .iter()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    });
    let input = (
        proptest::option::of(prop_oneof![
            any::<u16>().prop_map(|s| s.to_string()),
            encoded.clone()
        ]),
        encoded.clone(),
        encoded.clone(),
        encoded.clone(),
        proptest::option::of(any::<u32>().prop_map(|s| s.to_string())),
        proptest::option::of(prop_oneof![Just("app".to_owned()), encoded.clone()]),
        prop_oneof![Just("good"), Just("bad"), Just("keep")],
    );
    let client = accord_tests::client();
    runner(200)
        .run(
            &input,
            |(status, reason, name, value, retry_after, reroute, verdict)| {
                let mut request = http::Request::get(gateway.url("/fuzz"))
                    .header("x-misbehave", "emit")
                    .header("x-emit-reason", reason)
                    .header("x-emit-header-name", name)
                    .header("x-emit-header-value", value)
                    .header("x-emit-verdict", verdict);
                for (header, v) in [
                    ("x-emit-status", status),
                    ("x-emit-retry-after", retry_after),
                    ("x-emit-reroute", reroute),
                ] {
                    if let Some(v) = v {
                        request = request.header(header, v);
                    }
                }
                let reply = runtime.block_on(accord_tests::send_with(
                    &client,
                    request.body(http_body_util::Full::default()).unwrap(),
                ));
                prop_assert!((200..600).contains(&reply.status.as_u16()), "{:?}", reply);
                Ok(())
            },
        )
        .unwrap();
    runtime.block_on(async {
        assert_eq!(accord_tests::get(&gateway.url("/after")).await.status, 200);
        assert_eq!(
            accord_tests::get(&gateway.admin_url("/healthz"))
                .await
                .status,
            200
        );
    });
}
