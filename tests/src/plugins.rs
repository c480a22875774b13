//! The WebAssembly plugins, built for the tests from `wasm-plugins/` (never committed as
//! binaries): `cargo build --release --target wasm32-wasip2`, once per test process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The plugins' workspace.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wasm-plugins")
}

/// The component of plugin crate `name` (dashes become underscores), built if needed.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = workspace().join("target");
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "building the plugins failed (is the wasm32-wasip2 target installed? ./scripts/test.sh adds it):\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(target.join("wasm32-wasip2/release"))
    });
    match dir {
        Ok(dir) => dir.join(format!("{}.wasm", name.replace('-', "_"))),
        Err(message) => panic!("{message}"),
    }
}

/// The component built from the C plugin in `wasm-plugins/c/<name>/` (its `.c` files), with
/// Debian's clang and wasi-libc: bindings generated from the WIT by wit-bindgen's C
/// generator, a core module linked by clang, then made a component with WASI's preview-1
/// adapter. Built once per test process.
pub fn c_component(name: &str) -> PathBuf {
    c_component_against(name, "wit")
}

/// The same C plugin built against the frozen `accord:policy@0.1.0` WIT
/// (`wasm-plugins/wit-0.1.0`): a plugin from before 0.2.0, which the gateway must still load.
pub fn c_component_v0_1(name: &str) -> PathBuf {
    c_component_against(name, "wit-0.1.0")
}

/// The same C plugin built against the frozen `accord:policy@0.2.0` WIT
/// (`wasm-plugins/wit-0.2.0`): a plugin from before 0.2.1, whose imports of `@0.2.0` the
/// gateway's `@0.2.1` must serve.
pub fn c_component_v0_2(name: &str) -> PathBuf {
    c_component_against(name, "wit-0.2.0")
}

fn c_component_against(name: &str, wit: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
    built_once(&BUILT, &format!("{wit}/{name}"), || build_c(name, wit))
}

fn build_c(name: &str, wit: &str) -> Result<PathBuf, String> {
    let source = workspace().join("c").join(name);
    let out = workspace().join("target/c").join(wit).join(name);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    // 1. Bindings, as `wit-bindgen c wasm-plugins/wit --world policy` writes them.
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(workspace().join(wit))
        .map_err(|e| format!("the WIT does not parse: {e:#}"))?;
    let world = resolve
        .select_world(&[package], Some("policy"))
        .map_err(|e| format!("{e:#}"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .map_err(|e| format!("wit-bindgen c: {e:#}"))?;
    let mut inputs = Vec::new();
    for (file, contents) in files.iter() {
        let path = out.join(file);
        std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.ends_with(".c") || file.ends_with(".o") {
            inputs.push(path);
        }
    }
    for entry in std::fs::read_dir(&source).map_err(|e| format!("{}: {e}", source.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "c") {
            inputs.push(path);
        }
    }

    // 2. A core module: a WASI reactor (no `main`; the exports are the entry points).
    let core = out.join("core.wasm");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let output = Command::new(&clang)
        .args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
        ])
        .arg("-I")
        .arg(&out)
        .args(&inputs)
        .arg("-o")
        .arg(&core)
        .output()
        .map_err(|e| {
            format!("cannot run {clang} (./scripts/test.sh installs clang, lld and wasi-libc): {e}")
        })?;
    if !output.status.success() {
        return Err(format!(
            "clang failed on the C plugin {name}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    // 3. The component.
    let module = std::fs::read(&core).map_err(|e| format!("{}: {e}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| {
            encoder.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("making a component of the C plugin {name}: {e:#}"))?;
    let path = workspace()
        .join("target/c")
        .join(wit)
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::write(&path, component).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The component of the Python plugin in `wasm-plugins/python/<name>/` (its `app.py`), built
/// with PyPI's `componentize-py` from the WIT alone. Built once per test process.
pub fn python_component(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
    built_once(&BUILT, name, || {
        let out = workspace()
            .join("target/python")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let wit = workspace().join("wit");
        run_tool(
            Command::new("componentize-py")
                .arg("-d")
                .arg(&wit)
                .args(["-w", "policy", "componentize", "app", "-o"])
                .arg(&out)
                .current_dir(workspace().join("python").join(name)),
            "componentize-py (./scripts/test.sh installs it from PyPI)",
        )?;
        Ok(out)
    })
}

/// The component of the JavaScript plugin `wasm-plugins/js/<name>/<name>.js`, built with npm's
/// `componentize-js` (installed in `wasm-plugins/js` by `npm ci`) from the WIT alone, without
/// WASI HTTP (the gateway gives none). Built once per test process.
pub fn js_component(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
    built_once(&BUILT, name, || {
        let out = PathBuf::from("target/js").join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::create_dir_all(workspace().join("target/js")).map_err(|e| e.to_string())?;
        let source = PathBuf::from("js").join(name).join(format!("{name}.js"));
        run_tool(
            Command::new(workspace().join("js/node_modules/.bin/componentize-js"))
                .arg(&source)
                .args(["--wit", "wit", "--world-name", "policy"])
                .args(["--disable", "http", "fetch-event", "-o"])
                .arg(&out)
                .current_dir(workspace()),
            "componentize-js (./scripts/test.sh installs it: npm ci --prefix wasm-plugins/js)",
        )?;
        Ok(workspace().join(out))
    })
}

fn built_once(
    built: &Mutex<Vec<(String, Result<PathBuf, String>)>>,
    name: &str,
    build: impl FnOnce() -> Result<PathBuf, String>,
) -> PathBuf {
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, result)) = built.iter().find(|(n, _)| n == name) {
        return result.clone().unwrap_or_else(|e| panic!("{e}"));
    }
    let result = build();
    built.push((name.to_owned(), result.clone()));
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn run_tool(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}
