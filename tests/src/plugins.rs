//! The WebAssembly plugins, built for the tests from `wasm-plugins/` (never committed as
//! binaries): `cargo build --release --target wasm32-wasip2`, once per test process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

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
