#!/usr/bin/env python3
"""Idle memory of the gateway with N routes, each with an SLO (so every route has its SLA
meters and windows allocated), read from /proc/<pid>/status (VmRSS) once the gateway is ready.
Target (BENCHMARKS.md): <= 64 MB RSS with 1,000 routes.

Usage: scripts/idle_memory.py [--routes 1000] [--binary target/release/accord]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(routes, port, admin):
    lines = [
        f"listeners:\n  - address: 127.0.0.1:{port}",
        f"admin:\n  address: 127.0.0.1:{admin}",
        "log:\n  level: warn\n  access_log: false",
        "sla_history:\n  enabled: false",
        "backends:\n  app:\n    http:\n      addresses: [\"127.0.0.1:9\"]",
        "routes:",
    ]
    for i in range(routes):
        lines.append(
            f"  - id: r{i}\n    match: {{path: {{prefix: /svc{i}}}}}\n    backends: [{{backend: app}}]\n"
            f"    slo:\n      availability: 99.9%\n      latency: {{threshold: 300ms, target: 99%}}"
        )
    return "\n".join(lines) + "\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=1000)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    ap.add_argument("--binary", default=os.path.join(target, "release/accord"))
    args = ap.parse_args()
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "accord.yaml")
        with open(path, "w") as f:
            f.write(config(args.routes, port, admin))
        proc = subprocess.Popen([args.binary, "run", "-c", path])
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1)
                    break
                except Exception:
                    if time.time() > deadline or proc.poll() is not None:
                        sys.exit("the gateway did not become ready")
                    time.sleep(0.2)
            time.sleep(6)  # past the first SLA evaluation (every 5 s)
            kib = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"idle RSS with {args.routes} routes and their SLA windows: {kib / 1024:.1f} MiB (target <= 64 MB)")


if __name__ == "__main__":
    main()
