#!/usr/bin/env python3
"""End-to-end benchmark: nginx and HAProxy as proxies vs Accord, in interleaved rounds.

Each proxy runs on one worker thread in front of the same nginx upstream (one worker: a fixed
`return 200 "ok"`, and a 16 KiB static file). Workloads: a small GET over 32 and over 256
connections, and a 16 KiB GET over 32. For every run `wrk -t1 --latency` drives the target after
a short warm-up; the proxy's CPU time (utime+stime of the process and its children, from /proc)
is divided by the requests served, and its RSS is read halfway through. Accord is measured on a
plain route, a route with an SLO, and a route with an SLO and one Wasm plugin (noop). Medians
over the rounds, the ratios to nginx, each proxy's CPU split between its own code (utime) and the
kernel's work for it (stime), and the peak RSS (with its allocated part) are printed and written
as JSON (target/bench/e2e.json) so that commits can be compared. So are each round's ratio to
nginx in that round, lowest to highest, and the data plane's targets (issue 12: CPU per request
and the plugin gateway's RSS), each with the number of rounds that met it: a median says where a
proxy stands, the rounds say whether the difference is larger than this machine's noise.
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


def cpu_split(pid):
    """(utime, stime) of pid and all its descendants, in seconds: the proxy's own code, and the
    kernel's work for it (the sockets, mostly)."""
    user = kernel = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            kernel += int(fields[12])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return user / TICKS, kernel / TICKS


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


def start_ok_upstream(workdir, port):
    """nginx answering `200 ok` to every request on `port`: the upstream of the measurements."""
    return start_nginx(workdir, "upstream", f"""server {{ listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "ok"; }} }}""")


def accord_binary(profile="release"):
    """The `accord` binary cargo built with `profile`."""
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), profile, "accord")


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


def rss_mib(pid):
    """Resident memory of pid and its descendants (nginx's workers), in MiB: all of it, and the
    anonymous part (what the process allocated; the rest is the pages of its binary and
    libraries that it touched, code mostly)."""
    total = anonymous = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                rollup = f.read()
            total += int(re.search(r"^Rss:\s+(\d+) kB", rollup, re.M).group(1))
            anonymous += int(re.search(r"^Anonymous:\s+(\d+) kB", rollup, re.M).group(1))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, AttributeError):
            pass
    return total / 1024, anonymous / 1024


def wrk(url, duration, connections, pid=None, script=None):
    """Runs wrk (with the Lua `script`, if any); with pid, samples that process's RSS halfway
    through."""
    run = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
                           + (["-s", script] if script else []) + [url],
                           stdout=subprocess.PIPE, text=True)
    rss = anonymous = None
    if pid:
        time.sleep(duration / 2)
        rss, anonymous = rss_mib(pid)
    out, _ = run.communicate()
    if run.returncode != 0:
        sys.exit(f"wrk failed on {url}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]

    return {
        "requests": requests,
        "rss_mib": rss,
        "anonymous_mib": anonymous,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "p50_us": pct(50),
        "p99_us": pct(99),
    }


def print_rows(summary, names, cell):
    """A row per workload, a column per proxy: `cell` of its entry, `-` where it did not run."""
    for w, by_proxy in summary.items():
        cells = [cell(by_proxy[n]) if n in by_proxy else "-" for n in names]
        print(f"  {w:12}" + "".join(f"{c:>20}" for c in cells))


# The data plane's targets: CPU per request at most this many times nginx's, by workload kind
# and route.
CPU_TARGETS = {("small", "accord"): 1.0, ("small", "accord+slo"): 1.0, ("16k", "accord"): 1.0,
               ("16k", "accord+slo"): 1.0, ("small", "accord+slo+plugin"): 1.15}
# Peak RSS of the gateway serving the plugin route, under load, in MiB.
RSS_TARGET_MIB = 20


def code_order_coverage(binary):
    """How many of `gateway/code-order.txt`'s functions a release binary has, as (found, listed):
    a stale file (symbols renamed by a change of toolchain, dependencies or their features) leaves
    the serving code spread over more pages, and the RSS measured higher than the code's."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "code-order.py"), "--check", "--binary", binary],
                         capture_output=True, text=True).stdout
    m = re.search(r"(\d+) of the (\d+) functions", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def round_ratios(runs):
    """Each run's CPU per request over nginx's in the same round, by (workload, proxy): the rounds
    are interleaved, so a round's ratio compares proxies under the same conditions, and their
    spread says how far a median can be trusted."""
    ratios = {}
    for (w, name), results in runs.items():
        nginx = runs.get((w, "nginx"), [])
        ratios[(w, name)] = [r["cpu_us_per_request"] / n["cpu_us_per_request"]
                             for r, n in zip(results, nginx)]
    return ratios


def verdicts(ratios, rss_mib):
    """The targets this run measured, each with how many rounds met it."""
    lines = []
    for (w, name), per_round in ratios.items():
        target = CPU_TARGETS.get((w.split("-")[0], name))
        if target is None or not per_round:
            continue
        met = sum(r <= target for r in per_round)
        verdict = ("met in every round" if met == len(per_round) else
                   "missed in every round" if met == 0 else f"met in {met} of {len(per_round)} rounds")
        lines.append(f"{w} {name} <= {target:.2f}x nginx: {verdict} "
                     f"(median {statistics.median(per_round):.3f}x, {min(per_round):.3f}-{max(per_round):.3f}x)")
    if "accord+slo+plugin" in rss_mib:
        rss = rss_mib["accord+slo+plugin"]
        lines.append(f"peak RSS with the plugin <= {RSS_TARGET_MIB} MiB: "
                     f"{'met' if rss <= RSS_TARGET_MIB else 'missed'} ({rss:.1f} MiB)")
    return lines


def start_haproxy(workdir, port, upstream_port):
    d = os.path.join(workdir, "haproxy")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend proxy
  bind 127.0.0.1:{port}
  default_backend app
backend app
  server app 127.0.0.1:{upstream_port}
""")
    return subprocess.Popen(["haproxy", "-f", path, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_upstream(workdir, port):
    """nginx on `port` answering `200 ok`, and a 16 KiB body at `/16k` and `/metered/16k`: the
    upstream of the benchmark's workloads."""
    files = os.path.join(workdir, "files")
    os.makedirs(files)
    with open(os.path.join(files, "16k"), "wb") as f:
        f.write(b"x" * 16384)
    return start_nginx(workdir, "upstream", f"""server {{ listen 127.0.0.1:{port};
        location = /16k {{ root {files}; default_type application/octet-stream; }}
        location = /metered/16k {{ alias {files}/16k; default_type application/octet-stream; }}
        location / {{ default_type text/plain; return 200 "ok"; }} }}""")


def accord_config(work, name, port, admin, upstream_port, extra="", plugin=True):
    """Routes `/` (plain), `/metered/` (an SLO) and, with `plugin`, `/plugged/` (an SLO and the
    noop Wasm plugin)."""
    config = os.path.join(work, f"{name}.yaml")
    slo = "    slo: {availability: 99.9%, latency: {threshold: 300ms, target: 99%}}\n"
    plugins = f"""plugins:
  noop:
    path: {ROOT}/wasm-plugins/target/wasm32-wasip2/release/noop.wasm
""" if plugin else ""
    plugged = f"""  - id: plugged
    match: {{path: {{prefix: /plugged}}}}
    backends: [{{backend: app}}]
    plugins: [noop]
{slo}""" if plugin else ""
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
{extra}{plugins}routes:
{plugged}  - id: metered
    match: {{path: {{prefix: /metered}}}}
    backends: [{{backend: app}}]
{slo}  - id: app
    match: {{path: {{prefix: /}}}}
    backends: [{{backend: app}}]
""")
    return config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workloads", default="small-32,16k-32,small-256",
                    help="comma-separated: small-N (a 2-byte body over N connections), 16k-N, paced-N (a "
                    "2-byte body over N connections that each wait 1 ms between a response and their next "
                    "request: the same request rate through every proxy, none of them saturated)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench/e2e.json"))
    ap.add_argument("--cluster", action="store_true", help="also measure a gateway in cluster mode "
                    "(a local redis-server, sync every second) on the SLO route, in the same rounds")
    ap.add_argument("--traces", action="store_true", help="also measure gateways exporting OpenTelemetry "
                    "traces (OTLP over HTTP to the nginx upstream) at 1%% and 100%% sampling, on the SLO route")
    ap.add_argument("--profile", default="release", help="the cargo profile whose accord binary is measured: "
                    "release (what `cargo run --release` builds) or dist (fat LTO, what ships)")
    ap.add_argument("--baseline", help="another accord binary (an earlier commit's release build) "
                    "measured in the same rounds, for before/after ratios")
    args = ap.parse_args()

    accord = accord_binary(args.profile)
    if not os.path.exists(accord):
        sys.exit(f"{accord} is missing: run scripts/bench.sh (it builds it)")
    coverage = code_order_coverage(accord) if args.profile == "release" else None
    if coverage and coverage[0] < 0.9 * coverage[1]:
        print(f"warning: {coverage[0]} of the {coverage[1]} functions in gateway/code-order.txt are in {accord}: "
              "the file is stale and the RSS measured will be higher than the code's; run scripts/code-order.py "
              "and build again", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="accord-bench-")
    upstream_port, nginx_port, haproxy_port, accord_port, admin_port, base_port, base_admin = (
        free_port() for _ in range(7))
    procs = []
    try:
        procs.append(start_upstream(work, upstream_port))
        proxy = start_nginx(work, "proxy", f"""upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
            server {{ listen 127.0.0.1:{nginx_port};
              location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")
        procs.append(proxy)
        proxies = [("nginx", nginx_port, "/", proxy.pid)]
        if shutil.which("haproxy"):
            haproxy = start_haproxy(work, haproxy_port, upstream_port)
            procs.append(haproxy)
            proxies.append(("haproxy", haproxy_port, "/", haproxy.pid))
        gateway = subprocess.Popen([accord, "run", "-c", accord_config(work, "accord", accord_port, admin_port, upstream_port),
                                    "--threads", "1"], stderr=subprocess.DEVNULL)
        procs.append(gateway)
        proxies += [("accord", accord_port, "/", gateway.pid),
                    ("accord+slo", accord_port, "/metered/", gateway.pid),
                    ("accord+slo+plugin", accord_port, "/plugged/", gateway.pid)]
        if args.baseline:
            baseline = subprocess.Popen([args.baseline, "run", "-c",
                                         accord_config(work, "baseline", base_port, base_admin, upstream_port),
                                         "--threads", "1"], stderr=subprocess.DEVNULL)
            procs.append(baseline)
            proxies += [("base", base_port, "/", baseline.pid),
                        ("base+slo", base_port, "/metered/", baseline.pid),
                        ("base+slo+plugin", base_port, "/plugged/", baseline.pid)]
        if args.cluster:
            redis_port, cluster_port, cluster_admin = free_port(), free_port(), free_port()
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                          stdout=subprocess.DEVNULL))
            wait_port(redis_port)
            cluster_gateway = subprocess.Popen(
                [accord, "run", "-c", accord_config(work, "cluster", cluster_port, cluster_admin, upstream_port,
                                                    f"cluster: {{name: bench, redis: \"redis://127.0.0.1:{redis_port}\", sync_interval: 1s}}\n"),
                 "--threads", "1"], stderr=subprocess.DEVNULL)
            procs.append(cluster_gateway)
            proxies.append(("cluster+slo", cluster_port, "/metered/", cluster_gateway.pid))
        if args.traces:
            for label, ratio in (("traces-1%", "1%"), ("traces-100%", "100%")):
                port, admin = free_port(), free_port()
                traced = subprocess.Popen(
                    [accord, "run", "-c", accord_config(work, label, port, admin, upstream_port,
                                                        f"traces: {{endpoint: \"http://127.0.0.1:{upstream_port}\", sample_ratio: {ratio}}}\n"),
                     "--threads", "1"], stderr=subprocess.DEVNULL)
                procs.append(traced)
                proxies.append((f"{label}+slo", port, "/metered/", traced.pid))
        for _, port, _, _ in proxies:
            wait_port(port)

        # A paced connection waits 1 ms between a response and its next request (wrk's `delay`).
        pace = os.path.join(work, "pace.lua")
        with open(pace, "w") as f:
            f.write("function delay()\n  return 1\nend\n")
        workloads = []
        for w in args.workloads.split(","):
            kind, connections = w.split("-")
            if kind not in ("small", "16k", "paced"):
                sys.exit(f"--workloads: unknown workload {w!r} (small-N, 16k-N or paced-N)")
            workloads.append((w, "16k" if kind == "16k" else "x", int(connections), pace if kind == "paced" else None))
        runs = {(w, name): [] for w, _, _, _ in workloads for name, _, _, _ in proxies}
        for round_no in range(1, args.rounds + 1):
            for w, path, connections, script in workloads:
                for name, port, prefix, pid in proxies:
                    url = f"http://127.0.0.1:{port}{prefix.rstrip('/')}/{path}" if prefix != "/" else f"http://127.0.0.1:{port}/{path}"
                    if path == "16k" and prefix not in ("/", "/metered/"):
                        continue
                    wrk(url, args.warmup, connections, script=script)
                    before = cpu_split(pid)
                    result = wrk(url, args.duration, connections, pid, script)
                    after = cpu_split(pid)
                    served = max(result["requests"], 1)
                    result["user_us_per_request"] = (after[0] - before[0]) * 1e6 / served
                    result["kernel_us_per_request"] = (after[1] - before[1]) * 1e6 / served
                    result["cpu_us_per_request"] = result["user_us_per_request"] + result["kernel_us_per_request"]
                    result["rps"] = result["requests"] / args.duration
                    runs[(w, name)].append(result)
                    print(f"round {round_no} {w:10} {name:18} {result['rps']:>8.0f} req/s  p50 {result['p50_us']:>6.0f} µs  "
                          f"p99 {result['p99_us']:>6.0f} µs  {result['cpu_us_per_request']:6.2f} µs CPU/req  "
                          f"RSS {result['rss_mib']:.1f} MiB ({result['anonymous_mib']:.1f} allocated)"
                          + (f"  non-2xx {result['non_2xx']}" if result["non_2xx"] else ""), flush=True)
        runs = {k: v for k, v in runs.items() if v}

        summary = {}
        for (w, name), results in runs.items():
            summary.setdefault(w, {})[name] = {
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in results),
                "user_us_per_request": statistics.median(r["user_us_per_request"] for r in results),
                "kernel_us_per_request": statistics.median(r["kernel_us_per_request"] for r in results),
                "rps": statistics.median(r["rps"] for r in results),
                "p50_us": statistics.median(r["p50_us"] for r in results),
                "p99_us": statistics.median(r["p99_us"] for r in results),
                "rss_mib_max": max(r["rss_mib"] for r in results),
                "anonymous_mib_max": max(r["anonymous_mib"] for r in results),
            }
        ratios = {}
        for w, by_proxy in summary.items():
            nginx = by_proxy["nginx"]["cpu_us_per_request"]
            for name, m in by_proxy.items():
                m["cpu_over_nginx"] = m["cpu_us_per_request"] / nginx
            for name in ("accord", "accord+slo", "accord+slo+plugin"):
                base = name.replace("accord", "base")
                if name in by_proxy and base in by_proxy:
                    ratios[f"{w} {name} over baseline"] = by_proxy[name]["cpu_us_per_request"] / by_proxy[base]["cpu_us_per_request"]
            for label in ("traces-1%+slo", "traces-100%+slo"):
                if label in by_proxy:
                    ratios[f"{w} {label} / off"] = by_proxy[label]["cpu_us_per_request"] / by_proxy["accord+slo"]["cpu_us_per_request"]
            if "cluster+slo" in by_proxy:
                ratios[f"{w} cluster on / off"] = by_proxy["cluster+slo"]["cpu_us_per_request"] / by_proxy["accord+slo"]["cpu_us_per_request"]
        per_round = round_ratios(runs)
        names = [name for name, _, _, _ in proxies]
        # Peak RSS by proxy, for the proxies that ran (the plugin route has no 16 KiB workload).
        rss = {n: max(by_proxy[n]["rss_mib_max"] for by_proxy in summary.values() if n in by_proxy)
               for n in names if any(n in by_proxy for by_proxy in summary.values())}
        targets = verdicts(per_round, rss)
        report = {"rounds": args.rounds, "duration_s": args.duration, "median": summary, "ratios": ratios,
                  "round_ratios": {f"{w} {name}": v for (w, name), v in per_round.items()},
                  "code_order": {"found": coverage[0], "listed": coverage[1]} if coverage else None,
                  "targets": targets,
                  "runs": {f"{w} {name}": v for (w, name), v in runs.items()},
                  "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print()
        print(f"CPU per request over nginx's (medians of {args.rounds} rounds); peak RSS under load:")
        print(f"  {'workload':12}" + "".join(f"{n:>20}" for n in names))
        print_rows(summary, names, lambda m: f"{m['cpu_over_nginx']:.2f}x ({m['cpu_us_per_request']:.1f} µs)")
        print(f"  {'RSS (MiB)':12}" + "".join(f"{rss[n]:>20.1f}" if n in rss else f"{'-':>20}" for n in names))
        anonymous = {n: max(by_proxy[n]["anonymous_mib_max"] for by_proxy in summary.values() if n in by_proxy)
                     for n in rss}
        print(f"  {'allocated':12}" + "".join(f"{anonymous[n]:>20.1f}" if n in anonymous else f"{'-':>20}" for n in names))
        print("Of which the proxy's own code (user) and the kernel's work for it (sys), µs per request:")
        print_rows(summary, names, lambda m: f"{m['user_us_per_request']:.1f} + {m['kernel_us_per_request']:.1f}")
        if args.rounds > 1:
            print("Each round's CPU per request over nginx's in that round, lowest-highest:")
            print_rows({w: {n: per_round[(w, n)] for n in by_proxy} for w, by_proxy in summary.items()}, names,
                       lambda r: f"{min(r):.2f}-{max(r):.2f}x" if r else "-")
        for key, value in ratios.items():
            print(f"  {key}: {value:.3f}x")
        if targets:
            print("Targets:")
            for line in targets:
                print(f"  {line}")
        print(f"written to {args.out}")
    finally:
        stop(procs, work)


if __name__ == "__main__":
    main()
