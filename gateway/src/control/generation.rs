//! A [`Generation`] is one generation of the configuration, built and ready to serve: the
//! router, each route's failover over its backends ([`LiveRoute`]), and the backends
//! themselves. A reload builds a new generation off the request path and swaps it in atomically; requests already running keep the
//! `Arc<Generation>` they started with, so they finish on the configuration they began under.

use std::collections::HashMap;
use std::sync::Arc;

use accord_adapters::{Backend, Failover, RetryBudget, RouteBackend};
use accord_policies::plugin::{Plugin, PluginEngine, PluginError, PluginShares};
use accord_policies::sla::{RouteSla, SlaEngine};

use crate::config::Config;
use crate::config::model::{BackendConfig, PluginConfig, Route};
use crate::proxy::router::Router;
use crate::stats::{GatewayStats, Registry, RouteStats};
use accord_adapters::backend::RouteKey;

/// A route ready to serve.
#[derive(Debug)]
pub struct LiveRoute {
    config: Route,
    failover: Failover,
    stats: Arc<RouteStats>,
    sla: Option<Arc<RouteSla>>,
    plugins: Vec<Arc<Plugin>>,
    /// Backend ids in the configured order, built once and lent to every plugin call.
    backend_ids: Arc<[Arc<str>]>,
    /// The route as API Gateway would name it, for event-mapping adapters.
    route_key: RouteKey,
    /// The most response body any plugin of the chain reads (0: none is read).
    response_body_limit: usize,
    /// Whether any plugin of the chain has `on-response`: if none has, the response chain is
    /// skipped.
    judges_responses: bool,
    /// The most request body any plugin of the chain reads (0: none is read).
    request_body_limit: usize,
}

impl LiveRoute {
    /// The route id.
    pub fn id(&self) -> &Arc<str> {
        &self.config.id
    }

    /// The route's settings.
    pub fn config(&self) -> &Route {
        &self.config
    }

    /// The route as API Gateway would name it (`routeKey`).
    pub fn route_key(&self) -> &RouteKey {
        &self.route_key
    }

    /// Whether any of the route's plugins judges responses (has `on-response`).
    pub fn judges_responses(&self) -> bool {
        self.judges_responses
    }

    /// How much of a response body the route's plugins read (0: none).
    pub fn response_body_limit(&self) -> usize {
        self.response_body_limit
    }

    /// How much of a request body the route's plugins read (0: none).
    pub fn request_body_limit(&self) -> usize {
        self.request_body_limit
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

    /// The route's plugin chain, in order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The route's backend ids, in its configured order.
    pub fn backend_ids(&self) -> &Arc<[Arc<str>]> {
        &self.backend_ids
    }

    /// The position of a backend in the route's configured list.
    pub fn backend_index(&self, id: &str) -> Option<usize> {
        self.config.backends.iter().position(|b| &*b.backend == id)
    }
}

/// One generation of the configuration, ready to serve.
#[derive(Debug)]
pub struct Generation {
    config: Config,
    router: Router,
    routes: Vec<LiveRoute>,
    backends: Vec<Arc<Backend>>,
    /// The settings each backend was built from, to reuse unchanged backends on reload.
    backend_configs: HashMap<Arc<str>, BackendConfig>,
    /// Loaded plugins, with the settings and file hash they were loaded from.
    plugins: Vec<LoadedPlugin>,
    /// The tracer, when `traces` is configured (one per generation: a reload applies new
    /// settings, and the old exporter sends what it holds and ends with its generation).
    tracer: Option<Arc<crate::traces::Tracer>>,
    /// The gateway-wide counters (the registry's, which outlive generations): a request
    /// reaches them through the generation it holds anyway, not through a handle of its own.
    gateway_stats: Arc<GatewayStats>,
}

/// A plugin as loaded into a generation.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// Its id.
    pub id: Arc<str>,
    /// Its settings.
    pub config: PluginConfig,
    /// A hash of the component file's bytes.
    pub file_hash: u64,
    /// The plugin.
    pub plugin: Arc<Plugin>,
}

/// A generation could not be built, and which part failed; the cause is kept as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The routes cannot form one table (a conflict the validation could not see).
    #[error("routes: {0}")]
    Routes(String),
    /// A backend could not be built (its TLS files are unusable, say).
    #[error(transparent)]
    Backend(#[from] accord_adapters::backend::BuildError),
    /// The plugin engine could not start.
    #[error("the plugin engine cannot start")]
    Engine(#[source] PluginError),
    /// A plugin's file could not be read.
    #[error("plugin {plugin}: cannot read {}", path.display())]
    PluginFile {
        /// The plugin's id.
        plugin: Arc<str>,
        /// Its file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A plugin failed to compile, instantiate, configure or answer its canary call.
    #[error("plugin {plugin} ({})", path.display())]
    Plugin {
        /// The plugin's id.
        plugin: Arc<str>,
        /// Its file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: PluginError,
    },
    /// Compiling a plugin panicked.
    #[error("plugin {plugin}: compiling panicked")]
    CompilePanicked {
        /// The plugin's id.
        plugin: Arc<str>,
        /// The task's failure.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Generation {
    /// Builds a generation. Backends whose settings equal those in `previous` are reused as they
    /// are, keeping their connection pools, health and ejection state.
    pub async fn build(
        config: Config,
        registry: &Registry,
        sla: &SlaEngine,
        plugins: &PluginHost,
        previous: Option<&Generation>,
    ) -> Result<Self, BuildError> {
        let loaded = load_plugins(&config, plugins, previous).await?;
        let router =
            Router::new(&config.routes).map_err(|(_, message)| BuildError::Routes(message))?;
        let (backends, backend_configs) = build_backends(&config, registry, previous).await?;
        let by_id: HashMap<Arc<str>, Arc<Backend>> = backends
            .iter()
            .map(|b| (b.id().clone(), b.clone()))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| LiveRoute::new(route, &by_id, &loaded, registry, sla))
            .collect();
        // A generation that serves keeps the previous tracer when the settings are the same.
        let tracer = match (&config.traces, previous.and_then(|p| p.tracer.as_ref())) {
            (None, _) => None,
            (Some(traces), Some(old)) if old.config() == traces => Some(old.clone()),
            (Some(traces), _) => Some(crate::traces::Tracer::start(traces.clone())),
        };
        Ok(Self {
            config,
            router,
            routes,
            backends,
            backend_configs,
            plugins: loaded,
            tracer,
            gateway_stats: registry.gateway_stats(),
        })
    }

    /// The gateway-wide counters.
    pub fn gateway_stats(&self) -> &GatewayStats {
        &self.gateway_stats
    }

    /// The tracer, when traces are configured.
    pub fn tracer(&self) -> Option<&Arc<crate::traces::Tracer>> {
        self.tracer.as_ref()
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// The configuration this generation was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The route table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Routes, in the configuration's order (the router's indexes point here).
    pub fn routes(&self) -> &[LiveRoute] {
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

impl LiveRoute {
    /// The route `route` as this generation serves it: its backends from `by_id`, its plugin
    /// chain from `loaded`, its counters and its SLA state.
    fn new(
        route: &Route,
        by_id: &HashMap<Arc<str>, Arc<Backend>>,
        loaded: &[LoadedPlugin],
        registry: &Registry,
        sla: &SlaEngine,
    ) -> LiveRoute {
        let route_sla = route.slo.as_ref().map(|slo| {
            let ids: Vec<Arc<str>> = route.backends.iter().map(|b| b.backend.clone()).collect();
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
                    steering: route_sla
                        .as_ref()
                        .map(|s| s.backends()[i].clone() as Arc<dyn accord_adapters::Steering>),
                })
            })
            .collect();
        // The canary (kept across reloads by the SLA engine while its backend and steps hold).
        let canary = route_sla.as_ref().and_then(|sla| {
            let (index, config) = route
                .backends
                .iter()
                .enumerate()
                .find_map(|(i, b)| b.canary.as_ref().map(|c| (i, c)))?;
            let canary = sla.set_canary(Some((index, config.spec.clone())))?;
            Some(accord_adapters::failover::CanaryRouting {
                backend: route.backends[index].backend.clone(),
                share: canary,
                sticky: config.sticky.clone(),
            })
        });
        if canary.is_none()
            && let Some(sla) = &route_sla
        {
            sla.set_canary(None);
        }
        let chain: Vec<Arc<Plugin>> = route
            .plugins
            .iter()
            .filter_map(|id| {
                loaded
                    .iter()
                    .find(|p| &p.id == id)
                    .map(|p| p.plugin.clone())
            })
            .collect();
        LiveRoute {
            route_key: route_key(&route.matcher),
            judges_responses: chain.iter().any(|p| p.judges_responses()),
            response_body_limit: chain
                .iter()
                .filter(|p| p.judges_responses())
                .map(|p| p.spec().response_body)
                .max()
                .unwrap_or(0),
            request_body_limit: chain
                .iter()
                .map(|p| p.spec().request_body)
                .max()
                .unwrap_or(0),
            plugins: chain,
            backend_ids: route.backends.iter().map(|b| b.backend.clone()).collect(),
            failover: {
                let failover = Failover::new(
                    route_backends,
                    route.retry.clone(),
                    RetryBudget::new(route.retry_budget),
                    route.per_try_timeout,
                );
                match canary {
                    Some(routing) => failover.with_canary(routing),
                    None => failover,
                }
            },
            stats: registry.route(&route.id),
            sla: route_sla,
            config: route.clone(),
        }
    }
}

/// Every backend of `config`: those whose settings equal `previous`'s are reused as they are
/// (pools, health and ejection state kept), the others built.
async fn build_backends(
    config: &Config,
    registry: &Registry,
    previous: Option<&Generation>,
) -> Result<(Vec<Arc<Backend>>, HashMap<Arc<str>, BackendConfig>), BuildError> {
    let mut backends = Vec::new();
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
        backend_configs.insert(id.clone(), backend_config.clone());
        backends.push(backend);
    }
    Ok((backends, backend_configs))
}

async fn build_backend(
    id: &Arc<str>,
    config: &BackendConfig,
    registry: &Registry,
) -> Result<Backend, BuildError> {
    match config {
        BackendConfig::Http(http) => {
            Ok(accord_adapters::http::build(id, http.clone(), registry.backend(id)).await?)
        }
        BackendConfig::Lambda(lambda) => {
            Ok(accord_adapters::lambda::build(id, lambda.clone(), registry.backend(id)).await?)
        }
        BackendConfig::Azure(azure) => {
            Ok(accord_adapters::azure::build(id, (**azure).clone(), registry.backend(id)).await?)
        }
    }
}

/// `GET /users/{id}` for a template route with one method, `ANY /users/{id}` with several,
/// `$default` for prefix and exact routes (API Gateway's catch-all).
fn route_key(matcher: &crate::config::model::RouteMatch) -> RouteKey {
    let key = match &matcher.path {
        crate::config::model::PathMatch::Template(template) => match matcher.methods.as_slice() {
            [method] => format!("{method} {template}"),
            _ => format!("ANY {template}"),
        },
        _ => "$default".to_owned(),
    };
    RouteKey(key.into())
}

/// Where plugins are loaded from: the engine (created on first use) and the directory relative
/// plugin paths are resolved against.
#[derive(Debug)]
pub struct PluginHost {
    engine: std::sync::Mutex<Option<Arc<PluginEngine>>>,
    base_dir: std::path::PathBuf,
    artifact_dir: Option<std::path::PathBuf>,
    instances: u32,
    shares: PluginShares,
}

impl PluginHost {
    /// Plugins with relative paths are looked up under `base_dir`; compiled plugins are kept
    /// in `artifact_dir` (relative to `base_dir`) when one is given; the engine holds
    /// `instances` plugin instances at once.
    pub fn new(
        base_dir: std::path::PathBuf,
        artifact_dir: Option<std::path::PathBuf>,
        instances: u32,
    ) -> Self {
        let artifact_dir = artifact_dir.map(|dir| base_dir.join(dir));
        Self {
            engine: std::sync::Mutex::new(None),
            base_dir,
            artifact_dir,
            instances,
            shares: PluginShares::default(),
        }
    }

    /// What plugins share (`cluster-rate` counts, `state`), which the cluster sync shares
    /// with the other replicas.
    pub fn shares(&self) -> &PluginShares {
        &self.shares
    }

    fn engine(&self) -> Result<Arc<PluginEngine>, BuildError> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(engine) = engine.as_ref() {
            return Ok(engine.clone());
        }
        let mut created = PluginEngine::new(self.instances, 256 << 20)
            .map_err(BuildError::Engine)?
            .with_shares(self.shares.clone());
        if let Some(dir) = &self.artifact_dir {
            created = created.with_artifact_dir(dir.clone());
        }
        let created = Arc::new(created);
        *engine = Some(created.clone());
        Ok(created)
    }
}

/// Loads every plugin of `config`, reusing those of `previous` whose settings and file are
/// unchanged. Compilation, instantiation, `configure` and a canary call run on a blocking
/// thread, off the request path; any failure refuses the whole configuration.
async fn load_plugins(
    config: &Config,
    host: &PluginHost,
    previous: Option<&Generation>,
) -> Result<Vec<LoadedPlugin>, BuildError> {
    let mut loaded = Vec::new();
    for (id, plugin_config) in &config.plugins {
        let path = if plugin_config.path.is_relative() {
            host.base_dir.join(&plugin_config.path)
        } else {
            plugin_config.path.clone()
        };
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| BuildError::PluginFile {
                plugin: id.clone(),
                path: path.clone(),
                source,
            })?;
        let file_hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            bytes.hash(&mut hasher);
            hasher.finish()
        };
        let reused = previous.and_then(|p| {
            p.plugins
                .iter()
                .find(|l| &l.id == id && l.config == *plugin_config && l.file_hash == file_hash)
                .cloned()
        });
        let entry = match reused {
            Some(entry) => entry,
            None => {
                let engine = host.engine()?;
                let name = plugin_config.spec.name.clone();
                let compiling = engine.clone();
                let failed = |source| BuildError::Plugin {
                    plugin: id.clone(),
                    path: path.clone(),
                    source,
                };
                let (component, source) =
                    tokio::task::spawn_blocking(move || compiling.compile(&bytes, &name))
                        .await
                        .map_err(|source| BuildError::CompilePanicked {
                            plugin: id.clone(),
                            source,
                        })?
                        .map_err(failed)?;
                tracing::info!(plugin = %id, path = %path.display(), from = source.as_str(), "plugin loaded");
                let plugin = engine
                    .prepare(component, plugin_config.spec.clone())
                    .await
                    .map_err(failed)?;
                plugin.canary().await.map_err(failed)?;
                LoadedPlugin {
                    id: id.clone(),
                    config: plugin_config.clone(),
                    file_hash,
                    plugin: Arc::new(plugin),
                }
            }
        };
        loaded.push(entry);
    }
    Ok(loaded)
}
