//! Link options for the `accord` binary.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=code-order.txt");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
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
/// configuration does not use), the 2.6 MiB it runs kept 15 MiB resident.
///
/// Only where the linker is rustc's default on x86-64 Linux, LLD, which reads the order; a
/// function the file names that the build does not have (the code changed since the file was
/// made) is skipped, and one the file does not name is placed as before.
fn order_code() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let own_linker = std::env::var_os("RUSTC_LINKER").is_some()
        || std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"));
    if target != "x86_64-unknown-linux-gnu" || !release || own_linker {
        return;
    }
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("code-order.txt");
    println!(
        "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
