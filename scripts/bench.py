#!/usr/bin/env python3
"""End-to-end benchmark: direct vs nginx-as-proxy vs Accord, in interleaved rounds.

Each proxy runs on one worker thread in front of the same nginx upstream (one worker, a fixed
`return 200`). For every run, `wrk -t1 -c32 --latency` drives the target after a short warm-up,
and the proxy's CPU time (utime+stime of the process and its children, from /proc) is divided by
the requests served. Medians over the rounds and the Accord/nginx ratios are printed and written
as JSON (target/bench/e2e.json) so that commits can be compared.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu_seconds(pid):
    """utime+stime of pid and all its descendants, in seconds."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return total / TICKS


def nginx_binary():
    for path in ("/usr/sbin/nginx", shutil.which("nginx") or ""):
        if path and os.path.exists(path):
            return path
    sys.exit("nginx is missing: run scripts/bench.sh")


def start_nginx(workdir, name, server_block):
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  {server_block}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return subprocess.Popen([nginx_binary(), "-c", path, "-p", d], stdout=subprocess.DEVNULL)


def stop(procs, work):
    """Stops every process (SIGTERM, then SIGKILL after 10 s) and removes the scratch directory."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)


def wrk(url, duration, connections):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]

    return {
        "requests": requests,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "p50_us": pct(50),
        "p99_us": pct(99),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench/e2e.json"))
    ap.add_argument("--cluster", action="store_true", help="also measure a gateway in cluster mode "
                    "(a local redis-server, sync every second) in the same rounds")
    ap.add_argument("--baseline", help="another accord binary (an earlier commit's release build) "
                    "measured in the same rounds, for before/after ratios")
    args = ap.parse_args()

    accord = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/accord")
    if not os.path.exists(accord):
        sys.exit(f"{accord} is missing: run scripts/bench.sh (it builds it)")
    work = tempfile.mkdtemp(prefix="accord-bench-")
    upstream_port, nginx_port, accord_port, admin_port, base_port, base_admin = (free_port() for _ in range(6))
    procs = []
    try:
        upstream = start_nginx(work, "upstream", f"""server {{ listen 127.0.0.1:{upstream_port};
            location / {{ default_type text/plain; return 200 "ok"; }} }}""")
        procs.append(upstream)
        proxy = start_nginx(work, "proxy", f"""upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
            server {{ listen 127.0.0.1:{nginx_port};
              location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")
        procs.append(proxy)
        def write_config(name, port, admin, extra=""):
            config = os.path.join(work, f"{name}.yaml")
            with open(config, "w") as f:
                f.write(f"""listeners:
  - address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
log:
  level: warn
  access_log: false
backends:
  app:
    http:
      addresses: ["127.0.0.1:{upstream_port}"]
sla_history:
  path: {work}/{name}.db
{extra}plugins:
  noop:
    path: {ROOT}/wasm-plugins/target/wasm32-wasip2/release/noop.wasm
routes:
  - id: plugged
    match: {{path: {{prefix: /plugged}}}}
    backends: [{{backend: app}}]
    plugins: [noop]
  - id: metered
    match: {{path: {{prefix: /metered}}}}
    backends: [{{backend: app}}]
    slo:
      availability: 99.9%
      latency: {{threshold: 300ms, target: 99%}}
  - id: app
    match: {{path: {{prefix: /}}}}
    backends: [{{backend: app}}]
""")
            return config

        gateway = subprocess.Popen([accord, "run", "-c", write_config("accord", accord_port, admin_port), "--threads", "1"],
                                   stderr=subprocess.DEVNULL)
        procs.append(gateway)
        ports = [upstream_port, nginx_port, accord_port]
        if args.baseline:
            baseline = subprocess.Popen([args.baseline, "run", "-c", write_config("baseline", base_port, base_admin),
                                         "--threads", "1"], stderr=subprocess.DEVNULL)
            procs.append(baseline)
            ports.append(base_port)
        if args.cluster:
            redis_port, cluster_port, cluster_admin = free_port(), free_port(), free_port()
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                          stdout=subprocess.DEVNULL))
            wait_port(redis_port)
            cluster_gateway = subprocess.Popen(
                [accord, "run", "-c", write_config("cluster", cluster_port, cluster_admin,
                                                   f"cluster: {{name: bench, redis: \"redis://127.0.0.1:{redis_port}\", sync_interval: 1s}}\n"),
                 "--threads", "1"], stderr=subprocess.DEVNULL)
            procs.append(cluster_gateway)
            ports.append(cluster_port)
        for port in ports:
            wait_port(port)

        targets = [
            ("direct", f"http://127.0.0.1:{upstream_port}/", None),
            ("nginx", f"http://127.0.0.1:{nginx_port}/", proxy.pid),
            ("accord", f"http://127.0.0.1:{accord_port}/", gateway.pid),
            ("accord-sla", f"http://127.0.0.1:{accord_port}/metered", gateway.pid),
            ("accord-wasm", f"http://127.0.0.1:{accord_port}/plugged", gateway.pid),
        ]
        if args.baseline:
            targets += [
                ("base", f"http://127.0.0.1:{base_port}/", baseline.pid),
                ("base-sla", f"http://127.0.0.1:{base_port}/metered", baseline.pid),
                ("base-wasm", f"http://127.0.0.1:{base_port}/plugged", baseline.pid),
            ]
        if args.cluster:
            targets += [("cluster-sla", f"http://127.0.0.1:{cluster_port}/metered", cluster_gateway.pid)]
        runs = {name: [] for name, _, _ in targets}
        for round_no in range(1, args.rounds + 1):
            for name, url, pid in targets:
                wrk(url, args.warmup, args.connections)
                before = cpu_seconds(pid) if pid else 0
                result = wrk(url, args.duration, args.connections)
                if pid:
                    result["cpu_us_per_request"] = (cpu_seconds(pid) - before) * 1e6 / max(result["requests"], 1)
                result["rps"] = result["requests"] / args.duration
                runs[name].append(result)
                cpu = f"{result['cpu_us_per_request']:.2f} µs CPU/req" if pid else "-"
                print(f"round {round_no} {name:10} {result['rps']:>9.0f} req/s  p50 {result['p50_us']:>7.0f} µs  p99 {result['p99_us']:>7.0f} µs  {cpu}"
                      + (f"  non-2xx {result['non_2xx']}" if result["non_2xx"] else ""), flush=True)

        def med(name, key):
            return statistics.median(r[key] for r in runs[name])

        summary = {name: {k: med(name, k) for k in ("rps", "p50_us", "p99_us")} for name in runs}
        for name in runs:
            if name != "direct":
                summary[name]["cpu_us_per_request"] = med(name, "cpu_us_per_request")
        ratios = {
            "cpu_per_request_accord_over_nginx": summary["accord"]["cpu_us_per_request"] / summary["nginx"]["cpu_us_per_request"],
            "p50_accord_over_nginx": summary["accord"]["p50_us"] / summary["nginx"]["p50_us"],
            "p99_accord_over_nginx": summary["accord"]["p99_us"] / summary["nginx"]["p99_us"],
            "added_p50_us_over_direct": summary["accord"]["p50_us"] - summary["direct"]["p50_us"],
            "cpu_per_request_sla_over_plain": summary["accord-sla"]["cpu_us_per_request"] / summary["accord"]["cpu_us_per_request"],
            "cpu_per_request_sla_over_nginx": summary["accord-sla"]["cpu_us_per_request"] / summary["nginx"]["cpu_us_per_request"],
            "cpu_per_request_plugin_over_plain": summary["accord-wasm"]["cpu_us_per_request"] / summary["accord"]["cpu_us_per_request"],
        }
        if args.baseline:
            for suffix in ("", "-sla", "-wasm"):
                ratios[f"cpu_per_request_accord{suffix}_over_baseline"] = (
                    summary[f"accord{suffix}"]["cpu_us_per_request"] / summary[f"base{suffix}"]["cpu_us_per_request"])
        if args.cluster:
            ratios["cpu_per_request_cluster_over_single"] = (
                summary["cluster-sla"]["cpu_us_per_request"] / summary["accord-sla"]["cpu_us_per_request"])
        report = {"rounds": args.rounds, "duration_s": args.duration, "connections": args.connections,
                  "median": summary, "ratios": ratios, "runs": runs,
                  "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print()
        print(f"medians over {args.rounds} rounds:")
        for name in runs:
            s = summary[name]
            cpu = f"  {s['cpu_us_per_request']:.2f} µs CPU/req" if "cpu_us_per_request" in s else ""
            print(f"  {name:10} {s['rps']:>9.0f} req/s  p50 {s['p50_us']:>7.0f} µs  p99 {s['p99_us']:>7.0f} µs{cpu}")
        print(f"accord / nginx: CPU per request {ratios['cpu_per_request_accord_over_nginx']:.2f}x, "
              f"p50 {ratios['p50_accord_over_nginx']:.2f}x, p99 {ratios['p99_accord_over_nginx']:.2f}x; "
              f"added p50 over direct {ratios['added_p50_us_over_direct']:.0f} µs")
        print(f"SLA metering on / off: CPU per request {ratios['cpu_per_request_sla_over_plain']:.3f}x; "
              f"with metering / nginx: {ratios['cpu_per_request_sla_over_nginx']:.2f}x")
        print(f"one Wasm plugin (noop) / none: CPU per request {ratios['cpu_per_request_plugin_over_plain']:.3f}x")
        if args.cluster:
            print(f"cluster mode on / off (route with an SLO, sync every 1 s, CPU of the sync task included): "
                  f"CPU per request {ratios['cpu_per_request_cluster_over_single']:.3f}x")
        if args.baseline:
            print("this build / baseline, CPU per request: " + ", ".join(
                f"{route} {ratios[f'cpu_per_request_accord{suffix}_over_baseline']:.3f}x"
                for route, suffix in (("plain", ""), ("slo", "-sla"), ("plugin", "-wasm"))))
        print(f"written to {args.out}")
    finally:
        stop(procs, work)


if __name__ == "__main__":
    main()
