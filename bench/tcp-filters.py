#!/usr/bin/env python3
"""TCP proxying with and without a network Proxy-Wasm filter, Sluice beside Envoy in the
same run: one client streams SIZE_MB through the proxy to a sink that discards it (and
answers the byte count at the end), rounds interleaved, medians reported with each proxy's
CPU time per GiB moved.

  SLUICE=.build/release/sluice ROUNDS=3 SIZE_MB=512 bench/tcp-filters.py

Modes: `plain` (tcp_proxy alone) and `count` (filters/test/c/network.c in `count` mode before
it: every data callback copies the bytes into the guest and adds to shared data), on one
worker each. Then gRPC callouts: `wrk -c16` for DURATION seconds on an HTTP listener whose
filter (filters/test/c/grpc.c) answers each request with a unary callout to a grpcio server;
the server (Python) bounds the rate, so the proxy's CPU per request is the figure to compare.
Prints tables; bench/RESULTS.md keeps the numbers.
"""
import os, re, socket, statistics, subprocess, sys, tempfile, time

from benchlib import Proxies, cpu_seconds
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "envoy-compat"))
from proxies import envoy_binary, free_port, tcp_server  # noqa: E402
import network  # noqa: E402  (envoy-compat/network.py: the bootstrap pieces)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, ".build", "release", "sluice"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SIZE = int(os.environ.get("SIZE_MB", "512")) << 20
CHUNK = 256 << 10
DURATION = int(os.environ.get("DURATION", "5"))


def sink():
    """Discards what it reads; at the client's FIN answers the count and closes."""
    def serve(c):
        total = 0
        while True:
            data = c.recv(1 << 20)
            if not data:
                break
            total += len(data)
        c.sendall(str(total).encode())
    return tcp_server(serve)


def push(port):
    """Seconds to stream SIZE bytes through the proxy and have the sink confirm them."""
    payload = b"x" * CHUNK
    c = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    sent = 0
    while sent < SIZE:
        c.sendall(payload)
        sent += CHUNK
    c.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        data = c.recv(64)
        if not data:
            break
        answer += data
    elapsed = time.perf_counter() - start
    c.close()
    if int(answer or b"0") != SIZE:
        sys.exit("the sink got %r bytes, expected %d" % (answer, SIZE))
    return elapsed


def main():
    if not os.path.exists(SLUICE):
        sys.exit("%s missing: swift build -c release" % SLUICE)
    work = tempfile.mkdtemp(prefix="sluice-tcp-bench-")
    proxies = Proxies(work)
    sink_port = sink()
    results = {}
    try:
        for _ in range(ROUNDS):
            for mode in ("plain", "count"):
                for name, cmd in (("envoy", [envoy_binary(), "--concurrency", "1", "--log-level", "error", "-c"]),
                                  ("sluice", [SLUICE, "run", "--workers", "1", "--envoy-config"])):
                    admin, port = free_port(), free_port()
                    listener = network.tcp_listener("tcp", port, None if mode == "plain" else "count")
                    path = os.path.join(work, "%s-%s.yaml" % (name, mode))
                    with open(path, "w") as f:
                        f.write(network.static_bootstrap(admin, [listener], [network.cluster("echo", sink_port)]))
                    p = proxies.start(cmd + [path], admin, "%s-%s" % (name, mode))
                    push(port)  # warm-up: VM contexts, pools, page cache
                    before = cpu_seconds(p.pid)
                    seconds = push(port)
                    cpu = cpu_seconds(p.pid) - before
                    proxies.stop(p)
                    results.setdefault((mode, name), []).append((SIZE / seconds / (1 << 20), cpu / (SIZE / (1 << 30))))
        grpc_results = callouts(proxies, work)
        print("| mode | Envoy MiB/s | Sluice MiB/s | Sluice/Envoy | CPU s per GiB, Sluice vs Envoy |")
        print("|---|---:|---:|---:|---|")
        for mode in ("plain", "count"):
            e = [r[0] for r in results[(mode, "envoy")]]
            s = [r[0] for r in results[(mode, "sluice")]]
            ec = statistics.median(r[1] for r in results[(mode, "envoy")])
            sc = statistics.median(r[1] for r in results[(mode, "sluice")])
            print("| %s | %.0f | %.0f | %.2fx | %.2f vs %.2f |" % (mode, statistics.median(e), statistics.median(s),
                                                                 statistics.median(s) / statistics.median(e), sc, ec))
        print()
        print("| gRPC unary callouts | Envoy req/s | Sluice req/s | CPU us per request, Sluice vs Envoy |")
        print("|---|---:|---:|---|")
        e, s_ = grpc_results["envoy"], grpc_results["sluice"]
        print("| wrk -c16, one callout per request | %.0f | %.0f | %.0f vs %.0f |" % (
            statistics.median(r[0] for r in e), statistics.median(r[0] for r in s_),
            statistics.median(r[1] for r in s_), statistics.median(r[1] for r in e)))
    finally:
        proxies.kill_all()


def callouts(proxies, work):
    """Requests/s and proxy CPU per request with one unary gRPC callout per request."""
    peer = subprocess.Popen([sys.executable, os.path.join(ROOT, "Tests", "support", "grpc_peer.py"), "server"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    grpc_port = int(peer.stdout.readline().split()[1])
    results = {}
    try:
        for _ in range(ROUNDS):
            for name, cmd in (("envoy", [envoy_binary(), "--concurrency", "1", "--log-level", "error", "-c"]),
                              ("sluice", [SLUICE, "run", "--workers", "1", "--envoy-config"])):
                admin, port = free_port(), free_port()
                listener = network.http_listener("grpc", port, "", network.indent(network.wasm("http", "caller", network.GRPC, "grpc grpc grpc", "grpc")), "grpc")
                path = os.path.join(work, "%s-grpc.yaml" % name)
                with open(path, "w") as f:
                    f.write(network.static_bootstrap(admin, [listener], [network.cluster("grpc", grpc_port, h2=True)]))
                p = proxies.start(cmd + [path], admin, "%s-grpc" % name)
                url = "http://127.0.0.1:%d/unary/hello" % port
                subprocess.run(["wrk", "-c16", "-t2", "-d1s", url], capture_output=True)  # warm-up
                before = cpu_seconds(p.pid)
                out = subprocess.run(["wrk", "-c16", "-t2", "-d%ds" % DURATION, url], capture_output=True, text=True).stdout
                cpu = cpu_seconds(p.pid) - before
                proxies.stop(p)
                total = int(re.search(r"(\d+) requests in", out).group(1))
                if re.search(r"Non-2xx", out):
                    sys.exit("%s answered errors:\n%s" % (name, out))
                results.setdefault(name, []).append((total / DURATION, cpu / total * 1e6))
    finally:
        peer.stdin.close()
        peer.terminate()
        peer.wait(10)
    return results


if __name__ == "__main__":
    main()
