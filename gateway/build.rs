//! Link options for the `accord` binary.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): a position-
        // independent binary keeps ASLR, and the dynamic loader reads a table of ~20 KiB
        // instead of 1.8 MiB at every start, pages that then stayed resident.
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
