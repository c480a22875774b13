//! Routes: their match (host, path, methods, headers), backends by priority and weight,
//! timeouts, retries and the retry budget, body limits, plugins and objective.

use super::*;

/// Every route, in file order; ids are unique.
pub(super) fn check_routes(v: &mut Validator<'_>, raw: &RawConfig) -> Vec<Route> {
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
        if let Some(route) = route_config(v, route, &path, &raw.backends, &raw.plugins) {
            routes.push(route);
        }
    }

    routes
}

pub(super) fn route_config(
    v: &mut Validator<'_>,
    raw: &RawRoute,
    path: &str,
    backends: &std::collections::BTreeMap<String, Located<RawBackend>>,
    plugins: &std::collections::BTreeMap<String, Located<RawPlugin>>,
) -> Option<Route> {
    let errors_before = v.errors.len();
    let matcher = route_match(v, &raw.matcher, &format!("{path}.match"));
    let refs = check_backend_refs(v, raw, path, backends);
    let on = check_retry_on(v, raw, path);
    check_route_limits(v, raw, path);
    let slo = raw
        .slo
        .as_ref()
        .and_then(|slo| super::slo::slo_config(v, slo, &format!("{path}.slo")));
    let chain = check_plugin_chain(v, raw, path, plugins);
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

/// "(defined backends: a, b)" or "(no backends are defined)", for an unknown name.
fn defined(what: &str, names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let known: Vec<String> = names.map(|n| n.as_ref().to_owned()).collect();
    if known.is_empty() {
        format!("no {what} are defined")
    } else {
        format!("defined {what}: {}", known.join(", "))
    }
}

/// At least one backend; each defined, listed once, with a weight of at least 1.
fn check_backend_refs(
    v: &mut Validator<'_>,
    raw: &RawRoute,
    path: &str,
    backends: &std::collections::BTreeMap<String, Located<RawBackend>>,
) -> Vec<RouteBackendRef> {
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
            let hint = defined("backends", backends.keys());
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
        let canary = entry
            .canary
            .as_ref()
            .and_then(|canary| check_canary(v, canary, &format!("{path}.backends[{i}].canary")));
        refs.push(RouteBackendRef {
            backend: Arc::from(name.as_str()),
            priority: entry.priority.unwrap_or(i as u32),
            weight: entry.weight.value.max(1),
            canary,
        });
    }
    // At most one canary, on a route with an objective and another backend.
    let canaries: Vec<(usize, &Located<RawCanary>)> = raw
        .backends
        .value
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.canary.as_ref().map(|c| (i, c)))
        .collect();
    let problem = match canaries.as_slice() {
        [] => None,
        [_, (second, c), ..] => Some((*second, *c, "a route has at most one canary")),
        [(first, c)] if raw.slo.is_none() => Some((
            *first,
            *c,
            "a canary is judged on the route's objective: give the route an slo",
        )),
        [(first, c)] if raw.backends.value.len() < 2 => Some((
            *first,
            *c,
            "a canary needs another backend to take the rest of the traffic",
        )),
        [_] => None,
    };
    if let Some((i, c, message)) = problem {
        v.error(c, format!("{path}.backends[{i}].canary"), message);
    }

    refs
}

/// A canary's steps, timing, judgement and sticky key.
fn check_canary(v: &mut Validator<'_>, raw: &Located<RawCanary>, at: &str) -> Option<CanaryConfig> {
    use accord_policies::sla::canary::{CanarySpec, Compare, OnBreach};
    let c = &raw.value;
    let errors_before = v.errors.len();
    let steps: Vec<f64> = c.steps.value.iter().map(|s| s.value.0).collect();
    if steps.is_empty() {
        v.error(
            &c.steps,
            format!("{at}.steps"),
            "at least one step is required (the last 100%)",
        );
    }
    for (i, step) in c.steps.value.iter().enumerate() {
        if step.value.0 <= 0.0 {
            v.error(
                step,
                format!("{at}.steps[{i}]"),
                "a step's share must be above 0%",
            );
        } else if i > 0 && step.value.0 <= steps[i - 1] {
            v.error(
                step,
                format!("{at}.steps[{i}]"),
                format!(
                    "steps must increase: {} after {}",
                    step.value,
                    c.steps.value[i - 1].value
                ),
            );
        }
    }
    if let Some(last) = c.steps.value.last()
        && last.value.0 < 1.0
    {
        v.error(last, format!("{at}.steps[{}]", c.steps.value.len() - 1), format!("the last step must be 100% (it is {}): a canary that passes every step takes all the traffic", last.value));
    }
    let step_for = c.step_for.value.0;
    if step_for < Duration::from_secs(1) || step_for > Duration::from_secs(7 * 86_400) {
        v.error(
            &c.step_for,
            format!("{at}.step_for"),
            "must be between 1s and 7d",
        );
    }
    if c.min_requests.value == 0 {
        v.error(
            &c.min_requests,
            format!("{at}.min_requests"),
            "must be at least 1 (too little traffic must never promote)",
        );
    }
    let sticky = c.sticky.as_ref().and_then(|key| {
        let at = format!("{at}.sticky");
        match (
            &key.value.header,
            &key.value.cookie,
            key.value.client_address,
        ) {
            (Some(header), None, false) => match HeaderName::try_from(header.as_str()) {
                Ok(name) => Some(accord_adapters::http::HashKey::Header(name)),
                Err(_) => {
                    v.error(
                        key,
                        format!("{at}.header"),
                        format!("invalid header name {header:?}"),
                    );
                    None
                }
            },
            (None, Some(cookie), false) => {
                Some(accord_adapters::http::HashKey::Cookie(cookie.clone()))
            }
            (None, None, true) => Some(accord_adapters::http::HashKey::ClientAddress),
            _ => {
                v.error(
                    key,
                    at,
                    "set exactly one of header, cookie or client_address",
                );
                None
            }
        }
    });
    (v.errors.len() == errors_before).then(|| CanaryConfig {
        spec: CanarySpec {
            steps,
            step_for,
            min_requests: c.min_requests.value,
            compare: match c.compare {
                RawCompare::Baseline => Compare::Baseline,
                RawCompare::Objective => Compare::Objective,
            },
            on_breach: match c.on_breach {
                RawOnBreach::Rollback => OnBreach::Rollback,
                RawOnBreach::Pause => OnBreach::Pause,
            },
        },
        sticky,
    })
}

/// What is retried: named conditions and 4xx/5xx statuses.
fn check_retry_on(v: &mut Validator<'_>, raw: &RawRoute, path: &str) -> RetryOn {
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
    on
}

/// Timeouts above 0 (the per-try one within the route's), and a replay buffer within both
/// `max_body` and 16MiB.
fn check_route_limits(v: &mut Validator<'_>, raw: &RawRoute, path: &str) {
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
}

/// Each plugin of the chain defined and listed once.
fn check_plugin_chain(
    v: &mut Validator<'_>,
    raw: &RawRoute,
    path: &str,
    plugins: &std::collections::BTreeMap<String, Located<RawPlugin>>,
) -> Vec<Arc<str>> {
    let mut chain: Vec<Arc<str>> = Vec::new();
    if let Some(list) = &raw.plugins {
        for (i, name) in list.value.iter().enumerate() {
            if !plugins.contains_key(&name.value) {
                let hint = defined("plugins", plugins.keys());
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
    chain
}

/// Where a route applies: a host (or `*.domain`), a path (prefix, exact or template), methods
/// and headers.
fn route_match(v: &mut Validator<'_>, raw: &RawMatch, path: &str) -> Option<RouteMatch> {
    let errors_before = v.errors.len();
    let host = check_host(v, raw, path);
    let path_match = check_path(v, raw, path);
    let methods = check_methods(v, raw, path);
    let headers = check_headers(v, raw, path);
    (v.errors.len() == errors_before).then_some(RouteMatch {
        host,
        path: path_match,
        methods,
        headers,
    })
}

/// A host name, or `*.domain` for its subdomains, without a port.
fn check_host(v: &mut Validator<'_>, raw: &RawMatch, path: &str) -> HostMatch {
    match &raw.host {
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
    }
}

/// A path from the root; a template's parameters well formed.
fn check_path(v: &mut Validator<'_>, raw: &RawMatch, path: &str) -> PathMatch {
    match &raw.path {
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
    }
}

/// HTTP methods.
fn check_methods(v: &mut Validator<'_>, raw: &RawMatch, path: &str) -> Vec<Method> {
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
    methods
}

/// Header names with a value to equal, or `*` for any value.
fn check_headers(v: &mut Validator<'_>, raw: &RawMatch, path: &str) -> Vec<HeaderMatch> {
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
    headers
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{check, config, refused};

    #[test]
    fn routes_name_defined_backends_and_plugins_once() {
        refused(
            &config("", "", "").replace("[{backend: app}]", "[{backend: ap}]"),
            "routes[0].backends[0].backend: unknown backend \"ap\" (defined backends: app)",
        );
        refused(
            &config("", "", "    plugins: [guard]\n"),
            "routes[0].plugins[0]: unknown plugin \"guard\"",
        );
        let twice = config("", "", "")
            + "  - id: r\n    match: {path: {prefix: /b}}\n    backends: [{backend: app}]\n";
        refused(&twice, "routes[1].id: duplicate route id \"r\"");
    }

    /// A route with backends `app` and `v2`, `v2` a canary with `canary` (flow YAML), and
    /// `route` (more of the route).
    fn with_canary(canary: &str, route: &str) -> String {
        config(
            "",
            "  v2:\n    http:\n      addresses: [\"127.0.0.1:2\"]\n",
            route,
        )
        .replace(
            "[{backend: app}]",
            &format!("[{{backend: app}}, {{backend: v2, canary: {canary}}}]"),
        )
    }

    #[test]
    fn a_canary_steps_up_to_100_percent_on_a_route_with_an_objective() {
        let slo = "    slo: {availability: 99.9%}\n";
        let ok = check(&with_canary("{steps: [1%, 5%, 100%], step_for: 2m, compare: objective, on_breach: pause, sticky: {header: x-user}}", slo)).unwrap();
        let canary = ok.routes[0].backends[1].canary.as_ref().unwrap();
        assert_eq!(canary.spec.steps, [0.01, 0.05, 1.0]);
        assert_eq!(canary.spec.step_for, std::time::Duration::from_secs(120));
        assert_eq!(canary.spec.min_requests, 200, "the default");
        refused(
            &with_canary("{steps: [5%, 1%, 100%]}", slo),
            "routes[0].backends[1].canary.steps[1]: steps must increase: 1% after 5%",
        );
        refused(
            &with_canary("{steps: [1%, 50%]}", slo),
            "routes[0].backends[1].canary.steps[1]: the last step must be 100% (it is 50%)",
        );
        refused(
            &with_canary("{steps: [0%, 100%]}", slo),
            "routes[0].backends[1].canary.steps[0]: a step's share must be above 0%",
        );
        refused(
            &with_canary("{steps: [100%], step_for: 0s}", slo),
            "routes[0].backends[1].canary.step_for: must be between 1s and 7d",
        );
        refused(
            &with_canary("{steps: [100%], min_requests: 0}", slo),
            "routes[0].backends[1].canary.min_requests: must be at least 1",
        );
        refused(
            &with_canary("{steps: [100%], sticky: {header: x, cookie: y}}", slo),
            "routes[0].backends[1].canary.sticky: set exactly one of header, cookie or client_address",
        );
        refused(
            &with_canary("{steps: [100%]}", ""),
            "routes[0].backends[1].canary: a canary is judged on the route's objective: give the route an slo",
        );
        refused(
            &with_canary("{steps: [100%], compare: vibes}", slo),
            "unknown variant `vibes`",
        );
    }

    #[test]
    fn timeouts_and_bodies_are_consistent() {
        refused(
            &config("", "", "    timeout: 0s\n"),
            "routes[0].timeout: must be more than 0",
        );
        refused(
            &config("", "", "    timeout: 1s\n    per_try_timeout: 2s\n"),
            "routes[0].per_try_timeout: must be more than 0 and at most the route's timeout",
        );
        refused(
            &config("", "", "    max_body: 1KiB\n    replay_buffer: 2KiB\n"),
            "routes[0].replay_buffer: must not exceed max_body",
        );
        let budget = check(&config("", "", "    retry: {budget_min_per_second: 0}\n")).unwrap();
        assert_eq!(budget.routes[0].retry_budget.min_per_second, 0.0);
        let default = check(&config("", "", "")).unwrap();
        assert_eq!(default.routes[0].retry_budget.min_per_second, 10.0);
    }

    /// One case per route rule not covered above: the route's extra settings (or a rewrite of
    /// the fixture) and the error expected.
    #[test]
    fn every_route_rule() {
        let base = config("", "", "");
        let cases = [
            (
                base.replace("[{backend: app}]", "[]"),
                "routes[0].backends: at least one backend is required",
            ),
            (
                base.replace("[{backend: app}]", "[{backend: app}, {backend: app}]"),
                "routes[0].backends[1].backend: backend \"app\" is listed twice",
            ),
            (
                base.replace("[{backend: app}]", "[{backend: app, weight: 0}]"),
                "routes[0].backends[0].weight: weight must be at least 1",
            ),
            (
                config("", "", "    max_body: 64MiB\n    replay_buffer: 32MiB\n"),
                "routes[0].replay_buffer: must be at most 16MiB",
            ),
            (
                config(
                    "plugins:\n  g: {path: g.wasm}\n",
                    "",
                    "    plugins: [g, g]\n",
                ),
                "routes[0].plugins[1]: plugin \"g\" is listed twice",
            ),
            (
                base.replace("{path: {prefix: /}}", "{host: \"api.example.com:443\"}"),
                "routes[0].match.host: invalid host \"api.example.com:443\"",
            ),
            (
                base.replace("{path: {prefix: /}}", "{methods: [GET, \"BAD METHOD\"]}"),
                "routes[0].match.methods[1]: invalid method \"BAD METHOD\"",
            ),
            (
                base.replace("{path: {prefix: /}}", "{headers: {\"bad header\": x}}"),
                "routes[0].match.headers.bad header: invalid header name",
            ),
            (
                base.replace("{path: {prefix: /}}", "{path: {template: \"/u/{\"}}"),
                "routes[0].match.path",
            ),
        ];
        for (yaml, expected) in cases {
            refused(&yaml, expected);
        }
    }

    #[test]
    fn matches_are_well_formed_and_do_not_conflict() {
        refused(
            &config("", "", "").replace("{path: {prefix: /}}", "{path: {prefix: orders}}"),
            "routes[0].match.path: path \"orders\" must start with '/'",
        );
        refused(
            &config("", "", "    retry: {on: [sometimes]}\n"),
            "routes[0].retry.on[0]: unknown retry condition \"sometimes\"",
        );
        let conflict = config("", "", "")
            .replace("{path: {prefix: /}}", "{path: {template: \"/u/{id}\"}}")
            + "  - id: s\n    match: {path: {template: \"/u/{name}\"}}\n    backends: [{backend: app}]\n";
        refused(
            &conflict,
            "routes[1].match.path: path template \"/u/{name}\" conflicts",
        );
    }
}
