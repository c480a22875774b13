//! Function output → HTTP response, as API Gateway's HTTP APIs map it: `statusCode`,
//! `headers`, `multiValueHeaders` (1.0), `cookies` (2.0), `body`, `isBase64Encoded`. With
//! payload format 2.0, output without a `statusCode` is answered as API Gateway does: 200,
//! `application/json`, the output as the body.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use super::PayloadFormat;
use crate::backend::GatewayResponse;
use crate::body::full_body;

/// Maps the function's output; the error says why it cannot be an HTTP response.
pub fn map(payload: &[u8], format: PayloadFormat) -> Result<GatewayResponse, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        format!(
            "it is not JSON ({e}); it starts with {:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(40)])
        )
    })?;
    match value {
        Value::Object(object) if object.contains_key("statusCode") => structured(&object, format),
        _ if format == PayloadFormat::V2 => {
            let mut response = http::Response::new(full_body(Bytes::copy_from_slice(payload)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response.into())
        }
        _ => Err("it has no statusCode, which payload format 1.0 requires".into()),
    }
}

fn structured(
    object: &serde_json::Map<String, Value>,
    format: PayloadFormat,
) -> Result<GatewayResponse, String> {
    let status = match &object["statusCode"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    .and_then(|n| StatusCode::from_u16(n).ok())
    .filter(|s| (200..=599).contains(&s.as_u16()))
    .ok_or_else(|| format!("statusCode {} is not an HTTP status", object["statusCode"]))?;

    let base64 = match object.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("isBase64Encoded is {other}, not a boolean")),
    };
    let body = match object.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(text)) if base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Bytes::from)
            .map_err(|e| format!("body is marked isBase64Encoded but is not base64: {e}"))?,
        Some(Value::String(text)) => Bytes::from(text.clone()),
        // API Gateway sends a non-string body as its JSON text.
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut response = http::Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(map) = object.get("headers").filter(|v| !v.is_null()) {
        let map = map
            .as_object()
            .ok_or_else(|| format!("headers is {map}, not an object"))?;
        for (name, value) in map {
            headers.insert(header_name(name)?, header_value(name, value)?);
        }
    }
    if format == PayloadFormat::V1
        && let Some(map) = object.get("multiValueHeaders").filter(|v| !v.is_null())
    {
        let map = map
            .as_object()
            .ok_or_else(|| format!("multiValueHeaders is {map}, not an object"))?;
        for (name, values) in map {
            let values = values
                .as_array()
                .ok_or_else(|| format!("multiValueHeaders.{name} is not a list"))?;
            let name_parsed = header_name(name)?;
            // multiValueHeaders win over headers of the same name, as in API Gateway.
            headers.remove(&name_parsed);
            for value in values {
                headers.append(name_parsed.clone(), header_value(name, value)?);
            }
        }
    }
    if let Some(cookies) = object.get("cookies").filter(|v| !v.is_null()) {
        let cookies = cookies
            .as_array()
            .ok_or_else(|| format!("cookies is {cookies}, not a list"))?;
        for cookie in cookies {
            headers.append(http::header::SET_COOKIE, header_value("cookies", cookie)?);
        }
    }
    Ok(response.into())
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(name).map_err(|_| format!("header name {name:?} is not valid"))
}

fn header_value(name: &str, value: &Value) -> Result<HeaderValue, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        other => return Err(format!("header {name} has the value {other}, not a string")),
    };
    HeaderValue::from_str(&text).map_err(|_| format!("header {name} has an invalid value"))
}

/// `: <errorType>: <errorMessage>` from a function error's payload, for logs.
pub fn function_error_summary(payload: &[u8]) -> String {
    let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(payload) else {
        return String::new();
    };
    let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or_default();
    let message: String = field("errorMessage").chars().take(200).collect();
    format!(": {}: {message}", field("errorType"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: GatewayResponse) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_structured_v2_response_maps_status_headers_cookies_and_body() {
        let payload =
            br#"{"statusCode": 201, "headers": {"x-a": "1", "content-type": "text/plain"},
            "cookies": ["a=1; Path=/", "b=2"], "body": "made"}"#;
        let response = map(payload, PayloadFormat::V2).unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-a"], "1");
        let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
        assert_eq!(text(response).await, "made");
    }

    #[tokio::test]
    async fn base64_bodies_are_decoded_and_v1_multi_value_headers_repeat() {
        let payload = br#"{"statusCode": 200, "isBase64Encoded": true, "body": "AJ+Slg==",
            "headers": {"x-one": "a"}, "multiValueHeaders": {"x-many": ["1", "2"]}}"#;
        let response = map(payload, PayloadFormat::V1).unwrap();
        let many: Vec<_> = response.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["1", "2"]);
        assert_eq!(response.headers()["x-one"], "a");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], &[0, 159, 146, 150]);
    }

    #[tokio::test]
    async fn v2_output_without_a_status_code_is_json_with_200() {
        let response = map(br#"{"hello": "world"}"#, PayloadFormat::V2).unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(text(response).await, r#"{"hello": "world"}"#);
    }

    #[test]
    fn outputs_that_cannot_be_mapped_say_why() {
        for (payload, format, expected) in [
            (&b"not json"[..], PayloadFormat::V2, "not JSON"),
            (br#"{"hello": 1}"#, PayloadFormat::V1, "no statusCode"),
            (
                br#"{"statusCode": 1000}"#,
                PayloadFormat::V2,
                "not an HTTP status",
            ),
            (
                br#"{"statusCode": 200, "headers": ["x"]}"#,
                PayloadFormat::V2,
                "not an object",
            ),
            (
                br#"{"statusCode": 200, "isBase64Encoded": true, "body": "%%%"}"#,
                PayloadFormat::V2,
                "not base64",
            ),
            (
                br#"{"statusCode": 200, "headers": {"bad name": "x"}}"#,
                PayloadFormat::V2,
                "not valid",
            ),
        ] {
            let error = map(payload, format).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_function_error_is_summarised_from_its_payload() {
        let summary = function_error_summary(
            br#"{"errorType": "ValueError", "errorMessage": "bad order", "stackTrace": []}"#,
        );
        assert_eq!(summary, ": ValueError: bad order");
        assert_eq!(function_error_summary(b"oops"), "");
    }
}
