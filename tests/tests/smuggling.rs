#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Request smuggling, tried through the `accord` binary against a real nginx upstream whose
//! access log shows every request that reached it. Each ambiguous or malformed request gets a
//! clean 4xx, or is forwarded once, correctly; no second request ever reaches the upstream, and
//! the smuggled path never does.

use std::net::SocketAddr;
use std::time::Duration;

use accord_tests::AccordProcess;
use accord_tests::nginx::Nginx;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came back for one raw exchange: the status codes of every response on the connection.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Until the gateway closes the connection, or stays quiet for a moment.
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(700), stream.read(&mut buffer)).await
    {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer)
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| {
            String::from_utf8_lossy(&answer)
                .get(at + 9..at + 12)
                .and_then(|code| code.parse().ok())
        })
        .collect()
}

async fn setup() -> (Nginx, AccordProcess) {
    let nginx = Nginx::start(
        "    location / { default_type text/plain; return 200 \"upstream\\n\"; }\n    location /smuggled { return 200 \"SMUGGLED\\n\"; }",
    )
    .await;
    let upstream = nginx.addr;
    let accord = AccordProcess::start(|addr, admin| {
        format!(
            "listeners:\n  - address: {addr}\nadmin:\n  address: {admin}\nlog:\n  access_log: false\nbackends:\n  nginx:\n    http:\n      addresses: [\"{upstream}\"]\nroutes:\n  - id: all\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: nginx}}]\n"
        )
    })
    .await;
    (nginx, accord)
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: accord.test\r\n\r\n";

/// `(name, raw request, may it be forwarded once)`.
fn http1_cases() -> Vec<(&'static str, String, bool)> {
    let post = "POST /form HTTP/1.1\r\nHost: accord.test\r\n";
    vec![
        (
            "CL.TE",
            format!(
                "{post}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            true,
        ),
        (
            "TE.CL",
            format!(
                "{post}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2d\r\n{SMUGGLED}\r\n0\r\n\r\n"
            ),
            true,
        ),
        (
            "conflicting Content-Length",
            format!("{post}Content-Length: 5\r\nContent-Length: 45\r\n\r\nhello{SMUGGLED}"),
            false,
        ),
        (
            "Content-Length list",
            format!("{post}Content-Length: 5, 45\r\n\r\nhello{SMUGGLED}"),
            false,
        ),
        (
            "obfuscated TE (xchunked)",
            format!("{post}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            false,
        ),
        (
            "obfuscated TE (space before colon)",
            format!(
                "{post}Content-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            false,
        ),
        (
            "obfuscated TE (chunked, identity)",
            format!("{post}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            false,
        ),
        (
            "TE in an HTTP/1.0 request",
            format!(
                "POST /form HTTP/1.0\r\nHost: accord.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            true,
        ),
        (
            "bare LF chunk lines",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{SMUGGLED}"),
            true,
        ),
        (
            "oversized chunk size",
            format!(
                "{post}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
            ),
            false,
        ),
        (
            "NUL in a header value",
            format!("{post}X-Note: a\0b\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
            false,
        ),
        (
            "CR in a header value",
            format!("{post}X-Note: a\rb\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
            false,
        ),
        (
            "obs-fold",
            format!("{post}X-Note: a\r\n b\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
            false,
        ),
    ]
}

#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn ambiguous_http1_framing_never_smuggles_a_request_upstream() {
    let (nginx, accord) = setup().await;
    let mut failures = Vec::new();
    for (name, raw, may_forward) in http1_cases() {
        let before = nginx.requests().len();
        let statuses = exchange(accord.addr, raw.as_bytes()).await;
        // A forwarded request is logged just after its answer; a refused one never is.
        let forwarded = usize::from(statuses.first() == Some(&200));
        let reached = nginx.requests_after(before, forwarded).await;
        let first = statuses.first().copied();
        let clean_refusal = first.is_some_and(|s| (400..500).contains(&s)) && reached.is_empty();
        let single_forward = may_forward
            && first == Some(200)
            && reached.len() == 1
            && reached[0].starts_with("POST /form ");
        eprintln!("{name}: answered {statuses:?}, upstream saw {reached:?}");
        let smuggled = reached.iter().any(|r| r.contains("/smuggled"))
            || statuses.len() > 1 && statuses[1] == 200;
        if smuggled || !(clean_refusal || single_forward) {
            failures.push(format!(
                "{name}: answered {statuses:?}, upstream saw {reached:?}"
            ));
        }
    }
    // The gateway still serves ordinary requests.
    let ok = exchange(
        accord.addr,
        b"GET /after HTTP/1.1\r\nHost: accord.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok, vec![200]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An absolute-form target names the host: the upstream sees that host, once, whatever `Host`
/// said.
#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn an_absolute_form_target_wins_over_a_different_host_header() {
    let (nginx, accord) = setup().await;
    let statuses = exchange(
        accord.addr,
        b"GET http://orders.example/path HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses, vec![200]);
    assert_eq!(
        nginx.requests_after(0, 1).await,
        vec!["GET /path HTTP/1.1|orders.example|-"]
    );
}

// === raw HTTP/2 ===

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block of literal fields without indexing (no Huffman), so that headers an
/// HTTP/2 client library would refuse to send can be sent.
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Sends one HTTP/2 request (prior knowledge) and returns the frame types the gateway answered
/// on the request's stream or the connection (HEADERS 1, RST_STREAM 3, GOAWAY 7) and, for a
/// response, whether its status was 200.
async fn h2_exchange(addr: SocketAddr, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    let end_stream = if body.is_none() { 0x1 } else { 0 };
    out.extend(frame(1, 0x4 | end_stream, 1, &header_block(headers)));
    if let Some(body) = body {
        out.extend(frame(0, 0x1, 1, body));
    }
    stream.write_all(&out).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(700), stream.read(&mut buffer)).await
    {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    let mut kinds = Vec::new();
    let mut rest = answer.as_slice();
    while let Some((head, after)) = rest.split_at_checked(9) {
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let Some((payload, after)) = after.split_at_checked(length) else {
            break;
        };
        match head[3] {
            // HEADERS on stream 1: 0x88 is `:status: 200` from the static table.
            1 if payload.first() == Some(&0x88) => kinds.push(200),
            kind @ (1 | 3 | 7) => kinds.push(kind),
            _ => {}
        }
        rest = after;
    }
    kinds
}

/// `(name, header fields, DATA)`.
type H2Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a [u8]>);

#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn malformed_http2_requests_are_refused_before_the_upstream() {
    let (nginx, accord) = setup().await;
    let base = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "accord.test"),
        (":path", "/form"),
    ];
    let cases: Vec<H2Case> = vec![
        (
            "connection header",
            [&base[..], &[("connection", "keep-alive")]].concat(),
            None,
        ),
        (
            "transfer-encoding header",
            [&base[..], &[("transfer-encoding", "chunked")]].concat(),
            None,
        ),
        (
            "upgrade header",
            [&base[..], &[("upgrade", "websocket")]].concat(),
            None,
        ),
        (
            "content-length above the DATA",
            [&base[..], &[("content-length", "10")]].concat(),
            Some(b"abc".as_slice()),
        ),
        (
            "content-length below the DATA",
            [&base[..], &[("content-length", "1")]].concat(),
            Some(b"abc".as_slice()),
        ),
    ];
    let mut failures = Vec::new();
    for (name, headers, body) in cases {
        let before = nginx.requests().len();
        let answered = h2_exchange(accord.addr, &headers, body).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reached = nginx.requests().split_off(before);
        eprintln!("{name}: answered frames {answered:?}, upstream saw {reached:?}");
        if !reached.is_empty() || answered.is_empty() || answered.contains(&200) {
            failures.push(format!(
                "{name}: answered frames {answered:?}, upstream saw {reached:?}"
            ));
        }
    }
    // A well-formed HTTP/2 request still goes through, once.
    let before = nginx.requests().len();
    let answered = h2_exchange(accord.addr, &base, Some(b"ok".as_slice())).await;
    assert!(answered.contains(&200), "{answered:?}");
    assert_eq!(nginx.requests_after(before, 1).await.len(), 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
