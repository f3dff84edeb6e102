#!/usr/bin/env python3
"""Sluice beside the real Envoy, in one run on one machine: the same Envoy bootstrap (Sluice
runs it with --envoy-config), the same .wasm file, the same nginx origin (1 KiB responses),
the same wrk load, at 1 worker and at 2 (Envoy --concurrency, Sluice --workers), for:

  none      no filter (the HTTP connection manager and router only)
  headers   a filter adding one request and one response header (Embedded Swift)
  jwt-c     the C HS256 JWT sample (filters/samples), every request carrying a valid token
  go        a Go 1.24 wasip1 filter (filters/test/go)

Rounds are interleaved (Envoy and Sluice alternate which goes first) and each figure is the
median over rounds: requests/s, p50, p99 and CPU per request (the proxy process's
utime+stime over the measured run divided by the requests wrk completed). Prints a table
with Sluice/Envoy ratios and writes it to bench/out/vs-envoy.md.

  bench/vs-envoy.py                         # 3 rounds of 5 s per cell
  ROUNDS=5 DURATION=10 bench/vs-envoy.py
  FILTERS=none,headers WORKERS=1 bench/vs-envoy.py
  SLUICE_RUNTIME=wasmkit bench/vs-envoy.py   # Sluice on its interpreter: its copy of the
                                             # bootstrap names envoy.wasm.runtime.wamr (-> WasmKit)
"""
import base64, hashlib, hmac, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "envoy-compat"))
from proxies import envoy_binary, free_port  # noqa: E402
from benchlib import Proxies, cpu_seconds, start_origin, stop_origin  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "5"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
WORKERS = [int(w) for w in os.environ.get("WORKERS", "1,2").split(",")]
FILTERS = os.environ.get("FILTERS", "none,headers,jwt-c,go").split(",")
SLUICE_ARGS = os.environ.get("SLUICE_ARGS", "").split()
SLUICE_RUNTIME = os.environ.get("SLUICE_RUNTIME", "wasmtime")
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, ".build/release/sluice"))
OUT = os.path.join(ROOT, "bench/out")


def token():
    b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
    s = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    return s + "." + b(hmac.new(b"bench", s.encode(), hashlib.sha256).digest())


# filter name -> (module file, configuration, extra wrk header)
FILTER_SPECS = {
    "none": (None, "", None),
    "headers": ("swift-headers.wasm", "bench", None),
    "jwt-c": ("sample-auth-jwt-c.wasm", '{"secret": "bench"}', "authorization: Bearer " + token()),
    "go": ("go-minimal.wasm", "", None),
}

BOOTSTRAP = """
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - {{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: origin }} }}] }}
          http_filters:
{wasm}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }} }}] }}]
"""

WASM = """          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: '{configuration}' }}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {module} }} }}
"""



def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


def wrk(port, header, seconds, latency=True):
    cmd = ["wrk", "-t1", "-c%d" % CONNECTIONS, "-d%ds" % seconds]
    if latency:
        cmd.append("--latency")
    if header:
        cmd += ["-H", header]
    out = subprocess.run(cmd + ["http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": to_us(p50.group(1)) if p50 else 0, "p99": to_us(p99.group(1)) if p99 else 0,
            "bad": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else ""}


def measure(name, proxy, port, header):
    wrk(port, header, 1, latency=False)  # warm-up: connections, pools, JIT tiers
    before = cpu_seconds(proxy.pid)
    r = wrk(port, header, DURATION)
    r["cpu_us"] = (cpu_seconds(proxy.pid) - before) * 1e6 / max(r["requests"], 1)
    if r["bad"] or r["errors"]:
        # A proxy answering errors would be measured on its failures: the cell is marked
        # failed (with one answer to show why) and the run goes on.
        probe = subprocess.run(["curl", "-si", "http://127.0.0.1:%d/" % port] + (["-H", header] if header else []), capture_output=True, text=True).stdout
        print("%s: %d of %d answers were not 2xx (%s); one answer:\n%s" % (name, r["bad"], r["requests"], r["errors"], probe[:400]), flush=True)
        r["failed"] = True
    return r


def main():
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk", "nginx-light"], check=True, capture_output=True)
    if "SLUICE" not in os.environ:
        subprocess.run(["swift", "build", "-c", "release", "--product", "sluice"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(ROOT, "filters/build.sh")], check=True, stdout=subprocess.DEVNULL)
    envoy = envoy_binary()
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp()
    os.chmod(work, 0o755)  # nginx workers run as nobody
    proxies = Proxies(work)
    nginx = None

    try:
        nginx, upstream = start_origin(work)
        print("machine: %d cores; wrk -t1 -c%d -d%ds, 1 KiB responses; %d interleaved rounds, medians" % (os.cpu_count(), CONNECTIONS, DURATION, ROUNDS))
        print("Sluice: %s %s (engine: %s)" % (SLUICE, " ".join(SLUICE_ARGS), SLUICE_RUNTIME))
        rows = []
        for workers in WORKERS:
            for name in FILTERS:
                module, configuration, header = FILTER_SPECS[name]
                wasm = "" if module is None else WASM.format(module=os.path.join(ROOT, "filters/build", module), configuration=configuration)
                ports = {}
                running = {}
                for proxy in ("envoy", "sluice"):
                    port, admin = free_port(), free_port()
                    path = os.path.join(work, "%s-%s-%d.yaml" % (proxy, name, workers))
                    text = BOOTSTRAP.format(admin=admin, port=port, upstream=upstream, wasm=wasm)
                    if proxy == "sluice" and SLUICE_RUNTIME == "wasmkit":
                        text = text.replace("envoy.wasm.runtime.v8", "envoy.wasm.runtime.wamr")
                    with open(path, "w") as f:
                        f.write(text)
                    if proxy == "envoy":
                        cmd = [envoy, "-c", path, "--concurrency", str(workers), "-l", "warning", "--disable-hot-restart"]
                    else:
                        cmd = [SLUICE, "run", "--envoy-config", path, "--workers", str(workers), "--log-level", "warning", "--no-watch"] + SLUICE_ARGS
                    running[proxy] = proxies.start(cmd, admin, str(admin))
                    ports[proxy] = port
                results = {"envoy": [], "sluice": []}
                for r in range(ROUNDS):
                    order = ("envoy", "sluice") if r % 2 == 0 else ("sluice", "envoy")
                    for proxy in order:
                        results[proxy].append(measure("%s (%s, %d workers)" % (proxy, name, workers), running[proxy], ports[proxy], header))
                for p in running.values():
                    proxies.stop(p)
                med = {proxy: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99", "cpu_us")} for proxy, rs in results.items()}
                failed = [proxy for proxy, rs in results.items() if any(x.get("failed") for x in rs)]
                if failed:
                    print("%d worker(s) %-8s FAILED: %s answered errors" % (workers, name, ", ".join(failed)), flush=True)
                    rows.append((workers, name, None, failed))
                    continue
                rows.append((workers, name, med, []))
                e, s = med["envoy"], med["sluice"]
                print("%d worker(s) %-8s envoy %8.0f rps p50 %6.0fus p99 %6.0fus cpu %5.1fus | sluice %8.0f rps p50 %6.0fus p99 %6.0fus cpu %5.1fus | rps %.2fx p99 %.2fx cpu %.2fx"
                      % (workers, name, e["rps"], e["p50"], e["p99"], e["cpu_us"], s["rps"], s["p50"], s["p99"], s["cpu_us"],
                         s["rps"] / e["rps"], s["p99"] / e["p99"], s["cpu_us"] / e["cpu_us"]), flush=True)
        lines = ["| workers | filter | Envoy req/s | Sluice req/s | req/s S/E | Envoy p50 | Sluice p50 | Envoy p99 | Sluice p99 | p99 S/E | Envoy CPU/req | Sluice CPU/req | CPU S/E | filter cost Envoy | filter cost Sluice |",
                 "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = {w: m for w, n, m, _ in rows if n == "none" and m}
        for workers, name, m, failed in rows:
            if m is None:
                lines.append("| %d | %s | %s |" % (workers, name, "failed: %s answered errors (see the run's output)" % ", ".join(failed)))
                continue
            e, s = m["envoy"], m["sluice"]
            cost = lambda p: ("%.1f us" % (m[p]["cpu_us"] - base[workers][p]["cpu_us"])) if workers in base and name != "none" else "–"
            lines.append("| %d | %s | %.0f | %.0f | **%.2fx** | %.0f us | %.0f us | %.0f us | %.0f us | **%.2fx** | %.1f us | %.1f us | %.2fx | %s | %s |"
                         % (workers, name, e["rps"], s["rps"], s["rps"] / e["rps"], e["p50"], s["p50"], e["p99"], s["p99"], s["p99"] / e["p99"],
                            e["cpu_us"], s["cpu_us"], s["cpu_us"] / e["cpu_us"], cost("envoy"), cost("sluice")))
        table = "\n".join(lines)
        print(table)
        with open(os.path.join(OUT, "vs-envoy.md"), "w") as f:
            f.write(table + "\n")
    finally:
        proxies.kill_all()
        if nginx:
            stop_origin(nginx)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
