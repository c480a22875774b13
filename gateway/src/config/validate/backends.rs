//! Backends and the credentials they use: on-prem HTTP services (addresses, balancing, TLS,
//! health checks, outlier ejection), Lambda functions (function, region, payload format, AWS
//! credentials) and Azure services (URL, keys or Entra credentials).

use super::*;

/// Every backend, after the Azure credentials they may name; each one's id is checked.
pub(super) fn check_backends(
    v: &mut Validator<'_>,
    raw: &RawConfig,
) -> Vec<(Arc<str>, BackendConfig)> {
    let mut azure_credentials = std::collections::HashMap::new();
    for (name, credential) in &raw.azure_credentials {
        let path = format!("azure_credentials.{name}");
        if let Err(e) = name.parse::<Id>() {
            v.error(credential, &path, e);
            continue;
        }
        if let Some(config) = backends::azure_credential(v, name, credential, &path) {
            azure_credentials.insert(name.clone(), config);
        }
    }
    let azure = backends::AzureContext {
        credentials: &azure_credentials,
        defined: &raw.azure_credentials,
    };

    let mut backends = Vec::new();
    for (name, backend) in &raw.backends {
        let path = format!("backends.{name}");
        if let Err(e) = name.parse::<Id>() {
            v.error(backend, &path, e);
            continue;
        }
        match &backend.value {
            RawBackend::Http(http) => {
                if let Some(config) = http_backend(v, http, &format!("{path}.http")) {
                    backends.push((Arc::<str>::from(name.as_str()), BackendConfig::Http(config)));
                }
            }
            RawBackend::Lambda(lambda) => {
                if let Some(config) = lambda_backend(v, lambda, &format!("{path}.lambda")) {
                    backends.push((
                        Arc::<str>::from(name.as_str()),
                        BackendConfig::Lambda(config),
                    ));
                }
            }
            RawBackend::AzureFunction(_) | RawBackend::AzureAi(_) | RawBackend::Azure(_) => {
                if let Some(config) = azure_backend(v, &backend.value, &path, &azure) {
                    backends.push((
                        Arc::<str>::from(name.as_str()),
                        BackendConfig::Azure(Box::new(config)),
                    ));
                }
            }
        }
    }

    backends
}

/// The Azure credentials a backend may name.
pub(super) struct AzureContext<'a> {
    pub(super) credentials: &'a std::collections::HashMap<String, EntraCredentialConfig>,
    pub(super) defined: &'a std::collections::BTreeMap<String, Located<RawAzureCredential>>,
}

pub(super) fn azure_credential(
    v: &mut Validator<'_>,
    name: &str,
    raw: &Located<RawAzureCredential>,
    path: &str,
) -> Option<EntraCredentialConfig> {
    let errors_before = v.errors.len();
    let c = &raw.value;
    let kinds = [
        c.client_secret.is_some(),
        c.managed_identity.is_some(),
        c.workload_identity.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        v.error(
            raw,
            path.to_owned(),
            "set exactly one of client_secret, managed_identity, workload_identity",
        );
        return None;
    }
    if let Some(host) = &c.authority_host
        && !host.value.starts_with("https://")
    {
        v.error(
            host,
            format!("{path}.authority_host"),
            format!(
                "{:?} must be an https:// URL (Entra ID is reached over HTTPS only)",
                host.value
            ),
        );
    }
    let kind = if let Some(secret) = &c.client_secret {
        check_client_secret(v, secret, path)
    } else if let Some(identity) = &c.managed_identity {
        let ids = [
            identity.client_id.clone().map(UserAssigned::ClientId),
            identity.object_id.clone().map(UserAssigned::ObjectId),
            identity.resource_id.clone().map(UserAssigned::ResourceId),
        ];
        let mut given = ids.into_iter().flatten();
        let user_assigned = given.next();
        if given.next().is_some() {
            v.error(
                raw,
                format!("{path}.managed_identity"),
                "name a user-assigned identity by one of client_id, object_id, resource_id",
            );
        }
        EntraCredentialKind::ManagedIdentity { user_assigned }
    } else {
        let identity = c.workload_identity.as_ref()?;
        EntraCredentialKind::WorkloadIdentity {
            tenant_id: identity.tenant_id.clone(),
            client_id: identity.client_id.clone(),
            token_file: identity.token_file.as_ref().map(PathBuf::from),
        }
    };
    (v.errors.len() == errors_before).then(|| EntraCredentialConfig {
        name: name.to_owned(),
        kind,
        authority_host: c
            .authority_host
            .as_ref()
            .map(|h| h.value.trim_end_matches('/').to_owned()),
        ca_file: c.ca_file.as_ref().map(PathBuf::from),
    })
}

/// An app registration's tenant, client and secret.
fn check_client_secret(
    v: &mut Validator<'_>,
    secret: &RawClientSecret,
    path: &str,
) -> EntraCredentialKind {
    for (field, value) in [
        ("tenant_id", &secret.tenant_id),
        ("client_id", &secret.client_id),
    ] {
        if value.value.trim().is_empty() {
            v.error(
                value,
                format!("{path}.client_secret.{field}"),
                "must not be empty",
            );
        }
    }
    if secret.secret_env.is_none() && secret.secret_file.is_none() {
        v.error(
            &secret.tenant_id,
            format!("{path}.client_secret"),
            "set secret_env or secret_file",
        );
    }
    let value = v.secret(
        secret.secret_env.as_ref(),
        secret.secret_file.as_ref(),
        &format!("{path}.client_secret.secret"),
    );
    EntraCredentialKind::ClientSecret {
        tenant_id: secret.tenant_id.value.trim().to_owned(),
        client_id: secret.client_id.value.trim().to_owned(),
        secret: value.unwrap_or_else(|| Secret::new(String::new())),
    }
}

/// An Azure service URL: `https://host[:port][/path]` (plain `http://` only on loopback, for
/// emulators).
fn azure_url(
    v: &mut Validator<'_>,
    url: &Located<String>,
    path: &str,
) -> Option<(bool, String, u16, String)> {
    let parsed = url.value.trim().parse::<http::Uri>().ok();
    let Some((scheme, authority, base)) = parsed.as_ref().and_then(|u| {
        Some((
            u.scheme_str()?,
            u.authority()?,
            u.path().trim_end_matches('/').to_owned(),
        ))
    }) else {
        v.error(
            url,
            path.to_owned(),
            format!("{:?} is not a URL (https://host[/path])", url.value),
        );
        return None;
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let https = match scheme {
        "https" => true,
        "http" if loopback => false,
        _ => {
            v.error(
                url,
                path.to_owned(),
                format!(
                    "{:?} must be https:// (plain http only to a loopback emulator)",
                    url.value
                ),
            );
            return None;
        }
    };
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((https, host, port, base))
}

pub(super) fn azure_backend(
    v: &mut Validator<'_>,
    raw: &RawBackend,
    path: &str,
    azure: &AzureContext<'_>,
) -> Option<AzureBackendConfig> {
    let errors_before = v.errors.len();
    let parts = match raw {
        RawBackend::AzureFunction(f) => function_service(v, f, path, azure),
        RawBackend::AzureAi(a) => ai_service(v, a, path, azure),
        RawBackend::Azure(r) => rest_service(v, r, path, azure),
        _ => return None,
    };
    let (https, host, port, base) = azure_url(v, parts.url, &parts.url_field)?;
    let upstream_path = check_upstream_path(v, &parts, base);
    let tls = https.then(|| accord_adapters::tls::ClientTls {
        ca_file: parts.ca_file.as_ref().map(PathBuf::from),
        client_identity: None,
        server_name: Some(host.clone()),
    });
    let authority = if (https && port == 443) || (!https && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let auth = parts.auth?;
    (v.errors.len() == errors_before).then(|| AzureBackendConfig {
        service: parts.service,
        http: accord_adapters::http::HttpBackendConfig::single(host, port, tls),
        host: authority,
        path: upstream_path,
        auth,
    })
}

/// What each kind of Azure backend contributes: its service, where its URL is, how it
/// authenticates, and (for Functions) the function name.
struct ServiceParts<'a> {
    service: AzureService,
    url_field: String,
    url: &'a Located<String>,
    ca_file: &'a Option<String>,
    auth: Option<AzureAuth>,
    /// `Some` for Functions: the function's name, if given apart from the URL.
    function: Option<Option<String>>,
}

/// An Entra token for `scope` (or the default) from a defined credential.
fn check_entra(
    v: &mut Validator<'_>,
    azure: &AzureContext<'_>,
    auth: &RawEntraAuth,
    at: &str,
    default_scope: Option<&str>,
) -> Option<AzureAuth> {
    let credential = azure.credentials.get(&auth.credential.value).cloned();
    if credential.is_none() && !azure.defined.contains_key(&auth.credential.value) {
        let known: Vec<&str> = azure.defined.keys().map(String::as_str).collect();
        v.error(
            &auth.credential,
            format!("{at}.credential"),
            format!(
                "unknown Azure credential {:?} ({})",
                auth.credential.value,
                if known.is_empty() {
                    "define it under azure_credentials".to_owned()
                } else {
                    format!("defined: {}", known.join(", "))
                }
            ),
        );
    }
    let scope = match (&auth.scope, default_scope) {
        (Some(scope), _) => scope.value.trim().to_owned(),
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            v.error(
                &auth.credential,
                format!("{at}.scope"),
                "a scope is required (the resource's App ID URI followed by /.default)",
            );
            String::new()
        }
    };
    credential.map(|credential| AzureAuth::Entra { credential, scope })
}

/// A key sent in `header`, from `key_env` or `key_file`.
fn check_key(
    v: &mut Validator<'_>,
    env: Option<&Located<String>>,
    file: Option<&Located<String>>,
    at: &str,
    header: http::HeaderName,
) -> Option<AzureAuth> {
    let source = match (env, file) {
        (Some(e), _) => format!("key_env {}", e.value),
        (None, Some(f)) => format!("key_file {}", f.value),
        (None, None) => return None,
    };
    v.secret(env, file, &format!("{at}.key"))
        .map(|key| AzureAuth::Key {
            header,
            key,
            source,
        })
}

/// An Azure Function: a function key or Entra, and a valid function name.
fn function_service<'a>(
    v: &mut Validator<'_>,
    f: &'a RawAzureFunction,
    path: &str,
    azure: &AzureContext<'_>,
) -> ServiceParts<'a> {
    let at = format!("{path}.azure_function");
    let auth = match (&f.entra, f.key_env.is_some() || f.key_file.is_some()) {
        (Some(_), true) => {
            v.error(
                &f.url,
                at.clone(),
                "authenticate with a key or entra, not both",
            );
            None
        }
        (Some(e), false) => check_entra(v, azure, e, &format!("{at}.entra"), None),
        (None, true) => check_key(
            v,
            f.key_env.as_ref(),
            f.key_file.as_ref(),
            &at,
            http::HeaderName::from_static("x-functions-key"),
        ),
        (None, false) => {
            v.error(
                &f.url,
                at.clone(),
                "set key_env, key_file or entra (an anonymous function needs no gateway)",
            );
            None
        }
    };
    let function = f.function.as_ref().map(|n| n.value.trim().to_owned());
    if let Some(name) = &f.function
        && (name.value.is_empty()
            || !name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        v.error(
            name,
            format!("{at}.function"),
            "a function name is letters, digits, '-' and '_'",
        );
    }
    ServiceParts {
        service: AzureService::Function,
        url_field: format!("{at}.url"),
        url: &f.url,
        ca_file: &f.ca_file,
        auth,
        function: Some(function),
    }
}

/// An Azure AI service: an API key (in the header it uses) or Entra (cognitive services scope
/// by default).
fn ai_service<'a>(
    v: &mut Validator<'_>,
    a: &'a RawAzureAi,
    path: &str,
    azure: &AzureContext<'_>,
) -> ServiceParts<'a> {
    let at = format!("{path}.azure_ai");
    let header = match a.key_header {
        RawAiKeyHeader::ApiKey => http::HeaderName::from_static("api-key"),
        RawAiKeyHeader::OcpApimSubscriptionKey => {
            http::HeaderName::from_static("ocp-apim-subscription-key")
        }
    };
    let auth = match (&a.entra, a.key_env.is_some() || a.key_file.is_some()) {
        (Some(_), true) => {
            v.error(
                &a.endpoint,
                at.clone(),
                "authenticate with a key or entra, not both",
            );
            None
        }
        (Some(e), false) => check_entra(
            v,
            azure,
            e,
            &format!("{at}.entra"),
            Some(COGNITIVE_SERVICES_SCOPE),
        ),
        (None, true) => check_key(v, a.key_env.as_ref(), a.key_file.as_ref(), &at, header),
        (None, false) => {
            v.error(&a.endpoint, at.clone(), "set key_env, key_file or entra");
            None
        }
    };
    ServiceParts {
        service: AzureService::Ai,
        url_field: format!("{at}.endpoint"),
        url: &a.endpoint,
        ca_file: &a.ca_file,
        auth,
        function: None,
    }
}

/// Any Azure REST API: Entra with a scope.
fn rest_service<'a>(
    v: &mut Validator<'_>,
    r: &'a RawAzureRest,
    path: &str,
    azure: &AzureContext<'_>,
) -> ServiceParts<'a> {
    let at = format!("{path}.azure");
    let auth = check_entra(v, azure, &r.entra, &format!("{at}.entra"), None);
    ServiceParts {
        service: AzureService::Rest,
        url_field: format!("{at}.endpoint"),
        url: &r.endpoint,
        ca_file: &r.ca_file,
        auth,
        function: None,
    }
}

/// A Function's fixed path (`…/api/<name>`, from the URL or from `function`), or the prefix
/// other services' request paths go under.
fn check_upstream_path(
    v: &mut Validator<'_>,
    parts: &ServiceParts<'_>,
    base: String,
) -> UpstreamPath {
    let (url, url_field) = (parts.url, &parts.url_field);
    match &parts.function {
        Some(Some(function)) => {
            if base.contains("/api/") {
                v.error(
                    url,
                    url_field.clone(),
                    "give either a full function URL or an app URL with function, not both",
                );
            }
            UpstreamPath::Fixed(format!("{base}/api/{function}"))
        }
        Some(None) if base.is_empty() => {
            v.error(
                url,
                url_field.clone(),
                "an app URL needs function: <name> (or give the function's full URL, …/api/<name>)",
            );
            UpstreamPath::Fixed(base)
        }
        Some(None) => UpstreamPath::Fixed(base),
        None => UpstreamPath::Prefix(base),
    }
}

pub(super) fn lambda_backend(
    v: &mut Validator<'_>,
    raw: &RawLambdaBackend,
    path: &str,
) -> Option<LambdaBackendConfig> {
    let errors_before = v.errors.len();
    let function = check_function_names(v, raw, path);
    let payload_format = check_payload_format(v, raw, path);
    let endpoint = check_lambda_endpoint_and_timeout(v, raw, path);
    let credentials = match &raw.credentials {
        None => LambdaCredentials::Default,
        Some(c) => aws_credentials(v, &c.value, &format!("{path}.credentials"), c),
    };
    (v.errors.len() == errors_before).then(|| LambdaBackendConfig {
        function: function.to_owned(),
        qualifier: raw.qualifier.as_ref().map(|q| q.value.clone()),
        region: raw.region.as_ref().map(|r| r.value.clone()),
        payload_format,
        invocation: match raw.invocation {
            RawInvocation::RequestResponse => Invocation::RequestResponse,
            RawInvocation::Event => Invocation::Event,
        },
        endpoint,
        credentials,
        stage: raw.stage.clone(),
        timeout: raw.timeout.as_ref().map(|t| t.value.0),
    })
}

/// A function name or ARN, a version or alias qualifier, an AWS region.
fn check_function_names<'a>(
    v: &mut Validator<'_>,
    raw: &'a RawLambdaBackend,
    path: &str,
) -> &'a str {
    let function = raw.function.value.trim();
    let name = function.rsplit(":function:").next().unwrap_or(function);
    let name = name.split(':').next().unwrap_or(name);
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.error(
            &raw.function,
            format!("{path}.function"),
            format!("{function:?} is not a Lambda function name or ARN (1 to 64 letters, digits, '-' or '_', optionally as arn:aws:lambda:REGION:ACCOUNT:function:NAME)"),
        );
    }
    if let Some(qualifier) = &raw.qualifier
        && (qualifier.value.is_empty()
            || !qualifier
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '$'))
    {
        v.error(
            qualifier,
            format!("{path}.qualifier"),
            "must be a version number or an alias name",
        );
    }
    if let Some(region) = &raw.region
        && (region.value.is_empty()
            || !region
                .value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        v.error(
            region,
            format!("{path}.region"),
            format!("{:?} is not an AWS region (e.g. eu-west-1)", region.value),
        );
    }
    function
}

/// API Gateway's payload format: "2.0" (the default) or "1.0".
fn check_payload_format(
    v: &mut Validator<'_>,
    raw: &RawLambdaBackend,
    path: &str,
) -> PayloadFormat {
    match &raw.payload_format {
        None => PayloadFormat::V2,
        Some(format) => match &format.value {
            RawPayloadFormat::Text(t) if t == "2.0" => PayloadFormat::V2,
            RawPayloadFormat::Text(t) if t == "1.0" => PayloadFormat::V1,
            RawPayloadFormat::Number(n) if *n == 2.0 => PayloadFormat::V2,
            RawPayloadFormat::Number(n) if *n == 1.0 => PayloadFormat::V1,
            _ => {
                v.error(
                    format,
                    format!("{path}.payload_format"),
                    "must be \"2.0\" or \"1.0\"",
                );
                PayloadFormat::V2
            }
        },
    }
}

/// An endpoint override is an http(s) URL; an invocation timeout is within Lambda's 15 minutes.
fn check_lambda_endpoint_and_timeout(
    v: &mut Validator<'_>,
    raw: &RawLambdaBackend,
    path: &str,
) -> Option<String> {
    let endpoint = raw
        .endpoint
        .as_ref()
        .map(|e| e.value.trim_end_matches('/').to_owned());
    if let (Some(located), Some(endpoint)) = (&raw.endpoint, &endpoint)
        && endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
            .is_none()
    {
        v.error(
            located,
            format!("{path}.endpoint"),
            format!("{endpoint:?} is not an http(s)://host[:port] URL"),
        );
    }
    if let Some(timeout) = &raw.timeout
        && (timeout.value.0.is_zero() || timeout.value.0 > Duration::from_secs(900))
    {
        v.error(
            timeout,
            format!("{path}.timeout"),
            "must be more than 0 and at most 15m (Lambda's own maximum)",
        );
    }
    endpoint
}

fn aws_credentials<T>(
    v: &mut Validator<'_>,
    raw: &RawAwsCredentials,
    path: &str,
    at: &Located<T>,
) -> LambdaCredentials {
    let key_id = v.secret(
        raw.access_key_id_env.as_ref(),
        raw.access_key_id_file.as_ref(),
        &format!("{path}.access_key_id"),
    );
    let secret = v.secret(
        raw.secret_access_key_env.as_ref(),
        raw.secret_access_key_file.as_ref(),
        &format!("{path}.secret_access_key"),
    );
    let token = v.secret(
        raw.session_token_env.as_ref(),
        raw.session_token_file.as_ref(),
        &format!("{path}.session_token"),
    );
    let has_keys = raw.access_key_id_env.is_some()
        || raw.access_key_id_file.is_some()
        || raw.secret_access_key_env.is_some()
        || raw.secret_access_key_file.is_some();
    let source = match (&raw.profile, has_keys) {
        (Some(profile), true) => {
            v.error(
                profile,
                format!("{path}.profile"),
                "use either a profile or access keys, not both",
            );
            LambdaCredentials::Default
        }
        (Some(profile), false) => LambdaCredentials::Profile {
            name: profile.value.clone(),
            credentials_file: raw
                .profile_credentials_file
                .as_ref()
                .map(|f| PathBuf::from(&f.value)),
            config_file: raw
                .profile_config_file
                .as_ref()
                .map(|f| PathBuf::from(&f.value)),
        },
        (None, true) => match (key_id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => LambdaCredentials::Static {
                access_key_id,
                secret_access_key,
                session_token: token,
            },
            (id, _) => {
                if id.is_some()
                    || raw.secret_access_key_env.is_none() && raw.secret_access_key_file.is_none()
                {
                    v.error(
                        at,
                        path.to_owned(),
                        "access keys need both access_key_id_env/_file and secret_access_key_env/_file",
                    );
                }
                LambdaCredentials::Default
            }
        },
        (None, false) => {
            for file in [&raw.profile_credentials_file, &raw.profile_config_file]
                .into_iter()
                .flatten()
            {
                v.error(file, path.to_owned(), "profile files need a profile");
            }
            LambdaCredentials::Default
        }
    };
    match &raw.assume_role {
        None => source,
        Some(role) => check_assume_role(v, role, path, source),
    }
}

/// A role to assume with `source`'s credentials: its ARN must name a role.
fn check_assume_role(
    v: &mut Validator<'_>,
    role: &RawAssumeRole,
    path: &str,
    source: LambdaCredentials,
) -> LambdaCredentials {
    if !role.role_arn.value.starts_with("arn:") || !role.role_arn.value.contains(":role/") {
        v.error(
            &role.role_arn,
            format!("{path}.assume_role.role_arn"),
            format!(
                "{:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                role.role_arn.value
            ),
        );
    }
    LambdaCredentials::AssumeRole {
        role_arn: role.role_arn.value.clone(),
        external_id: role.external_id.clone(),
        session_name: role.session_name.clone(),
        sts_endpoint: role
            .sts_endpoint
            .as_ref()
            .map(|e| e.value.trim_end_matches('/').to_owned()),
        source: Box::new(source),
    }
}

pub(super) fn http_backend(
    v: &mut Validator<'_>,
    raw: &RawHttpBackend,
    path: &str,
) -> Option<HttpBackendConfig> {
    let errors_before = v.errors.len();
    let addresses = check_addresses(v, raw, path);
    let tls = raw.tls.as_ref().map(|tls| check_upstream_tls(v, tls, path));
    let balancer = check_balancer(v, raw, path);
    let health_check = raw
        .health_check
        .as_ref()
        .map(|hc| check_health_check(v, hc, path));
    let outlier = OutlierPolicy {
        consecutive_failures: raw.outlier.consecutive_failures,
        base_ejection: raw.outlier.base_ejection.value.0,
        max_ejection: raw.outlier.max_ejection.value.0,
    };
    if outlier.max_ejection < outlier.base_ejection {
        v.error(
            &raw.outlier.max_ejection,
            format!("{path}.outlier.max_ejection"),
            "must be at least base_ejection",
        );
    }
    if raw.dns_refresh.value.0.is_zero() {
        v.error(
            &raw.dns_refresh,
            format!("{path}.dns_refresh"),
            "must be more than 0",
        );
    }
    if let Some(host) = &raw.host_rewrite
        && HeaderValue::from_str(&host.value).is_err()
    {
        v.error(
            host,
            format!("{path}.host_rewrite"),
            "not a valid Host header value",
        );
    }
    (v.errors.len() == errors_before).then(|| HttpBackendConfig {
        addresses,
        tls,
        protocol: match raw.protocol {
            RawProtocol::Http1 => UpstreamProtocol::Http1,
            RawProtocol::Http2 => UpstreamProtocol::Http2,
        },
        balancer,
        connect_timeout: raw.connect_timeout.value.0,
        pool_idle_timeout: raw.pool.idle_timeout.value.0,
        pool_max_idle_per_endpoint: raw.pool.max_idle_per_address,
        health_check,
        outlier,
        dns_refresh: raw.dns_refresh.value.0,
        host_rewrite: raw.host_rewrite.as_ref().map(|h| h.value.clone()),
    })
}

/// At least one `host:port` address, each with a weight of at least 1.
fn check_addresses(
    v: &mut Validator<'_>,
    raw: &RawHttpBackend,
    path: &str,
) -> Vec<EndpointAddress> {
    let mut addresses = Vec::new();
    if raw.addresses.value.is_empty() {
        v.error(
            &raw.addresses,
            format!("{path}.addresses"),
            "at least one address is required",
        );
    }
    for (i, address) in raw.addresses.value.iter().enumerate() {
        let (text, weight) = match &address.value {
            RawAddress::Plain(text) => (text, 1),
            RawAddress::Weighted { address, weight } => (address, *weight),
        };
        let at = format!("{path}.addresses[{i}]");
        if weight == 0 {
            v.error(address, &at, "weight must be at least 1");
        }
        match split_host_port(text) {
            Some((host, port)) => addresses.push(EndpointAddress { host, port, weight }),
            None => v.error(address, &at, format!("invalid address {text:?}: write host:port, e.g. \"10.0.0.5:8080\" or \"orders.internal:80\"")),
        }
    }
    addresses
}

/// A client certificate comes with its key.
fn check_upstream_tls(v: &mut Validator<'_>, tls: &RawClientTls, path: &str) -> ClientTls {
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some((PathBuf::from(&cert.value), PathBuf::from(&key.value))),
        (Some(cert), None) => {
            v.error(
                cert,
                format!("{path}.tls.cert_file"),
                "a client certificate needs key_file too",
            );
            None
        }
        (None, Some(key)) => {
            v.error(
                key,
                format!("{path}.tls.key_file"),
                "a client key needs cert_file too",
            );
            None
        }
        (None, None) => None,
    };
    ClientTls {
        ca_file: tls.ca_file.as_ref().map(|f| PathBuf::from(&f.value)),
        client_identity: identity,
        server_name: tls.server_name.as_ref().map(|s| s.value.clone()),
    }
}

/// Round robin, least request, or a consistent hash on exactly one key.
fn check_balancer(v: &mut Validator<'_>, raw: &RawHttpBackend, path: &str) -> BalancerPolicy {
    match &raw.balancer.value {
        RawBalancer::RoundRobin => BalancerPolicy::RoundRobin,
        RawBalancer::LeastRequest => BalancerPolicy::LeastRequest,
        RawBalancer::ConsistentHash(key) => {
            let at = format!("{path}.balancer.consistent_hash");
            match (&key.header, &key.cookie, key.client_address) {
                (Some(header), None, false) => match HeaderName::try_from(header.as_str()) {
                    Ok(name) => BalancerPolicy::ConsistentHash(HashKey::Header(name)),
                    Err(_) => {
                        v.error(
                            &raw.balancer,
                            format!("{at}.header"),
                            format!("invalid header name {header:?}"),
                        );
                        BalancerPolicy::RoundRobin
                    }
                },
                (None, Some(cookie), false) => {
                    BalancerPolicy::ConsistentHash(HashKey::Cookie(cookie.clone()))
                }
                (None, None, true) => BalancerPolicy::ConsistentHash(HashKey::ClientAddress),
                _ => {
                    v.error(
                        &raw.balancer,
                        at,
                        "set exactly one of header, cookie or client_address",
                    );
                    BalancerPolicy::RoundRobin
                }
            }
        }
    }
}

/// A health check path from the root and a timeout within the interval.
fn check_health_check(v: &mut Validator<'_>, hc: &RawHealthCheck, path: &str) -> HealthCheck {
    if !hc.path.value.starts_with('/') {
        v.error(
            &hc.path,
            format!("{path}.health_check.path"),
            "must start with '/'",
        );
    }
    if hc.timeout.value.0 > hc.interval.value.0 {
        v.error(
            &hc.timeout,
            format!("{path}.health_check.timeout"),
            "must not exceed the interval",
        );
    }
    HealthCheck {
        path: hc.path.value.clone(),
        interval: hc.interval.value.0,
        timeout: hc.timeout.value.0,
        healthy_threshold: hc.healthy_threshold.max(1),
        unhealthy_threshold: hc.unhealthy_threshold.max(1),
        host: hc.host.clone(),
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6).
fn split_host_port(text: &str) -> Option<(String, u16)> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid_host.then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{config, refused};

    #[test]
    fn http_addresses_and_health_checks_are_well_formed() {
        refused(
            &config("", "", "").replace("[\"127.0.0.1:1\"]", "[\"no-port-here\"]"),
            "backends.app.http.addresses[0]: invalid address \"no-port-here\"",
        );
        refused(
            &config("", "      health_check: {path: healthz}\n", ""),
            "backends.app.http.health_check.path: must start with '/'",
        );
    }

    #[test]
    fn secrets_come_from_exactly_one_place() {
        let lambda = |creds: &str| {
            config("", "", "").replace(
                "  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\n",
                &format!("  app:\n    lambda:\n      function: orders\n      region: eu-west-1\n      credentials: {creds}\n"),
            )
        };
        refused(
            &lambda(
                "{access_key_id_env: ACCORD_UNIT_UNSET_ID, secret_access_key_env: ACCORD_UNIT_UNSET_SECRET}",
            ),
            "environment variable ACCORD_UNIT_UNSET_ID is not set",
        );
        refused(
            &lambda("{profile: dev, access_key_id_env: X, secret_access_key_env: Y}"),
            "use either a profile or access keys, not both",
        );
    }

    /// One case per HTTP backend rule: the settings under `http:` and the error expected.
    #[test]
    fn every_http_backend_rule() {
        let cases = [
            (
                "      outlier: {base_ejection: 60s, max_ejection: 30s}\n",
                "backends.app.http.outlier.max_ejection: must be at least base_ejection",
            ),
            (
                "      dns_refresh: 0s\n",
                "backends.app.http.dns_refresh: must be more than 0",
            ),
            (
                "      host_rewrite: \"bad\\nhost\"\n",
                "backends.app.http.host_rewrite: not a valid Host header value",
            ),
            (
                "      tls: {cert_file: c.pem}\n",
                "backends.app.http.tls.cert_file: a client certificate needs key_file too",
            ),
            (
                "      tls: {key_file: k.pem}\n",
                "backends.app.http.tls.key_file: a client key needs cert_file too",
            ),
            (
                "      balancer: {consistent_hash: {header: \"bad header\"}}\n",
                "backends.app.http.balancer.consistent_hash.header: invalid header name",
            ),
            (
                "      balancer: {consistent_hash: {header: x-user, client_address: true}}\n",
                "set exactly one of header, cookie or client_address",
            ),
            (
                "      health_check: {path: /h, interval: 1s, timeout: 2s}\n",
                "backends.app.http.health_check.timeout: must not exceed the interval",
            ),
        ];
        for (settings, expected) in cases {
            refused(&config("", settings, ""), expected);
        }
        refused(
            &config("", "", "").replace("[\"127.0.0.1:1\"]", "[]"),
            "backends.app.http.addresses: at least one address is required",
        );
    }

    fn lambda(settings: &str) -> String {
        config("", "", "").replace(
            "  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\n",
            &format!("  app:\n    lambda:\n      function: orders\n{settings}"),
        )
    }

    /// One case per Lambda backend rule.
    #[test]
    fn every_lambda_backend_rule() {
        let cases = [
            (
                "      qualifier: \"v 1\"\n",
                "backends.app.lambda.qualifier: must be a version number or an alias name",
            ),
            (
                "      region: EU-West-1\n",
                "backends.app.lambda.region: \"EU-West-1\" is not an AWS region",
            ),
            (
                "      payload_format: \"3.0\"\n",
                "backends.app.lambda.payload_format: must be \"2.0\" or \"1.0\"",
            ),
            (
                "      endpoint: localhost:9001\n",
                "backends.app.lambda.endpoint: \"localhost:9001\" is not an http(s)://host[:port] URL",
            ),
            (
                "      timeout: 20m\n",
                "backends.app.lambda.timeout: must be more than 0 and at most 15m",
            ),
            (
                "      credentials: {access_key_id_env: HOME}\n",
                "access keys need both access_key_id_env/_file and secret_access_key_env/_file",
            ),
            (
                "      credentials: {assume_role: {role_arn: \"arn:aws:iam::1:user/bob\"}}\n",
                "is not a role ARN",
            ),
            (
                "      credentials: {profile_config_file: c}\n",
                "profile files need a profile",
            ),
        ];
        for (settings, expected) in cases {
            refused(&lambda(settings), expected);
        }
        refused(
            &lambda("").replace("function: orders", "function: \"orders function\""),
            "is not a Lambda function name or ARN",
        );
    }

    fn azure(credentials: &str, backend: &str) -> String {
        config(credentials, "", "").replace(
            "  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\n",
            &format!("  app:\n{backend}"),
        )
    }

    /// One case per Azure credential and backend rule.
    #[test]
    fn every_azure_rule() {
        let function = |settings: &str| format!("    azure_function: {{{settings}}}\n");
        let with_key = "url: \"https://o.azurewebsites.net/api/orders\", key_env: HOME";
        let cases = [
            (String::new(), function("url: \"http://o.azurewebsites.net/api/orders\", key_env: HOME"), "must be https:// (plain http only to a loopback emulator)"),
            (String::new(), function("url: \"not a url\", key_env: HOME"), "is not a URL (https://host[/path])"),
            (String::new(), function("url: \"https://o.azurewebsites.net/api/orders\""), "set key_env, key_file or entra"),
            ("azure_credentials:\n  corp: {managed_identity: {}}\n".to_owned(), function(&format!("{with_key}, entra: {{credential: corp, scope: s}}")), "authenticate with a key or entra, not both"),
            (String::new(), function("url: \"https://o.azurewebsites.net\", function: \"bad name\", key_env: HOME"), "a function name is letters, digits, '-' and '_'"),
            (String::new(), function("url: \"https://o.azurewebsites.net/api/x\", function: orders, key_env: HOME"), "give either a full function URL or an app URL with function, not both"),
            (String::new(), function("url: \"https://o.azurewebsites.net\", key_env: HOME"), "an app URL needs function: <name>"),
            ("azure_credentials:\n  corp: {managed_identity: {}}\n".to_owned(), "    azure: {endpoint: \"https://x.blob.core.windows.net\", entra: {credential: corp}}\n".to_owned(), "a scope is required"),
            ("azure_credentials:\n  corp: {managed_identity: {}, workload_identity: {}}\n".to_owned(), function(with_key), "set exactly one of client_secret, managed_identity, workload_identity"),
            ("azure_credentials:\n  corp: {managed_identity: {}, authority_host: \"http://login\"}\n".to_owned(), function(with_key), "must be an https:// URL (Entra ID is reached over HTTPS only)"),
            ("azure_credentials:\n  corp: {managed_identity: {client_id: a, object_id: b}}\n".to_owned(), function(with_key), "name a user-assigned identity by one of client_id, object_id, resource_id"),
            ("azure_credentials:\n  corp: {client_secret: {tenant_id: \" \", client_id: c, secret_env: HOME}}\n".to_owned(), function(with_key), "azure_credentials.corp.client_secret.tenant_id: must not be empty"),
            ("azure_credentials:\n  corp: {client_secret: {tenant_id: t, client_id: c}}\n".to_owned(), function(with_key), "azure_credentials.corp.client_secret: set secret_env or secret_file"),
        ];
        for (credentials, backend, expected) in cases {
            refused(&azure(&credentials, &backend), expected);
        }
    }

    #[test]
    fn azure_backends_name_defined_credentials() {
        let yaml = config("", "", "").replace(
            "  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\n",
            "  app:\n    azure_function: {url: \"https://orders.azurewebsites.net/api/orders\", entra: {credential: corp, scope: \"api://orders/.default\"}}\n",
        );
        refused(&yaml, "unknown Azure credential \"corp\"");
    }
}
