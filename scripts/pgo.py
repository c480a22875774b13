#!/usr/bin/env python3
"""Writes `gateway/pgo.profdata`: how often the serving gateway runs each branch of its code, which
the release and dist builds compile with (profile-guided optimization:
`scripts/rustc-with-profile.sh`, named by `.cargo/config.toml`). LLVM then lays each function's
hot path out straight, with its cold paths moved away, and inlines by what runs: on the plain
route 0.84x the instructions per request of the release build without it, and 0.77x of the
dist build's (docs/performance.md).

Builds `accord` instrumented (`-Cprofile-generate`, in `target/pgo-generate`, so the release
build is left alone) in the `release` profile and in `dist`, the one that ships: a symbol's name
carries a hash of the cargo profile it was built in, so each build finds only its own names'
counts, and the two sets are merged into one file. Each instrumented gateway is started once to
compile the noop plugin into a `plugin_cache` (the plugin compiler, which runs once per plugin,
is left out of the profile), then run on the bench's configuration (a plain route, an SLO route
and an SLO route with the noop plugin) as a proxy serves: GETs with small and 16 KiB responses
over 32 and 256 connections, POSTs with a 1 KB body (to the small responses), the admin API's
reports and a reload; a request that fails stops it. The counts are merged, those of code that
never ran left out (`--sparse`: such code is compiled as without a profile, not as cold), into
the file. Both builds and runs take about 25 minutes on 2 cores.

Regenerate after changes to the request path, or a new toolchain or dependencies: a function
whose code changed since is compiled as without a profile, so a stale profile costs speed, not
correctness. Then `cargo clean --release` (cargo does not know of the profile) and build again,
and remake `gateway/code-order.txt` (`scripts/code-order.py`), whose names follow the optimized
code. Needs `llvm-profdata` of the LLVM that rustc uses (`rustc -vV`: `apt-get install llvm-22`),
nginx and wrk, and the noop plugin built (`cargo build --release --target wasm32-wasip2` in
`wasm-plugins/`).

  python3 scripts/pgo.py && cargo clean --release && cargo build --release && python3 scripts/code-order.py

then the same for `dist` (`cargo clean --profile dist`, build, `scripts/code-order.py --add`).
"""
import argparse, glob, os, re, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, accord_config, free_port, start_upstream, stop, wait_port, wrk  # noqa: E402


def profdata_tool():
    """`llvm-profdata` of rustc's LLVM major version: the raw profiles' format is that LLVM's."""
    version = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    major = re.search(r"LLVM version: (\d+)", version).group(1)
    for tool in (f"llvm-profdata-{major}", f"/usr/lib/llvm-{major}/bin/llvm-profdata"):
        if shutil.which(tool):
            return tool
    sys.exit(f"llvm-profdata of LLVM {major} (rustc's) is missing: apt-get install llvm-{major}")


def build_instrumented(profile, raw):
    """The build of `accord` in cargo's `profile`, instrumented to write its counts into `raw`."""
    env = dict(os.environ, RUSTFLAGS=f"-Cprofile-generate={raw}")
    subprocess.run(["cargo", "build", "--profile", profile, "-p", "accord", "--target-dir",
                    os.path.join(ROOT, "target", "pgo-generate")], cwd=ROOT, env=env, check=True)
    return os.path.join(ROOT, "target", "pgo-generate", profile, "accord")


def train(binary, work, raw):
    """Serves the bench's routes as a proxy does, then stops the gateway (its counts are written
    into `raw` at exit)."""
    upstream_port, port, admin = free_port(), free_port(), free_port()
    procs = [start_upstream(work, upstream_port)]
    try:
        # The plugin compiled once, before: the profile leaves the plugin compiler out, which runs
        # once per plugin (`plugin_cache`), not per request, and builds as fast as without one.
        extra = f"plugin_cache: {work}/plugins\n"
        config = accord_config(work, "pgo", port, admin, upstream_port, extra=extra, plugin=True)
        command = [binary, "run", "-c", config, "--threads", "1"]
        compiling = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, timeout=120)
        compiling.terminate()
        compiling.wait(timeout=60)
        for counts in glob.glob(os.path.join(raw, "*")):
            os.remove(counts)
        gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gateway)
        wait_port(upstream_port)
        wait_port(port, timeout=120)
        post = os.path.join(work, "post.lua")
        with open(post, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("y", 1000)\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        for round_ in range(2):
            for path in ("/x", "/metered/x", "/plugged/x", "/16k", "/metered/16k"):
                # Only what a working proxy runs: a failing route would train its error paths.
                # A POST where the upstream takes one (nginx refuses it on a static file).
                posts = () if path.endswith("16k") else ((8, post),)
                for connections, script in ((32, None), (256, None), *posts):
                    served = wrk(f"http://127.0.0.1:{port}{path}", 2, connections, script=script)
                    if served["non_2xx"] or served["socket_errors"]:
                        sys.exit(f"training: {path} over {connections} connections failed: {served}")
            for path in ("/metrics", "/sla", "/healthz", "/readyz"):
                urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=60).read()
            if round_ == 0:
                gateway.send_signal(signal.SIGHUP)
                time.sleep(6)  # the reload, and the SLA engine's tick (every 5 s)
        gateway.send_signal(signal.SIGTERM)
        if gateway.wait(timeout=60) != 0:
            sys.exit(f"the instrumented gateway exited with {gateway.returncode}")
    finally:
        stop(procs, work)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "gateway", "pgo.profdata"))
    ap.add_argument("--profiles", default="release,dist",
                    help="the cargo profiles trained, each built instrumented and run: a symbol's "
                    "name depends on the profile it was built in, so each build finds only its own "
                    "in the merged file")
    args = ap.parse_args()
    tool = profdata_tool()
    noop = os.path.join(ROOT, "wasm-plugins/target/wasm32-wasip2/release/noop.wasm")
    if not os.path.exists(noop):
        sys.exit(f"{noop} is missing: cargo build --release --target wasm32-wasip2 in wasm-plugins/")
    work = tempfile.mkdtemp(prefix="accord-pgo-")
    try:
        profiles = []
        for profile in args.profiles.split(","):
            # A fixed place for the counts: the instrumented build keeps it, and stays built
            # between runs.
            raw = os.path.join(ROOT, "target", "pgo-generate", f"profiles-{profile}")
            os.makedirs(raw, exist_ok=True)
            binary = build_instrumented(profile, raw)
            # Build scripts and procedural macros were instrumented too, and wrote counts as they
            # ran: only the serving gateway's are wanted (`train` clears them again).
            train(binary, work, raw)
            written = glob.glob(os.path.join(raw, "*.profraw"))
            if not written:
                sys.exit(f"the instrumented gateway ({profile}) wrote no profile")
            profiles += written
        subprocess.run([tool, "merge", "--sparse", "-o", args.out, *profiles], check=True)
        summary = subprocess.run([tool, "show", args.out], capture_output=True, text=True, check=True).stdout
        functions = re.search(r"Total functions: (\d+)", summary).group(1)
        print(f"{args.out}: {functions} functions that ran, {os.path.getsize(args.out) / 2**20:.1f} MiB; "
              "now `cargo clean --release` (and `--profile dist`), build, and run "
              "scripts/code-order.py (and `--add` for dist)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
