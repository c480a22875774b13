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

mod backends;
mod cluster;
mod notifications;
mod plugins;
mod routes;
mod slo;

use super::error::{ConfigError, ConfigErrors};
use super::model::*;
use super::raw::*;
use crate::config::types::{Id, Located};

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
    let listeners = check_listeners(&mut v, raw);
    let (admin_address, token) = check_admin(&mut v, raw, &listeners);
    let limits = check_limits(&mut v, raw);
    let backends = backends::check_backends(&mut v, raw);
    let plugins = plugins::check_plugins(&mut v, raw);
    let routes = routes::check_routes(&mut v, raw);
    let sla_history = check_sla_history(&mut v, raw);
    let cluster = cluster::check_cluster(&mut v, raw);
    let notifications = notifications::check_notifications(&mut v, raw);
    let traces = notifications::check_traces(&mut v, raw);
    let log = Log {
        format: match raw.log.format {
            RawLogFormat::Text => LogFormat::Text,
            RawLogFormat::Json => LogFormat::Json,
        },
        level: raw.log.level.clone(),
        access_log: raw.log.access_log,
    };
    if v.errors.is_empty() {
        check_route_table(&mut v, raw, &routes);
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
            sloth_series: raw.admin.sloth_series,
        },
        limits,
        log,
        sla_history,
        cluster,
        notifications,
        traces,
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

/// At least one listener; addresses parse and no two listeners share one (port 0 asks the OS
/// for a free port, so it never clashes).
fn check_listeners(v: &mut Validator<'_>, raw: &RawConfig) -> Vec<Listener> {
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

    listeners
}

/// The admin address parses and is not a traffic listener's; the token resolves; an admin API
/// reachable from other hosts must have a token.
fn check_admin(
    v: &mut Validator<'_>,
    raw: &RawConfig,
    listeners: &[Listener],
) -> (Option<SocketAddr>, Option<Secret>) {
    let seen_addresses: HashSet<SocketAddr> = listeners.iter().map(|l| l.address).collect();
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

    (admin_address, token)
}

/// Request head limits, connection limits and the drain grace period.
fn check_limits(v: &mut Validator<'_>, raw: &RawConfig) -> Limits {
    let limits = Limits {
        max_header_size: usize::try_from(raw.limits.max_header_size.value.0).unwrap_or(usize::MAX),
        header_read_timeout: raw.limits.header_read_timeout.value.0,
        max_connections: raw.limits.max_connections.value,
        shutdown_grace: raw.limits.shutdown_grace.value.0,
        plugin_instances: raw.limits.plugin_instances.value,
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
    if !(1..=100_000).contains(&limits.plugin_instances) {
        v.error(
            &raw.limits.plugin_instances,
            "limits.plugin_instances",
            "must be between 1 and 100000",
        );
    }

    limits
}

/// History storage: at least a second between flushes.
fn check_sla_history(v: &mut Validator<'_>, raw: &RawConfig) -> SlaHistory {
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
    sla_history
}

/// The routes form one table: no two can claim the same requests (only checked once every
/// route is valid on its own).
fn check_route_table(v: &mut Validator<'_>, raw: &RawConfig, routes: &[Route]) {
    if let Err((index, message)) = crate::proxy::router::Router::new(routes) {
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
}

/// For the unit tests of every check: a configuration with one listener, one backend `app`
/// and one route `r`, with `extra` YAML spliced in at the place each test needs.
#[cfg(test)]
pub(super) mod fixture {
    use super::*;

    /// The whole file: `top` after the listeners, `backend` inside `app`'s `http:`, `route`
    /// inside route `r`.
    pub(crate) fn config(top: &str, backend: &str, route: &str) -> String {
        format!(
            "listeners:\n  - address: 127.0.0.1:0\n{top}backends:\n  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\n{backend}routes:\n  - id: r\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n{route}"
        )
    }

    /// The errors of `yaml`, rendered, or the configuration.
    pub(crate) fn check(yaml: &str) -> Result<Config, String> {
        crate::config::from_str(yaml, &ProcessEnvironment).map_err(|e| e.render())
    }

    /// Asserts that `yaml` is refused with `expected` somewhere in its errors.
    pub(crate) fn refused(yaml: &str, expected: &str) {
        match check(yaml) {
            Ok(_) => panic!("accepted, expected {expected:?}:\n{yaml}"),
            Err(errors) => assert!(errors.contains(expected), "{expected:?} not in:\n{errors}"),
        }
    }
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

    use super::fixture::{check, config, refused};

    #[test]
    fn at_least_one_listener_and_no_two_on_one_address() {
        refused(
            &config("", "", "")
                .replace("listeners:\n  - address: 127.0.0.1:0\n", "listeners: []\n"),
            "listeners: at least one listener is required",
        );
        refused(
            &config("", "", "").replace(
                "  - address: 127.0.0.1:0\n",
                "  - address: 127.0.0.1:8080\n  - address: 127.0.0.1:8080\n",
            ),
            "listeners[1].address: address 127.0.0.1:8080 is used by another listener",
        );
    }

    #[test]
    fn the_admin_api_is_not_a_listener_and_needs_a_token_off_loopback() {
        let yaml = config("", "", "").replace(
            "  - address: 127.0.0.1:0\n",
            "  - address: 127.0.0.1:8080\nadmin: {address: 127.0.0.1:8080}\n",
        );
        refused(
            &yaml,
            "admin.address: address 127.0.0.1:8080 is also a traffic listener",
        );
        refused(
            &config("admin: {address: 0.0.0.0:9901}\n", "", ""),
            "is reachable from other hosts: set admin.token_env or admin.token_file",
        );
    }

    #[test]
    fn limits_and_history_have_floors() {
        refused(
            &config("limits: {max_header_size: 1KiB}\n", "", ""),
            "limits.max_header_size: must be at least 8KiB",
        );
        refused(
            &config("limits: {max_connections: 0}\n", "", ""),
            "limits.max_connections: must be at least 1",
        );
        refused(
            &config("limits: {plugin_instances: 0}\n", "", ""),
            "limits.plugin_instances: must be between 1 and 100000",
        );
        refused(
            &config("sla_history: {flush_interval: 500ms}\n", "", ""),
            "sla_history.flush_interval: must be at least 1s",
        );
        assert!(
            check(&config("", "", "")).is_ok(),
            "the fixture itself is valid"
        );
    }
}
