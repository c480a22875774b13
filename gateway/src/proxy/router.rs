//! The route table: which route takes a request.
//!
//! Precedence, most specific first: the host (exact name, then the longest `*.suffix`, then
//! routes for any host); within a host, the path (exact, then template, then the longest
//! segment-wise prefix); among routes with the same path condition, the first in the file whose
//! methods and headers match. Lookups cost a few hash probes per path segment, independent of
//! the number of routes.

use http::request::Parts;

use crate::config::model::{HostMatch, PathMatch, Route, RouteMatch};

/// The tables' maps: foldhash, not SipHash. Their keys come from the configuration; a client
/// only looks names up, and a lookup cannot make the map's collisions worse, so the hash need
/// not resist chosen keys. A request hashes its host and up to one key per path segment.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Routes indexed for lookup.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<String, Table>,
    /// `(".example.com", table)`, longest suffix first.
    suffix_hosts: Vec<(String, Table)>,
    any_host: Table,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Vec<Candidate>>,
    templates: matchit::Router<Vec<Candidate>>,
    prefixes: HashMap<String, Vec<Candidate>>,
    /// Templates inserted, to group routes sharing one template.
    template_keys: Vec<String>,
}

#[derive(Debug, Clone)]
struct Candidate {
    route: usize,
    matcher: RouteMatch,
}

/// The route a request matched, with its path parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched {
    /// Index into the route list the router was built from.
    pub route: usize,
    /// Template parameters, e.g. `("id", "42")` for `/users/{id}`.
    pub params: Vec<(String, String)>,
}

/// Checks a path template's syntax (used by validation).
pub fn check_template(template: &str) -> Result<(), String> {
    let mut probe = matchit::Router::new();
    probe
        .insert(template, ())
        .map_err(|e| format!("invalid path template {template:?}: {e}"))
}

impl Router {
    /// Indexes `routes`. Fails when two routes use templates that cannot coexist (such as
    /// `/users/{id}` and `/users/{name}` on the same host); the error names the second route.
    pub fn new(routes: &[Route]) -> Result<Self, (usize, String)> {
        let mut router = Self::default();
        for (index, route) in routes.iter().enumerate() {
            let table = match &route.matcher.host {
                HostMatch::Any => &mut router.any_host,
                HostMatch::Exact(host) => router.exact_hosts.entry(host.clone()).or_default(),
                HostMatch::Suffix(suffix) => {
                    match router.suffix_hosts.iter().position(|(s, _)| s == suffix) {
                        Some(i) => &mut router.suffix_hosts[i].1,
                        None => {
                            router.suffix_hosts.push((suffix.clone(), Table::default()));
                            let last = router.suffix_hosts.len() - 1;
                            &mut router.suffix_hosts[last].1
                        }
                    }
                }
            };
            let candidate = Candidate {
                route: index,
                matcher: route.matcher.clone(),
            };
            match &route.matcher.path {
                PathMatch::Exact(path) => {
                    table.exact.entry(path.clone()).or_default().push(candidate)
                }
                PathMatch::Prefix(prefix) => table
                    .prefixes
                    .entry(prefix.clone())
                    .or_default()
                    .push(candidate),
                PathMatch::Template(template) => {
                    if table.template_keys.contains(template) {
                        if let Ok(existing) = table.templates.at_mut(template) {
                            existing.value.push(candidate);
                        }
                    } else {
                        table
                            .templates
                            .insert(template.clone(), vec![candidate])
                            .map_err(|e| (index, format!("path template {template:?} conflicts with another route's: {e}")))?;
                        table.template_keys.push(template.clone());
                    }
                }
            }
        }
        router
            .suffix_hosts
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(router)
    }

    /// Finds the route for a request.
    pub fn route(&self, request: &Parts) -> Option<Matched> {
        let path = request.uri.path();
        // The host is read (and lower-cased) only when some route names one.
        let by_host = !self.exact_hosts.is_empty() || !self.suffix_hosts.is_empty();
        if let Some(host) = by_host.then(|| request_host(request)).flatten().as_deref() {
            if let Some(found) = self
                .exact_hosts
                .get(host)
                .and_then(|t| t.route(path, request))
            {
                return Some(found);
            }
            for (suffix, table) in &self.suffix_hosts {
                if host.ends_with(suffix.as_str())
                    && let Some(found) = table.route(path, request)
                {
                    return Some(found);
                }
            }
        }
        self.any_host.route(path, request)
    }
}

impl Table {
    fn route(&self, path: &str, request: &Parts) -> Option<Matched> {
        if let Some(found) = self.exact.get(path).and_then(|c| first_match(c, request)) {
            return Some(Matched {
                route: found,
                params: Vec::new(),
            });
        }
        if let Ok(hit) = self.templates.at(path)
            && let Some(found) = first_match(hit.value, request)
        {
            let params = hit
                .params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            return Some(Matched {
                route: found,
                params,
            });
        }
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(found) = self.prefixes.get(key).and_then(|c| first_match(c, request)) {
                return Some(Matched {
                    route: found,
                    params: Vec::new(),
                });
            }
            if candidate.is_empty() {
                return None;
            }
            // A byte search: `rsplit_once('/')` costs more than the rest of the lookup.
            let parent = candidate.bytes().rposition(|b| b == b'/').unwrap_or(0);
            candidate = candidate.get(..parent).unwrap_or_default();
        }
    }
}

fn first_match(candidates: &[Candidate], request: &Parts) -> Option<usize> {
    candidates
        .iter()
        .find(|c| {
            (c.matcher.methods.is_empty() || c.matcher.methods.contains(&request.method))
                && c.matcher.headers.iter().all(|h| match &h.value {
                    None => request.headers.contains_key(&h.name),
                    Some(value) => request.headers.get_all(&h.name).iter().any(|v| v == value),
                })
        })
        .map(|c| c.route)
}

/// The request's host, lower-cased, without port: the `Host` header, or the URI's authority
/// (HTTP/2's `:authority`).
pub fn request_host(request: &Parts) -> Option<String> {
    let raw = request
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))?;
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                raw
            }
        }),
    };
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::HeaderMatch;
    use http::Method;
    use std::sync::Arc;

    fn route(
        id: &str,
        host: HostMatch,
        path: PathMatch,
        methods: &[Method],
        headers: Vec<HeaderMatch>,
    ) -> Route {
        Route {
            id: Arc::from(id),
            matcher: RouteMatch {
                host,
                path,
                methods: methods.to_vec(),
                headers,
            },
            backends: Vec::new(),
            timeout: std::time::Duration::from_secs(1),
            per_try_timeout: None,
            retry: Default::default(),
            retry_budget: Default::default(),
            max_body: 0,
            replay_buffer: 0,
            slo: None,
            plugins: Vec::new(),
        }
    }

    fn parts(method: Method, host: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn routes() -> Vec<Route> {
        use HostMatch::{Any, Suffix};
        use PathMatch::{Exact, Prefix, Template};
        vec![
            route("catch-all", Any, Prefix("/".into()), &[], vec![]),
            route("api", Any, Prefix("/api".into()), &[], vec![]),
            route(
                "api-users",
                Any,
                Template("/api/users/{id}".into()),
                &[Method::GET],
                vec![],
            ),
            route("api-health", Any, Exact("/api/health".into()), &[], vec![]),
            route(
                "canary",
                Any,
                Prefix("/api".into()),
                &[],
                vec![HeaderMatch {
                    name: "x-canary".parse().unwrap(),
                    value: Some("1".parse().unwrap()),
                }],
            ),
            route(
                "tenant",
                Suffix(".example.com".into()),
                Prefix("/".into()),
                &[],
                vec![],
            ),
            route(
                "admin-host",
                HostMatch::Exact("admin.example.com".into()),
                Prefix("/".into()),
                &[],
                vec![],
            ),
        ]
    }

    fn find(
        router: &Router,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let routes = routes();
        router
            .route(&parts(method, host, path, headers))
            .map(|m| routes[m.route].id.to_string())
    }

    #[test]
    fn the_most_specific_route_wins() {
        let router = Router::new(&routes()).unwrap();
        let get = Method::GET;
        assert_eq!(
            find(&router, get.clone(), "x", "/api/health", &[]).unwrap(),
            "api-health"
        );
        assert_eq!(
            find(&router, get.clone(), "x", "/api/users/42", &[]).unwrap(),
            "api-users"
        );
        assert_eq!(
            find(&router, Method::DELETE, "x", "/api/users/42", &[]).unwrap(),
            "api"
        );
        assert_eq!(
            find(&router, get.clone(), "x", "/api/other/deep", &[]).unwrap(),
            "api"
        );
        assert_eq!(
            find(&router, get.clone(), "x", "/apix", &[]).unwrap(),
            "catch-all"
        );
        assert_eq!(
            find(&router, get.clone(), "x", "/api/", &[]).unwrap(),
            "api"
        );
        assert_eq!(
            find(&router, get.clone(), "a.example.com", "/api", &[]).unwrap(),
            "tenant"
        );
        assert_eq!(
            find(&router, get.clone(), "ADMIN.example.com:8443", "/", &[]).unwrap(),
            "admin-host"
        );
        assert_eq!(
            find(&router, get.clone(), "example.com", "/", &[]).unwrap(),
            "catch-all"
        );
    }

    #[test]
    fn header_conditions_and_file_order_break_ties() {
        let router = Router::new(&routes()).unwrap();
        // "api" is listed before "canary", so it wins even with the header...
        assert_eq!(
            find(&router, Method::GET, "x", "/api/x", &[("x-canary", "1")]).unwrap(),
            "api"
        );
        // ...and a route with a header condition only matches when the header is there.
        let mut reordered = routes();
        reordered.swap(1, 4);
        let router = Router::new(&reordered).unwrap();
        let hit = router
            .route(&parts(Method::GET, "x", "/api/x", &[("x-canary", "1")]))
            .unwrap();
        assert_eq!(reordered[hit.route].id.as_ref(), "canary");
        let miss = router
            .route(&parts(Method::GET, "x", "/api/x", &[]))
            .unwrap();
        assert_eq!(reordered[miss.route].id.as_ref(), "api");
    }

    #[test]
    fn template_parameters_are_returned_and_conflicts_rejected() {
        let router = Router::new(&routes()).unwrap();
        let hit = router
            .route(&parts(Method::GET, "x", "/api/users/7", &[]))
            .unwrap();
        assert_eq!(hit.params, vec![("id".to_owned(), "7".to_owned())]);
        let mut conflicting = routes();
        conflicting.push(route(
            "clash",
            HostMatch::Any,
            PathMatch::Template("/api/users/{name}".into()),
            &[],
            vec![],
        ));
        let (index, message) = Router::new(&conflicting).unwrap_err();
        assert_eq!(index, 7);
        assert!(message.contains("conflicts"), "{message}");
    }

    #[test]
    fn http2_authority_is_the_host() {
        let router = Router::new(&routes()).unwrap();
        let request = http::Request::builder()
            .uri("https://admin.example.com/x")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            routes()[router.route(&request).unwrap().route].id.as_ref(),
            "admin-host"
        );
    }
}
