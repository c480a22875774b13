//! Validation: the raw file model in, the internal model or *every* error out, each with its
//! line, column and field path. Pure apart from the [`Environment`] it is given (which resolves
//! secret references), so it is cheap to test and safe to run for `accord check`.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use accord_adapters::RetryBudgetPolicy;
use accord_adapters::Secret;
use accord_adapters::azure::{
    AzureAuth, AzureBackendConfig, AzureService, COGNITIVE_SERVICES_SCOPE, EntraCredentialConfig,
    EntraCredentialKind, UpstreamPath, UserAssigned,
};
use accord_adapters::failover::{RetryOn, RetryPolicy};
use accord_adapters::http::{
    BalancerPolicy, EndpointAddress, HashKey, HealthCheck, HttpBackendConfig, UpstreamProtocol,
};
use accord_adapters::lambda::{Invocation, LambdaBackendConfig, LambdaCredentials, PayloadFormat};
use accord_adapters::outlier::OutlierPolicy;
use accord_adapters::tls::ClientTls;
use http::{HeaderName, HeaderValue, Method};

use super::error::{ConfigError, ConfigErrors};
use super::model::*;
use super::raw::*;
use super::types::{Id, Located};

/// Where secret references are resolved.
pub trait Environment {
    /// The value of an environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// The contents of a file.
    fn read_file(&self, path: &str) -> std::io::Result<String>;
}

/// The process's real environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

struct Validator<'a> {
    errors: Vec<ConfigError>,
    env: &'a dyn Environment,
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &Located<T>, path: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(at.line, at.column, path, message));
    }

    fn socket_addr(&mut self, at: &Located<String>, path: &str) -> Option<SocketAddr> {
        match at.value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    at,
                    path,
                    format!(
                        "invalid address {:?}: write ip:port, e.g. \"0.0.0.0:8080\"",
                        at.value
                    ),
                );
                None
            }
        }
    }

    fn secret(
        &mut self,
        env_ref: Option<&Located<String>>,
        file_ref: Option<&Located<String>>,
        path: &str,
    ) -> Option<Secret> {
        match (env_ref, file_ref) {
            (Some(var), Some(_)) => {
                self.error(
                    var,
                    format!("{path}_env"),
                    format!("set either {path}_env or {path}_file, not both"),
                );
                None
            }
            (Some(var), None) => match self.env.var(&var.value) {
                Some(value) if !value.trim().is_empty() => {
                    Some(Secret::new(value.trim().to_owned()))
                }
                Some(_) => {
                    self.error(
                        var,
                        format!("{path}_env"),
                        format!("environment variable {} is empty", var.value),
                    );
                    None
                }
                None => {
                    self.error(
                        var,
                        format!("{path}_env"),
                        format!("environment variable {} is not set", var.value),
                    );
                    None
                }
            },
            (None, Some(file)) => match self.env.read_file(&file.value) {
                Ok(value) if !value.trim().is_empty() => Some(Secret::new(value.trim().to_owned())),
                Ok(_) => {
                    self.error(
                        file,
                        format!("{path}_file"),
                        format!("secret file {} is empty", file.value),
                    );
                    None
                }
                Err(e) => {
                    self.error(
                        file,
                        format!("{path}_file"),
                        format!("cannot read secret file {}: {e}", file.value),
                    );
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// Checks a parsed file and builds the internal model; every problem is reported.
pub fn validate(raw: &RawConfig, env: &dyn Environment) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        errors: Vec::new(),
        env,
    };

    // Listeners.
    let mut listeners = Vec::new();
    let mut seen_addresses = HashSet::new();
    if raw.listeners.value.is_empty() {
        v.error(
            &raw.listeners,
            "listeners",
            "at least one listener is required",
        );
    }
    for (i, listener) in raw.listeners.value.iter().enumerate() {
        let path = format!("listeners[{i}]");
        let Some(address) = v.socket_addr(&listener.address, &format!("{path}.address")) else {
            continue;
        };
        // Port 0 asks the OS for a free port, so it never clashes.
        if address.port() != 0 && !seen_addresses.insert(address) {
            v.error(
                &listener.address,
                format!("{path}.address"),
                format!("address {address} is used by another listener"),
            );
        }
        let tls = listener.tls.as_ref().map(|tls| {
            (
                PathBuf::from(&tls.cert_file.value),
                PathBuf::from(&tls.key_file.value),
            )
        });
        listeners.push(Listener {
            name: listener
                .name
                .as_ref()
                .map_or_else(|| address.to_string(), |n| n.value.to_string()),
            address,
            tls,
        });
    }

    // Admin.
    let admin_address = v.socket_addr(&raw.admin.address, "admin.address");
    if let Some(addr) = admin_address
        && addr.port() != 0
        && seen_addresses.contains(&addr)
    {
        v.error(
            &raw.admin.address,
            "admin.address",
            format!("address {addr} is also a traffic listener"),
        );
    }
    let token = v.secret(
        raw.admin.token_env.as_ref(),
        raw.admin.token_file.as_ref(),
        "admin.token",
    );
    if let Some(addr) = admin_address
        && !addr.ip().is_loopback()
        && token.is_none()
        && raw.admin.token_env.is_none()
        && raw.admin.token_file.is_none()
    {
        v.error(
            &raw.admin.address,
            "admin.address",
            format!("the admin API on {addr} is reachable from other hosts: set admin.token_env or admin.token_file"),
        );
    }

    // Limits.
    let limits = Limits {
        max_header_size: usize::try_from(raw.limits.max_header_size.value.0).unwrap_or(usize::MAX),
        header_read_timeout: raw.limits.header_read_timeout.value.0,
        max_connections: raw.limits.max_connections.value,
        shutdown_grace: raw.limits.shutdown_grace.value.0,
    };
    if limits.max_header_size < 8192 {
        v.error(
            &raw.limits.max_header_size,
            "limits.max_header_size",
            "must be at least 8KiB",
        );
    }
    if limits.max_connections == 0 {
        v.error(
            &raw.limits.max_connections,
            "limits.max_connections",
            "must be at least 1",
        );
    }

    // Azure credentials, then backends (which name them).
    let mut azure_credentials = std::collections::HashMap::new();
    for (name, credential) in &raw.azure_credentials {
        let path = format!("azure_credentials.{name}");
        if let Err(e) = name.parse::<Id>() {
            v.error(credential, &path, e);
            continue;
        }
        if let Some(config) = azure_credential(&mut v, name, credential, &path) {
            azure_credentials.insert(name.clone(), config);
        }
    }
    let azure = AzureContext {
        credentials: &azure_credentials,
        defined: &raw.azure_credentials,
    };

    // Backends.
    let mut backends = Vec::new();
    for (name, backend) in &raw.backends {
        let path = format!("backends.{name}");
        if let Err(e) = name.parse::<Id>() {
            v.error(backend, &path, e);
            continue;
        }
        match &backend.value {
            RawBackend::Http(http) => {
                if let Some(config) = http_backend(&mut v, http, &format!("{path}.http")) {
                    backends.push((Arc::<str>::from(name.as_str()), BackendConfig::Http(config)));
                }
            }
            RawBackend::Lambda(lambda) => {
                if let Some(config) = lambda_backend(&mut v, lambda, &format!("{path}.lambda")) {
                    backends.push((
                        Arc::<str>::from(name.as_str()),
                        BackendConfig::Lambda(config),
                    ));
                }
            }
            RawBackend::AzureFunction(_) | RawBackend::AzureAi(_) | RawBackend::Azure(_) => {
                if let Some(config) = azure_backend(&mut v, &backend.value, &path, &azure) {
                    backends.push((
                        Arc::<str>::from(name.as_str()),
                        BackendConfig::Azure(Box::new(config)),
                    ));
                }
            }
        }
    }

    // Plugins.
    let mut plugins = Vec::new();
    for (name, plugin) in &raw.plugins {
        let path = format!("plugins.{name}");
        if let Err(e) = name.parse::<Id>() {
            v.error(plugin, &path, e);
            continue;
        }
        let p = &plugin.value;
        if p.limits.time.value.0.is_zero() || p.limits.time.value.0 > Duration::from_secs(1) {
            v.error(
                &p.limits.time,
                format!("{path}.limits.time"),
                "must be more than 0 and at most 1s (plugins run in the request path)",
            );
        }
        if p.limits.memory.value.0 < (1 << 20) || p.limits.memory.value.0 > (256 << 20) {
            v.error(
                &p.limits.memory,
                format!("{path}.limits.memory"),
                "must be between 1MiB and 256MiB",
            );
        }
        if let Some(size) = &p.response_body
            && size.value.0 > (16 << 20)
        {
            v.error(
                size,
                format!("{path}.response_body"),
                "must be at most 16MiB (the body is held in memory for the plugin)",
            );
        }
        if !p.path.value.ends_with(".wasm") {
            v.error(
                &p.path,
                format!("{path}.path"),
                "must name a WebAssembly component (.wasm)",
            );
        }
        plugins.push((
            Arc::<str>::from(name.as_str()),
            PluginConfig {
                path: PathBuf::from(&p.path.value),
                spec: accord_policies::plugin::PluginSpec {
                    name: name.clone(),
                    config: p
                        .config
                        .as_ref()
                        .map_or_else(String::new, |c| c.to_string()),
                    time_limit: p.limits.time.value.0,
                    memory_limit: usize::try_from(p.limits.memory.value.0).unwrap_or(usize::MAX),
                    on_error: match p.on_error {
                        RawOnError::Allow => accord_policies::plugin::OnError::Allow,
                        RawOnError::Reject => accord_policies::plugin::OnError::Reject,
                    },
                    isolation: match p.isolation {
                        RawIsolation::Pooled => accord_policies::plugin::Isolation::Pooled,
                        RawIsolation::Strict => accord_policies::plugin::Isolation::Strict,
                    },
                    response_body: p.response_body.as_ref().map_or(0, |size| {
                        usize::try_from(size.value.0).unwrap_or(usize::MAX)
                    }),
                },
            },
        ));
    }

    // Routes.
    let mut routes = Vec::new();
    let mut seen_routes: Vec<(&Id, &Located<Id>)> = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some((_, first)) = seen_routes.iter().find(|(id, _)| **id == route.id.value) {
            v.error(
                &route.id,
                format!("{path}.id"),
                format!(
                    "duplicate route id {:?} (first defined at line {})",
                    route.id.value.as_str(),
                    first.line
                ),
            );
        }
        seen_routes.push((&route.id.value, &route.id));
        if let Some(route) = route_config(&mut v, route, &path, &raw.backends, &raw.plugins) {
            routes.push(route);
        }
    }

    let sla_history = SlaHistory {
        path: raw
            .sla_history
            .enabled
            .then(|| PathBuf::from(&raw.sla_history.path)),
        flush_interval: raw.sla_history.flush_interval.value.0,
    };
    if raw.sla_history.flush_interval.value.0 < Duration::from_secs(1) {
        v.error(
            &raw.sla_history.flush_interval,
            "sla_history.flush_interval",
            "must be at least 1s",
        );
    }
    let log = Log {
        format: raw.log.format,
        level: raw.log.level.clone(),
        access_log: raw.log.access_log,
    };
    if v.errors.is_empty()
        && let Err((index, message)) = crate::proxy::router::Router::new(&routes)
    {
        let raw_route = &raw.routes[index];
        match &raw_route.matcher.path {
            Some(path) => v.error(path, format!("routes[{index}].match.path"), message),
            None => v.error(
                &raw_route.id,
                format!("routes[{index}].match.path"),
                message,
            ),
        }
    }
    if !v.errors.is_empty() {
        return Err(ConfigErrors::new(v.errors));
    }
    let Some(admin_address) = admin_address else {
        return Err(ConfigErrors::new(v.errors));
    };
    Ok(Config {
        listeners,
        admin: Admin {
            address: admin_address,
            token,
        },
        limits,
        log,
        sla_history,
        backends,
        plugins,
        plugin_cache: raw
            .plugin_cache
            .as_ref()
            .map(|dir| PathBuf::from(&dir.value)),
        routes,
        effective: serde_json::to_value(raw).unwrap_or(serde_json::Value::Null),
    })
}

/// The Azure credentials a backend may name.
struct AzureContext<'a> {
    credentials: &'a std::collections::HashMap<String, EntraCredentialConfig>,
    defined: &'a std::collections::BTreeMap<String, Located<RawAzureCredential>>,
}

fn azure_credential(
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

fn azure_backend(
    v: &mut Validator<'_>,
    raw: &RawBackend,
    path: &str,
    azure: &AzureContext<'_>,
) -> Option<AzureBackendConfig> {
    let errors_before = v.errors.len();
    let entra =
        |v: &mut Validator<'_>, auth: &RawEntraAuth, at: &str, default_scope: Option<&str>| {
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
        };
    let key = |v: &mut Validator<'_>,
               env: Option<&Located<String>>,
               file: Option<&Located<String>>,
               at: &str,
               header: http::HeaderName| {
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
    };
    let (service, url_field, url, ca_file, auth, fixed_path) = match raw {
        RawBackend::AzureFunction(f) => {
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
                (Some(e), false) => entra(v, e, &format!("{at}.entra"), None),
                (None, true) => key(
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
            (
                AzureService::Function,
                format!("{at}.url"),
                &f.url,
                &f.ca_file,
                auth,
                Some(function),
            )
        }
        RawBackend::AzureAi(a) => {
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
                (Some(e), false) => {
                    entra(v, e, &format!("{at}.entra"), Some(COGNITIVE_SERVICES_SCOPE))
                }
                (None, true) => key(v, a.key_env.as_ref(), a.key_file.as_ref(), &at, header),
                (None, false) => {
                    v.error(&a.endpoint, at.clone(), "set key_env, key_file or entra");
                    None
                }
            };
            (
                AzureService::Ai,
                format!("{at}.endpoint"),
                &a.endpoint,
                &a.ca_file,
                auth,
                None,
            )
        }
        RawBackend::Azure(r) => {
            let at = format!("{path}.azure");
            let auth = entra(v, &r.entra, &format!("{at}.entra"), None);
            (
                AzureService::Rest,
                format!("{at}.endpoint"),
                &r.endpoint,
                &r.ca_file,
                auth,
                None,
            )
        }
        _ => return None,
    };
    let (https, host, port, base) = azure_url(v, url, &url_field)?;
    let upstream_path = match fixed_path {
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
    };
    let tls = https.then(|| accord_adapters::tls::ClientTls {
        ca_file: ca_file.as_ref().map(PathBuf::from),
        client_identity: None,
        server_name: Some(host.clone()),
    });
    let authority = if (https && port == 443) || (!https && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let auth = auth?;
    (v.errors.len() == errors_before).then(|| AzureBackendConfig {
        service,
        http: accord_adapters::http::HttpBackendConfig::single(host, port, tls),
        host: authority,
        path: upstream_path,
        auth,
    })
}

fn lambda_backend(
    v: &mut Validator<'_>,
    raw: &RawLambdaBackend,
    path: &str,
) -> Option<LambdaBackendConfig> {
    let errors_before = v.errors.len();
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
    let payload_format = match &raw.payload_format {
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
    };
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
        Some(role) => {
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
    }
}

fn http_backend(
    v: &mut Validator<'_>,
    raw: &RawHttpBackend,
    path: &str,
) -> Option<HttpBackendConfig> {
    let errors_before = v.errors.len();
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
    let tls = raw.tls.as_ref().map(|tls| {
        let identity = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                Some((PathBuf::from(&cert.value), PathBuf::from(&key.value)))
            }
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
    });
    let balancer = match &raw.balancer.value {
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
    };
    let health_check = raw.health_check.as_ref().map(|hc| {
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
    });
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

fn route_config(
    v: &mut Validator<'_>,
    raw: &RawRoute,
    path: &str,
    backends: &std::collections::BTreeMap<String, Located<RawBackend>>,
    plugins: &std::collections::BTreeMap<String, Located<RawPlugin>>,
) -> Option<Route> {
    let errors_before = v.errors.len();
    let matcher = route_match(v, &raw.matcher, &format!("{path}.match"));

    let mut refs = Vec::new();
    if raw.backends.value.is_empty() {
        v.error(
            &raw.backends,
            format!("{path}.backends"),
            "at least one backend is required",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, entry) in raw.backends.value.iter().enumerate() {
        let at = format!("{path}.backends[{i}].backend");
        let name = &entry.backend.value;
        if !backends.contains_key(name) {
            let known: Vec<&str> = backends.keys().map(String::as_str).collect();
            let hint = if known.is_empty() {
                "no backends are defined".to_owned()
            } else {
                format!("defined backends: {}", known.join(", "))
            };
            v.error(
                &entry.backend,
                at,
                format!("unknown backend {name:?} ({hint})"),
            );
            continue;
        }
        if !seen.insert(name.clone()) {
            v.error(
                &entry.backend,
                at,
                format!("backend {name:?} is listed twice"),
            );
            continue;
        }
        if entry.weight.value == 0 {
            v.error(
                &entry.weight,
                format!("{path}.backends[{i}].weight"),
                "weight must be at least 1",
            );
        }
        refs.push(RouteBackendRef {
            backend: Arc::from(name.as_str()),
            priority: entry.priority.unwrap_or(i as u32),
            weight: entry.weight.value.max(1),
        });
    }

    let mut on = RetryOn {
        connect_failure: false,
        reset: false,
        timeout: false,
        throttled: false,
        statuses: Vec::new(),
    };
    for (i, condition) in raw.retry.on.value.iter().enumerate() {
        match condition.value.as_str() {
            "connect_failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "timeout" => on.timeout = true,
            "throttled" => on.throttled = true,
            other => match other.parse::<u16>() {
                Ok(status @ 400..=599) => on.statuses.push(status),
                _ => v.error(
                    condition,
                    format!("{path}.retry.on[{i}]"),
                    format!("unknown retry condition {other:?}: use connect_failure, reset, timeout, throttled, or a 4xx/5xx status"),
                ),
            },
        }
    }
    if raw.timeout.value.0.is_zero() {
        v.error(
            &raw.timeout,
            format!("{path}.timeout"),
            "must be more than 0",
        );
    }
    if let Some(per_try) = &raw.per_try_timeout
        && (per_try.value.0.is_zero() || per_try.value.0 > raw.timeout.value.0)
    {
        v.error(
            per_try,
            format!("{path}.per_try_timeout"),
            "must be more than 0 and at most the route's timeout",
        );
    }
    if raw.replay_buffer.value.0 > raw.max_body.value.0 {
        v.error(
            &raw.replay_buffer,
            format!("{path}.replay_buffer"),
            "must not exceed max_body",
        );
    }
    if raw.replay_buffer.value.0 > 16 << 20 {
        v.error(
            &raw.replay_buffer,
            format!("{path}.replay_buffer"),
            "must be at most 16MiB (it is held in memory per request)",
        );
    }
    let slo = raw
        .slo
        .as_ref()
        .and_then(|slo| slo_config(v, slo, &format!("{path}.slo")));
    let mut chain: Vec<Arc<str>> = Vec::new();
    if let Some(list) = &raw.plugins {
        for (i, name) in list.value.iter().enumerate() {
            if !plugins.contains_key(&name.value) {
                let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "no plugins are defined".to_owned()
                } else {
                    format!("defined plugins: {}", known.join(", "))
                };
                v.error(
                    name,
                    format!("{path}.plugins[{i}]"),
                    format!("unknown plugin {:?} ({hint})", name.value),
                );
            } else if chain.iter().any(|c| **c == *name.value) {
                v.error(
                    name,
                    format!("{path}.plugins[{i}]"),
                    format!("plugin {:?} is listed twice", name.value),
                );
            } else {
                chain.push(Arc::from(name.value.as_str()));
            }
        }
    }
    (v.errors.len() == errors_before).then(|| Route {
        id: Arc::from(raw.id.value.as_str()),
        matcher: matcher.unwrap_or_else(|| RouteMatch {
            host: HostMatch::Any,
            path: PathMatch::Prefix("/".into()),
            methods: Vec::new(),
            headers: Vec::new(),
        }),
        backends: refs,
        timeout: raw.timeout.value.0,
        per_try_timeout: raw.per_try_timeout.as_ref().map(|t| t.value.0),
        retry: RetryPolicy {
            retries: raw.retry.retries,
            on,
            non_idempotent: raw.retry.non_idempotent,
        },
        retry_budget: RetryBudgetPolicy {
            ratio: raw.retry.budget_ratio.value.0,
            min_concurrent: raw.retry.budget_min_concurrent,
            min_per_second: f64::from(raw.retry.budget_min_per_second),
        },
        max_body: raw.max_body.value.0,
        replay_buffer: raw.replay_buffer.value.0,
        slo,
        plugins: chain,
    })
}

fn slo_config(v: &mut Validator<'_>, raw: &Located<RawSlo>, path: &str) -> Option<RouteSlo> {
    use accord_policies::sla::{
        AlertTier, Classification, Enforcement, LatencyObjective, Objective, Severity, Shedding,
        SloWindow,
    };
    let errors_before = v.errors.len();
    let slo = &raw.value;
    let check_target =
        |v: &mut Validator<'_>, target: &Located<super::types::Percent>, at: String| {
            if target.value.0 >= 1.0 {
                v.error(
                    target,
                    at,
                    "must be below 100%: a 100% objective leaves no error budget",
                );
            } else if target.value.0 <= 0.0 {
                v.error(target, at, "must be above 0%");
            }
            target.value.0
        };
    let availability = slo
        .availability
        .as_ref()
        .map(|target| check_target(v, target, format!("{path}.availability")));
    let latency = match &slo.latency {
        None => None,
        Some(latency) => match (&latency.value.threshold, &latency.value.target) {
            (Some(threshold), Some(target)) => {
                if threshold.value.0.is_zero() {
                    v.error(
                        threshold,
                        format!("{path}.latency.threshold"),
                        "must be more than 0",
                    );
                }
                let target = check_target(v, target, format!("{path}.latency.target"));
                Some(LatencyObjective {
                    threshold: threshold.value.0,
                    target,
                })
            }
            (Some(_), None) => {
                v.error(latency, format!("{path}.latency"), "a latency threshold needs a target, e.g. `target: 99%` (the share of requests that must finish within it)");
                None
            }
            (None, Some(_)) => {
                v.error(
                    latency,
                    format!("{path}.latency"),
                    "a latency target needs a threshold, e.g. `threshold: 300ms`",
                );
                None
            }
            (None, None) => {
                v.error(
                    latency,
                    format!("{path}.latency"),
                    "set threshold and target, e.g. `{threshold: 300ms, target: 99%}`",
                );
                None
            }
        },
    };
    if slo.availability.is_none() && slo.latency.is_none() {
        v.error(
            raw,
            path,
            "an SLO needs an availability target, a latency objective, or both",
        );
    }
    let rolling_default = Duration::from_secs(30 * 86_400);
    let slo_window = if slo.window.value == "month" {
        let zone = slo.time_zone.as_ref().map_or("UTC", |z| z.value.as_str());
        match SloWindow::calendar_month(zone) {
            Ok(window) => window,
            Err(message) => {
                let at = slo.time_zone.as_ref().map_or(&slo.window, |z| z);
                v.error(at, format!("{path}.time_zone"), message);
                SloWindow::Rolling(rolling_default)
            }
        }
    } else {
        if let Some(zone) = &slo.time_zone {
            v.error(
                zone,
                format!("{path}.time_zone"),
                "a time zone only applies to a calendar window (`window: month`)",
            );
        }
        match slo.window.value.parse::<super::types::ConfigDuration>() {
            Ok(d)
                if d.0 >= Duration::from_secs(3600) && d.0 <= Duration::from_secs(90 * 86_400) =>
            {
                SloWindow::Rolling(d.0)
            }
            Ok(_) => {
                v.error(
                    &slo.window,
                    format!("{path}.window"),
                    "must be between 1h and 90d",
                );
                SloWindow::Rolling(rolling_default)
            }
            Err(_) => {
                v.error(
                    &slo.window,
                    format!("{path}.window"),
                    format!("unknown SLO window {:?}: write a rolling window as a duration, e.g. \"30d\" or \"7d\", or \"month\" for the calendar month", slo.window.value),
                );
                SloWindow::Rolling(rolling_default)
            }
        }
    };
    // A calendar month's alert tiers are derived for 30 days, like the SRE workbook's.
    let window = match &slo_window {
        SloWindow::Rolling(length) => *length,
        SloWindow::CalendarMonth { .. } => rolling_default,
    };
    let tiers = match &slo.alerts {
        None => AlertTier::defaults(window),
        Some(list) => {
            let mut tiers = Vec::new();
            for (i, tier) in list.value.iter().enumerate() {
                let at = format!("{path}.alerts[{i}]");
                if !(tier.burn_rate.value >= 1.0 && tier.burn_rate.value.is_finite()) {
                    v.error(
                        &tier.burn_rate,
                        format!("{at}.burn_rate"),
                        "must be at least 1: a tier below 1× fires on a burn that never exhausts the budget",
                    );
                }
                if tier.short.value.0 >= tier.long.value.0 {
                    v.error(
                        &tier.short,
                        format!("{at}.short"),
                        "the short window must be shorter than the long one",
                    );
                }
                if tier.long.value.0 > window {
                    v.error(
                        &tier.long,
                        format!("{at}.long"),
                        "must not exceed the SLO window",
                    );
                }
                tiers.push(AlertTier {
                    severity: match tier.severity {
                        RawSeverity::Page => Severity::Page,
                        RawSeverity::Ticket => Severity::Ticket,
                    },
                    burn_rate: tier.burn_rate.value,
                    long: tier.long.value.0,
                    short: tier.short.value.0,
                });
            }
            tiers
        }
    };
    let e = &slo.enforcement;
    if e.breach_window.value.0 < Duration::from_secs(60)
        || e.breach_window.value.0 > Duration::from_secs(6 * 3600)
    {
        v.error(
            &e.breach_window,
            format!("{path}.enforcement.breach_window"),
            "must be between 1m and 6h",
        );
    }
    let shedding = e.shed.as_ref().map(|shed| Shedding {
        fraction: shed.fraction.value.0,
        retry_after: shed.retry_after.value.0,
    });
    let header = match HeaderName::try_from(e.priority.header.as_str()) {
        Ok(h) => h,
        Err(_) => {
            v.error(
                raw,
                format!("{path}.enforcement.priority.header"),
                format!("invalid header name {:?}", e.priority.header),
            );
            HeaderName::from_static("x-accord-priority")
        }
    };
    (v.errors.len() == errors_before).then(|| RouteSlo {
        objective: Objective {
            availability,
            latency,
            window: slo_window,
            tiers,
            classification: Classification {
                throttled_burns_budget: slo.classification.throttled == RawThrottled::Bad,
                client_errors_are_bad: slo.classification.client_errors == RawClientErrors::Bad,
                cancelled_are_bad: slo.classification.cancelled == RawCancelled::Bad,
            },
        },
        enforcement: Enforcement {
            breach_window: e.breach_window.value.0,
            min_requests: e.min_requests.max(1),
            probe: e.probe.value.0,
            recovery: e.recovery.value.0,
            shedding,
            strict: e.strict,
        },
        priority: PriorityRule {
            header,
            low: e.priority.low.clone(),
            critical: e.priority.critical.clone(),
        },
    })
}

fn route_match(v: &mut Validator<'_>, raw: &RawMatch, path: &str) -> Option<RouteMatch> {
    let errors_before = v.errors.len();
    let host = match &raw.host {
        None => HostMatch::Any,
        Some(host) => {
            let text = host.value.to_ascii_lowercase();
            let (wildcard, name) = match text.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                v.error(host, format!("{path}.host"), format!("invalid host {:?}: write a host name, or *.domain for its subdomains (no port)", host.value));
            }
            if wildcard {
                HostMatch::Suffix(format!(".{name}"))
            } else {
                HostMatch::Exact(name.to_owned())
            }
        }
    };
    let path_match = match &raw.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            let at = format!("{path}.path");
            let text = match &p.value {
                RawPathMatch::Prefix(t) | RawPathMatch::Exact(t) | RawPathMatch::Template(t) => t,
            };
            if !text.starts_with('/') {
                v.error(p, &at, format!("path {text:?} must start with '/'"));
            }
            match &p.value {
                RawPathMatch::Prefix(t) => {
                    let trimmed = t.trim_end_matches('/');
                    PathMatch::Prefix(if trimmed.is_empty() {
                        "/".into()
                    } else {
                        trimmed.into()
                    })
                }
                RawPathMatch::Exact(t) => PathMatch::Exact(t.clone()),
                RawPathMatch::Template(t) => {
                    if let Err(e) = crate::proxy::router::check_template(t) {
                        v.error(p, &at, e);
                    }
                    PathMatch::Template(t.clone())
                }
            }
        }
    };
    let mut methods = Vec::new();
    if let Some(list) = &raw.methods {
        for (i, m) in list.value.iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => v.error(
                    list,
                    format!("{path}.methods[{i}]"),
                    format!("invalid method {m:?}"),
                ),
            }
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let at = format!("{path}.headers.{name}");
        let Ok(header) = HeaderName::try_from(name.as_str()) else {
            v.error(value, at, format!("invalid header name {name:?}"));
            continue;
        };
        let value = if value.value == "*" {
            None
        } else {
            match HeaderValue::from_str(&value.value) {
                Ok(hv) => Some(hv),
                Err(_) => {
                    v.error(value, at, "invalid header value");
                    continue;
                }
            }
        };
        headers.push(HeaderMatch {
            name: header,
            value,
        });
    }
    (v.errors.len() == errors_before).then_some(RouteMatch {
        host,
        path: path_match,
        methods,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use accord_policies::sla::objective::{AlertTier, SloWindow};

    use crate::config::{ProcessEnvironment, from_str};

    fn route_slo(slo: &str) -> Result<accord_policies::sla::Objective, String> {
        let yaml = format!(
            "listeners:\n  - address: 127.0.0.1:0\nbackends:\n  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\nroutes:\n  - id: r\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    slo: {slo}\n"
        );
        match from_str(&yaml, &ProcessEnvironment) {
            Ok(config) => Ok(config.routes[0].slo.as_ref().unwrap().objective.clone()),
            Err(errors) => Err(errors.render()),
        }
    }

    #[test]
    fn a_calendar_month_gets_the_30_day_tiers() {
        let objective =
            route_slo("{availability: 99.9%, window: month, time_zone: Europe/Paris}").unwrap();
        assert!(matches!(objective.window, SloWindow::CalendarMonth { .. }));
        assert_eq!(
            objective.tiers,
            AlertTier::defaults(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(objective.tiers[0].burn_rate, 14.4);
    }

    #[test]
    fn a_rolling_window_gets_tiers_scaled_to_it() {
        let objective = route_slo("{availability: 99%, window: 1d}").unwrap();
        assert_eq!(
            objective.tiers,
            AlertTier::defaults(Duration::from_secs(86_400))
        );
        assert!(objective.tiers.iter().all(|t| t.burn_rate >= 1.0));
    }

    #[test]
    fn explicit_tiers_below_one_or_longer_than_the_window_are_refused_with_their_place() {
        let below = route_slo(
            "{availability: 99%, window: 7d, alerts: [{severity: ticket, burn_rate: 0.5, long: 1d, short: 2h}]}",
        )
        .unwrap_err();
        assert!(
            below.contains("routes[0].slo.alerts[0].burn_rate: must be at least 1"),
            "{below}"
        );
        let too_long = route_slo(
            "{availability: 99%, window: 1d, alerts: [{severity: ticket, burn_rate: 1, long: 3d, short: 6h}]}",
        )
        .unwrap_err();
        assert!(
            too_long.contains("routes[0].slo.alerts[0].long: must not exceed the SLO window"),
            "{too_long}"
        );
    }

    #[test]
    fn cancelled_requests_are_excluded_unless_classified_bad() {
        assert!(
            !route_slo("{availability: 99%}")
                .unwrap()
                .classification
                .cancelled_are_bad
        );
        assert!(
            route_slo("{availability: 99%, classification: {cancelled: bad}}")
                .unwrap()
                .classification
                .cancelled_are_bad
        );
        let unknown =
            route_slo("{availability: 99%, classification: {cancelled: maybe}}").unwrap_err();
        assert!(
            unknown.contains("unknown variant `maybe`, expected one of excluded, bad"),
            "{unknown}"
        );
    }
}
