//! Misbehaves as the `x-misbehave` request header says: `trap`, `loop`, `bomb` (allocate until
//! the memory limit), `status` (reject with status 999), `reroute` (to a backend that does not
//! exist), `response-trap` (trap in on-response), `reject` (a proper 429 with a header and
//! Retry-After), `reclassify` (count the response as bad). Otherwise allows. For the tests.

use accord_policy_sdk::{
    Decision, Plugin, RequestHead, ResponseHead, Verdict, export_plugin, locals, request,
};

struct Misbehave;

impl Plugin for Misbehave {
    fn on_request(_head: RequestHead) -> Decision {
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
            "reroute" => Decision::reroute("nowhere"),
            "reject" => Decision::Reject(accord_policy_sdk::Rejection {
                status: 429,
                reason: "slow down".into(),
                headers: vec![accord_policy_sdk::HttpHeader {
                    name: "x-quota".into(),
                    value: "0".into(),
                }],
                retry_after_seconds: Some(7),
            }),
            _ => Decision::Allow,
        }
    }

    fn on_response(_head: ResponseHead) -> Verdict {
        match locals::get("how").as_deref() {
            Some("response-trap") => panic!("asked to trap in on-response"),
            Some("reclassify") => Verdict::Bad("contract-violated".into()),
            _ => Verdict::Keep,
        }
    }
}

export_plugin!(Misbehave);
