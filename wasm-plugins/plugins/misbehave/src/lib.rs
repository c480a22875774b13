//! Misbehaves as the `x-misbehave` request header says: `trap`, `loop`, `bomb` (allocate until
//! the memory limit), `recurse` (until the stack is exhausted), `status` (reject with status
//! 999), `reroute` (to a backend that does not exist), `response-trap` (trap in on-response),
//! `reject` (a proper 429 with a header and Retry-After), `reclassify` (count the response as
//! bad), `emit` (return whatever the `x-emit-*` headers say, percent-decoded, so a fuzzer can
//! try any plugin output), `head` (reject with the request head's fields as the reason, and
//! count the response as bad with them as read in on-response). Otherwise
//! allows. Its configuration can make its start-up slow: `spin-ms N` spins N milliseconds in
//! `configure`, `spin-forever` never returns. For the tests.

use accord_policy_sdk::{
    Decision, Plugin, RequestHead, ResponseHead, Verdict, export_plugin, locals, request,
};

struct Misbehave;

impl Plugin for Misbehave {
    fn configure(config: String) -> Result<(), String> {
        let config = config.trim_matches('"');
        if config == "spin-forever" {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if let Some(ms) = config.strip_prefix("spin-ms ") {
            let ms: i64 = ms.parse().map_err(|_| format!("spin-ms {ms:?}"))?;
            let until = accord_policy_sdk::clock::now_ms() + ms;
            while accord_policy_sdk::clock::now_ms() < until {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }

    fn on_request(head: RequestHead) -> Decision {
        let how = request::header("x-misbehave").unwrap_or_default();
        locals::set("how", &how);
        match how.as_str() {
            "trap" => panic!("asked to trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "status" => Decision::reject(999, "not an HTTP status"),
            "clock" => Decision::reject(
                503,
                &format!("now-ms {}", accord_policy_sdk::clock::now_ms()),
            ),
            "reroute" => Decision::reroute("nowhere"),
            "recurse" => Decision::reject(500, &format!("depth {}", recurse(0))),
            "reject" => Decision::Reject(accord_policy_sdk::Rejection {
                status: 429,
                reason: "slow down".into(),
                headers: vec![accord_policy_sdk::HttpHeader {
                    name: "x-quota".into(),
                    value: "0".into(),
                }],
                retry_after_seconds: Some(7),
            }),
            "emit" => emit(),
            "head" => Decision::reject(
                400,
                &format!(
                    "{} {} {} {:?} {} {}",
                    head.route(),
                    head.method(),
                    head.path(),
                    head.content_length(),
                    head.request_id(),
                    head.client_ip()
                ),
            ),
            _ => Decision::Allow,
        }
    }

    fn on_response(_head: ResponseHead) -> Verdict {
        match locals::get("how").as_deref() {
            Some("response-trap") => panic!("asked to trap in on-response"),
            Some("reclassify") => Verdict::Bad("contract-violated".into()),
            Some("head") => Verdict::Bad(format!(
                "{} {} {} {:?} {} {}",
                request::route(),
                request::method(),
                request::path(),
                request::content_length(),
                request::request_id(),
                request::client_ip()
            )),
            Some("emit") => match locals::get("verdict").as_deref() {
                Some("good") => Verdict::Good(locals::get("reason").unwrap_or_default()),
                Some("bad") => Verdict::Bad(locals::get("reason").unwrap_or_default()),
                _ => Verdict::Keep,
            },
            _ => Verdict::Keep,
        }
    }
}

export_plugin!(Misbehave);

/// Recurses until the Wasm stack is exhausted: each frame keeps a buffer, and the addition
/// after the call keeps it from being a tail call.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    if std::hint::black_box(depth) == u64::MAX {
        return depth;
    }
    recurse(depth + 1) + frame[7]
}

/// A header, percent-decoded (lossily, to UTF-8).
fn emitted(name: &str) -> Option<String> {
    let raw = request::header(name)?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The decision the `x-emit-*` headers describe.
fn emit() -> Decision {
    let reason = emitted("x-emit-reason").unwrap_or_default();
    locals::set("reason", &reason);
    locals::set("verdict", &emitted("x-emit-verdict").unwrap_or_default());
    if let Some(backend) = emitted("x-emit-reroute") {
        return Decision::reroute(&backend);
    }
    match emitted("x-emit-status").and_then(|s| s.parse::<u16>().ok()) {
        Some(status) => Decision::Reject(accord_policy_sdk::Rejection {
            status,
            reason,
            headers: vec![accord_policy_sdk::HttpHeader {
                name: emitted("x-emit-header-name").unwrap_or_default(),
                value: emitted("x-emit-header-value").unwrap_or_default(),
            }],
            retry_after_seconds: emitted("x-emit-retry-after").and_then(|s| s.parse().ok()),
        }),
        None => Decision::Allow,
    }
}
