//! `idempotency`: a request that repeats an `Idempotency-Key` already seen within `ttl_ms` is
//! refused with 409, so a client's retry of a `POST` never reaches the backend twice. Keys
//! live in the plugin's `state`: shared by its instances and, in cluster mode, by every
//! replica (a repeat sent to another replica is refused once that replica has synced, within
//! one sync interval).
//!
//! The first request of a key goes through with `x-idempotency: first` added for the backend,
//! and the response carries `x-idempotency-key` back to the client; the key's record names the
//! request id that used it first and the client's address, and the refusal says which request
//! it was. Requests without the header, and methods not listed, pass untouched.
//!
//! Configuration (JSON, all optional; the defaults are shown):
//!
//! ```json
//! {"header": "idempotency-key", "ttl_ms": 86400000, "methods": ["POST", "PATCH"]}
//! ```

use accord_policy_sdk::{
    Decision, Policy, Rejection, RequestHead, ResponseHead, Verdict, export_policy, locals,
    request, response, state, telemetry,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    header: String,
    ttl_ms: u64,
    methods: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header: "idempotency-key".into(),
            ttl_ms: 86_400_000,
            methods: vec!["POST".into(), "PATCH".into()],
        }
    }
}

struct Idempotency(Config);

impl Policy for Idempotency {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.header.trim().is_empty() {
            return Err("header: must name a header".into());
        }
        if config.ttl_ms == 0 {
            return Err("ttl_ms: must be more than 0".into());
        }
        Ok(Self(config))
    }

    fn on_request(&mut self, head: RequestHead) -> Decision {
        let config = &self.0;
        if !config
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(head.method()))
        {
            return Decision::Allow;
        }
        let Some(key) = request::header(&config.header) else {
            return Decision::Allow;
        };
        let record_key = format!("{}:{key}", head.route());
        if let Some(first) = state::get(&record_key) {
            telemetry::counter("repeated", 1);
            telemetry::annotate("idempotency", "repeat");
            let first_id = first.split(' ').next().unwrap_or_default();
            return Decision::Reject(Rejection {
                status: 409,
                reason: format!("idempotency key {key:?} was already used by request {first_id}"),
                headers: Vec::new(),
                retry_after_seconds: None,
            });
        }
        let record = format!("{} {}", head.request_id(), head.client_ip());
        if let Err(e) = state::set(&record_key, &record, config.ttl_ms) {
            telemetry::annotate("idempotency", &format!("not recorded: {e}"));
            return Decision::Allow;
        }
        telemetry::counter("first", 1);
        let _ = request::set_header("x-idempotency", "first");
        locals::set("key", &key);
        Decision::Allow
    }

    fn on_response(&mut self, _head: ResponseHead) -> Verdict {
        if let Some(key) = locals::get("key") {
            let _ = response::set_header("x-idempotency-key", &key);
        }
        Verdict::Keep
    }
}

export_policy!(Idempotency);
