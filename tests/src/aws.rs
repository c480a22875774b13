//! AWS peers for the Lambda adapter's tests.
//!
//! * [`AwsFake`]: a Lambda Invoke endpoint (and an STS `AssumeRole` endpoint) that **verifies
//!   every request's SigV4 signature** with the `aws-sigv4` crate — it signs the request again
//!   with the caller's known secret and compares — and answers in the shapes real Lambda uses
//!   for function errors, unknown functions, throttles, oversized payloads and `Event`
//!   invocations. It is driven only through `aws-sdk-lambda`, so the real client classifies each.
//! * [`CargoLambda`]: cargo-lambda's Invoke emulator running a real `lambda_http` function
//!   (`tests/lambda-functions/echo`), whose own parser checks the events the gateway builds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The access key and secret the tests give the gateway.
pub const ACCESS_KEY_ID: &str = "AKIDACCORDTEST";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "accord/test/secret/key/0123456789abcdef";
/// The role the assume-role test assumes.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/accord-invoker";

/// An Invoke call the fake accepted.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The function name from the path.
    pub function: String,
    /// `Qualifier`, when given.
    pub qualifier: Option<String>,
    /// `X-Amz-Invocation-Type` (`RequestResponse` when absent).
    pub invocation_type: String,
    /// The event.
    pub event: serde_json::Value,
    /// The access key that signed it.
    pub access_key_id: String,
}

/// Known identities: access key id → (secret, session token).
type Identities = Arc<Mutex<HashMap<String, (String, Option<String>)>>>;

/// The Lambda and STS fake. Functions are chosen by name:
///
/// | function | answer |
/// | --- | --- |
/// | `echo` | 200, an API Gateway 2.0 response whose body is the event it got |
/// | `raw-json` | 200, `{"hello":"world"}` (no `statusCode`) |
/// | `garbage` | 200, output that is not JSON |
/// | `handled-error`, `unhandled-error` | 200 + `X-Amz-Function-Error` and an error payload |
/// | `throttled` | 429 `TooManyRequestsException` with `Retry-After: 7` |
/// | `too-large` | 413 `RequestTooLargeException` |
/// | `slow` | 200 after 5 s |
/// | `service-exception` | 500 `ServiceException` (what cargo-lambda answers on a function error) |
/// | `invalid-runtime` | 502 `InvalidRuntimeResponseException` |
/// | `kms-denied` | 502 `KMSAccessDeniedException` |
/// | `eni-limit` | 502 `ENILimitReachedException` |
/// | `updating` | 409 `ResourceConflictException` (the function is being updated) |
/// | anything else | 404 `ResourceNotFoundException` |
///
/// `Event` invocations of any known function answer 202.
pub struct AwsFake {
    /// Where it listens (`http://` + this is the endpoint).
    pub addr: SocketAddr,
    invoked: Arc<Mutex<Vec<Invoked>>>,
    /// Requests whose signature did not verify (answered 403 `InvalidSignatureException`).
    pub bad_signatures: Arc<AtomicUsize>,
    /// `AssumeRole` calls.
    pub assume_role_calls: Arc<AtomicUsize>,
}

impl AwsFake {
    /// Starts the fake; it knows the test key pair ([`ACCESS_KEY_ID`]).
    pub async fn start() -> AwsFake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let identities: Identities = Arc::new(Mutex::new(HashMap::from([(
            ACCESS_KEY_ID.to_owned(),
            (SECRET_ACCESS_KEY.to_owned(), None),
        )])));
        let invoked = Arc::new(Mutex::new(Vec::new()));
        let bad_signatures = Arc::new(AtomicUsize::new(0));
        let assume_role_calls = Arc::new(AtomicUsize::new(0));
        let state = State {
            identities,
            invoked: invoked.clone(),
            bad_signatures: bad_signatures.clone(),
            assume_role_calls: assume_role_calls.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.handle(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AwsFake {
            addr,
            invoked,
            bad_signatures,
            assume_role_calls,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every accepted Invoke call so far.
    pub fn invoked(&self) -> Vec<Invoked> {
        self.invoked.lock().expect("lock").clone()
    }
}

#[derive(Clone)]
struct State {
    identities: Identities,
    invoked: Arc<Mutex<Vec<Invoked>>>,
    bad_signatures: Arc<AtomicUsize>,
    assume_role_calls: Arc<AtomicUsize>,
}

type Reply = http::Response<Full<Bytes>>;

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).expect("response")
}

fn aws_error(status: u16, kind: &str, message: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![
        ("x-amzn-errortype", kind),
        ("content-type", "application/json"),
        ("x-amzn-requestid", "fake-request"),
    ];
    headers.extend_from_slice(extra);
    reply(
        status,
        &headers,
        serde_json::json!({"Type": "User", "message": message}).to_string(),
    )
}

impl State {
    async fn handle(&self, request: http::Request<Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let service = if parts.uri.path().starts_with("/2015-03-31/functions/") {
            "lambda"
        } else {
            "sts"
        };
        let access_key_id = match self.verify(&parts, &body, service) {
            Ok(key) => key,
            Err(why) => {
                self.bad_signatures.fetch_add(1, Ordering::SeqCst);
                return aws_error(403, "InvalidSignatureException", &why, &[]);
            }
        };
        if service == "sts" {
            return self.assume_role(&body);
        }
        self.invoke(&parts, &body, access_key_id).await
    }

    /// Signs the request again with the caller's secret and compares the signatures; returns
    /// the caller's access key id.
    fn verify(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
    ) -> Result<String, String> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let authorization = header("authorization");
        let fields = authorization
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or("not a SigV4 Authorization header")?;
        let field = |name: &str| {
            fields
                .split(", ")
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_default()
        };
        let credential = field("Credential=");
        let signed_headers = field("SignedHeaders=");
        let signature = field("Signature=");
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, scope_service, "aws4_request"] = scope[..] else {
            return Err(format!("malformed credential scope {credential:?}"));
        };
        if scope_service != service {
            return Err(format!("signed for {scope_service}, sent to {service}"));
        }
        let (secret, token) = self
            .identities
            .lock()
            .expect("lock")
            .get(access_key_id)
            .cloned()
            .ok_or_else(|| format!("unknown access key {access_key_id}"))?;
        if token.is_some() && header("x-amz-security-token") != token.as_deref().unwrap_or_default()
        {
            return Err("missing or wrong session token".into());
        }
        let amz_date = header("x-amz-date");
        if !amz_date.starts_with(date) {
            return Err(format!(
                "x-amz-date {amz_date} is not in the scope's day {date}"
            ));
        }
        let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", amz_date)
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
            .map_err(|e| format!("x-amz-date {amz_date:?}: {e}"))?;
        let time = std::time::SystemTime::from(time.timestamp());
        let headers: Vec<(&str, &str)> = signed_headers
            .split(';')
            .map(|name| (name, header(name)))
            .collect();
        let uri = format!(
            "http://{}{}",
            header("host"),
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let identity: Identity =
            Credentials::new(access_key_id, secret, token, None, "fake").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            parts.method.as_str(),
            uri,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let expected = sign(signable, &params).map_err(|e| e.to_string())?;
        if expected.signature() != signature {
            return Err(format!(
                "the signature does not match (signed headers {signed_headers})"
            ));
        }
        Ok(access_key_id.to_owned())
    }

    fn assume_role(&self, body: &[u8]) -> Reply {
        let form: HashMap<String, String> = String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), decode(v)))
            .collect();
        if form.get("Action").map(String::as_str) != Some("AssumeRole")
            || form.get("RoleArn").map(String::as_str) != Some(ROLE_ARN)
        {
            return reply(
                403,
                &[("content-type", "text/xml")],
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not allowed</Message></Error></ErrorResponse>",
            );
        }
        let n = self.assume_role_calls.fetch_add(1, Ordering::SeqCst);
        let (key, secret, token) = (
            format!("ASIATEMP{n}"),
            format!("temporary-secret-{n}"),
            format!("temporary-token-{n}"),
        );
        self.identities
            .lock()
            .expect("lock")
            .insert(key.clone(), (secret.clone(), Some(token.clone())));
        let expiration = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let session = form.get("RoleSessionName").cloned().unwrap_or_default();
        reply(
            200,
            &[("content-type", "text/xml")],
            format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/accord-invoker/{session}</Arn><AssumedRoleId>AROATEST:{session}</AssumedRoleId></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></AssumeRoleResponse>",
                expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        )
    }

    async fn invoke(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        access_key_id: String,
    ) -> Reply {
        let function = parts
            .uri
            .path()
            .trim_start_matches("/2015-03-31/functions/")
            .trim_end_matches("/invocations")
            .to_owned();
        let function = decode(&function);
        let qualifier = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("Qualifier="))
                .map(decode)
        });
        let invocation_type = parts
            .headers
            .get("x-amz-invocation-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("RequestResponse")
            .to_owned();
        let known = [
            "echo",
            "raw-json",
            "garbage",
            "handled-error",
            "unhandled-error",
            "throttled",
            "too-large",
            "slow",
            "service-exception",
            "invalid-runtime",
            "kms-denied",
            "eni-limit",
            "updating",
        ];
        if !known.contains(&function.as_str()) {
            return aws_error(
                404,
                "ResourceNotFoundException",
                &format!(
                    "Function not found: arn:aws:lambda:us-east-1:123456789012:function:{function}"
                ),
                &[],
            );
        }
        let event: serde_json::Value = match serde_json::from_slice(body) {
            Ok(event) => event,
            Err(e) => {
                return aws_error(
                    400,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {e}"),
                    &[],
                );
            }
        };
        self.invoked.lock().expect("lock").push(Invoked {
            function: function.clone(),
            qualifier,
            invocation_type: invocation_type.clone(),
            event: event.clone(),
            access_key_id,
        });
        match function.as_str() {
            "throttled" => {
                return aws_error(
                    429,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                    &[("retry-after", "7")],
                );
            }
            "service-exception" => {
                return aws_error(
                    500,
                    "ServiceException",
                    "Lambda encountered an internal error.",
                    &[],
                );
            }
            "invalid-runtime" => {
                return aws_error(
                    502,
                    "InvalidRuntimeResponseException",
                    "The runtime or runtime version for the function returned an invalid response.",
                    &[],
                );
            }
            "kms-denied" => {
                return aws_error(
                    502,
                    "KMSAccessDeniedException",
                    "Lambda couldn't decrypt the environment variables because KMS access was denied.",
                    &[],
                );
            }
            "eni-limit" => {
                return aws_error(
                    502,
                    "ENILimitReachedException",
                    "Lambda couldn't create an elastic network interface in the VPC.",
                    &[],
                );
            }
            "updating" => {
                return aws_error(
                    409,
                    "ResourceConflictException",
                    "The operation cannot be performed at this time. An update is in progress for resource.",
                    &[],
                );
            }
            "too-large" => {
                return aws_error(
                    413,
                    "RequestTooLargeException",
                    "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
                    &[],
                );
            }
            _ => {}
        }
        if invocation_type == "Event" {
            return reply(202, &[], Bytes::new());
        }
        let ok = |payload: String| reply(200, &[("x-amz-executed-version", "$LATEST")], payload);
        match function.as_str() {
            "echo" => ok(serde_json::json!({
                "statusCode": 200,
                "headers": {"content-type": "application/json", "x-echo": "yes"},
                "cookies": ["served=1"],
                "body": event.to_string(),
            })
            .to_string()),
            "raw-json" => ok(r#"{"hello":"world"}"#.into()),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                ok(r#"{"statusCode":200,"body":"late"}"#.into())
            }
            "garbage" => ok("this is not json".into()),
            "handled-error" | "unhandled-error" => {
                let kind = if function == "handled-error" {
                    "Handled"
                } else {
                    "Unhandled"
                };
                reply(
                    200,
                    &[
                        ("x-amz-function-error", kind),
                        ("x-amz-executed-version", "$LATEST"),
                    ],
                    r#"{"errorType":"ValueError","errorMessage":"the order is invalid","stackTrace":[]}"#,
                )
            }
            _ => unreachable!("known functions are handled above"),
        }
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === cargo-lambda ===

/// cargo-lambda's Invoke emulator serving the functions of `tests/lambda-functions`.
pub struct CargoLambda {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: tokio::process::Child,
    /// Filled with cargo's error when the emulator fails to build a function: an invocation
    /// then waits for ever, so the warm-up watches this too.
    build_error: tokio::sync::watch::Receiver<Option<String>>,
}

/// The functions' workspace.
pub fn functions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lambda-functions")
}

/// Copies the emulator's output to the test's standard error, and sends cargo's messages from its
/// first `error` on once the function's build command fails (cargo writes the compiler's messages
/// to standard error; cargo-lambda reports the failed command on standard output).
fn watch_build_errors(
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (lines_sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    forward_lines(stdout, false, lines_sender.clone());
    forward_lines(stderr, true, lines_sender);
    let (sender, receiver) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let mut error = String::new();
        while let Some((from_stderr, line)) = lines.recv().await {
            eprintln!("{line}");
            if from_stderr && (line.starts_with("error") || !error.is_empty()) {
                error.push_str(&line);
                error.push('\n');
            } else if !from_stderr && line.contains("command exited") && !error.is_empty() {
                sender.send_replace(Some(std::mem::take(&mut error)));
            }
        }
    });
    receiver
}

/// Sends each line `output` writes, tagged with `from_stderr`.
fn forward_lines(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    from_stderr: bool,
    lines: tokio::sync::mpsc::UnboundedSender<(bool, String)>,
) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(output).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send((from_stderr, line)).is_err() {
                return;
            }
        }
    });
}

/// The `cargo-lambda` binary: `$CARGO_LAMBDA`, else on `PATH`, else where pip puts scripts.
fn cargo_lambda_binary() -> PathBuf {
    if let Ok(path) = std::env::var("CARGO_LAMBDA") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("cargo-lambda"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = on_path {
        return path;
    }
    let scripts = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    PathBuf::from(scripts).join("cargo-lambda")
}

impl CargoLambda {
    /// Starts `cargo lambda watch` on a free loopback port and waits until `function` answers
    /// (its first build takes a while).
    pub async fn start(function: &str) -> CargoLambda {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let binary = cargo_lambda_binary();
        let child = tokio::process::Command::new(&binary)
            .args([
                "lambda",
                "watch",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .current_dir(functions_dir())
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (./scripts/test.sh installs it with pip): {e}",
                    binary.display()
                )
            });
        let mut child = child;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let emulator = CargoLambda {
            addr,
            _child: child,
            build_error: watch_build_errors(stdout, stderr),
        };
        emulator.warm_up(function).await;
        emulator
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Invokes the function once, directly, until it answers: the emulator compiles it on the
    /// first invocation.
    async fn warm_up(&self, function: &str) {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/warm-up", "rawQueryString": "",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {"accountId": "anonymous", "apiId": "accord", "domainName": "localhost",
                "domainPrefix": "localhost", "requestId": "warm-up", "routeKey": "$default",
                "stage": "$default", "time": "22/Nov/2026:00:00:00 +0000", "timeEpoch": 0,
                "http": {"method": "GET", "path": "/warm-up", "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1", "userAgent": "accord-tests"}}
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let mut build_error = self.build_error.clone();
        let failed_build = async move {
            let error = build_error
                .wait_for(Option::is_some)
                .await
                .map(|error| error.clone().unwrap_or_default());
            error.unwrap_or_else(|_| "cargo lambda watch exited".to_owned())
        };
        tokio::select! {
            () = self.invoke_until_answered(function, &event, deadline) => {}
            error = failed_build => {
                panic!("cargo lambda watch could not build {function}:\n{error}")
            }
        }
    }

    async fn invoke_until_answered(
        &self,
        function: &str,
        event: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        loop {
            let request = http::Request::post(format!(
                "{}/2015-03-31/functions/{function}/invocations",
                self.endpoint()
            ))
            .body(Full::new(Bytes::from(event.to_string())))
            .expect("request");
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(300), client.request(request)).await
                && response.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cargo lambda watch never answered for {function}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
