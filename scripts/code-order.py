#!/usr/bin/env python3
"""Writes `gateway/code-order.txt`: the functions the serving gateway runs, which the release
build's linker places next to each other (`gateway/build.rs`), so that the pages of code the
process touches hold little else.

Runs the release `accord` under `valgrind --tool=callgrind` (the whole process, start included)
on the bench's configuration (a plain route, an SLO route and an SLO route with the noop
plugin, with `sla_history`), sends requests to each route, reads the admin API's `/metrics`,
`/sla`, `/healthz` and `/readyz`, reloads (SIGHUP), waits for the SLA engine's tick, and sends
requests again. Every function of the binary that ran is written: first those that serve (the
most run first), then those only the start or the reload ran, so that the code every request
runs is packed together, away from code that runs once. The plugin compiler is left out: in a
gateway it runs in a child process of its own, and under valgrind (whose CPU has other features
than the host's, so that no artifact compiled natively loads) it runs in the traced process. In
the parts after the first, the frames on the main thread's stack at the dump (`main` down to the
runtime's `block_on`) are charged what ran beneath them, so they come first: a few small
functions, which the serving code then follows.

Regenerate after changes that rename or add much code on the request path, or after a new
toolchain, dependency versions or features (the symbols' hashes change; `--check` tells), or a
new profile (`scripts/pgo.py`: what the optimizer inlines follows it): a stale
file breaks nothing (the linker skips the names it does not find, and places the others as
before), but it costs memory: when tokio's features changed, 5,313 of the file's 6,942 names were
left in the binary, and the gateway's peak RSS under load rose by 3 MiB.
Needs valgrind, nginx (the upstream) and the noop plugin built
(`cargo build --release --target wasm32-wasip2` in `wasm-plugins/`).

  cargo build --release && python3 scripts/code-order.py
  cargo build --profile dist && python3 scripts/code-order.py --binary target/dist/accord --add
  python3 scripts/code-order.py --check   # how much of the file a release binary still has

The `dist` build (fat LTO) inlines and renames much of what the release build keeps as
functions, so it has names of its own: `--add` appends those of another build to the file (a
build skips the names it does not have).
"""
import argparse, os, re, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, accord_binary, accord_config, free_port, start_ok_upstream, stop, wait_port  # noqa: E402
from instructions import load  # noqa: E402

HEADER = """# The functions the serving gateway runs, the most run first, then those only its start
# and a reload run: the release build's linker places them next to each other (gateway/build.rs).
# Made by scripts/code-order.py; regenerate it when the request path's code changes much, or the
# toolchain or the dependencies.
"""


def exercise(port, admin, pid):
    """Serves, reloads, serves again: the profile's parts are the start (`.1`), serving (`.2`),
    the reload (`.3`) and serving again (the file itself, written at exit)."""
    dump(pid)
    for path in ("/x", "/metered/x", "/plugged/x"):
        load(port, path, 300)
    for path in ("/metrics", "/sla", "/healthz", "/readyz"):
        urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=60).read()
    dump(pid)
    os.kill(pid, signal.SIGHUP)
    time.sleep(7)  # the reload, and the SLA engine's tick (every 5 s)
    dump(pid)
    for path in ("/x", "/metered/x", "/plugged/x"):
        load(port, path, 100)


def dump(pid):
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)


# The plugin compiler's crates: what a gateway runs in a compiler child, not in itself.
COMPILER = re.compile(r"cranelift|regalloc2|wasmparser|wasm_encoder|wit_component|wit_parser")


def functions_run(profile, binary):
    """Self cost by function, for the functions of `binary` in a callgrind profile, the plugin
    compiler's left out."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", profile],
                          capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in text.splitlines():
        # `file:name [object]`, the file `???` without debug information; symbol names have no
        # colon.
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(?:\S*:)?([^\s:]+) \[(.*)\]$", line)
        if m and os.path.basename(m.group(3)) == os.path.basename(binary) and not COMPILER.search(m.group(2)):
            costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs


def check(binary, order):
    """How many of the file's functions `binary` has, and how many 64 KiB blocks they span (the
    kernel's unit when it maps code in). A build has only its own part of the file (the release
    build's or the `dist` build's); when that part shrinks, the code has moved on: remake it."""
    symbols = {}
    listing = subprocess.run(["nm", "--defined-only", "-S", binary], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            symbols[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
    with open(order) as f:
        names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    found = [symbols[name] for name in names if name in symbols]
    blocks = {block for start, size in found for block in range(start >> 16, ((start + max(size, 1) - 1) >> 16) + 1)}
    print(f"{binary}: {len(found)} of the {len(names)} functions in {order}, in {len(blocks)} blocks of 64 KiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=accord_binary())
    ap.add_argument("--out", default=os.path.join(ROOT, "gateway", "code-order.txt"))
    ap.add_argument("--check", action="store_true", help="report how much of the file the binary has")
    ap.add_argument("--add", action="store_true", help="append this binary's functions that the file lacks")
    args = ap.parse_args()
    if args.check:
        check(args.binary, args.out)
        return
    work = tempfile.mkdtemp(prefix="accord-code-order-")
    upstream = free_port()
    procs = [start_ok_upstream(work, upstream)]
    try:
        wait_port(upstream)
        port, admin = free_port(), free_port()
        # Four plugin slots: the pool's address space must fit valgrind's.
        extra = f"limits: {{plugin_instances: 4}}\nplugin_cache: {work}/plugins\n"
        config = accord_config(work, "order", port, admin, upstream, extra=extra, plugin=True)
        command = [args.binary, "run", "-c", config, "--threads", "1"]
        warm = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, timeout=60)
        warm.terminate()
        warm.wait()
        profile = os.path.join(work, "order.callgrind")
        traced = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={profile}"] + command,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(traced)
        wait_port(port, timeout=300)
        exercise(port, admin, traced.pid)
        traced.terminate()
        traced.wait(timeout=300)
        serving = functions_run(profile + ".2", args.binary)
        for name, cost in functions_run(profile, args.binary).items():
            serving[name] = serving.get(name, 0) + cost
        once = functions_run(profile + ".1", args.binary)
        for name, cost in functions_run(profile + ".3", args.binary).items():
            once[name] = once.get(name, 0) + cost
    finally:
        stop(procs, work)
    if len(serving) < 1000:
        sys.exit(f"only {len(serving)} functions ran: is {args.binary} a release build with symbols?")
    names = [name for name, _ in sorted(serving.items(), key=lambda kv: (-kv[1], kv[0]))]
    names += [name for name, _ in sorted(once.items(), key=lambda kv: (-kv[1], kv[0])) if name not in serving]
    if args.add:
        with open(args.out) as f:
            kept = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        known = set(kept)
        names = kept + [name for name in names if name not in known]
    with open(args.out, "w") as f:
        f.write(HEADER)
        for name in names:
            f.write(name + "\n")
    print(f"{args.out}: {len(names)} functions")


if __name__ == "__main__":
    main()
