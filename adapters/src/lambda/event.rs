//! Request → API Gateway event, as API Gateway's HTTP APIs build them (payload formats 2.0 and
//! 1.0), so that functions written for API Gateway (`lambda_http`, Powertools, Mangum…) run
//! unchanged behind the gateway.

use std::collections::BTreeMap;

use base64::Engine as _;
use http::request::Parts;
use serde_json::{Map, Value, json};

use super::PayloadFormat;
use crate::backend::RequestContext;

/// The event for a request, as JSON bytes.
pub fn build(parts: &Parts, body: &[u8], format: PayloadFormat, stage: &str) -> Vec<u8> {
    let event = match format {
        PayloadFormat::V2 => v2(parts, body, stage),
        PayloadFormat::V1 => v1(parts, body, stage),
    };
    serde_json::to_vec(&event).unwrap_or_default()
}

/// What every format shares.
struct Common<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    protocol: &'static str,
    source_ip: String,
    user_agent: String,
    request_id: String,
    route_key: String,
    path_parameters: Option<Map<String, Value>>,
    time: String,
    time_epoch: i64,
    domain_name: String,
    body: Option<(String, bool)>,
}

fn common<'a>(parts: &'a Parts, body: &[u8]) -> Common<'a> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let now = jiff::Timestamp::now();
    let context = parts.extensions.get::<RequestContext>();
    let path_parameters = context
        .map(|c| &c.path_params.0)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        });
    Common {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        protocol: match parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        source_ip: context
            .map(|c| c.client.ip().to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
        route_key: context.map_or_else(|| "$default".to_owned(), |c| c.route_key.0.to_string()),
        path_parameters,
        time: now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%d/%b/%Y:%H:%M:%S %z")
            .to_string(),
        time_epoch: now.as_millisecond(),
        domain_name: header("host"),
        body: encode_body(parts, body),
    }
}

/// The body as API Gateway passes it: text as is, anything else base64-encoded.
fn encode_body(parts: &Parts, body: &[u8]) -> Option<(String, bool)> {
    if body.is_empty() {
        return None;
    }
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if is_text(&content_type)
        && let Ok(text) = std::str::from_utf8(body)
    {
        return Some((text.to_owned(), false));
    }
    Some((base64::engine::general_purpose::STANDARD.encode(body), true))
}

/// Media types whose bodies travel as text (no content type counts as text when it decodes).
fn is_text(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.is_empty()
        || essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
        )
}

/// Header names lower-cased with their values in order, `cookie` apart.
fn header_values(parts: &Parts) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    headers
}

/// Query parameters, percent-decoded, with their values in order.
fn query_values(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(percent_decode(name))
            .or_default()
            .push(percent_decode(value));
    }
    params
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn joined(values: &BTreeMap<String, Vec<String>>) -> Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.join(","))))
        .collect()
}

fn last(values: &BTreeMap<String, Vec<String>>) -> Map<String, Value> {
    values
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), Value::String(v.last()?.clone()))))
        .collect()
}

fn lists(values: &BTreeMap<String, Vec<String>>) -> Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::Array(v.iter().cloned().map(Value::String).collect()),
            )
        })
        .collect()
}

fn or_null(map: Map<String, Value>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    }
}

/// Payload format 2.0.
fn v2(parts: &Parts, body: &[u8], stage: &str) -> Value {
    let c = common(parts, body);
    let mut headers = header_values(parts);
    let cookies: Vec<String> = headers
        .remove("cookie")
        .unwrap_or_default()
        .iter()
        .flat_map(|line| line.split(';'))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let query = query_values(c.query);
    let mut event = json!({
        "version": "2.0",
        "routeKey": c.route_key,
        "rawPath": c.path,
        "rawQueryString": c.query,
        "headers": joined(&headers),
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "accord",
            "domainName": c.domain_name,
            "domainPrefix": c.domain_name.split('.').next().unwrap_or_default(),
            "http": {
                "method": c.method,
                "path": c.path,
                "protocol": c.protocol,
                "sourceIp": c.source_ip,
                "userAgent": c.user_agent,
            },
            "requestId": c.request_id,
            "routeKey": c.route_key,
            "stage": stage,
            "time": c.time,
            "timeEpoch": c.time_epoch,
        },
        "isBase64Encoded": c.body.as_ref().is_some_and(|(_, b64)| *b64),
    });
    if let Some(object) = event.as_object_mut() {
        if !cookies.is_empty() {
            object.insert("cookies".into(), json!(cookies));
        }
        if !query.is_empty() {
            object.insert(
                "queryStringParameters".into(),
                Value::Object(joined(&query)),
            );
        }
        if let Some(params) = c.path_parameters {
            object.insert("pathParameters".into(), Value::Object(params));
        }
        if let Some((body, _)) = c.body {
            object.insert("body".into(), Value::String(body));
        }
    }
    event
}

/// Payload format 1.0.
fn v1(parts: &Parts, body: &[u8], stage: &str) -> Value {
    let c = common(parts, body);
    let headers = header_values(parts);
    let query = query_values(c.query);
    let resource = match c.route_key.split_once(' ') {
        Some((_, template)) => template.to_owned(),
        None => c.path.to_owned(),
    };
    json!({
        "version": "1.0",
        "resource": resource,
        "path": c.path,
        "httpMethod": c.method,
        "headers": last(&headers),
        "multiValueHeaders": lists(&headers),
        "queryStringParameters": or_null(last(&query)),
        "multiValueQueryStringParameters": or_null(lists(&query)),
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "accord",
            "domainName": c.domain_name,
            "domainPrefix": c.domain_name.split('.').next().unwrap_or_default(),
            "extendedRequestId": c.request_id,
            "httpMethod": c.method,
            "identity": {
                "sourceIp": c.source_ip,
                "userAgent": c.user_agent,
            },
            "path": c.path,
            "protocol": c.protocol,
            "requestId": c.request_id,
            "requestTime": c.time,
            "requestTimeEpoch": c.time_epoch,
            "resourcePath": resource,
            "stage": stage,
        },
        "pathParameters": c.path_parameters.map_or(Value::Null, Value::Object),
        "stageVariables": Value::Null,
        "body": c.body.as_ref().map_or(Value::Null, |(b, _)| Value::String(b.clone())),
        "isBase64Encoded": c.body.as_ref().is_some_and(|(_, b64)| *b64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{PathParams, RouteKey};

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
    }

    fn event(parts: &Parts, body: &[u8], format: PayloadFormat) -> Value {
        serde_json::from_slice(&build(parts, body, format, "$default")).unwrap()
    }

    #[test]
    fn a_v2_event_carries_raw_and_parsed_forms_of_path_query_headers_and_cookies() {
        let mut p = parts(
            http::Request::post("/orders/42?tag=a&tag=b&q=x%20y")
                .header("x-multi", "one")
                .header("x-multi", "two")
                .header("Cookie", "a=1; b=2")
                .header("content-type", "application/json")
                .header("user-agent", "curl/8")
                .header("host", "api.example.com")
                .header("x-request-id", "rid-1")
                .body(())
                .unwrap(),
        );
        p.extensions.insert(RequestContext {
            client: "198.51.100.7:5000".parse().unwrap(),
            route_key: RouteKey("POST /orders/{id}".into()),
            path_params: PathParams(vec![("id".into(), "42".into())]),
        });
        let e = event(&p, br#"{"n":1}"#, PayloadFormat::V2);
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "POST /orders/{id}");
        assert_eq!(e["rawPath"], "/orders/42");
        assert_eq!(e["rawQueryString"], "tag=a&tag=b&q=x%20y");
        assert_eq!(e["queryStringParameters"]["tag"], "a,b");
        assert_eq!(e["queryStringParameters"]["q"], "x y");
        assert_eq!(e["headers"]["x-multi"], "one,two");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["pathParameters"]["id"], "42");
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["http"]["sourceIp"], "198.51.100.7");
        assert_eq!(e["requestContext"]["http"]["userAgent"], "curl/8");
        assert_eq!(e["requestContext"]["requestId"], "rid-1");
        assert_eq!(e["requestContext"]["domainName"], "api.example.com");
        assert_eq!(e["body"], r#"{"n":1}"#);
        assert_eq!(e["isBase64Encoded"], false);
        assert!(e["requestContext"]["timeEpoch"].as_i64().unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn binary_bodies_are_base64_encoded() {
        let p = parts(
            http::Request::put("/blob")
                .header("content-type", "application/octet-stream")
                .body(())
                .unwrap(),
        );
        let e = event(&p, &[0, 159, 146, 150], PayloadFormat::V2);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "AJ+Slg==");
        let text_but_not_utf8 = parts(
            http::Request::put("/t")
                .header("content-type", "text/plain")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            event(&text_but_not_utf8, &[0xff, 0xfe], PayloadFormat::V2)["isBase64Encoded"],
            true
        );
    }

    #[test]
    fn a_v1_event_has_multi_value_maps_and_nulls_where_api_gateway_puts_them() {
        let p = parts(
            http::Request::get("/items?x=1&x=2")
                .header("x-multi", "one")
                .header("x-multi", "two")
                .body(())
                .unwrap(),
        );
        let e = event(&p, b"", PayloadFormat::V1);
        assert_eq!(e["version"], "1.0");
        assert_eq!(e["httpMethod"], "GET");
        assert_eq!(e["path"], "/items");
        assert_eq!(e["headers"]["x-multi"], "two");
        assert_eq!(e["multiValueHeaders"]["x-multi"], json!(["one", "two"]));
        assert_eq!(e["queryStringParameters"]["x"], "2");
        assert_eq!(e["multiValueQueryStringParameters"]["x"], json!(["1", "2"]));
        assert_eq!(e["pathParameters"], Value::Null);
        assert_eq!(e["body"], Value::Null);
        let bare = parts(http::Request::get("/").body(()).unwrap());
        assert_eq!(
            event(&bare, b"", PayloadFormat::V1)["queryStringParameters"],
            Value::Null
        );
    }
}
