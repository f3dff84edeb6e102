#!/usr/bin/env python3
"""Start-up to first proxied request: the time from exec'ing `sluice run` to the first 200
through a listener whose filter is the Go wasip1 test module (filters/test/go), with the
Wasmtime code cache cold (a fresh directory) and warm (the directory the cold run filled),
and on WasmKit. Medians of RUNS (default 7) starts each.

  bench/startup.py
"""
import os, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "envoy-compat"))
from proxies import free_port  # noqa: E402

SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, ".build/release/sluice"))
RUNS = int(os.environ.get("RUNS", "7"))


def first_response(port, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            time.sleep(0.001)
    return False


def start_once(runtime, cache):
    port, admin = free_port(), free_port()
    module = os.path.join(ROOT, "filters/build/go-minimal.wasm")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("""admin: { address: "127.0.0.1:%d" }
access_log: { format: off }
listeners:
  - { name: main, address: "127.0.0.1:%d", http_filters: [go], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: ok } }] }
plugins:
  - { name: go, module: "%s", runtime: %s }
""" % (admin, port, module, runtime))
        path = f.name
    env = dict(os.environ, SLUICE_WASM_CODE_CACHE=cache)
    t0 = time.monotonic()
    p = subprocess.Popen([SLUICE, "run", "-c", path, "--workers", "1", "--no-watch", "--log-level", "error"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = first_response(port, t0 + 30)
    elapsed = (time.monotonic() - t0) * 1000
    p.kill()  # only the start is measured
    p.wait(10)
    os.unlink(path)
    if not ok:
        sys.exit("no answer from sluice (%s)" % runtime)
    return elapsed


def main():
    if "SLUICE" not in os.environ:
        subprocess.run(["swift", "build", "-c", "release", "--product", "sluice"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(ROOT, "filters/build.sh")], check=True, stdout=subprocess.DEVNULL)
    results = {"wasmtime, cold code cache": [], "wasmtime, warm code cache": [], "wasmkit": []}
    for _ in range(RUNS):
        cache = tempfile.mkdtemp()
        results["wasmtime, cold code cache"].append(start_once("wasmtime", cache))
        results["wasmtime, warm code cache"].append(start_once("wasmtime", cache))
        results["wasmkit"].append(start_once("wasmkit", "off"))
        subprocess.run(["rm", "-rf", cache])
    print("start-up to the first proxied request, Go wasip1 filter (median of %d starts, 1 worker):" % RUNS)
    for name, values in results.items():
        print("  %-28s %6.0f ms   (min %.0f, max %.0f)" % (name, statistics.median(values), min(values), max(values)))


if __name__ == "__main__":
    main()
