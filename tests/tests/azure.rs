#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Azure backends end to end, over HTTPS: the real azure_identity client-secret credential
//! against oauth2-mock-server as the Entra ID tenant; Functions and AI fakes that verify the
//! bearer JWTs (signature, audience, issuer, expiry) and the keys; Azurite as a real Azure REST
//! service; token refresh under load; and failover from Azure to on-prem by class.

use std::time::Duration;

use accord_tests::azure::{
    AI_KEY, AzureFake, Azurite, CLIENT_ID, CLIENT_SECRET, EntraMock, FUNCTION_KEY, Mode, TENANT,
};
use accord_tests::pki::Pki;
use accord_tests::upstream::Upstream;
use accord_tests::{SteadyLoad, TestGateway, backend_requests, get, request, send};

/// The files the configuration references: the client secret, keys, the CA.
struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    fn new(client_secret: &str) -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("client-secret", client_secret),
            ("function-key", FUNCTION_KEY),
            ("ai-key", AI_KEY),
            ("wrong-key", "not-the-key"),
        ] {
            std::fs::write(dir.path().join(name), value).unwrap();
        }
        Secrets { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn credential(name: &str, entra: &EntraMock, pki: &Pki, secrets: &Secrets) -> String {
    format!(
        "  {name}:\n    client_secret: {{tenant_id: {TENANT}, client_id: {CLIENT_ID}, secret_file: {}}}\n    authority_host: \"{}\"\n    ca_file: {}\n",
        secrets.path("client-secret"),
        entra.authority,
        pki.ca.display()
    )
}

fn gateway_yaml(credentials: &str, backends: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nazure_credentials:\n{credentials}backends:\n{backends}routes:\n{routes}"
    )
}

fn route(id: &str, prefix: &str, backends: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    match: {{path: {{prefix: {prefix}}}}}\n    backends: [{backends}]\n{extra}"
    )
}

#[tokio::test]
#[ignore = "runs oauth2-mock-server (npm): run ./scripts/test.sh"]
async fn entra_tokens_and_keys_authenticate_function_and_ai_calls() {
    let pki = Pki::new();
    let entra = EntraMock::start(&pki, Duration::from_secs(3600)).await;
    let fake = AzureFake::start(&pki, entra.jwks(&pki).await).await;
    let secrets = Secrets::new(CLIENT_SECRET);
    let ca = pki.ca.display();
    let url = fake.url();
    let backends = format!(
        "  fn-key:\n    azure_function: {{url: \"{url}\", function: orders, key_file: {}, ca_file: {ca}}}\n  fn-entra:\n    azure_function: {{url: \"{url}/api/orders\", entra: {{credential: corp, scope: \"api://accord-orders/.default\"}}, ca_file: {ca}}}\n  ai-key:\n    azure_ai: {{endpoint: \"{url}\", key_file: {}, key_header: ocp-apim-subscription-key, ca_file: {ca}}}\n  ai-entra:\n    azure_ai: {{endpoint: \"{url}\", entra: {{credential: corp}}, ca_file: {ca}}}\n",
        secrets.path("function-key"),
        secrets.path("ai-key"),
    );
    let routes = [
        route("fk", "/fk", "{backend: fn-key}", ""),
        route("fe", "/fe", "{backend: fn-entra}", ""),
        route("ak", "/ak", "{backend: ai-key}", ""),
        route("ae", "/openai", "{backend: ai-entra}", ""),
    ]
    .concat();
    let gateway = TestGateway::start(&gateway_yaml(
        &credential("corp", &entra, &pki, &secrets),
        &backends,
        &routes,
    ))
    .await;

    for _ in 0..3 {
        let by_key = send(
            http::Request::get(gateway.url("/fk/orders?id=42"))
                .header("authorization", "Basic Y2xpZW50OnNlY3JldA==")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(by_key.status, 200, "{}", by_key.text());
        let seen = by_key.json();
        assert_eq!(
            seen["auth"], "key",
            "the client's own Authorization is not forwarded"
        );
        assert_eq!(seen["path"], "/api/orders");
        assert_eq!(seen["query"], "id=42");

        let by_token = get(&gateway.url("/fe")).await;
        assert_eq!(by_token.status, 200, "{}", by_token.text());
        assert_eq!(by_token.json()["auth"], "entra");

        let ai_key = get(&gateway.url("/ak/models")).await;
        assert_eq!(ai_key.json()["auth"], "key", "{}", ai_key.text());
        assert_eq!(ai_key.json()["path"], "/ak/models");

        let ai_token = send(request(
            "POST",
            &gateway.url("/openai/deployments/gpt/chat/completions?api-version=2024-06-01"),
            "{\"messages\":[]}",
        ))
        .await;
        assert_eq!(ai_token.status, 200, "{}", ai_token.text());
        assert_eq!(ai_token.json()["auth"], "entra");
        assert_eq!(
            ai_token.json()["path"],
            "/openai/deployments/gpt/chat/completions"
        );
    }
    assert!(
        fake.refusals.lock().unwrap().is_empty(),
        "{:?}",
        fake.refusals.lock().unwrap()
    );
    assert_eq!(
        fake.token_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        6
    );
    assert_eq!(
        fake.key_requests.load(std::sync::atomic::Ordering::SeqCst),
        6
    );
    assert_eq!(
        entra.tokens.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one token per scope, cached"
    );

    // The configuration the admin API shows names the secrets' files, never their values.
    let shown = get(&gateway.admin_url("/config")).await.text();
    assert!(
        !shown.contains(CLIENT_SECRET) && !shown.contains(FUNCTION_KEY) && !shown.contains(AI_KEY)
    );
}

#[tokio::test]
#[ignore = "runs oauth2-mock-server (npm): run ./scripts/test.sh"]
async fn a_wrong_secret_or_key_is_a_clear_auth_failure_and_is_not_retried() {
    let pki = Pki::new();
    let entra = EntraMock::start(&pki, Duration::from_secs(3600)).await;
    let fake = AzureFake::start(&pki, entra.jwks(&pki).await).await;
    let wrong = Secrets::new("not-the-secret");
    let ca = pki.ca.display();
    let url = fake.url();
    let backends = format!(
        "  fn-entra:\n    azure_function: {{url: \"{url}/api/orders\", entra: {{credential: stale, scope: \"api://accord-orders/.default\"}}, ca_file: {ca}}}\n  fn-key:\n    azure_function: {{url: \"{url}\", function: orders, key_file: {}, ca_file: {ca}}}\n",
        wrong.path("wrong-key"),
    );
    let routes = [
        route("fe", "/fe", "{backend: fn-entra}", ""),
        route("fk", "/fk", "{backend: fn-key}", ""),
    ]
    .concat();
    let gateway = TestGateway::start(&gateway_yaml(
        &credential("stale", &entra, &pki, &wrong),
        &backends,
        &routes,
    ))
    .await;

    let refused = get(&gateway.url("/fe")).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.json()["code"], "upstream_auth_failed");
    assert!(entra.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // Twenty clients at once with the wrong secret: each is refused at once, and Entra is asked
    // at most once more (single-flight, then the refusal is remembered through its back-off).
    let before = entra.refused.load(std::sync::atomic::Ordering::SeqCst);
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let url = gateway.url("/fe");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for reply in storm {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, 502);
        assert_eq!(reply.json()["code"], "upstream_auth_failed");
    }
    let asked = entra.refused.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(asked <= 1, "{asked} token requests for 20 refused clients");
    assert!(
        gateway
            .metric(
                "accord_credential_token_requests_total{credential=\"stale\",result=\"refused\"}"
            )
            .await
            >= 1.0
    );
    // What the log says (at start, and on each refused request): which credential, which
    // scope, and Entra's reason — never the secret.
    let config = accord_adapters::azure::EntraCredentialConfig {
        name: "stale".into(),
        kind: accord_adapters::azure::EntraCredentialKind::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
            secret: accord_adapters::Secret::new("not-the-secret".into()),
        },
        authority_host: Some(entra.authority.clone()),
        ca_file: Some(pki.ca.clone()),
    };
    let message = accord_adapters::azure::credential::TokenSource::for_config(&config)
        .unwrap()
        .token("api://accord-orders/.default")
        .await
        .unwrap_err()
        .detailed_message();
    for expected in [
        "credential stale (client secret of app",
        TENANT,
        "scope api://accord-orders/.default",
        "AADSTS7000215",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} missing from {message}"
        );
    }
    assert!(!message.contains("not-the-secret"), "{message}");
    assert_eq!(
        fake.token_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let wrong_key = get(&gateway.url("/fk")).await;
    assert_eq!(wrong_key.status, 502);
    assert_eq!(wrong_key.json()["code"], "upstream_auth_failed");
    assert_eq!(
        fake.refusals.lock().unwrap().len(),
        1,
        "an auth failure is not retried"
    );
    let metrics = get(&gateway.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(
            "accord_upstream_errors_total{backend=\"fn-key\",provider=\"azure\",kind=\"auth\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
#[ignore = "runs oauth2-mock-server (npm): run ./scripts/test.sh"]
async fn tokens_are_refreshed_once_per_expiry_under_steady_load() {
    let pki = Pki::new();
    // azure_identity refreshes a token 5 minutes before it expires: a 302 s token is good
    // for about 2 s.
    let entra = EntraMock::start(&pki, Duration::from_secs(302)).await;
    let fake = AzureFake::start(&pki, entra.jwks(&pki).await).await;
    let secrets = Secrets::new(CLIENT_SECRET);
    let backends = format!(
        "  fn-entra:\n    azure_function: {{url: \"{}/api/orders\", entra: {{credential: corp, scope: \"api://accord-orders/.default\"}}, ca_file: {}}}\n",
        fake.url(),
        pki.ca.display()
    );
    let gateway = TestGateway::start(&gateway_yaml(
        &credential("corp", &entra, &pki, &secrets),
        &backends,
        &route("fe", "/fe", "{backend: fn-entra}", ""),
    ))
    .await;
    assert_eq!(get(&gateway.url("/fe")).await.status, 200);

    let load = SteadyLoad::start(gateway.url("/fe"), 8);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (served, failed) = load.stop().await;
    let tokens = entra.tokens.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(failed, 0);
    assert!(served >= 100, "only {served} requests");
    assert!(
        (2..=6).contains(&tokens),
        "{tokens} token requests for {served} requests over about 3 token lifetimes"
    );
}

#[tokio::test]
#[ignore = "runs oauth2-mock-server (npm): run ./scripts/test.sh"]
async fn azure_fails_over_to_on_prem_on_5xx_and_throttle_and_the_sla_report_counts_both() {
    let pki = Pki::new();
    let entra = EntraMock::start(&pki, Duration::from_secs(3600)).await;
    let fake = AzureFake::start(&pki, entra.jwks(&pki).await).await;
    let secrets = Secrets::new(CLIENT_SECRET);
    let on_prem = Upstream::fixed("on-prem", 200).await;
    let backends = format!(
        "  fn-key:\n    azure_function: {{url: \"{}\", function: orders, key_file: {}, ca_file: {}}}\n  on-prem:\n    http: {{addresses: [\"{}\"]}}\n",
        fake.url(),
        secrets.path("function-key"),
        pki.ca.display(),
        on_prem.addr
    );
    let gateway = TestGateway::start(&gateway_yaml(
        &credential("corp", &entra, &pki, &secrets),
        &backends,
        &route(
            "orders",
            "/orders",
            "{backend: fn-key}, {backend: on-prem}",
            "    slo:\n      availability: 99%\n",
        ),
    ))
    .await;

    assert_eq!(
        get(&gateway.url("/orders")).await.json()["service"],
        "function"
    );
    fake.set_mode(Mode::Fail);
    for _ in 0..3 {
        assert_eq!(get(&gateway.url("/orders")).await.text(), "on-prem");
    }
    fake.set_mode(Mode::Throttle);
    for _ in 0..2 {
        assert_eq!(get(&gateway.url("/orders")).await.text(), "on-prem");
    }
    let report = get(&gateway.admin_url("/sla/routes/orders")).await.json();
    let backend = |id: &str| backend_requests(&report, id);
    let azure = backend("fn-key");
    assert_eq!(azure["good"], 1.0, "{report}");
    assert_eq!(azure["bad"], 3.0, "{report}");
    assert_eq!(azure["throttled"], 2.0, "{report}");
    assert_eq!(backend("on-prem")["good"], 5.0);
    assert_eq!(
        report["windows"][0]["requests"]["good"], 6.0,
        "every client was served"
    );
}

#[tokio::test]
#[ignore = "runs Azurite and oauth2-mock-server (npm): run ./scripts/test.sh"]
async fn a_blob_goes_up_and_down_through_the_gateway_with_only_its_entra_token() {
    let pki = Pki::new();
    let entra = EntraMock::start(&pki, Duration::from_secs(3600)).await;
    let azurite = Azurite::start(&pki).await;
    let secrets = Secrets::new(CLIENT_SECRET);
    let backends = format!(
        "  blobs:\n    azure: {{endpoint: \"{}\", entra: {{credential: corp, scope: \"https://storage.azure.com/.default\"}}, ca_file: {}}}\n",
        azurite.account_url,
        pki.ca.display()
    );
    let gateway = TestGateway::start(&gateway_yaml(
        &credential("corp", &entra, &pki, &secrets),
        &backends,
        &route(
            "blobs",
            "/reports",
            "{backend: blobs}",
            "    retry: {retries: 0}\n",
        ),
    ))
    .await;
    let storage =
        |method: &str, path: &str, body: &'static str, extra: &[(&'static str, &'static str)]| {
            let mut request = request(method, &gateway.url(path), body);
            request
                .headers_mut()
                .insert("x-ms-version", http::HeaderValue::from_static("2021-08-06"));
            for (name, value) in extra {
                request
                    .headers_mut()
                    .insert(*name, http::HeaderValue::from_static(value));
            }
            request
        };

    let created = send(storage("PUT", "/reports?restype=container", "", &[])).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let uploaded = send(storage(
        "PUT",
        "/reports/2026-11.csv",
        "route,attainment\norders,0.9993\n",
        &[
            ("x-ms-blob-type", "BlockBlob"),
            ("content-type", "text/csv"),
        ],
    ))
    .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    let downloaded = send(storage("GET", "/reports/2026-11.csv", "", &[])).await;
    assert_eq!(downloaded.status, 200, "{}", downloaded.text());
    assert_eq!(downloaded.text(), "route,attainment\norders,0.9993\n");
    assert_eq!(downloaded.header("content-type"), Some("text/csv"));
    assert_eq!(entra.tokens.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
#[ignore = "runs oauth2-mock-server (npm): run ./scripts/test.sh"]
async fn workload_identity_exchanges_its_federated_token_file_for_a_token() {
    let pki = Pki::new();
    let entra = EntraMock::start(&pki, Duration::from_secs(3600)).await;
    let fake = AzureFake::start(&pki, entra.jwks(&pki).await).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    // What AKS projects into the pod: a service account token the tenant trusts.
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWNjb3JkIn0.c2lnbmF0dXJl",
    )
    .unwrap();
    let credentials = format!(
        "  pod:\n    workload_identity: {{tenant_id: {TENANT}, client_id: {CLIENT_ID}, token_file: {}}}\n    authority_host: \"{}\"\n    ca_file: {}\n",
        token_file.display(),
        entra.authority,
        pki.ca.display()
    );
    let backends = format!(
        "  fn-entra:\n    azure_function: {{url: \"{}/api/orders\", entra: {{credential: pod, scope: \"api://accord-orders/.default\"}}, ca_file: {}}}\n",
        fake.url(),
        pki.ca.display()
    );
    let gateway = TestGateway::start(&gateway_yaml(
        &credentials,
        &backends,
        &route("fe", "/fe", "{backend: fn-entra}", ""),
    ))
    .await;
    for _ in 0..3 {
        let reply = get(&gateway.url("/fe")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["auth"], "entra");
    }
    assert_eq!(entra.tokens.load(std::sync::atomic::Ordering::SeqCst), 1);
}
