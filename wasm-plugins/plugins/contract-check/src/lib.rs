//! `contract-check`: holds both sides of a route to a contract.
//!
//! * **Request contract** — violations are refused before the backend sees them: a missing
//!   required header (400), a body whose `Content-Type` is not allowed (415), a declared body
//!   longer than allowed (413), a body that is not JSON (400) or does not match the JSON Schema
//!   (422, with where and why). Bodies sent without a length are held to the route's
//!   `max_body` by the gateway. The schema check reads the body, so the plugin needs the
//!   gateway's `request_body` setting; a body longer than that is counted as
//!   `schema_unchecked` and passes.
//! * **Response contract** — violations are counted as **bad** against the route's objective
//!   (the client still gets the response): a status outside the allowed list, a missing
//!   required header, a body that is not well-formed JSON. The JSON check reads the body, so
//!   the plugin needs the gateway's `response_body` setting; a body longer than that is counted
//!   as `json_unchecked` and passes.
//!
//! Configuration (JSON, every part optional):
//!
//! ```json
//! {
//!   "request": {
//!     "required_headers": ["x-api-key"],
//!     "content_types": ["application/json"],
//!     "max_body_bytes": 65536,
//!     "json_schema": {"type": "object", "required": ["sku"],
//!                     "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}
//!   },
//!   "response": {
//!     "statuses": ["2xx", "404"],
//!     "required_headers": ["content-type"],
//!     "json": true
//!   }
//! }
//! ```
//!
//! The schema is JSON Schema (drafts 4, 6, 7, 2019-09 and 2020-12, by its `$schema`; 2020-12
//! when absent), compiled once per instance; references must be local (`#/$defs/…`): the
//! plugin has no files or network. Statuses are exact (`404`) or classes (`2xx`). The JSON check applies to responses with a
//! body whose content type is JSON (`application/json`, `*+json`); `json: "always"` applies it
//! to every response with a body.

use accord_policy_sdk::{
    Decision, Policy, RequestHead, ResponseHead, Verdict, export_policy, request, response,
    telemetry,
};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    request: RequestContract,
    response: ResponseContract,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RequestContract {
    required_headers: Vec<String>,
    content_types: Vec<String>,
    max_body_bytes: Option<u64>,
    json_schema: Option<serde_json::Value>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ResponseContract {
    statuses: Vec<StatusPattern>,
    required_headers: Vec<String>,
    json: JsonCheck,
}

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(untagged)]
enum JsonCheck {
    #[default]
    Off,
    Enabled(bool),
    Always(Always),
}

#[derive(serde::Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Always {
    Always,
}

/// `404` or `4xx`.
#[derive(Clone, Copy)]
enum StatusPattern {
    Exact(u16),
    Class(u16),
}

impl<'de> serde::Deserialize<'de> for StatusPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let text = match &value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let invalid = || {
            serde::de::Error::custom(format!(
                "status {value} is neither a status (404) nor a class (4xx)"
            ))
        };
        if let Some(class) = text.strip_suffix("xx") {
            return match class.parse::<u16>() {
                Ok(c) if (1..=5).contains(&c) => Ok(Self::Class(c)),
                _ => Err(invalid()),
            };
        }
        match text.parse::<u16>() {
            Ok(s) if (100..=599).contains(&s) => Ok(Self::Exact(s)),
            _ => Err(invalid()),
        }
    }
}

impl StatusPattern {
    fn matches(self, status: u16) -> bool {
        match self {
            Self::Exact(s) => s == status,
            Self::Class(c) => status / 100 == c,
        }
    }
}

struct ContractCheck {
    config: Config,
    /// The request body's schema, compiled.
    schema: Option<jsonschema::Validator>,
}

/// Schema violations reported to the client, at most.
const REPORTED_VIOLATIONS: usize = 3;

impl Policy for ContractCheck {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let schema = config
            .request
            .json_schema
            .as_ref()
            .map(|schema| {
                jsonschema::validator_for(schema)
                    .map_err(|e| format!("request.json_schema is not a valid schema: {e}"))
            })
            .transpose()?;
        Ok(Self { config, schema })
    }

    fn on_request(&mut self, head: RequestHead) -> Decision {
        {
            let contract = &self.config.request;
            for name in &contract.required_headers {
                if request::header(name).is_none() {
                    return violation(
                        400,
                        "missing_header",
                        &format!("the {name} header is required"),
                    );
                }
            }
            let has_body = head.content_length().is_some_and(|n| n > 0)
                || request::header("transfer-encoding").is_some();
            if has_body && !contract.content_types.is_empty() {
                let given = request::header("content-type").unwrap_or_default();
                if !contract
                    .content_types
                    .iter()
                    .any(|t| media_type_is(&given, t))
                {
                    return violation(
                        415,
                        "content_type",
                        &format!(
                            "content type {:?} is not one of {}",
                            given,
                            contract.content_types.join(", ")
                        ),
                    );
                }
            }
            if let (Some(max), Some(len)) = (contract.max_body_bytes, head.content_length())
                && len > max
            {
                return violation(
                    413,
                    "body_too_large",
                    &format!("the body is {len} bytes, the contract allows {max}"),
                );
            }
            if let Some(schema) = &self.schema {
                return check_schema(schema, has_body);
            }
            Decision::Allow
        }
    }

    fn on_response(&mut self, head: ResponseHead) -> Verdict {
        {
            let contract = &self.config.response;
            if !contract.statuses.is_empty()
                && !contract.statuses.iter().any(|p| p.matches(head.status))
            {
                return Verdict::Bad(format!("status_{}", head.status));
            }
            for name in &contract.required_headers {
                if response::header(name).is_none() {
                    return Verdict::Bad(format!("missing_{}", name.to_ascii_lowercase()));
                }
            }
            if contract.json != JsonCheck::Off && contract.json != JsonCheck::Enabled(false) {
                let content_type = response::header("content-type").unwrap_or_default();
                let is_json = media_type_is(&content_type, "application/json")
                    || essence(&content_type).ends_with("+json");
                let always = matches!(contract.json, JsonCheck::Always(_));
                if is_json || always {
                    match response::body() {
                        None => telemetry::counter("json_unchecked", 1),
                        Some(body) if body.is_empty() && !is_json => {}
                        Some(body) => {
                            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                                return Verdict::Bad("invalid_json".into());
                            }
                        }
                    }
                }
            }
            Verdict::Keep
        }
    }
}

/// The request body against the schema: 400 when it is not JSON, 422 with the first
/// violations (where, why) when it does not match.
fn check_schema(schema: &jsonschema::Validator, has_body: bool) -> Decision {
    let body = match request::body() {
        Some(body) if !body.is_empty() || has_body => body,
        // No body: the schema is about bodies.
        Some(_) => return Decision::Allow,
        None if has_body => {
            // Longer than the gateway's `request_body` for this plugin: not seen.
            telemetry::counter("schema_unchecked", 1);
            return Decision::Allow;
        }
        None => return Decision::Allow,
    };
    let instance: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return violation(400, "invalid_json", &format!("the body is not JSON: {e}"));
        }
    };
    let errors: Vec<String> = schema
        .iter_errors(&instance)
        .take(REPORTED_VIOLATIONS)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if errors.is_empty() {
        return Decision::Allow;
    }
    violation(
        422,
        "schema",
        &format!("the body does not match the schema: {}", errors.join("; ")),
    )
}

fn violation(status: u16, kind: &str, reason: &str) -> Decision {
    telemetry::counter(&format!("request_{kind}"), 1);
    telemetry::annotate("contract", kind);
    Decision::reject(status, reason)
}

/// The media type without parameters, lower-cased: `application/json; charset=utf-8` →
/// `application/json`.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn media_type_is(content_type: &str, expected: &str) -> bool {
    essence(content_type) == expected.to_ascii_lowercase()
}

export_policy!(ContractCheck);
