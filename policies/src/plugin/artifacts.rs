//! Compiled plugin artifacts, cached by the component's SHA-256 and the engine's compatibility
//! hash: a reload or a restart with an unchanged `.wasm` skips Cranelift.
//!
//! Two levels: components compiled by this process (in memory, the most recent few), and, when
//! a directory is configured, precompiled artifacts on disk that survive restarts. A disk
//! artifact is only ever one this gateway wrote: its name carries the engine's compatibility
//! hash, and wasmtime checks its header against the engine again when loading it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How many compiled components the memory level keeps (the oldest goes first).
const MEMORY_ENTRIES: usize = 32;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Compiled now, in this process (and written to the disk cache, when there is one).
    Compiled,
    /// Compiled now, in a compiler child process (and written to the disk cache, when there
    /// is one).
    CompiledInChild,
    /// Compiled earlier by this process.
    Memory,
    /// Loaded from the disk cache.
    Disk,
}

impl ArtifactSource {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compiled => "compiled",
            Self::CompiledInChild => "compiled in a child process",
            Self::Memory => "memory cache",
            Self::Disk => "disk cache",
        }
    }
}

/// The cache of one engine.
pub(super) struct ArtifactCache {
    dir: Option<PathBuf>,
    /// The engine's compatibility hash, as hex: part of every disk artifact's name.
    compatibility: String,
    memory: Mutex<VecDeque<([u8; 32], Component)>>,
}

impl ArtifactCache {
    pub(super) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        use std::hash::{Hash, Hasher};
        // The engine's settings and wasmtime's version; a `DefaultHasher` with its fixed keys
        // is deterministic for one build, which is all a name needs (wasmtime re-checks).
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            compatibility: format!("{:016x}", hasher.finish()),
            memory: Mutex::new(VecDeque::new()),
        }
    }

    /// The compiled form of `bytes`: from memory, from disk, or compiled by `compile` (and then
    /// kept in both; `compile` says where it compiled).
    pub(super) fn get_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        compile: impl FnOnce() -> wasmtime::Result<(Component, ArtifactSource)>,
    ) -> wasmtime::Result<(Component, ArtifactSource)> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(component) = self.in_memory(&digest) {
            return Ok((component, ArtifactSource::Memory));
        }
        let file = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}.cwasm", hex(&digest), self.compatibility)));
        if let Some(file) = &file
            && file.exists()
        {
            match load(engine, file) {
                Ok(component) => {
                    self.remember(digest, component.clone());
                    return Ok((component, ArtifactSource::Disk));
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "a cached plugin artifact could not be loaded: compiling again");
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        let (component, source) = compile()?;
        if let Some(file) = &file
            && let Err(e) = store(&component, file)
        {
            tracing::warn!(file = %file.display(), error = %e, "could not write the plugin artifact cache");
        }
        self.remember(digest, component.clone());
        Ok((component, source))
    }

    fn in_memory(&self, digest: &[u8; 32]) -> Option<Component> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, c)| c.clone())
    }

    fn remember(&self, digest: [u8; 32], component: Component) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if memory.iter().any(|(d, _)| *d == digest) {
            return;
        }
        if memory.len() == MEMORY_ENTRIES {
            memory.pop_front();
        }
        memory.push_back((digest, component));
    }
}

/// Loads a precompiled artifact this cache wrote. The file is read into memory, not mapped:
/// a mapped file that someone truncates kills the process (SIGBUS).
#[allow(unsafe_code)]
fn load(engine: &Engine, file: &Path) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(file)?;
    // SAFETY: `deserialize` runs the artifact's machine code, so the bytes must be what
    // wasmtime produced with `Component::serialize` for a compatible engine. Only this cache
    // writes into its directory (under a temporary name, then an atomic rename, so a
    // half-written file is never read); the name carries the engine's compatibility hash, and
    // wasmtime verifies the artifact's header against the engine before using it. The
    // directory must be writable only by the gateway's user: whoever can write there can run
    // code in the gateway, as with its binary.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// The exit status of a compiler child whose component does not compile (`EX_DATAERR`):
/// any other failure is the child's, not the component's, and the component is then compiled
/// in the gateway's process.
pub const REFUSED: i32 = 65;

/// Why a compiler child gave no component.
pub(super) enum ChildCompile {
    /// The component does not compile (the child's message).
    Refused(String),
    /// The child could not run, failed without saying why, or gave an artifact the engine
    /// refuses (another version of the binary, say).
    Unavailable(String),
}

/// Compiles `wasm` in a child process, `program` run with `args` (the engine's compiler
/// child: `accord compile-plugin` for an engine alike), which reads the component on its
/// standard input and writes the artifact on its standard output; loads the artifact.
pub(super) fn compile_in_child(
    program: &Path,
    args: &[String],
    engine: &Engine,
    wasm: &[u8],
) -> Result<Component, ChildCompile> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let unavailable = |e: std::io::Error| ChildCompile::Unavailable(e.to_string());
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(unavailable)?;
    // The child reads all of its input before it writes: no pipe fills up on both sides.
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(wasm))
        .unwrap_or(Ok(()));
    let output = child.wait_with_output().map_err(unavailable)?;
    written.map_err(unavailable)?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(match output.status.code() {
            Some(REFUSED) => ChildCompile::Refused(message),
            _ => ChildCompile::Unavailable(format!(
                "the compiler exited with {}: {message}",
                output.status
            )),
        });
    }
    load_own_artifact(engine, &output.stdout)
        .map_err(|e| ChildCompile::Unavailable(format!("its artifact does not load: {e:#}")))
}

/// Loads an artifact that this gateway's own program compiled, for an engine made for the same
/// limits: in its compiler child ([`compile_in_child`]), or in this process when the child
/// cannot run and the engine has no compiler.
#[allow(unsafe_code)]
pub(super) fn load_own_artifact(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize` runs the artifact's machine code, so the bytes must be what
    // wasmtime produced with `Component::serialize` for a compatible engine. They are: this
    // program compiled them, in this process or in its child (`/proc/self/exe`: the same binary
    // even if the file was replaced since), with the engine configuration this engine has (the
    // engine passes its limits to the child), and wasmtime verifies the artifact's header
    // against the engine before using it. They come from memory or over the child's pipe,
    // never from a file someone else could write.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Writes an artifact atomically: a temporary file in the same directory, then a rename.
fn store(component: &Component, file: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}-{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
