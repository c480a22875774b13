#!/usr/bin/env bash
# The end-to-end benchmark (see README "Benchmark" and shared BENCHMARKS.md): installs nginx and
# wrk when missing, builds Accord in release mode, and compares direct, nginx-as-proxy and Accord
# in interleaved rounds. Options are passed to scripts/bench.py (e.g. --rounds 3 --duration 5;
# --baseline PATH measures an earlier build of accord in the same rounds). ACCORD_PROFILE=dist
# measures the build that ships (fat LTO) instead of the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
profile="${ACCORD_PROFILE:-release}"
cargo build --profile "$profile" -p accord
# The plugin measured on the `accord-wasm` route.
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
(cd wasm-plugins && cargo build --release --target wasm32-wasip2 -p noop)
python3 scripts/bench.py --profile "$profile" --cluster "$@"
# Cluster mode's sync: time, bytes and Redis commands per sync with 1,000 routes x 3 backends.
python3 scripts/cluster_bench.py
# Idle memory with 1,000 routes and their SLA windows.
python3 scripts/idle_memory.py --routes 1000
