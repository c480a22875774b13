//! Link options for the `accord` binary.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=code-order.txt");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): a position-
        // independent binary keeps ASLR, and the dynamic loader reads a table of ~20 KiB
        // instead of 1.8 MiB at every start, pages that then stayed resident.
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    order_code();
}

/// Places the functions the serving process runs next to each other (`code-order.txt`, made by
/// `scripts/code-order.py`), so that the pages it touches hold little else. The kernel maps a
/// binary's code 64 KiB at a time around each page it touches: scattered among the functions
/// that never run in it (the plugin compiler, which runs in a child; the cloud SDKs a
/// configuration does not use), the 2.6 MiB it runs kept 13 MiB resident.
///
/// Release builds only, and only with a linker that reads the order (LLD, rustc's default on
/// x86-64 Linux; GNU ld refuses the option), which a probe link tells. A function the file names
/// that the build does not have (the code changed since the file was made) is skipped; one it
/// does not name is placed as before.
fn order_code() {
    if std::env::var("PROFILE").is_ok_and(|p| p != "release") {
        return;
    }
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("code-order.txt");
    let args = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    if linker_accepts(&args) {
        for arg in args {
            println!("cargo::rustc-link-arg-bins={arg}");
        }
    } else {
        println!(
            "cargo::warning=the linker does not order functions (not LLD): the binary keeps more of its code resident"
        );
    }
}

/// Whether linking an empty program for the target, with the build's linker and flags, accepts
/// `args`.
fn linker_accepts(args: &[String]) -> bool {
    let (Some(rustc), Some(out)) = (std::env::var_os("RUSTC"), std::env::var_os("OUT_DIR")) else {
        return false;
    };
    let out = Path::new(&out);
    let source = out.join("probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let mut probe = Command::new(rustc);
    probe
        .arg(&source)
        .arg("-o")
        .arg(out.join("probe"))
        .arg("--target")
        .arg(std::env::var("TARGET").unwrap_or_default());
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        probe
            .arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    if let Ok(flags) = std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        probe.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    for arg in args {
        probe.arg("-C").arg(format!("link-arg={arg}"));
    }
    probe.output().is_ok_and(|o| o.status.success())
}
