#!/usr/bin/env bash
# Cluster mode, live: a Redis, three Accord replicas sharing one SLA through it
# (`accord demo --replicas 3`) and HAProxy in front of them. The demo's traffic goes through
# HAProxy, so each replica serves a third of it; the dashboard of every replica
# (http://127.0.0.1:9901/dashboard, :9902, :9903) shows the same figures, the same breach of
# orders-primary and the same events, with the replicas that acted on each.
# Options are passed to `accord demo` (e.g. --duration 120s). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

REDIS_PORT="${REDIS_PORT:-16379}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" &
pids+=($!)

cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 1024
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend accord
  bind 127.0.0.1:8080
  default_backend replicas
backend replicas
  balance roundrobin
  server demo-1 127.0.0.1:8081 check
  server demo-2 127.0.0.1:8082 check
  server demo-3 127.0.0.1:8083 check
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

echo "==> Redis on 127.0.0.1:$REDIS_PORT, HAProxy on 127.0.0.1:8080 in front of three replicas"
cargo run --release -- demo --replicas 3 --listen 127.0.0.1:8081 --admin 127.0.0.1:9901 \
  --redis "redis://127.0.0.1:$REDIS_PORT" --traffic-to http://127.0.0.1:8080 "$@"
