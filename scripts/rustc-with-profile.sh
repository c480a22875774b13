#!/bin/sh
# cargo's rustc wrapper (`.cargo/config.toml`): compiles native code with the profile of the
# serving gateway, `gateway/pgo.profdata` (profile-guided optimization, made by scripts/pgo.py;
# docs/performance.md). A wrapper because rustc reads a relative `-Cprofile-use` path from the
# directory cargo runs it in, which is each dependency's own; this script knows where it is.
#
# Only optimized builds at `opt-level=3` (the `release` and `dist` profiles; the test builds are
# left as they are), and not code for another target than the host (the Wasm plugins), a build
# that collects a profile (`-Cprofile-generate`), the crates named below, or builds with
# ACCORD_PGO=0. A function whose code changed since the profile was made is compiled as without
# one.
#
# cargo does not know of the profile: after it changes (or this wrapper), `cargo clean --release`
# and `cargo clean --profile dist` make the next builds use it for every crate.
profile="$(cd "$(dirname "$0")/.." && pwd)/gateway/pgo.profdata"
if [ "${ACCORD_PGO:-1}" = 0 ] || [ ! -f "$profile" ]; then
    exec "$@"
fi
optimized=no
previous=
for arg in "$@"; do
    case "$arg" in
        wasm32-*|*profile-generate*) exec "$@" ;;
        opt-level=3) optimized=yes ;;
    esac
    if [ "$previous" = --crate-name ]; then
        case "$arg" in
            # Crates the profile has little or nothing of, which compile slower with one
            # (Cranelift 86 -> 112 s): the plugin compiler (it runs in a child, once per plugin,
            # and is left out of the training) and the cloud SDKs (no Lambda or Azure backend in
            # the training).
            cranelift_*|regalloc2|wasmparser|wasmprinter|wasmtime_internal_cranelift) exec "$@" ;;
            wasmtime_internal_winch|winch_*|aws_sdk_*|aws_smithy_*|aws_config|azure_*) exec "$@" ;;
        esac
    fi
    previous="$arg"
done
if [ "$optimized" = yes ]; then
    exec "$@" "-Cprofile-use=$profile"
fi
exec "$@"
