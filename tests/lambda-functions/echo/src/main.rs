//! A `lambda_http` function that answers with the request it parsed from the API Gateway event
//! (so the tests see what the gateway's event mapping carried), plus a few fixed shapes:
//! a path ending in `/binary` answers bytes that are not UTF-8, one with `/status/<code>` answers
//! that status, and every other answer sets two cookies.

use std::collections::BTreeMap;

use base64::Engine as _;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response, run, service_fn};
use serde_json::json;

async fn handler(request: Request) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    if path.ends_with("/binary") {
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .body(Body::Binary(vec![0, 1, 2, 0xfe, 0xff]))?);
    }
    if let Some((_, code)) = path.split_once("/status/") {
        return Ok(Response::builder()
            .status(code.parse::<u16>().unwrap_or(500))
            .header("content-type", "text/plain")
            .body(Body::Text(format!("status {code}")))?);
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or_default().to_owned());
    }
    let query: BTreeMap<String, Vec<String>> = request
        .query_string_parameters()
        .iter()
        .map(|(k, _)| {
            let values = request
                .query_string_parameters()
                .all(k)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect();
            (k.to_owned(), values)
        })
        .collect();
    let path_parameters: BTreeMap<String, String> = request
        .path_parameters()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let format = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(_)) => "2.0",
        Some(RequestContext::ApiGatewayV1(_)) => "1.0",
        _ => "other",
    };
    let body = base64::engine::general_purpose::STANDARD.encode(request.body().as_ref());
    let answer = json!({
        "format": format,
        "method": request.method().as_str(),
        "path": path,
        "query": query,
        "headers": headers,
        "path_parameters": path_parameters,
        "body_base64": body,
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("set-cookie", "session=abc; Path=/")
        .header("set-cookie", "theme=dark")
        .body(Body::Text(answer.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
