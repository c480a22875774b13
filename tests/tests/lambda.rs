#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Lambda backends end to end: a real `lambda_http` function behind cargo-lambda's emulator
//! (both payload formats), a SigV4-verifying Invoke fake for every error shape, static, profile
//! and assume-role credentials, and failover from Lambda to an on-prem backend with the SLA
//! report counting each class.

use accord_tests::aws::{ACCESS_KEY_ID, AwsFake, CargoLambda, ROLE_ARN, SECRET_ACCESS_KEY};
use accord_tests::upstream::Upstream;
use accord_tests::{TestGateway, backend_requests, get, request, send};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;

/// Files holding the test key pair, referenced by `*_file` in the configuration.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new(secret: &str) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key-id"), ACCESS_KEY_ID).unwrap();
        std::fs::write(dir.path().join("secret"), secret).unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            format!(
                "[accord-test]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {secret}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[profile accord-test]\nregion = eu-west-1\n",
        )
        .unwrap();
        Keys { dir }
    }

    fn static_credentials(&self) -> String {
        format!(
            "{{access_key_id_file: {}, secret_access_key_file: {}}}",
            self.dir.path().join("key-id").display(),
            self.dir.path().join("secret").display()
        )
    }

    fn profile_credentials(&self) -> String {
        format!(
            "{{profile: accord-test, profile_credentials_file: {}, profile_config_file: {}}}",
            self.dir.path().join("credentials").display(),
            self.dir.path().join("config").display()
        )
    }
}

fn lambda_backend(
    name: &str,
    function: &str,
    endpoint: &str,
    extra: &str,
    credentials: &str,
) -> String {
    format!(
        "  {name}:\n    lambda:\n      function: {function}\n      region: us-east-1\n      endpoint: {endpoint}\n      credentials: {credentials}\n{extra}"
    )
}

fn route(id: &str, path: &str, backends: &[&str], extra: &str) -> String {
    let list = backends
        .iter()
        .map(|b| format!("{{backend: {b}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("  - id: {id}\n    match: {{path: {path}}}\n    backends: [{list}]\n{extra}")
}

fn config(backends: &[String], routes: &[String]) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n{}routes:\n{}",
        backends.concat(),
        routes.concat()
    )
}

fn with_headers(
    mut request: http::Request<Full<Bytes>>,
    headers: &[(&'static str, &str)],
) -> http::Request<Full<Bytes>> {
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, http::HeaderValue::from_str(value).unwrap());
    }
    request
}

/// The values the function saw for a name, comma-joined ones split (a list of strings).
fn values(seen: &serde_json::Value) -> Vec<String> {
    seen.as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v.as_str().unwrap().split(',').map(str::to_owned))
        .collect()
}

#[tokio::test]
#[ignore = "runs cargo-lambda's emulator: run ./scripts/test.sh"]
async fn a_real_lambda_http_function_gets_the_request_in_both_payload_formats() {
    let emulator = CargoLambda::start("echo").await;
    let keys = Keys::new(SECRET_ACCESS_KEY);
    let endpoint = emulator.endpoint();
    let yaml = config(
        &[
            lambda_backend("echo-v2", "echo", &endpoint, "", &keys.static_credentials()),
            lambda_backend(
                "echo-v1",
                "echo",
                &endpoint,
                "      payload_format: \"1.0\"\n",
                &keys.static_credentials(),
            ),
        ],
        &[
            route(
                "v2-items",
                "{template: \"/v2/items/{id}\"}",
                &["echo-v2"],
                "",
            ),
            route("v2", "{prefix: /v2}", &["echo-v2"], ""),
            route(
                "v1-items",
                "{template: \"/v1/items/{id}\"}",
                &["echo-v1"],
                "",
            ),
            route("v1", "{prefix: /v1}", &["echo-v1"], ""),
        ],
    );
    let gateway = TestGateway::start(&yaml).await;

    for version in ["2.0", "1.0"] {
        let prefix = if version == "2.0" { "/v2" } else { "/v1" };
        // GET with repeated headers and query values, cookies and a path parameter.
        let reply = send(with_headers(
            request(
                "GET",
                &gateway.url(&format!("{prefix}/items/42?tag=a&tag=b&q=x%20y")),
                "",
            ),
            &[
                ("x-multi", "one"),
                ("x-multi", "two"),
                ("cookie", "a=1; b=2"),
            ],
        ))
        .await;
        assert_eq!(reply.status, 200, "{version}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["format"], version);
        assert_eq!(seen["method"], "GET");
        assert_eq!(seen["path"], format!("{prefix}/items/42"));
        assert_eq!(seen["path_parameters"]["id"], "42", "{version}: {seen}");
        let tags = values(&seen["query"]["tag"]);
        assert_eq!(tags, ["a", "b"], "{version}: {seen}");
        assert_eq!(seen["query"]["q"][0], "x y", "{version}: {seen}");
        let multi = values(&seen["headers"]["x-multi"]);
        // lambda_http prefers 1.0's `headers` (the last value, as API Gateway writes it) over
        // `multiValueHeaders`; the event's unit tests check both maps.
        let expected: &[&str] = if version == "2.0" {
            &["one", "two"]
        } else {
            &["two"]
        };
        assert_eq!(multi, expected, "{version}: {seen}");
        // The forwarding headers are in the event as in any upstream request.
        let forwarded_for = values(&seen["headers"]["x-forwarded-for"]);
        assert_eq!(forwarded_for, ["127.0.0.1"], "{version}: {seen}");
        let forwarded_proto = values(&seen["headers"]["x-forwarded-proto"]);
        assert_eq!(forwarded_proto, ["http"], "{version}: {seen}");
        let cookie = seen["headers"]["cookie"].to_string();
        assert!(
            cookie.contains("a=1") && cookie.contains("b=2"),
            "{version}: {seen}"
        );
        let set_cookies: Vec<_> = reply.headers.get_all("set-cookie").iter().collect();
        assert_eq!(
            set_cookies,
            ["session=abc; Path=/", "theme=dark"],
            "{version}"
        );

        // POST with a JSON body, and with a binary one.
        let posted = send(with_headers(
            request(
                "POST",
                &gateway.url(&format!("{prefix}/orders")),
                "{\"n\":1}",
            ),
            &[("content-type", "application/json")],
        ))
        .await;
        assert_eq!(posted.json()["method"], "POST");
        assert_eq!(
            posted.json()["body_base64"],
            base64::engine::general_purpose::STANDARD.encode("{\"n\":1}")
        );
        let binary = [0u8, 159, 146, 150, 255];
        let uploaded = send(with_headers(
            request(
                "PUT",
                &gateway.url(&format!("{prefix}/blob")),
                Bytes::copy_from_slice(&binary),
            ),
            &[("content-type", "application/octet-stream")],
        ))
        .await;
        assert_eq!(
            uploaded.json()["body_base64"],
            base64::engine::general_purpose::STANDARD.encode(binary),
            "{version}"
        );

        // A binary answer (base64 in the payload) and a non-200 status.
        let bytes = get(&gateway.url(&format!("{prefix}/binary"))).await;
        assert_eq!(bytes.status, 200);
        assert_eq!(&bytes.body[..], &[0, 1, 2, 0xfe, 0xff], "{version}");
        let teapot = get(&gateway.url(&format!("{prefix}/status/418"))).await;
        assert_eq!(
            (teapot.status.as_u16(), teapot.text()),
            (418, "status 418".to_owned())
        );
    }
}

#[tokio::test]
async fn the_invoke_fake_sees_signed_events_and_every_error_is_classified() {
    let fake = AwsFake::start().await;
    let keys = Keys::new(SECRET_ACCESS_KEY);
    let endpoint = fake.endpoint();
    let creds = keys.static_credentials();
    let functions = [
        ("echo", "echo", "      qualifier: live\n"),
        ("raw", "raw-json", ""),
        ("garbage", "garbage", ""),
        ("handled", "handled-error", ""),
        ("unhandled", "unhandled-error", ""),
        ("throttled", "throttled", ""),
        ("missing", "no-such-function", ""),
        ("too-large", "too-large", ""),
        ("queued", "echo", "      invocation: event\n"),
        ("slow", "slow", "      timeout: 200ms\n"),
        ("service", "service-exception", ""),
        ("runtime", "invalid-runtime", ""),
        ("kms", "kms-denied", ""),
        ("eni", "eni-limit", ""),
        ("updating", "updating", ""),
    ];
    let backends: Vec<String> = functions
        .iter()
        .map(|(name, function, extra)| lambda_backend(name, function, &endpoint, extra, &creds))
        .collect();
    let routes: Vec<String> = functions
        .iter()
        .map(|(name, _, _)| {
            route(
                name,
                &format!("{{prefix: /{name}}}"),
                &[name],
                "    retry: {retries: 0}\n    max_body: 16MiB\n",
            )
        })
        .collect();
    let gateway = TestGateway::start(&config(&backends, &routes)).await;

    let echo = send(with_headers(
        request("POST", &gateway.url("/echo/orders?x=1"), "{\"n\":1}"),
        &[("content-type", "application/json"), ("cookie", "c=3")],
    ))
    .await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(echo.header("x-echo"), Some("yes"));
    assert_eq!(echo.header("set-cookie"), Some("served=1"));
    let event = echo.json();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["rawPath"], "/echo/orders");
    assert_eq!(event["rawQueryString"], "x=1");
    assert_eq!(event["cookies"], serde_json::json!(["c=3"]));
    assert_eq!(event["body"], "{\"n\":1}");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert!(
        event["requestContext"]["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let invoked = fake.invoked();
    assert_eq!(invoked[0].qualifier.as_deref(), Some("live"));
    assert_eq!(invoked[0].access_key_id, ACCESS_KEY_ID);

    let raw = get(&gateway.url("/raw")).await;
    assert_eq!(
        (raw.status.as_u16(), raw.text()),
        (200, "{\"hello\":\"world\"}".to_owned())
    );
    assert_eq!(raw.header("content-type"), Some("application/json"));

    for (path, status, code) in [
        ("/garbage", 502, "upstream_invalid_response"),
        ("/handled", 502, "lambda_function_error"),
        ("/unhandled", 502, "lambda_function_error"),
        ("/throttled", 429, "upstream_throttled"),
        ("/missing", 502, "backend_misconfigured"),
        ("/too-large", 413, "body_too_large"),
        ("/slow", 504, "upstream_timeout"),
        // Lambda's own failures, by what they are (issue 9: a 500 ServiceException was
        // reported as an invalid response).
        ("/service", 502, "upstream_service_error"),
        ("/runtime", 502, "lambda_function_error"),
        ("/kms", 502, "backend_misconfigured"),
        ("/eni", 502, "upstream_service_error"),
        ("/updating", 502, "upstream_service_error"),
    ] {
        let reply = get(&gateway.url(path)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(reply.json()["code"], code, "{path}");
        if path == "/throttled" {
            assert_eq!(
                reply.header("retry-after"),
                Some("7"),
                "Lambda's retry-after is passed on"
            );
        }
    }

    // Over the 6 MB synchronous limit: refused before invoking.
    let before = fake.invoked().len();
    let big = send(request(
        "POST",
        &gateway.url("/echo/big"),
        vec![b'x'; 7 << 20],
    ))
    .await;
    assert_eq!(big.status, 413);
    assert_eq!(fake.invoked().len(), before, "never sent to Lambda");

    let queued = send(request("POST", &gateway.url("/queued/job"), "{}")).await;
    assert_eq!(queued.status, 202);
    assert_eq!(fake.invoked().last().unwrap().invocation_type, "Event");
    assert_eq!(
        fake.bad_signatures
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn profile_and_assume_role_credentials_sign_as_expected_and_a_wrong_secret_is_an_auth_failure()
 {
    let fake = AwsFake::start().await;
    let keys = Keys::new(SECRET_ACCESS_KEY);
    let wrong = Keys::new("not-the-secret");
    let endpoint = fake.endpoint();
    let assume = format!(
        "{{access_key_id_file: {}, secret_access_key_file: {}, assume_role: {{role_arn: \"{ROLE_ARN}\", external_id: ext-1, sts_endpoint: \"{endpoint}\"}}}}",
        keys.dir.path().join("key-id").display(),
        keys.dir.path().join("secret").display()
    );
    let yaml = config(
        &[
            lambda_backend(
                "by-profile",
                "echo",
                &endpoint,
                "",
                &keys.profile_credentials(),
            ),
            lambda_backend("by-role", "echo", &endpoint, "", &assume),
            lambda_backend("wrong", "echo", &endpoint, "", &wrong.static_credentials()),
        ],
        &[
            route("profile", "{prefix: /profile}", &["by-profile"], ""),
            route("role", "{prefix: /role}", &["by-role"], ""),
            route(
                "wrong",
                "{prefix: /wrong}",
                &["wrong"],
                "    retry: {retries: 0}\n",
            ),
        ],
    );
    let gateway = TestGateway::start(&yaml).await;

    assert_eq!(get(&gateway.url("/profile")).await.status, 200);
    assert_eq!(fake.invoked().last().unwrap().access_key_id, ACCESS_KEY_ID);
    for _ in 0..5 {
        assert_eq!(get(&gateway.url("/role")).await.status, 200);
    }
    assert_eq!(fake.invoked().last().unwrap().access_key_id, "ASIATEMP0");
    assert_eq!(
        fake.assume_role_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the role's credentials are cached, not fetched per request"
    );

    let refused = get(&gateway.url("/wrong")).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.json()["code"], "upstream_auth_failed");
    assert!(
        fake.bad_signatures
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
}

#[tokio::test]
async fn a_throttling_or_failing_function_fails_over_to_on_prem_and_the_sla_report_counts_both() {
    let fake = AwsFake::start().await;
    let keys = Keys::new(SECRET_ACCESS_KEY);
    let on_prem = Upstream::fixed("on-prem", 200).await;
    let endpoint = fake.endpoint();
    let creds = keys.static_credentials();
    let slo = "    slo:\n      availability: 99%\n";
    let yaml = format!(
        "{}  on-prem:\n    http:\n      addresses: [\"{}\"]\n",
        config(
            &[
                lambda_backend("throttling", "throttled", &endpoint, "", &creds),
                lambda_backend("failing", "handled-error", &endpoint, "", &creds),
            ],
            &[
                route(
                    "throttle",
                    "{prefix: /throttle}",
                    &["throttling", "on-prem"],
                    slo
                ),
                route("fail", "{prefix: /fail}", &["failing", "on-prem"], slo),
            ],
        )
        .replace("routes:\n", "__ROUTES__"),
        on_prem.addr
    );
    // Put the on-prem backend before the routes.
    let (head, routes) = yaml.split_once("__ROUTES__").unwrap();
    let (routes, on_prem_backend) = routes.split_once("  on-prem:").unwrap();
    let yaml = format!("{head}  on-prem:{on_prem_backend}routes:\n{routes}");
    let gateway = TestGateway::start(&yaml).await;

    for path in ["/throttle", "/fail"] {
        for _ in 0..3 {
            let reply = get(&gateway.url(path)).await;
            assert_eq!(
                (reply.status.as_u16(), reply.text()),
                (200, "on-prem".to_owned()),
                "{path}"
            );
        }
    }
    assert_eq!(on_prem.hits(), 6);
    let backend = backend_requests;
    let throttle = get(&gateway.admin_url("/sla/routes/throttle")).await.json();
    assert_eq!(
        backend(&throttle, "throttling")["throttled"],
        3.0,
        "{throttle}"
    );
    assert_eq!(backend(&throttle, "on-prem")["good"], 3.0);
    let fail = get(&gateway.admin_url("/sla/routes/fail")).await.json();
    assert_eq!(backend(&fail, "failing")["bad"], 3.0, "{fail}");
    assert_eq!(
        fail["windows"][0]["requests"]["good"], 3.0,
        "the route's clients were served"
    );
    assert_eq!(
        gateway
            .metric("accord_upstream_errors_total{backend=\"failing\",provider=\"lambda\",kind=\"function_error\"}")
            .await,
        3.0
    );
}

/// A function that keeps throttling is ejected like a failing HTTP endpoint: after five
/// consecutive failures its route stops sending it traffic for a while, and failover serves.
#[tokio::test]
async fn a_function_that_keeps_throttling_is_ejected_from_its_route() {
    let fake = AwsFake::start().await;
    let keys = Keys::new(SECRET_ACCESS_KEY);
    let on_prem = Upstream::fixed("on-prem", 200).await;
    let endpoint = fake.endpoint();
    let creds = keys.static_credentials();
    let yaml = format!(
        "{}  on-prem:\n    http:\n      addresses: [\"{}\"]\n",
        config(
            &[lambda_backend(
                "throttling",
                "throttled",
                &endpoint,
                "",
                &creds
            )],
            &[route(
                "throttle",
                "{prefix: /throttle}",
                &["throttling", "on-prem"],
                ""
            )],
        )
        .replace("routes:\n", "__ROUTES__"),
        on_prem.addr
    );
    let (head, routes) = yaml.split_once("__ROUTES__").unwrap();
    let (routes, on_prem_backend) = routes.split_once("  on-prem:").unwrap();
    let gateway = TestGateway::start(&format!(
        "{head}  on-prem:{on_prem_backend}routes:\n{routes}"
    ))
    .await;
    for _ in 0..8 {
        let reply = get(&gateway.url("/throttle")).await;
        assert_eq!(reply.text(), "on-prem");
    }
    assert_eq!(
        fake.invoked().len(),
        5,
        "the function stops being invoked once ejected"
    );
    assert_eq!(
        gateway
            .metric("accord_upstream_ejections_total{backend=\"throttling\",provider=\"lambda\"}")
            .await,
        1.0
    );
    let ready = get(&gateway.admin_url("/readyz")).await.json();
    assert_eq!(ready["routes"][0]["available_backends"], 1, "{ready}");
}
