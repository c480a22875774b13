//! Azure peers for the Azure adapter's tests, all over HTTPS with the test PKI:
//!
//! * [`EntraMock`]: npm `oauth2-mock-server` as the Entra ID tenant (`tests/azure/entra.mjs`),
//!   reached by the real azure_identity credential; it counts the tokens it issues.
//! * [`Azurite`]: the Azure Storage emulator with `--oauth basic`, a real Azure REST service.
//! * [`AzureFake`]: a Functions HTTP trigger (`/api/orders`) and an AI endpoint (anything else)
//!   that check keys on the key paths and **verify bearer JWTs** — signature against the
//!   mock's JWKS, audience, issuer, expiry — and can be told to fail (5xx) or throttle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;

use crate::pki::Pki;

/// The tenant the tests use.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The app registration the gateway authenticates as.
pub const CLIENT_ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// Its secret.
pub const CLIENT_SECRET: &str = "accord-test~client.secret";
/// The function app's App ID URI (a token's audience for the Functions fake).
pub const FUNCTION_AUDIENCE: &str = "api://accord-orders";
/// The function key.
pub const FUNCTION_KEY: &str = "function-key-0123456789";
/// The AI resource key.
pub const AI_KEY: &str = "ai-key-abcdef0123456789";

/// The peers' npm workspace.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("azure")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never listened on {port}");
}

/// oauth2-mock-server as the Entra ID tenant.
pub struct EntraMock {
    /// `https://127.0.0.1:<port>`: the authority host.
    pub authority: String,
    /// Tokens issued.
    pub tokens: Arc<AtomicUsize>,
    /// Token requests refused (a wrong secret).
    pub refused: Arc<AtomicUsize>,
    _child: tokio::process::Child,
}

impl EntraMock {
    /// Starts the tenant; its tokens live `lifetime`.
    pub async fn start(pki: &Pki, lifetime: Duration) -> EntraMock {
        let port = free_port();
        let mut child = tokio::process::Command::new("node")
            .arg(peers_dir().join("entra.mjs"))
            .arg(port.to_string())
            .arg(&pki.server_key)
            .arg(&pki.server_cert)
            .args([TENANT, CLIENT_ID, CLIENT_SECRET])
            .arg(lifetime.as_secs().to_string())
            .current_dir(peers_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs tests/azure/entra.mjs (./scripts/test.sh installs its packages)");
        let tokens = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (issued, refusals) = (tokens.clone(), refused.clone());
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("listening") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else if line.starts_with("token ") {
                    issued.fetch_add(1, Ordering::SeqCst);
                } else if line.starts_with("refused ") {
                    refusals.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("the Entra mock starts")
            .expect("the Entra mock says it listens");
        EntraMock {
            authority: format!("https://127.0.0.1:{port}"),
            tokens,
            refused,
            _child: child,
        }
    }

    /// The issuer its tokens carry.
    pub fn issuer() -> String {
        format!("https://sts.windows.net/{TENANT}/")
    }

    /// Its signing keys.
    pub async fn jwks(&self, pki: &Pki) -> jsonwebtoken::jwk::JwkSet {
        let body = https_get(pki, &format!("{}/jwks", self.authority)).await;
        serde_json::from_slice(&body).expect("JWKS")
    }
}

async fn https_get(pki: &Pki, url: &str) -> Bytes {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config(&[]))
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let response = client.get(url.parse().expect("url")).await.expect("GET");
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

/// Azurite's Blob service over HTTPS, accepting Entra bearer tokens.
pub struct Azurite {
    /// `https://127.0.0.1:<port>/devstoreaccount1`.
    pub account_url: String,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Azurite {
    /// Starts the Blob service.
    pub async fn start(pki: &Pki) -> Azurite {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child =
            tokio::process::Command::new(peers_dir().join("node_modules/.bin/azurite-blob"))
                .args(["--blobHost", "127.0.0.1", "--blobPort"])
                .arg(port.to_string())
                .args(["--oauth", "basic", "--cert"])
                .arg(&pki.server_cert)
                .arg("--key")
                .arg(&pki.server_key)
                .arg("--location")
                .arg(dir.path())
                .args([
                    "--silent",
                    "--skipApiVersionCheck",
                    "--disableProductStyleUrl",
                ])
                .current_dir(peers_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("azurite-blob runs (./scripts/test.sh installs it)");
        wait_for_port(port, "azurite").await;
        Azurite {
            account_url: format!("https://127.0.0.1:{port}/devstoreaccount1"),
            _dir: dir,
            _child: child,
        }
    }
}

/// What the fake does with the next requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers (after checking authentication).
    Serve,
    /// 503 from the service.
    Fail,
    /// 429 with `Retry-After: 3`.
    Throttle,
}

/// A Functions trigger and an AI endpoint that verify what they are given.
pub struct AzureFake {
    /// Where it listens.
    pub addr: SocketAddr,
    mode: Arc<AtomicU16>,
    /// Requests authenticated by a verified token.
    pub token_requests: Arc<AtomicUsize>,
    /// Requests authenticated by a key.
    pub key_requests: Arc<AtomicUsize>,
    /// Refusals, with the reason.
    pub refusals: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct FakeState {
    jwks: Arc<jsonwebtoken::jwk::JwkSet>,
    mode: Arc<AtomicU16>,
    token_requests: Arc<AtomicUsize>,
    key_requests: Arc<AtomicUsize>,
    refusals: Arc<Mutex<Vec<String>>>,
}

impl AzureFake {
    /// Starts the fake over HTTPS, trusting tokens signed by `jwks`.
    pub async fn start(pki: &Pki, jwks: jsonwebtoken::jwk::JwkSet) -> AzureFake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
        let state = FakeState {
            jwks: Arc::new(jwks),
            mode: Arc::new(AtomicU16::new(0)),
            token_requests: Arc::new(AtomicUsize::new(0)),
            key_requests: Arc::new(AtomicUsize::new(0)),
            refusals: Arc::new(Mutex::new(Vec::new())),
        };
        let fake = AzureFake {
            addr,
            mode: state.mode.clone(),
            token_requests: state.token_requests.clone(),
            key_requests: state.key_requests.clone(),
            refusals: state.refusals.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.handle(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        fake
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Sets what the next requests get.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u16, Ordering::SeqCst);
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: String) -> http::Response<Full<Bytes>> {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

impl FakeState {
    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let function = request.uri().path().starts_with("/api/");
        let (key_header, key, audience) = if function {
            ("x-functions-key", FUNCTION_KEY, FUNCTION_AUDIENCE)
        } else {
            let header = if request.headers().contains_key("ocp-apim-subscription-key") {
                "ocp-apim-subscription-key"
            } else {
                "api-key"
            };
            (header, AI_KEY, "https://cognitiveservices.azure.com")
        };
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let auth = match (header(key_header), header("authorization")) {
            (Some(given), _) if given == key => {
                self.key_requests.fetch_add(1, Ordering::SeqCst);
                "key"
            }
            (Some(_), _) => return self.refuse(401, format!("wrong {key_header}")),
            (None, Some(bearer)) => match self.verify(&bearer, audience) {
                Ok(()) => {
                    self.token_requests.fetch_add(1, Ordering::SeqCst);
                    "entra"
                }
                Err(why) => return self.refuse(401, why),
            },
            (None, None) => return self.refuse(401, "no credentials".into()),
        };
        match self.mode.load(Ordering::SeqCst) {
            1 => return reply(503, &[], r#"{"error":"the host is restarting"}"#.into()),
            2 => {
                return reply(
                    429,
                    &[("retry-after", "3")],
                    r#"{"error":{"code":"429","message":"Rate limit is exceeded."}}"#.into(),
                );
            }
            _ => {}
        }
        let body = serde_json::json!({
            "service": if function { "function" } else { "ai" },
            "auth": auth,
            "path": request.uri().path(),
            "query": request.uri().query(),
        });
        reply(
            200,
            &[("content-type", "application/json")],
            body.to_string(),
        )
    }

    fn refuse(&self, status: u16, why: String) -> http::Response<Full<Bytes>> {
        self.refusals.lock().expect("lock").push(why.clone());
        reply(
            status,
            &[("www-authenticate", "Bearer realm=\"accord-fake\"")],
            serde_json::json!({"error": why}).to_string(),
        )
    }

    /// Verifies a bearer JWT: RS256 signature by a key of the tenant's JWKS, audience, issuer,
    /// expiry and not-before.
    fn verify(&self, bearer: &str, audience: &str) -> Result<(), String> {
        let token = bearer.strip_prefix("Bearer ").ok_or("not a bearer token")?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWT header: {e}"))?;
        let kid = header.kid.ok_or("no kid")?;
        let jwk = self.jwks.find(&kid).ok_or(format!("unknown kid {kid}"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[EntraMock::issuer()]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map(|_| ())
            .map_err(|e| format!("token rejected: {e}"))
    }
}
