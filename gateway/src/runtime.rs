//! A `Runtime` is one generation of the configuration, built and ready to serve: the router,
//! each route's failover over its backends, and the backends themselves. A reload builds a new
//! runtime off the request path and swaps it in atomically; requests already running keep the
//! `Arc<Runtime>` they started with, so they finish on the configuration they began under.

use std::collections::HashMap;
use std::sync::Arc;

use accord_adapters::{Backend, Failover, RetryBudget, RouteBackend};
use accord_policies::sla::{RouteSla, SlaEngine};

use crate::config::Config;
use crate::config::model::{BackendConfig, Route};
use crate::metrics::{Registry, RouteStats};
use crate::router::Router;

/// A route ready to serve.
#[derive(Debug)]
pub struct RouteRuntime {
    config: Route,
    failover: Failover,
    stats: Arc<RouteStats>,
    sla: Option<Arc<RouteSla>>,
}

impl RouteRuntime {
    /// The route id.
    pub fn id(&self) -> &Arc<str> {
        &self.config.id
    }

    /// The route's settings.
    pub fn config(&self) -> &Route {
        &self.config
    }

    /// Retries and failover over the route's backends.
    pub fn failover(&self) -> &Failover {
        &self.failover
    }

    /// The route's counters.
    pub fn stats(&self) -> &Arc<RouteStats> {
        &self.stats
    }

    /// The route's SLA state, when it has an objective.
    pub fn sla(&self) -> Option<&Arc<RouteSla>> {
        self.sla.as_ref()
    }

    /// The position of a backend in the route's configured list.
    pub fn backend_index(&self, id: &str) -> Option<usize> {
        self.config.backends.iter().position(|b| &*b.backend == id)
    }
}

/// One generation of the configuration, ready to serve.
#[derive(Debug)]
pub struct Runtime {
    config: Config,
    router: Router,
    routes: Vec<RouteRuntime>,
    backends: Vec<Arc<Backend>>,
    /// The settings each backend was built from, to reuse unchanged backends on reload.
    backend_configs: HashMap<Arc<str>, BackendConfig>,
}

/// A runtime could not be built (a backend's TLS files are unusable, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

impl Runtime {
    /// Builds a runtime. Backends whose settings equal those in `previous` are reused as they
    /// are, keeping their connection pools, health and ejection state.
    pub async fn build(
        config: Config,
        registry: &Registry,
        sla: &SlaEngine,
        previous: Option<&Runtime>,
    ) -> Result<Self, BuildError> {
        let router = Router::new(&config.routes).map_err(|(_, message)| BuildError(message))?;
        let mut backends = Vec::new();
        let mut by_id: HashMap<Arc<str>, Arc<Backend>> = HashMap::new();
        let mut backend_configs = HashMap::new();
        for (id, backend_config) in &config.backends {
            let reused = previous.and_then(|p| {
                (p.backend_configs.get(id) == Some(backend_config))
                    .then(|| p.backends.iter().find(|b| b.id() == id).cloned())
                    .flatten()
            });
            let backend = match reused {
                Some(backend) => backend,
                None => Arc::new(build_backend(id, backend_config, registry).await?),
            };
            by_id.insert(id.clone(), backend.clone());
            backend_configs.insert(id.clone(), backend_config.clone());
            backends.push(backend);
        }
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let route_sla = route.slo.as_ref().map(|slo| {
                    let ids: Vec<Arc<str>> =
                        route.backends.iter().map(|b| b.backend.clone()).collect();
                    sla.route(
                        &route.id,
                        slo.objective.clone(),
                        slo.enforcement.clone(),
                        &ids,
                    )
                });
                let route_backends = route
                    .backends
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        by_id.get(&r.backend).map(|backend| RouteBackend {
                            backend: backend.clone(),
                            priority: r.priority,
                            weight: r.weight,
                            steering: route_sla.as_ref().map(|s| {
                                s.backends()[i].clone() as Arc<dyn accord_adapters::Steering>
                            }),
                        })
                    })
                    .collect();
                RouteRuntime {
                    failover: Failover::new(
                        route_backends,
                        route.retry.clone(),
                        RetryBudget::new(route.retry_budget),
                        route.per_try_timeout,
                    ),
                    stats: registry.route(&route.id),
                    sla: route_sla,
                    config: route.clone(),
                }
            })
            .collect();
        Ok(Self {
            config,
            router,
            routes,
            backends,
            backend_configs,
        })
    }

    /// The configuration this runtime was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The route table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Routes, in the configuration's order (the router's indexes point here).
    pub fn routes(&self) -> &[RouteRuntime] {
        &self.routes
    }

    /// Backends, in the configuration's order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Ids of the routes that have an objective.
    pub fn slo_route_ids(&self) -> Vec<Arc<str>> {
        self.routes
            .iter()
            .filter(|r| r.sla.is_some())
            .map(|r| r.id().clone())
            .collect()
    }
}

async fn build_backend(
    id: &Arc<str>,
    config: &BackendConfig,
    registry: &Registry,
) -> Result<Backend, BuildError> {
    match config {
        BackendConfig::Http(http) => {
            accord_adapters::http::build(id, http.clone(), registry.backend(id))
                .await
                .map_err(|e| BuildError(e.to_string()))
        }
    }
}
