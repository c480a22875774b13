#!/usr/bin/env python3
"""Cluster mode's cost: one Redis, three replicas with 1,000 routes x 3 backends each, traffic
spread over every route and backend; then, per replica and per sync, the time a sync takes, the
bytes of rollups it writes, and the Redis commands and network bytes it costs (from Redis's own
INFO), measured over a quiet interval while the meters hold a few minutes of traffic.

Run by scripts/bench.sh after the end-to-end benchmark; needs redis-server, nginx and wrk.
"""
import argparse, json, os, re, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, accord_binary, free_port, start_ok_upstream, stop, wait_port  # noqa: E402


def metrics(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    def value(name, labels=""):
        m = re.search(rf"^{name}\{{[^}}]*{labels}[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0
    return {
        "syncs": value("accord_cluster_syncs_total", 'result="ok"'),
        "failed": value("accord_cluster_syncs_total", 'result="failed"'),
        "seconds": value("accord_cluster_sync_seconds_total"),
        "bytes": value("accord_cluster_written_bytes_total"),
    }


def redis_stats(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "stats"], capture_output=True, text=True).stdout
    get = lambda k: int(re.search(rf"^{k}:(\d+)", out, re.M).group(1))
    return {"commands": get("total_commands_processed"), "net_in": get("total_net_input_bytes"),
            "net_out": get("total_net_output_bytes")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--load", type=int, default=20, help="seconds of traffic before measuring")
    ap.add_argument("--measure", type=int, default=20, help="seconds measured")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench/cluster.json"))
    args = ap.parse_args()
    accord = accord_binary()
    work = tempfile.mkdtemp(prefix="accord-cluster-bench-")
    procs = []
    try:
        upstream_port = free_port()
        procs.append(start_ok_upstream(work, upstream_port))
        redis_port = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL))
        wait_port(upstream_port)
        wait_port(redis_port)
        backends = "".join(f"  b{i}:\n    http:\n      addresses: [\"127.0.0.1:{upstream_port}\"]\n" for i in range(3))
        routes = "".join(
            f"  - id: r{n}\n    match: {{path: {{prefix: /r{n}/}}}}\n"
            f"    backends: [{{backend: b0, priority: 1}}, {{backend: b1, priority: 1}}, {{backend: b2, priority: 1}}]\n"
            f"    slo: {{availability: 99.9%, latency: {{threshold: 300ms, target: 99%}}}}\n"
            for n in range(args.routes))
        replicas = []
        for r in range(args.replicas):
            port, admin = free_port(), free_port()
            config = os.path.join(work, f"replica{r}.yaml")
            with open(config, "w") as f:
                f.write(f"listeners: [{{address: 127.0.0.1:{port}}}]\nadmin: {{address: 127.0.0.1:{admin}}}\n"
                        f"log: {{level: warn, access_log: false}}\n"
                        f"cluster: {{name: bench, redis: \"redis://127.0.0.1:{redis_port}\", replica: r{r}, sync_interval: 1s}}\n"
                        f"backends:\n{backends}routes:\n{routes}")
            procs.append(subprocess.Popen([accord, "run", "-c", config, "--threads", "1"], stderr=subprocess.DEVNULL))
            replicas.append((port, admin))
        for port, _ in replicas:
            wait_port(port, timeout=60)
        script = os.path.join(work, "routes.lua")
        with open(script, "w") as f:
            f.write(f"request = function() return wrk.format(nil, '/r' .. math.random(0, {args.routes - 1}) .. '/x') end\n")
        loads = [subprocess.Popen(["wrk", "-t1", "-c4", f"-d{args.load}s", "-s", script, f"http://127.0.0.1:{port}/"],
                                  stdout=subprocess.DEVNULL) for port, _ in replicas]
        for load in loads:
            load.wait()
        time.sleep(3)
        before = [metrics(admin) for _, admin in replicas]
        redis_before = redis_stats(redis_port)
        time.sleep(args.measure)
        after = [metrics(admin) for _, admin in replicas]
        redis_after = redis_stats(redis_port)
        syncs = sum(a["syncs"] - b["syncs"] for a, b in zip(after, before))
        per_sync = {
            "sync_ms": 1000 * sum(a["seconds"] - b["seconds"] for a, b in zip(after, before)) / syncs,
            "rollup_bytes_written": sum(a["bytes"] - b["bytes"] for a, b in zip(after, before)) / syncs,
            "redis_commands": (redis_after["commands"] - redis_before["commands"]) / syncs,
            "redis_bytes_in": (redis_after["net_in"] - redis_before["net_in"]) / syncs,
            "redis_bytes_out": (redis_after["net_out"] - redis_before["net_out"]) / syncs,
        }
        failed = sum(a["failed"] for a in after)
        report = {"routes": args.routes, "backends_per_route": 3, "replicas": args.replicas,
                  "syncs_measured": syncs, "failed_syncs": failed, "per_replica_per_sync": per_sync}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"cluster mode, {args.replicas} replicas x {args.routes} routes x 3 backends, per replica per sync "
              f"(over {syncs:.0f} syncs, {failed:.0f} failed): {per_sync['sync_ms']:.1f} ms, "
              f"{per_sync['rollup_bytes_written'] / 1024:.0f} KiB of rollups, {per_sync['redis_commands']:.0f} Redis commands, "
              f"{per_sync['redis_bytes_in'] / 1024:.0f} KiB to Redis, {per_sync['redis_bytes_out'] / 1024:.0f} KiB from Redis")
        print(f"written to {args.out}")
    finally:
        stop(procs, work)


if __name__ == "__main__":
    main()
