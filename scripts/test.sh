#!/usr/bin/env bash
# Installs every test peer Accord's tests need, then runs the whole test suite, peer tests
# included. This is the README's test command; .ci/run calls it.
#
# Peers: nginx (Debian's package) as a real upstream; Debian's Chromium driven by the npm
# package playwright-core for the dashboard; the wasm32-wasip2 Rust target for the Rust
# plugins; Debian's clang, lld, wasi-libc and wasm32 compiler runtime for the C plugin;
# cargo-lambda (PyPI's prebuilt binary) as a real Lambda Invoke endpoint; the npm packages
# oauth2-mock-server (the Entra ID tenant) and azurite (Azure Storage) for the Azure tests;
# Debian's redis-server (and redis-cli) for cluster mode, one server and a Redis Cluster;
# componentize-py (PyPI) and componentize-js (npm) for the Python and JavaScript plugins;
# Debian's prometheus (with promtool) and prometheus-alertmanager for the rules and alerts.
# Installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check_disk.sh

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/redis-server ] && [ -x /usr/bin/redis-cli ] || missing+=(redis-server)
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev-wasm32)

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing test peers: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The plugin tests build WebAssembly components (rustc's wasm32-wasip2 target emits them).
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> adding the wasm32-wasip2 target for the plugin tests"
  rustup target add wasm32-wasip2
fi

# cargo-lambda's Invoke emulator runs a real lambda_http function for the Lambda adapter's tests.
# The wheel carries a prebuilt binary (cargo install would take ~18 minutes).
scripts_dir="$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")"
export PATH="$scripts_dir:$PATH"
if ! command -v cargo-lambda >/dev/null 2>&1; then
  echo "==> installing cargo-lambda (PyPI) for the Lambda tests"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps cargo-lambda==1.9.2
fi

# npm packages are installed from their lock files, and again whenever a lock file changes
# (a copy of the lock installed last sits in node_modules).
npm_ci() {
  local dir="$1" what="$2"
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.accord-installed-lock"; then
    echo "==> installing $what (npm)"
    npm ci --prefix "$dir" --no-audit --no-fund --silent
    cp "$dir/package-lock.json" "$dir/node_modules/.accord-installed-lock"
  fi
}

# The Python and JavaScript plugins are built from the WIT by the tests: componentize-py
# (PyPI) and componentize-js (npm, pinned in wasm-plugins/js/package-lock.json).
if ! command -v componentize-py >/dev/null 2>&1; then
  echo "==> installing componentize-py (PyPI) for the Python plugin"
  python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
npm_ci wasm-plugins/js "componentize-js for the JavaScript plugin"

# kubernetes-validate checks the Kubernetes example against the 1.37 schemas, offline.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "==> installing kubernetes-validate (PyPI) for the Kubernetes example's test"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi

npm_ci tests/azure "oauth2-mock-server and azurite for the Azure tests"

npm_ci tests/browser "playwright-core for the dashboard test"

# Every peer must be there now: with CI=true a missing peer is a failure, never a skip.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || { echo "nginx is still missing" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "chromium is still missing" >&2; exit 1; }
[ -x /usr/bin/redis-server ] && [ -x /usr/bin/redis-cli ] || { echo "redis-server is still missing" >&2; exit 1; }
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || { echo "prometheus is still missing" >&2; exit 1; }
[ -x /usr/bin/prometheus-alertmanager ] || { echo "prometheus-alertmanager is still missing" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "node is missing (the machine image ships Node 20)" >&2; exit 1; }
[ -f /usr/lib/wasm32-wasi/libc.a ] && command -v clang >/dev/null 2>&1 || { echo "clang or wasi-libc is still missing" >&2; exit 1; }
command -v cargo-lambda >/dev/null 2>&1 || { echo "cargo-lambda is still missing" >&2; exit 1; }
command -v kubernetes-validate >/dev/null 2>&1 || { echo "kubernetes-validate is still missing" >&2; exit 1; }
command -v componentize-py >/dev/null 2>&1 || { echo "componentize-py is still missing" >&2; exit 1; }
[ -x wasm-plugins/js/node_modules/.bin/componentize-js ] || { echo "componentize-js is still missing" >&2; exit 1; }

echo "==> cargo test (workspace, peer tests included)"
cargo test --workspace -- --include-ignored
