//! The running gateway: the live [`Generation`] behind an atomic pointer, the listeners, the admin
//! API, hot reload and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use accord_adapters::box_in_place;
use accord_policies::sla::store::Store;
use accord_policies::sla::{Clock, EVALUATION_INTERVAL, SlaEngine};

use crate::admin::AdminState;
use crate::cluster::ClusterStatus;
use crate::config::{self, Config, Environment};
use crate::control::generation::{Generation, PluginHost};
use crate::control::reload::restart_required;
pub use crate::control::reload::{ReloadError, ReloadReport};
use crate::proxy;
use crate::proxy::server::{self, Handler};
use crate::stats::Registry;

/// Where a reload reads the configuration from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A YAML file, read again on every reload.
    File(PathBuf),
    /// Text held in memory (the demo); a reload re-validates it.
    Text(String),
}

impl ConfigSource {
    /// What relative paths in the configuration (plugins, the history file) are relative to:
    /// the file's directory, or the working directory.
    fn base_dir(&self) -> PathBuf {
        match self {
            Self::File(file) => file
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
            Self::Text(_) => PathBuf::from("."),
        }
    }
}

/// Opens the SLA history at `path` and loads it into the engine.
fn open_history(path: &std::path::Path, sla: &SlaEngine) -> anyhow::Result<Arc<Store>> {
    let store = Store::open(path)?;
    let loaded = store.load(sla)?;
    tracing::info!(path = %path.display(), rollups = loaded.rollups, events = loaded.events, "SLA history loaded");
    Ok(Arc::new(store))
}

/// The SLA task: evaluates every [`EVALUATION_INTERVAL`] and flushes the history every
/// `flush_interval`, for as long as the gateway runs.
async fn run_sla(
    sla: Arc<SlaEngine>,
    store: Option<Arc<Store>>,
    flush_interval: std::time::Duration,
) {
    let period = EVALUATION_INTERVAL.min(flush_interval);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_evaluation = tokio::time::Instant::now();
    let mut last_flush = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        if last_evaluation.elapsed() >= period {
            sla.tick();
            last_evaluation = tokio::time::Instant::now();
        }
        if let Some(store) = &store
            && last_flush.elapsed() >= flush_interval
        {
            flush(store.clone(), sla.clone()).await;
            last_flush = tokio::time::Instant::now();
        }
    }
}

/// The admin API drives the gateway through [`AdminState`].
impl AdminState for Gateway {
    fn generation(&self) -> Arc<Generation> {
        Gateway::generation(self)
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn sla(&self) -> &SlaEngine {
        &self.sla
    }

    fn is_draining(&self) -> bool {
        Gateway::is_draining(self)
    }

    fn cluster(&self) -> Option<&ClusterStatus> {
        self.cluster.as_deref()
    }

    fn notifications(&self) -> Option<&crate::notify::NotifyStats> {
        self.notifications.as_deref()
    }

    async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        Gateway::reload(self).await
    }
}

/// The gateway's shared state.
pub struct Gateway {
    generation: ArcSwap<Generation>,
    registry: Arc<Registry>,
    sla: Arc<SlaEngine>,
    store: Option<Arc<Store>>,
    cluster: Option<Arc<ClusterStatus>>,
    notifications: Option<Arc<crate::notify::NotifyStats>>,
    plugins: PluginHost,
    source: ConfigSource,
    env: Arc<dyn Environment + Send + Sync>,
    reload_lock: tokio::sync::Mutex<()>,
    draining: std::sync::atomic::AtomicBool,
}

/// A started gateway: its bound addresses and the handle to stop it.
pub struct Running {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Bound traffic listener addresses, in configuration order.
    pub listeners: Vec<SocketAddr>,
    /// Bound admin API address.
    pub admin: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin_shutdown: watch::Sender<bool>,
    admin_task: JoinHandle<()>,
    sla_task: JoinHandle<()>,
    cluster_task: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    notify_task: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Gateway {
    /// Builds the generation, binds every listener and starts serving.
    pub async fn start(
        config: Config,
        source: ConfigSource,
        env: Arc<dyn Environment + Send + Sync>,
    ) -> anyhow::Result<Running> {
        let registry = Arc::new(Registry::default());
        let sla = Arc::new(SlaEngine::new(Clock::system()));
        let history = config.sla_history.clone();
        let cluster_config = config.cluster.clone();
        let plugins = PluginHost::new(
            source.base_dir(),
            config.plugin_cache.clone(),
            config.limits.plugin_instances,
        );
        let generation = Generation::build(config, &registry, &sla, &plugins, None).await?;
        sla.retain(&generation.slo_route_ids());
        // In cluster mode the shared history lives in Redis: a local file would count this
        // replica's past twice (once from the file, once from the cluster).
        let store = match (&history.path, &cluster_config) {
            (Some(path), None) => Some(open_history(&source.base_dir().join(path), &sla)?),
            (Some(_), Some(_)) => {
                tracing::info!(
                    "cluster mode: SLA history is kept in Redis, not in sla_history.path"
                );
                None
            }
            (None, _) => None,
        };
        let cluster = cluster_config.as_ref().map(|cluster| {
            let (stop, stop_rx) = watch::channel(false);
            let (status, task) = crate::cluster::spawn(
                cluster,
                sla.clone(),
                plugins.shares().clone(),
                stop_rx,
            );
            tracing::info!(cluster = %cluster.name, replica = %cluster.replica, "cluster mode: sharing SLA state through redis");
            (status, (stop, task))
        });
        let (cluster, cluster_task) = match cluster {
            Some((status, task)) => (Some(status), Some(task)),
            None => (None, None),
        };
        let (notifications, notify_task) = match generation.config().notifications.clone() {
            Some(notify) => {
                let (stop, stop_rx) = watch::channel(false);
                let outbox = source.base_dir().join(&notify.outbox);
                // In a cluster, every replica sends the cluster's events under one name, so
                // that receivers can drop the duplicates by id.
                let name = cluster_config
                    .as_ref()
                    .map_or_else(|| "accord".to_owned(), |c| c.name.clone());
                let (stats, task) =
                    crate::notify::spawn(notify, outbox, sla.clone(), name, stop_rx)?;
                tracing::info!("notifications: sending SLA events");
                (Some(stats), Some((stop, task)))
            }
            None => (None, None),
        };
        let gateway = Arc::new(Gateway {
            generation: ArcSwap::from_pointee(generation),
            registry,
            sla: sla.clone(),
            store: store.clone(),
            cluster,
            notifications,
            plugins,
            source,
            env,
            reload_lock: tokio::sync::Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        let config = gateway.generation.load_full();
        let config = config.config();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (listeners, tasks) = gateway.serve_traffic(config, &shutdown_rx).await?;
        // The admin API outlives the traffic listeners' drain, so that `/readyz` can say so.
        let admin_socket = server::bind(config.admin.address, "admin API").await?;
        let admin = admin_socket.local_addr()?;
        let admin_handler =
            crate::admin::handler(gateway.clone(), config.admin.address.ip().is_loopback());
        let (admin_shutdown, admin_shutdown_rx) = watch::channel(false);
        let admin_task = tokio::spawn(server::serve(
            admin_socket,
            None,
            config.limits.clone(),
            None,
            admin_handler,
            admin_shutdown_rx,
        ));
        drop(shutdown_rx);
        let sla_task = tokio::spawn(run_sla(sla, store, history.flush_interval));
        tracing::info!(?listeners, %admin, routes = config.routes.len(), backends = config.backends.len(), "accord is serving");
        Ok(Running {
            gateway,
            listeners,
            admin,
            shutdown,
            tasks,
            admin_shutdown,
            admin_task,
            sla_task,
            cluster_task,
            notify_task,
        })
    }

    /// Binds every traffic listener and serves it until `shutdown` says so.
    async fn serve_traffic(
        self: &Arc<Self>,
        config: &Config,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>)> {
        let mut tasks = Vec::new();
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let tls = match &listener.tls {
                Some((cert, key)) => Some(
                    server::tls_acceptor(cert, key)
                        .map_err(|e| anyhow::anyhow!("listener {}: {e}", listener.name))?,
                ),
                None => None,
            };
            let socket =
                server::bind(listener.address, &format!("listener {}", listener.name)).await?;
            listeners.push(socket.local_addr()?);
            let handler = self.clone().proxy_handler();
            tasks.push(tokio::spawn(server::serve(
                socket,
                tls,
                config.limits.clone(),
                Some(self.registry.gateway_stats()),
                handler,
                shutdown.clone(),
            )));
        }
        Ok((listeners, tasks))
    }

    fn proxy_handler(self: Arc<Self>) -> Handler {
        Arc::new(move |request, conn, notes| {
            let generation = self.generation.load_full();
            let access_log = generation.config().log.access_log;
            Box::into_pin(box_in_place!(proxy::handle(
                generation, access_log, request, conn, notes
            )))
        })
    }

    /// The generation serving new requests now.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// The counters.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The SLA engine.
    pub fn sla(&self) -> &Arc<SlaEngine> {
        &self.sla
    }

    /// Whether the gateway is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Reads the configuration again and, if it is valid and builds, swaps it in. Requests in
    /// flight finish on the generation they started with. On error nothing changes.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.try_reload().await;
        match &result {
            Ok(report) => {
                self.registry.gateway.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(routes = report.routes, backends = report.backends, restart_required = ?report.restart_required, "configuration reloaded");
            }
            Err(error) => {
                self.registry.gateway.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!(
                    "reload refused, the previous configuration keeps serving:\n{}",
                    error.describe()
                );
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<ReloadReport, ReloadError> {
        let env = self.env.as_ref();
        let config = match &self.source {
            ConfigSource::File(path) => config::load(path, env),
            ConfigSource::Text(text) => config::from_str(text, env),
        }
        .map_err(ReloadError::Invalid)?;
        let current = self.generation.load_full();
        let old = current.config();
        let restart_required = restart_required(old, &config);
        let generation = Generation::build(
            config,
            &self.registry,
            &self.sla,
            &self.plugins,
            Some(&current),
        )
        .await?;
        self.sla.retain(&generation.slo_route_ids());
        let report = ReloadReport {
            routes: generation.routes().len(),
            backends: generation.backends().len(),
            restart_required,
        };
        self.generation.store(Arc::new(generation));
        Ok(report)
    }
}

/// Writes SLA history on a blocking thread; a failure is logged and the gateway goes on.
async fn flush(store: Arc<Store>, engine: Arc<SlaEngine>) {
    match tokio::task::spawn_blocking(move || store.flush(&engine)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "SLA history not written; retrying at the next flush")
        }
        Err(e) => tracing::warn!(error = %e, "SLA history flush panicked"),
    }
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to `limits.shutdown_grace`), and
    /// returns when every listener has closed. The admin API keeps answering (`/readyz`: 503
    /// draining) until the traffic listeners have drained.
    pub async fn shutdown(self) {
        self.gateway.draining.store(true, Relaxed);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.admin_shutdown.send(true);
        let _ = self.admin_task.await;
        self.sla_task.abort();
        self.gateway.sla.tick();
        if let Some(store) = &self.gateway.store {
            flush(store.clone(), self.gateway.sla.clone()).await;
        }
        // One last sync, so that the cluster keeps everything this replica served.
        if let Some((stop, task)) = self.cluster_task {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        // One last round: what is still undelivered stays in the outbox for the next start.
        if let Some((stop, task)) = self.notify_task {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }

    /// The first traffic listener's address.
    pub fn address(&self) -> SocketAddr {
        self.listeners[0]
    }
}
