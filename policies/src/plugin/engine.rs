//! The shared wasmtime engine: configuration, the linker with the host's imports, the epoch
//! ticker that gives calls their deadlines (`epoch.rs`), and loading (compile, link, configure).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginShares;
use super::artifacts::{self, ArtifactCache, ArtifactSource, ChildCompile};
use super::epoch::{EpochTicker, IDLE_AFTER};
use super::host::{HostState, PluginShared};
use super::versions::{self, GuestPre, WorldVersion};
use super::wasi_io;
use super::{Breaker, Plugin, PluginError, PluginSpec, PluginStats};

/// The shared wasmtime engine and linker.
pub struct PluginEngine {
    pub(super) engine: Engine,
    /// For plugins called on a fiber: WASI as wasmtime-wasi serves it, whose waiting functions
    /// suspend the fiber.
    linker: Linker<HostState>,
    /// For plugins called on the caller's stack: the same, with `wasi:io` run at once
    /// (`wasi_io.rs`).
    direct_linker: Linker<HostState>,
    artifacts: ArtifactCache,
    shares: PluginShares,
    pub(super) ticker: EpochTicker,
    /// What the engine was made for: a compiler in another process makes its engine alike.
    limits: EngineLimits,
    compiler: Compiler,
}

/// What an engine is made for: its configuration follows from these alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Plugin instances at once.
    pub max_instances: u32,
    /// Linear memory per instance, in bytes.
    pub max_memory: usize,
}

/// Where plugins are compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In this process.
    #[default]
    InProcess,
    /// In a child process: this program, run with `compile-plugin --instances N --memory M`,
    /// reads a component on its standard input and writes the compiled artifact on its
    /// standard output ([`compile_artifact`]). The gateway's own process then never runs
    /// Cranelift: the compiler's code and its working memory (4 MiB of code and 4 MiB of heap
    /// for a small plugin) are not kept resident by a process that serves traffic for days.
    /// If the child cannot run, fails for any reason but the component's (it exits with
    /// [`COMPILE_REFUSED`](super::COMPILE_REFUSED) for that), or gives an artifact this engine
    /// refuses, the plugin is compiled in this process (with a warning).
    Child(PathBuf),
}

static COMPILER: std::sync::OnceLock<Compiler> = std::sync::OnceLock::new();

/// Makes every engine created from now on compile with `compiler` (the gateway's binary sets
/// [`Compiler::Child`] with itself when it serves traffic). Set once; a later call is ignored.
pub fn set_compiler(compiler: Compiler) {
    let _ = COMPILER.set(compiler);
}

/// The engine configuration for `limits`: the same in the gateway and in a compiler child, so
/// that the child's artifacts load in the gateway's engine. `compiles` says whether the engine
/// has a compiler of its own: an engine whose plugins are compiled in a child has none, so that
/// the serving process never even sets up Cranelift (its settings and the host's CPU features:
/// code that then stayed resident: about 0.3 MiB of RSS).
fn config(limits: EngineLimits, compiles: bool) -> Config {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances * 4)
        .total_memories(limits.max_instances * 2)
        .total_tables(limits.max_instances * 2)
        .max_memory_size(limits.max_memory);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        .enable_compiler(compiles);
    config
}

/// Compiles the component `wasm` for an engine made for `limits` and returns the artifact
/// (what `accord compile-plugin` does in a compiler child).
pub fn compile_artifact(limits: EngineLimits, wasm: &[u8]) -> Result<Vec<u8>, String> {
    let engine = Engine::new(&config(limits, true)).map_err(|e| format!("{e:#}"))?;
    let component = Component::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
    component.serialize().map_err(|e| format!("{e:#}"))
}

/// Where a plugin's calls run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallStack {
    /// On the stack of the request that makes them: the component imports nothing that can
    /// wait, so a call always runs to its end at once. The cheapest: no fiber to switch to and
    /// back from.
    Caller,
    /// Each on a fiber of its own, which a host function that waits suspends without blocking
    /// the gateway's thread: for a component that imports `import` (files, sockets, timers),
    /// or implements 0.1.0's world.
    Fiber {
        /// The first import that can wait, or the world.
        because: String,
    },
}

impl CallStack {
    /// Where `component`'s calls run, from what it imports.
    ///
    /// What can wait is a file or a socket (which a plugin is never granted, but whose
    /// functions it may import) and a timer from `wasi:clocks/monotonic-clock`'s
    /// `subscribe-*`. Every other WASI function the gateway links answers at once: its
    /// standard input is empty and its output streams discard what they are given, so their
    /// pollables are always ready, and `wasi:io` is then served without suspending
    /// (`wasi_io.rs`).
    pub fn of(component: &Component, engine: &Engine, version: WorldVersion) -> Self {
        if version == WorldVersion::V0_1 {
            return CallStack::Fiber {
                because: version.name().to_owned(),
            };
        }
        for (name, item) in component.component_type().imports(engine) {
            let interface = name.split('@').next().unwrap_or(name);
            let waits = match interface {
                "wasi:clocks/monotonic-clock" => match item.ty {
                    ComponentItem::ComponentInstance(instance) => instance
                        .exports(engine)
                        .any(|(function, _)| function.starts_with("subscribe")),
                    _ => true,
                },
                _ => {
                    interface.starts_with("wasi:filesystem/")
                        || interface.starts_with("wasi:sockets/")
                }
            };
            if waits {
                return CallStack::Fiber {
                    because: name.to_owned(),
                };
            }
        }
        CallStack::Caller
    }
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// An engine for up to `max_instances` plugin instances at once, each with at most
    /// `max_memory` of linear memory, compiling where the process compiles ([`set_compiler`]).
    pub fn new(max_instances: u32, max_memory: usize) -> Result<Self, PluginError> {
        let compiler = COMPILER.get().cloned().unwrap_or_default();
        Self::compiling_with(max_instances, max_memory, compiler)
    }

    /// An engine like [`PluginEngine::new`]'s that compiles with `compiler` instead of the
    /// process-wide choice. With [`Compiler::Child`] the engine has no compiler of its own.
    pub fn compiling_with(
        max_instances: u32,
        max_memory: usize,
        compiler: Compiler,
    ) -> Result<Self, PluginError> {
        let error = |e: wasmtime::Error| PluginError::Load {
            plugin: "(engine)".into(),
            message: format!("{e:#}"),
        };
        let limits = EngineLimits {
            max_instances,
            max_memory,
        };
        let compiles = compiler == Compiler::InProcess;
        let engine = Engine::new(&config(limits, compiles)).map_err(error)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(error)?;
        versions::add_to_linker(&mut linker).map_err(error)?;
        let mut direct_linker = linker.clone();
        wasi_io::shadow_in(&mut direct_linker).map_err(error)?;
        let ticking = engine.clone();
        let ticker =
            EpochTicker::start(IDLE_AFTER, move || ticking.increment_epoch()).map_err(|e| {
                PluginError::Load {
                    plugin: "(engine)".into(),
                    message: format!("cannot start the epoch ticker: {e}"),
                }
            })?;
        Ok(Self {
            artifacts: ArtifactCache::new(&engine, None),
            shares: PluginShares::default(),
            engine,
            linker,
            direct_linker,
            ticker,
            limits,
            compiler,
        })
    }

    /// Keeps compiled artifacts in `dir` too, so that a restart does not compile unchanged
    /// plugins again. The directory must be writable only by the gateway's user.
    pub fn with_artifact_dir(mut self, dir: PathBuf) -> Self {
        self.artifacts = ArtifactCache::new(&self.engine, Some(dir));
        self
    }

    /// Keeps what plugins share (`cluster-rate` counts, `state`) in `shares`, which outlive
    /// this engine's reloads and which the cluster sync reads, instead of in this engine.
    pub fn with_shares(mut self, shares: PluginShares) -> Self {
        self.shares = shares;
        self
    }

    /// Loads, links and configures a plugin from a component file.
    pub async fn load(
        self: &Arc<Self>,
        path: &Path,
        spec: PluginSpec,
    ) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Load {
            plugin: spec.name.clone(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let (component, _) = self.compile(&bytes, &spec.name)?;
        self.prepare(component, spec).await
    }

    /// Compiles a component (CPU-heavy: call it off the request path, e.g. on a blocking
    /// thread), to be prepared with [`PluginEngine::prepare`].
    /// Unchanged components come from the artifact cache.
    pub fn compile(
        &self,
        bytes: &[u8],
        name: &str,
    ) -> Result<(Component, ArtifactSource), PluginError> {
        self.artifacts
            .get_or_compile(&self.engine, bytes, || self.compile_now(bytes))
            .map_err(|e| PluginError::Load {
                plugin: name.to_owned(),
                message: format!("not a loadable component: {e:#}"),
            })
    }

    /// Compiles `bytes` with the engine's compiler.
    fn compile_now(&self, bytes: &[u8]) -> wasmtime::Result<(Component, ArtifactSource)> {
        if let Compiler::Child(program) = &self.compiler {
            let args = [
                "compile-plugin".to_owned(),
                "--instances".to_owned(),
                self.limits.max_instances.to_string(),
                "--memory".to_owned(),
                self.limits.max_memory.to_string(),
            ];
            match artifacts::compile_in_child(program, &args, &self.engine, bytes) {
                Ok(component) => return Ok((component, ArtifactSource::CompiledInChild)),
                Err(ChildCompile::Refused(message)) => return Err(wasmtime::Error::msg(message)),
                Err(ChildCompile::Unavailable(why)) => {
                    tracing::warn!(program = %program.display(), %why, "the plugin compiler process is unavailable: compiling in this process");
                }
            }
            // This engine has no compiler: one made for the same limits compiles here.
            let artifact = compile_artifact(self.limits, bytes).map_err(wasmtime::Error::msg)?;
            let component = artifacts::load_own_artifact(&self.engine, &artifact)?;
            return Ok((component, ArtifactSource::Compiled));
        }
        Ok((
            Component::new(&self.engine, bytes)?,
            ArtifactSource::Compiled,
        ))
    }

    /// What a compiled component imports and exports, by name (`accord plugin check`).
    pub fn describe(&self, component: &Component) -> (Vec<String>, Vec<String>) {
        let ty = component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        (imports, exports)
    }

    /// Links a compiled component, instantiates and configures a first instance.
    pub async fn prepare(
        self: &Arc<Self>,
        component: Component,
        spec: PluginSpec,
    ) -> Result<Plugin, PluginError> {
        let error = |message: String| PluginError::Load {
            plugin: spec.name.clone(),
            message,
        };
        let version = WorldVersion::of(&component, &self.engine);
        let calls = CallStack::of(&component, &self.engine, version);
        let linker = match calls {
            CallStack::Caller => &self.direct_linker,
            CallStack::Fiber { .. } => &self.linker,
        };
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            error(format!("it needs imports this gateway does not give (only accord:policy and WASI without files or network): {e:#}"))
        })?;
        let pre =
            GuestPre::new(version, instance_pre, calls == CallStack::Caller).map_err(|e| {
                error(format!(
                    "it does not implement the {} world: {e:#}",
                    version.name()
                ))
            })?;
        let plugin = Plugin {
            shared: Arc::new(PluginShared {
                name: spec.name.clone().into(),
                rates: pingora_limits::rate::Rate::new(Duration::from_secs(1)),
                cluster_rates: self.shares.rates.plugin(&spec.name),
                state: self.shares.state.plugin(&spec.name),
                request_body: spec.request_body,
                response_body: spec.response_body,
                counters: Mutex::new(HashMap::new()),
                histograms: Mutex::new(HashMap::new()),
            }),
            engine: self.clone(),
            version,
            calls,
            pre,
            pool: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
            breaker: Breaker::default(),
            reasons: Mutex::new(HashMap::new()),
            spec,
        };
        // Instantiate and configure one instance now: a plugin that cannot start is refused
        // here, not on the first request.
        let instance = plugin.instantiate().await?;
        plugin.give_back(instance);
        Ok(plugin)
    }
}
