#!/usr/bin/env python3
"""Instructions per proxied request, from callgrind: stable from run to run, unlike CPU time on a
busy 2-core machine, so small changes to the data plane can be compared.

Runs `accord run` under `valgrind --tool=callgrind` (instrumentation off until the warm-up is done),
sends `--requests` small GETs over 8 keep-alive connections to the chosen route, and prints the
instructions counted divided by the requests. With `--baseline PATH`, measures that binary too
and prints the ratio; with `--nginx`, measures nginx proxying to the same upstream (one worker,
upstream keep-alive, as in `bench.py`) and prints Accord's count over nginx's. Needs valgrind
and nginx (the upstream).

  python3 scripts/instructions.py [--route /|/metered/|/plugged/] [--baseline /tmp/accord-old] [--nginx]
                                  [--caches] [--atomics] [--keep DIR] [--connections N]

With `--connections 1` the requests go over one keep-alive connection, so that the proxy waits
for each of them and parks between them, as one that is not saturated does; with the default 8,
the proxy (slowed down by valgrind) always has a request waiting.

With `--atomics`, the atomic read-modify-writes (`lock`-prefixed instructions, and `xchg` with
memory) run per request are counted too, with the functions that run the most of them (found in
objdump's disassembly of the code the profile ran). Callgrind counts each as one instruction;
each costs a real core about 4 ns here back to back (an uncontended `lock add`) and 2.4 ns
amid ordinary stores, a dozen ordinary instructions' time. Accord's plain route ran 128 per
request to nginx's 7 (2026-12-02), 98 since.

With `--caches`, valgrind also simulates the caches (the host's sizes) and the branch predictor,
and the misses per request are printed beside the instructions, with the code footprint (the
64-byte lines of code run for at least every other request). Accord's plain route misses the
L1 instruction cache 1.7x to 2.6x as often as nginx for as many instructions, its hot code spread
over large async state machines; the simulator overstates what that costs a real core (a layout
from a profile that removed those misses moved CPU per request by 1-4%: docs/performance.md).

`/plugged/` is the SLO route with the noop Wasm plugin (built in `wasm-plugins/`): the gateway
runs with `limits.plugin_instances: 4`, so that the plugin pool's address space fits valgrind's.
"""
import argparse, os, re, shutil, subprocess, sys, tempfile, threading, time, http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import accord_binary, accord_config, free_port, start_ok_upstream, stop, wait_port  # noqa: E402


# Set by --connections: how many keep-alive connections send the requests.
CONNECTIONS = 8


def load(port, path, requests, connections=8):
    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(n):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                sys.exit(f"status {response.status} on {path}")
        conn.close()
    threads = [threading.Thread(target=worker, args=(requests // connections,)) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (requests // connections) * connections


# Set by --caches: the simulators' options for valgrind.
SIMULATE = []

# Set by --atomics: every instruction's address in the profile, to find the atomic ones.
ATOMICS = []

# What `--caches` prints, from callgrind's events: (event, label).
MISSES = [("I1mr", "I1 misses"), ("D1mr", "D1 read misses"), ("D1mw", "D1 write misses"),
          ("Bcm", "branch mispredicts"), ("Bim", "indirect mispredicts")]


def measure(binary, work, upstream_port, route, requests, name):
    port, admin = free_port(), free_port()
    # The plugin route only when it is measured: its pool must be small enough for valgrind, a
    # setting builds before `limits.plugin_instances` refuse.
    plugin = route.startswith("/plugged")
    extra = "limits: {plugin_instances: 4}\n" if plugin else ""
    config = accord_config(work, name, port, admin, upstream_port, extra=extra, plugin=plugin)
    return counted(work, name, [binary, "run", "-c", config, "--threads", "1"], port, route + "x", requests)


def measure_nginx(work, upstream_port, requests):
    """nginx as the proxy, under callgrind like Accord: one worker in the foreground."""
    port = free_port()
    config = os.path.join(work, "nginx-proxy.conf")
    with open(config, "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1;
error_log {work}/nginx-proxy.err; pid {work}/nginx-proxy.pid;
events {{ worker_connections 1024; }}
http {{ access_log off;
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    return counted(work, "nginx", ["nginx", "-c", config], port, "/x", requests)


def counted(work, name, command, port, path, requests):
    """Runs `command` (a proxy listening on `port`) under callgrind, sends `requests` GETs of
    `path` after a warm-up with the instrumentation off, and returns the instructions counted per
    request."""
    out = os.path.join(work, f"{name}.callgrind")
    # Under the cache simulator, address-space randomization is turned off: where the code lands
    # decides which of it shares a cache set, and so the misses. One binary, started again and
    # again, missed 347 to 427 times per request with randomization and 291 to 330 without.
    fixed = ["setarch", "-R"] if SIMULATE else []
    proc = subprocess.Popen(fixed + ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
                            + (SIMULATE or ATOMICS) + command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=120)
        load(port, path, 200, CONNECTIONS)  # warm-up: pools, plugin instances, lazy statics
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        sent = load(port, path, requests, CONNECTIONS)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    totals = {}
    code_lines = set()
    runs = {}
    for f in os.listdir(work):
        if f.startswith(f"{name}.callgrind"):
            with open(os.path.join(work, f)) as fh:
                text = fh.read()
            if SIMULATE:
                code_lines |= lines_run(text, sent // 2)
            if ATOMICS:
                instructions_run(text, runs)
            events = re.search(r"^events: (.*)$", text, re.M)
            counts = re.search(r"^totals: (.*)$", text, re.M)
            if events and counts:
                for event, count in zip(events.group(1).split(), counts.group(1).split()):
                    totals[event] = totals.get(event, 0) + int(count)
    per_request = {event: count / sent for event, count in totals.items()}
    if SIMULATE:
        misses = ", ".join(f"{per_request.get(e, 0):,.0f} {label}" for e, label in MISSES)
        print(f"  {name}: {misses} per request; the code run for every other request or more: "
              f"{len(code_lines):,} lines of 64 bytes ({len(code_lines) * 64 / 1024:.1f} KiB)")
    if ATOMICS:
        print_atomics(name, runs, sent)
    return per_request.get("Ir", 0)


def instructions_run(profile, runs):
    """Adds to `runs` how many times each instruction ran, by (object, address, function), from
    a profile with every instruction's address (as for `lines_run`)."""
    obj = fn = None
    call_site = False
    for row in profile.splitlines():
        if row.startswith("ob="):
            obj = row[3:]
        elif row.startswith("fn="):
            fn = row[3:]
        elif row.startswith("calls="):
            call_site = True
            continue
        elif row.startswith("0x"):
            fields = row.split()
            if not call_site and len(fields) > 2:
                key = (obj, int(fields[0], 16), fn)
                runs[key] = runs.get(key, 0) + int(fields[2])
        call_site = False


def atomic_instructions(obj, low, high):
    """The addresses of the atomic read-modify-write instructions (`lock`-prefixed, or `xchg`
    with memory, which is locked without the prefix) of `obj` between `low` and `high`, from
    objdump's disassembly."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={low:#x}",
                          f"--stop-address={high + 16:#x}", obj], capture_output=True, text=True).stdout
    found = {}
    for row in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(lock \S+|xchg\S*\s.*\(.*)", row)
        if m:
            found[int(m.group(1), 16)] = m.group(2).split()[1] if m.group(2).startswith("lock") else "xchg"
    return found


def print_atomics(name, runs, sent):
    """Prints the atomic read-modify-writes run per request, and the functions that ran the most:
    each costs tens of cycles (it waits for the store buffer to drain) where callgrind counts it
    as one instruction."""
    ranges = {}
    for obj, address, _ in runs:
        low, high = ranges.get(obj, (address, address))
        ranges[obj] = (min(low, address), max(high, address))
    atomic = {obj: atomic_instructions(obj, low, high) for obj, (low, high) in ranges.items()
              if os.path.exists(obj)}
    by_function = {}
    total = 0
    for (obj, address, fn), count in runs.items():
        if address in atomic.get(obj, {}):
            total += count
            by_function[fn] = by_function.get(fn, 0) + count
    print(f"  {name}: {total / sent:.1f} atomic read-modify-writes per request; the functions that ran most:")
    for fn, count in sorted(by_function.items(), key=lambda item: -item[1])[:12]:
        print(f"    {count / sent:5.1f}  {fn[:110]}")


def lines_run(profile, times):
    """The 64-byte lines of code that ran at least `times` times, as (object, line) pairs, from a
    profile with every instruction's address (`--dump-instr=yes --compress-pos=no
    --compress-strings=no`): the request path's code footprint, which does not move with where
    the code lands as the misses do, nor with a periodic task that ran meanwhile (the SLA
    engine's tick, every 5 s)."""
    lines = set()
    obj = None
    call_site = False
    for row in profile.splitlines():
        if row.startswith("ob="):
            obj = row[3:]
        elif row.startswith("calls="):
            # The next row is the call's site with the callee's cost, not code run here.
            call_site = True
        elif row.startswith("0x"):
            fields = row.split()
            if not call_site and len(fields) > 2 and int(fields[2]) >= times:
                lines.add((obj, int(fields[0], 16) >> 6))
            call_site = False
        else:
            call_site = False
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--route", default="/")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections sending the requests: "
                    "with 8 the proxy, slowed down by valgrind, always has a request waiting; with 1 it waits "
                    "for each one, as an unsaturated proxy does")
    ap.add_argument("--baseline")
    ap.add_argument("--profile", default="release", help="release or dist: which build of accord")
    ap.add_argument("--nginx", action="store_true", help="also measure nginx as the proxy")
    ap.add_argument("--caches", action="store_true", help="also simulate the caches and branch predictor")
    ap.add_argument("--atomics", action="store_true", help="also count the atomic read-modify-writes "
                    "per request (needs objdump), and the functions that run them")
    ap.add_argument("--keep", metavar="DIR", help="copy the callgrind profiles to DIR (for callgrind_annotate)")
    args = ap.parse_args()
    global CONNECTIONS
    CONNECTIONS = args.connections
    if args.caches:
        SIMULATE.extend(["--cache-sim=yes", "--branch-sim=yes",
                         # Instruction addresses, in full, for the code footprint.
                         "--dump-instr=yes", "--compress-pos=no", "--compress-strings=no"])
    if args.atomics:
        ATOMICS.extend(["--dump-instr=yes", "--compress-pos=no", "--compress-strings=no"])
    accord = accord_binary(args.profile)
    work = tempfile.mkdtemp(prefix="accord-instructions-")
    upstream_port = free_port()
    procs = [start_ok_upstream(work, upstream_port)]
    try:
        wait_port(upstream_port)
        this = measure(accord, work, upstream_port, args.route, args.requests, "this")
        print(f"this build: {this:,.0f} instructions per request on {args.route}")
        if args.baseline:
            base = measure(args.baseline, work, upstream_port, args.route, args.requests, "base")
            print(f"baseline:   {base:,.0f} instructions per request; this / baseline {this / base:.3f}x")
        if args.nginx:
            nginx = measure_nginx(work, upstream_port, args.requests)
            print(f"nginx:      {nginx:,.0f} instructions per request; this / nginx {this / nginx:.3f}x")
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for f in os.listdir(work):
                if ".callgrind" in f:
                    shutil.copy(os.path.join(work, f), args.keep)
            print(f"profiles kept in {args.keep}")
    finally:
        stop(procs, work)


if __name__ == "__main__":
    main()
