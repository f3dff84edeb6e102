#!/usr/bin/env python3
"""envoy-compat wire check: hostile raw HTTP/1.1 through the real Envoy and through Sluice.

Both proxies run the same Envoy bootstrap (BOOTSTRAP below: one listener, HCM codec AUTO with
accept_http_10, route prefix "/" to a STATIC cluster, router filter), Envoy as `envoy -c FILE`
and Sluice as `sluice run --envoy-config FILE --workers 1 --no-watch --log-level warning`.
They run at the same time, so their two rendered files differ only in port numbers; each proxy
has its own raw upstream (a Python socket server that records every byte it receives).

For every scenario and both proxies the runner records:
  * the client's view: the first final status (or "no response") and whether the proxy closed
    the client connection within CLOSE_WINDOW seconds of the client's last write;
  * the upstream's view: the request lines and bodies that reached the upstream, parsed by a
    strict HTTP/1.1 parser (a request cut short by the proxy closing the connection is
    shown as "(aborted)");
  * for upstream-response scenarios (the upstream answers the scenario's request with scripted,
    hostile bytes): whether a probe on a fresh client connection then gets its own answer.

Each scenario is "identical" (same status class, same close behaviour, same upstream view),
an "expected difference" (listed in wire-expected.json with its docs/HOST-DIFFERENCES.md row and
the exact outcomes of both proxies), or "UNEXPLAINED". Independently of Envoy, Sluice must never
forward a `/SMUGGLED` request, probes must get their own answers, and every upstream connection
must carry only well-framed requests. Exit status 1 on an unexplained difference or a Sluice
safety violation; the last line is "N passed, N failed".

Usage: python3 envoy-compat/wire.py [-v] [NAME-SUBSTRING ...]   (-v: print both outcomes of every
scenario, and requests a proxy began to forward and then abandoned, which are never compared).
Standard library only; about 30 s. The two bootstraps, both proxies' logs and every recorded
outcome (wire-results.json) go to envoy-compat/out/ (git-ignored).

Notes: after some local replies with connection: close (its 403, and the 400 without a body),
Envoy closes only when its delayed_close_timeout (1 s) fires, hence CLOSE_WINDOW of 1.5 s. Sluice reads http_protocol_options but serves
HTTP/1.0 whatever accept_http_10 says (HOST-DIFFERENCES #27).
"""
import json, os, re, select, shutil, signal, socket, subprocess, sys, sysconfig, threading, time, urllib.request

from proxies import envoy_binary, free_port, wait_ready

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
EXPECTED = os.path.join(HERE, "wire-expected.json")
CLOSE_WINDOW = 1.5     # "closed" = the proxy closed the client connection within this many seconds of the last write
READ_CAP = 1.0         # how long a client waits for the responses it expects before moving on
UPSTREAM_QUIET = 0.1   # the upstream must be quiet this long before a scenario ends

BOOTSTRAP = """# Written by envoy-compat/wire.py; run unchanged by Envoy and by `sluice run --envoy-config`.
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: @ADMIN_PORT@ } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: @LISTEN_PORT@ } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          http_protocol_options: { accept_http_10: true }
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: raw }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: raw
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: raw
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: @UPSTREAM_PORT@ } } }
"""

# ----------------------------------------------------------------------------------------------
# Scenarios (adapted from the Envoy 1.40 oracle in /tmp/envoy-oracle/scenarios.py)
# ----------------------------------------------------------------------------------------------

NEXT = b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"
CH_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GETX = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
SMUGGLE = b"GET /SMUGGLED HTTP/1.1\r\nHost: t\r\n\r\n"
H10KA = b"GET /x HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n"
H10KA2 = b"GET /again HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n"


def rq(line, headers=b"", body=b"", host=b"Host: t\r\n"):
    return line + b"\r\n" + host + headers + b"\r\n" + body


SCENARIOS = []


def req(name, data, n=1, **kw):
    """A hostile request; the upstream answers everything with 200 "ok". n = responses a
    well-behaved proxy could send (the client stops waiting once it has that many)."""
    SCENARIOS.append(dict(name=name, steps=[("send", data)], n=n, **kw))


def up(name, script, data=GETX, action="keep", n=1, steps=None, **kw):
    """A hostile upstream response: `script` answers the scenario's first request for /x;
    `action` "close" makes the upstream close the connection after writing it."""
    SCENARIOS.append(dict(name=name, steps=steps or [("send", data)], n=n, script=(script, action), **kw))


# smuggling payloads and bodies on methods that rarely carry one
req("R01-get-chunked-smuggle", rq(b"GET /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n",
                                  b"%x\r\n" % len(SMUGGLE) + SMUGGLE + b"\r\n0\r\n\r\n") + NEXT, n=2)
req("R02-options-chunked-body", rq(b"OPTIONS /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", CH_HELLO))
req("R03-unknown-method-chunked-body", rq(b"FOO /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", CH_HELLO))
req("R04-trace-cl-body", rq(b"TRACE /x HTTP/1.1", b"Content-Length: 5\r\n", b"hello"))
req("R05-get-cl-body-pipelined", rq(b"GET /x HTTP/1.1", b"Content-Length: 5\r\n", b"hello") + NEXT, n=2)
# CL / TE combinations
req("R06-cl-te-smuggle", rq(b"POST /x HTTP/1.1", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (5 + len(SMUGGLE)),
                            b"0\r\n\r\n" + SMUGGLE), n=2)
req("R07-te-cl-smuggle", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                            b"%x\r\n" % len(SMUGGLE) + SMUGGLE + b"\r\n0\r\n\r\n"), n=2)
req("R08-cl-cl-smuggle", rq(b"POST /x HTTP/1.1", b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(SMUGGLE), SMUGGLE), n=2)
req("R09-te-xchunked", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: xchunked\r\n", CH_HELLO) + NEXT, n=2)
req("R10-te-chunked-identity", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked, identity\r\n", CH_HELLO) + NEXT, n=2)
req("R11-te-gzip-chunked", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: gzip, chunked\r\n", CH_HELLO) + NEXT, n=2)
req("R12-te-Chunked-capital", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: Chunked\r\n", CH_HELLO) + NEXT, n=2)
req("R13-te-chunked-twice", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CH_HELLO) + NEXT, n=2)
req("R14-te-chunked-then-cow", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n", CH_HELLO) + NEXT, n=2)
req("R15-te-space-before-colon", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding : chunked\r\n",
                                    b"%x\r\n" % len(SMUGGLE) + SMUGGLE + b"\r\n0\r\n\r\n") + NEXT, n=2)
req("R16-cl-plus5", rq(b"POST /x HTTP/1.1", b"Content-Length: +5\r\n", b"hello") + NEXT, n=2)
req("R17-cl-5-comma-5", rq(b"POST /x HTTP/1.1", b"Content-Length: 5, 5\r\n", b"hello") + NEXT, n=2)
req("R18-cl-huge", rq(b"POST /x HTTP/1.1", b"Content-Length: 99999999999999999999\r\n", b"hello") + NEXT, n=2)
# chunk framing
req("R19-chunk-ext", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"5;ext=1\r\nhello\r\n0\r\n\r\n") + NEXT, n=2)
req("R20-chunk-size-0x5", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n") + NEXT, n=2)
req("R21-chunk-size-overflow", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n",
                                  b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n") + NEXT, n=2)
req("R22-chunk-bare-lf-after-size", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n") + NEXT, n=2)
req("R23-chunk-bare-lf-after-data", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\n0\r\n\r\n") + NEXT, n=2)
req("R24-chunk-data-longer-than-size", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n") + NEXT, n=2)
req("R25-chunk-junk-smuggle", rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\n",
                                 b"5\r\nhello" + SMUGGLE + b"0\r\n\r\n") + NEXT, n=2)
# header syntax
req("R26-bare-cr-in-value", rq(b"GET /x HTTP/1.1", b"X-A: a\rb\r\n"))
req("R27-obs-fold", rq(b"GET /x HTTP/1.1", b"X-A: 1\r\n 2\r\n"))
req("R28-nul-in-value", rq(b"GET /x HTTP/1.1", b"X-A: a\x00b\r\n"))
req("R29-no-host", b"GET /x HTTP/1.1\r\n\r\n")
req("R30-two-hosts", rq(b"GET /x HTTP/1.1", host=b"Host: a\r\nHost: b\r\n"))
# Connection nominations
req("R31-conn-nominates-content-length", rq(b"POST /x HTTP/1.1", b"Content-Length: 5\r\nConnection: content-length\r\n", b"hello") + NEXT, n=2)
req("R32-conn-nominates-transfer-encoding",
    rq(b"POST /x HTTP/1.1", b"Transfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n", CH_HELLO) + NEXT, n=2)
req("R33-conn-nominates-host", rq(b"GET /x HTTP/1.1", b"Connection: host\r\n"))
req("R34-conn-nominates-xff", rq(b"GET /x HTTP/1.1", b"Connection: x-forwarded-for, x-custom\r\nX-Custom: 1\r\nX-Forwarded-For: 1.2.3.4\r\n"))
req("R35-conn-ten-tokens", rq(b"GET /x HTTP/1.1", b"Connection: a1, a2, a3, a4, a5, a6, a7, a8, a9, a10\r\nA1: 1\r\n"))
req("R36-conn-close-x-custom", rq(b"GET /x HTTP/1.1", b"Connection: close, x-custom\r\nX-Custom: 1\r\n") + NEXT)
req("R37-upgrade-websocket-no-config", rq(b"GET /x HTTP/1.1", b"Connection: upgrade\r\nUpgrade: websocket\r\n"))
# request targets, methods, versions
req("R38-connect", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n")
req("R39-absolute-form-other-host", rq(b"GET http://other.example/p?q=1 HTTP/1.1"))
req("R40-absolute-form-no-path", rq(b"GET http://other.example HTTP/1.1"))
req("R41-options-asterisk", rq(b"OPTIONS * HTTP/1.1"))
req("R42-authority-form-get", rq(b"GET t:80 HTTP/1.1"))
req("R43-http12", rq(b"GET /x HTTP/1.2"))
req("R44-http20-line", rq(b"GET /x HTTP/2.0"))
req("R45-http09", b"GET /\r\n")
req("R46-http10-no-host", b"GET /x HTTP/1.0\r\n\r\n")
req("R47-http10-te-chunked", rq(b"POST /x HTTP/1.0", b"Transfer-Encoding: chunked\r\n", CH_HELLO))
req("R48-pipelined-3", GETX + NEXT + b"GET /third HTTP/1.1\r\nHost: t\r\n\r\n", n=3)
SCENARIOS.append(dict(name="R49-expect-100-continue", n=1, steps=[
    ("send", b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"),
    ("read", 0), ("send", b"hello")]))

# hostile upstream responses (the client sends GET /x unless told otherwise)
up("U01-two-responses-one-write", OK + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
up("U02-extra-bytes-after-response", OK + b"garbage")
up("U03-connection-close-left-open", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
up("U04-te-gzip-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
up("U05-cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
up("U06-two-different-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello")
up("U07-close-mid-body-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", action="close")
up("U08-close-mid-body-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe", action="close")
up("U09-close-delimited", b"HTTP/1.1 200 OK\r\n\r\nclose-delimited-body", action="close")
up("U10-unsolicited-101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n")
up("U11-unsolicited-101-then-request", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
   steps=[("send", GETX), ("read", 1), ("send", b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")], n=2)
up("U12-unsolicited-101-with-bytes", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"
   + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
up("U13-1xx-flood", b"HTTP/1.1 102 Processing\r\n\r\n" * 1000 + OK)
up("U14-1xx-with-body", b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabc" + OK)
up("U15-status-600", b"HTTP/1.1 600 Weird\r\nContent-Length: 2\r\n\r\nok")
up("U16-status-2000", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok")
up("U17-status-65736", b"HTTP/1.1 65736 X\r\nContent-Length: 2\r\n\r\nok")
up("U18-204-with-cl-body", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
up("U19-head-answered-with-body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
   data=b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n", head_first=True)
up("U20-http10-keepalive-chunked-reply", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
   steps=[("send", H10KA), ("read", 1), ("send", H10KA2)], n=2)
up("U21-http10-keepalive-cl-reply", OK, steps=[("send", H10KA), ("read", 1), ("send", H10KA2)], n=2)
up("U22-http10-keepalive-close-delimited-reply", b"HTTP/1.1 200 OK\r\n\r\nclose-delimited", action="close",
   steps=[("send", H10KA), ("read", 1), ("send", H10KA2)], n=2)

# ----------------------------------------------------------------------------------------------
# The raw upstream
# ----------------------------------------------------------------------------------------------


def lenient_next_request(buf):
    """(target, consumed) of the first complete request in buf, or None. Only decides when to
    answer; what was received is judged afterwards by strict_requests()."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end]
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    target = parts[1] if len(parts) > 1 else b""
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    pos = end + 4
    if b"chunked" in b",".join(hdrs.get(b"transfer-encoding", [])).lower():
        while True:
            le = buf.find(b"\r\n", pos)
            if le < 0:
                return None
            try:
                size = int(buf[pos:le].split(b";")[0].strip(), 16)
            except ValueError:
                size = 0
            pos = le + 2
            if size == 0:
                while True:
                    le = buf.find(b"\r\n", pos)
                    if le < 0:
                        return None
                    line, pos = buf[pos:le], le + 2
                    if not line:
                        return target, pos
            if len(buf) < pos + size + 2:
                return None
            pos += size + 2
    cl = hdrs.get(b"content-length")
    if cl:
        try:
            n = int(cl[0])
        except ValueError:
            n = 0
        if len(buf) < pos + n:
            return None
        pos += n
    return target, pos


class Conn:
    def __init__(self, cid, sock):
        self.cid, self.sock = cid, sock
        self.raw = bytearray()
        self.chunks = []        # (time, offset of the chunk's first byte)
        self.closed_by = None   # "proxy" (EOF/reset from the proxy) or "upstream" (scripted close)


class Upstream:
    def __init__(self):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(128)
        self.port = self.srv.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        self.script = None      # (bytes, action) for the next request whose target is /x
        self.script_used = False
        self.last_activity = time.monotonic()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, script):
        with self.lock:
            self.script, self.script_used = script, False

    def disarm(self):
        with self.lock:
            used, self.script = self.script_used, None
            return used

    def quiet_for(self, seconds, cap):
        """Wait until nothing has reached the upstream for `seconds`, counted from now at the
        earliest (a proxy may still be connecting), but no longer than `cap`."""
        start = time.monotonic()
        time.sleep(seconds)
        while time.monotonic() < start + cap:
            with self.lock:
                idle = time.monotonic() - max(self.last_activity, start)
            if idle >= seconds:
                return
            time.sleep(0.02)

    def stop(self):
        self.stopping = True
        try:
            self.srv.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                c = Conn(len(self.conns) + 1, s)
                self.conns.append(c)
                self.last_activity = time.monotonic()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _answer(self, target):
        with self.lock:
            if self.script is not None and not self.script_used and target == b"/x":
                self.script_used = True
                return self.script
        if target.startswith(b"/probe/"):
            body = b"probe " + target[7:]
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), "keep"
        return OK, "keep"

    def _serve(self, c):
        pos = 0
        while True:
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            now = time.monotonic()
            with self.lock:
                self.last_activity = now
                if not data:
                    if c.closed_by is None and not self.stopping:
                        c.closed_by = "proxy"
                    break
                c.chunks.append((now, len(c.raw)))
                c.raw += data
            while True:
                r = lenient_next_request(bytes(c.raw[pos:]))
                if r is None:
                    break
                target, used = r
                pos += used
                resp, action = self._answer(target)
                try:
                    c.sock.sendall(resp)
                except OSError:
                    with self.lock:
                        c.closed_by = c.closed_by or "proxy"
                    break
                if action == "close":
                    with self.lock:
                        c.closed_by = "upstream"
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    c.sock.close()
                    return
        try:
            c.sock.close()
        except OSError:
            pass


# ----------------------------------------------------------------------------------------------
# Strict parsing of what reached the upstream
# ----------------------------------------------------------------------------------------------

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/1\.[01]")
REQUEST_PREFIX = re.compile(rb"[A-Z]*|[A-Z]+ \S*|[A-Z]+ \S+ H?T?T?P?/?1?\.?[01]?\r?")
HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


def strict_requests(raw):
    """Split one upstream connection's bytes into requests: a list of dicts with start, line,
    body, state ("complete", "partial") or "error" with a reason. Stops at the first error."""
    out, pos = [], 0
    while pos < len(raw):
        start = pos
        end = raw.find(b"\r\n\r\n", pos)
        line = raw[pos:raw.find(b"\r\n", pos) if raw.find(b"\r\n", pos) >= 0 else len(raw)]
        if end < 0:
            # A head cut short: what is there must still be the start of a valid request.
            lines = raw[pos:].split(b"\r\n")
            tail = lines.pop()
            err = None
            if lines and not REQUEST_LINE.fullmatch(lines[0]):
                err = "malformed request line %r" % lines[0][:60]
            elif not lines and not REQUEST_PREFIX.fullmatch(tail):
                err = "bytes that do not start a request: %r" % tail[:60]
            for ln in lines[1:]:
                name, sep, value = ln.partition(b":")
                if not sep or not TOKEN.fullmatch(name) or any((ch < 0x20 and ch != 9) or ch == 0x7F for ch in value):
                    err = err or "malformed header line %r" % ln[:60]
            if err:
                out.append(dict(start=start, line=line, body=b"", state="error", reason=err))
            else:
                out.append(dict(start=start, line=line, body=b"", state="partial"))
            break
        lines = raw[pos:end].split(b"\r\n")
        err = None
        if not REQUEST_LINE.fullmatch(lines[0]):
            err = "malformed request line %r" % lines[0][:60]
        hdrs = []
        for ln in lines[1:]:
            name, sep, value = ln.partition(b":")
            if ln[:1] in (b" ", b"\t"):
                err = err or "obs-fold line %r" % ln[:60]
            elif not sep or not TOKEN.fullmatch(name):
                err = err or "malformed header line %r" % ln[:60]
            elif any((ch < 0x20 and ch != 9) or ch == 0x7F for ch in value):
                err = err or "control byte in header %r" % ln[:60]
            hdrs.append((name.lower(), value.strip(b" \t")))
        te = [v for k, v in hdrs if k == b"transfer-encoding"]
        cl = [v for k, v in hdrs if k == b"content-length"]
        if te and cl:
            err = err or "both Transfer-Encoding and Content-Length"
        if len(te) > 1 or (te and te[0].lower() != b"chunked"):
            err = err or "Transfer-Encoding is not exactly one 'chunked': %r" % te
        if len(cl) > 1 or (cl and not cl[0].isdigit()):
            err = err or "bad Content-Length %r" % cl
        if err:
            out.append(dict(start=start, line=line, body=b"", state="error", reason=err))
            break
        p, body, state = end + 4, b"", "complete"
        if te:
            while True:
                le = raw.find(b"\r\n", p)
                if le < 0:
                    state = "partial"
                    break
                size_s = raw[p:le].split(b";")[0]
                if not HEX.fullmatch(size_s):
                    err = "bad chunk size line %r" % raw[p:le][:40]
                    break
                size, p = int(size_s, 16), le + 2
                if size == 0:
                    while True:
                        le = raw.find(b"\r\n", p)
                        if le < 0:
                            state = "partial"
                            break
                        trailer, p = raw[p:le], le + 2
                        if not trailer:
                            break
                        name, sep, _ = trailer.partition(b":")
                        if not sep or not TOKEN.fullmatch(name):
                            err = "malformed trailer %r" % trailer[:40]
                            break
                    break
                if len(raw) < p + size + 2:
                    body += raw[p:p + size]
                    state = "partial"
                    break
                if raw[p + size:p + size + 2] != b"\r\n":
                    err = "chunk data not followed by CRLF"
                    break
                body += raw[p:p + size]
                p += size + 2
        elif cl:
            n = int(cl[0])
            body = raw[p:p + n]
            if len(raw) < p + n:
                state = "partial"
            p += n
        if err:
            out.append(dict(start=start, line=line, body=body, state="error", reason=err))
            break
        out.append(dict(start=start, line=line, body=body, state=state))
        if state == "partial":
            break
        pos = p
    return out


def upstream_requests(upstream):
    """Every request that reached this upstream: (arrival time, conn id, dict), plus the state
    of its connection at the end of the run."""
    items = []
    with upstream.lock:
        conns = [(c.cid, bytes(c.raw), list(c.chunks), c.closed_by) for c in upstream.conns]
    for cid, raw, chunks, closed_by in conns:
        for r in strict_requests(raw):
            t = max((ct for ct, off in chunks if off <= r["start"]), default=0.0)
            r["closed_by"] = closed_by
            items.append((t, cid, r))
    return items


def view_item(r):
    s = r["line"].decode("latin-1")
    if r["body"]:
        s += " +%r" % r["body"]
    if r["state"] == "partial":
        s += " (aborted)" if r["closed_by"] else " (incomplete, connection left open)"
    elif r["state"] == "error":
        s += " (MALFORMED: %s)" % r["reason"]
    return s


# ----------------------------------------------------------------------------------------------
# The client side
# ----------------------------------------------------------------------------------------------


def parse_responses(data, eof, head_first=False):
    """Responses in the bytes a client received: a list of (status, complete); interim 1xx
    (except 101) are skipped. A response whose framing cannot be read ends the list."""
    out, pos, first = [], 0, True
    while pos < len(data):
        m = re.compile(rb"\r?\n\r?\n").search(data, pos)
        if not m:
            st = re.match(rb"HTTP/\d\.\d (\d+)", data[pos:])
            if st:
                out.append((int(st.group(1)), False))
            break
        head = data[pos:m.start()].replace(b"\r\n", b"\n").split(b"\n")
        st = re.match(rb"HTTP/\d\.\d (\d+)", head[0])
        if not st:
            out.append(("garbage", False))
            break
        status = int(st.group(1))
        hdrs = {}
        for ln in head[1:]:
            k, _, v = ln.partition(b":")
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
        p = m.end()
        if 100 <= status < 200 and status != 101:
            pos = p
            continue
        bodiless = status == 101 or status in (204, 304) or (first and head_first)
        first = False
        if bodiless:
            out.append((status, True))
            pos = p
            continue
        if b"chunked" in b",".join(hdrs.get(b"transfer-encoding", [])).lower():
            done = False
            while True:
                le = data.find(b"\r\n", p)
                if le < 0:
                    break
                try:
                    size = int(data[p:le].split(b";")[0], 16)
                except ValueError:
                    break
                p = le + 2
                if size == 0:
                    le = data.find(b"\r\n", p)
                    while le >= 0 and le != p:
                        p = le + 2
                        le = data.find(b"\r\n", p)
                    if le >= 0:
                        p, done = le + 2, True
                    break
                if len(data) < p + size + 2:
                    break
                p += size + 2
            out.append((status, done))
            if not done:
                break
            pos = p
        elif hdrs.get(b"content-length"):
            try:
                n = int(hdrs[b"content-length"][0])
            except ValueError:
                out.append((status, False))
                break
            out.append((status, len(data) >= p + n))
            pos = p + n
        else:
            out.append((status, eof))
            break
    return out


def body_of_single(data):
    """Body of a single Content-Length response (for the probe)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return rest[:int(m.group(1))] if (sep and m) else None


class Client:
    """One client connection. After its scenario moves on, a Watcher keeps reading it until
    CLOSE_WINDOW has passed since its last write, to learn whether the proxy closed it."""

    def __init__(self, port, head_first=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.data = bytearray()
        self.eof_at = None
        self.last_send = time.monotonic()
        self.head_first = head_first
        self.lock = threading.Lock()

    def send(self, b):
        self.last_send = time.monotonic()
        try:
            self.sock.sendall(b)
        except OSError:
            if self.eof_at is None:
                self.eof_at = time.monotonic()

    def pump(self, timeout):
        """Read what is available within timeout; False once the connection is finished."""
        if self.eof_at is not None:
            return False
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return True
        try:
            d = self.sock.recv(65536)
        except OSError:
            d = b""
        with self.lock:
            if d:
                self.data += d
            else:
                self.eof_at = time.monotonic()
        return bool(d)

    def finals(self):
        with self.lock:
            return sum(1 for _, done in parse_responses(bytes(self.data), self.eof_at is not None, self.head_first) if done)

    def read_until(self, n, cap=READ_CAP):
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline and self.eof_at is None and self.finals() < n:
            self.pump(deadline - time.monotonic())

    def outcome(self):
        with self.lock:
            resp = parse_responses(bytes(self.data), self.eof_at is not None, self.head_first)
        closed = self.eof_at is not None and self.eof_at - self.last_send <= CLOSE_WINDOW
        return dict(status=resp[0][0] if resp else None, statuses=[s for s, _ in resp], closed=closed)


class Watcher:
    def __init__(self):
        self.pending = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, client):
        with self.lock:
            self.pending.append(client)

    def _run(self):
        while not self.stopping:
            with self.lock:
                todo = list(self.pending)
            if not todo:
                time.sleep(0.02)
                continue
            now = time.monotonic()
            live = [c for c in todo if c.eof_at is None and now - c.last_send < CLOSE_WINDOW + 0.05]
            if live:
                r, _, _ = select.select([c.sock for c in live], [], [], 0.02)
                for c in live:
                    if c.sock in r:
                        c.pump(0)
            done = [c for c in todo if c.eof_at is not None or time.monotonic() - c.last_send >= CLOSE_WINDOW + 0.05]
            for c in done:
                try:
                    c.sock.close()
                except OSError:
                    pass
            with self.lock:
                self.pending = [c for c in self.pending if c not in done]

    def drain(self, cap=CLOSE_WINDOW + 1):
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    return
            time.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# Running one proxy through every scenario
# ----------------------------------------------------------------------------------------------


PROCS = []


def run_scenarios(label, argv_for, scenarios, results, errors):
    upstream = Upstream()
    watcher = Watcher()
    listen, admin = free_port(), free_port()
    path = os.path.join(OUT, "wire.%s.yaml" % label)
    with open(path, "w") as f:
        f.write(BOOTSTRAP.replace("@ADMIN_PORT@", str(admin)).replace("@LISTEN_PORT@", str(listen))
                .replace("@UPSTREAM_PORT@", str(upstream.port)))
    log = open(os.path.join(OUT, "wire.%s.log" % label), "w")
    proc = None
    try:
        for attempt in range(2):  # a second try: the binary may have been replaced by a rebuild
            proc = subprocess.Popen(argv_for(path), stdout=log, stderr=subprocess.STDOUT)
            PROCS.append(proc)
            if wait_ready(admin, proc):
                break
            stop_proc(proc)
            time.sleep(1)
        else:
            errors.append("%s did not become ready (see envoy-compat/out/wire.%s.log)" % (label, label))
            return
        marks = []
        for i, sc in enumerate(scenarios):
            marks.append(time.monotonic())
            upstream.arm(sc.get("script"))
            rec = {}
            c = Client(listen, sc.get("head_first", False))
            for kind, arg in sc["steps"]:
                if kind == "send":
                    c.send(arg)
                else:
                    if arg == 0:  # wait for an interim response (or anything) before going on
                        deadline = time.monotonic() + READ_CAP
                        while time.monotonic() < deadline and not c.data and c.pump(deadline - time.monotonic()):
                            pass
                    else:
                        c.read_until(arg)
            c.read_until(sc["n"])
            upstream.quiet_for(UPSTREAM_QUIET, 0.5)
            if "script" in sc:
                rec["script_used"] = upstream.disarm()
                time.sleep(0.05)
                probe = Client(listen)
                probe.send(b"GET /probe/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                probe.read_until(1)
                want = b"probe %d" % i
                po = probe.outcome()
                got = body_of_single(bytes(probe.data))
                rec["probe_ok"] = po["status"] == 200 and got == want
                rec["probe"] = "%s %r" % (po["status"], got if got is not None else bytes(probe.data[:80]))
                probe.sock.close()
                upstream.quiet_for(UPSTREAM_QUIET, 0.5)
            else:
                upstream.disarm()
            rec["client"] = c
            watcher.add(c)
            results[sc["name"]] = rec
        marks.append(float("inf"))  # anything arriving after the last scenario is still checked
        watcher.drain()
        time.sleep(0.3)  # let the proxy close upstream connections of abandoned requests
        # Attribute what reached the upstream to scenarios by arrival time.
        items = upstream_requests(upstream)
        for i, sc in enumerate(scenarios):
            rec = results[sc["name"]]
            mine = [r for t, cid, r in items if marks[i] <= t < marks[i + 1]]
            # The compared view: complete requests (and malformed ones). A request the proxy began
            # to forward and then abandoned by closing the connection reached no origin as a
            # request; it is shown (when the run is verbose) but not compared.
            rec["upstream"] = [view_item(r) for r in mine if not r["line"].startswith(b"GET /probe/")
                               and not (r["state"] == "partial" and r["closed_by"])]
            rec["aborted"] = [view_item(r) for r in mine if r["state"] == "partial" and r["closed_by"]]
            rec["probe_upstream"] = [view_item(r) for r in mine if r["line"].startswith(b"GET /probe/")]
            rec["malformed"] = [view_item(r) for r in mine if r["state"] == "error"
                                or (r["state"] == "partial" and not r["closed_by"])]
            rec["smuggled"] = any(b"/SMUGGLED" in r["line"] for r in mine)
            out = rec.pop("client").outcome()
            rec.update(out)
    except Exception as ex:  # reported, never a silent pass
        errors.append("%s run failed: %r" % (label, ex))
    finally:
        watcher.stopping = True
        if proc:
            stop_proc(proc)
        log.close()
        upstream.stop()


def stop_proc(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------


def status_class(s):
    return "none" if s is None else (s // 100 if isinstance(s, int) else s)


def brief(rec, verbose):
    st = "no response" if rec["status"] is None else str(rec["status"])
    s = "%s %s" % (st, "closed" if rec["closed"] else "open")
    if len(rec["statuses"]) > 1:
        s += " (all: %s)" % ",".join(str(x) for x in rec["statuses"])
    s += " up=%s" % (json.dumps(rec["upstream"]) if rec["upstream"] else "nothing")
    if rec["aborted"] and verbose:  # racy in both proxies: shown, never compared
        s += " aborted=%s" % json.dumps(rec["aborted"])
    if rec.get("script_used") is False:
        s += " (the scripted reply was never asked for)"
    if "probe_ok" in rec:
        s += " probe=%s" % ("ok" if rec["probe_ok"] else "WRONG " + rec["probe"])
    return s


def outcome_key(rec):
    return {"status": rec["status"], "closed": rec["closed"], "upstream": rec["upstream"]}


def sluice_safety(rec):
    bad = []
    if rec["smuggled"]:
        bad.append("forwarded a /SMUGGLED request")
    if "probe_ok" in rec and not rec["probe_ok"]:
        bad.append("probe did not get its own answer: %s" % rec["probe"])
    for m in rec["malformed"]:
        bad.append("upstream bytes not well framed: %s" % m)
    return bad


def main(argv):
    started = time.monotonic()
    verbose = "-v" in argv
    filters = [a for a in argv if not a.startswith("-")]
    os.makedirs(OUT, exist_ok=True)
    sluice = os.path.join(ROOT, ".build", "debug", "sluice")
    if not os.path.exists(sluice):
        sys.exit("build Sluice first (swift build)")
    envoy = envoy_binary()
    expected = {e["scenario"]: e for e in json.load(open(EXPECTED))["differences"]} if os.path.exists(EXPECTED) else {}
    scenarios = [s for s in SCENARIOS if not filters or any(f in s["name"] for f in filters)]
    results = {"envoy": {}, "sluice": {}}
    errors = []
    argvs = {
        "envoy": lambda p: [envoy, "-c", p, "--concurrency", "1", "--log-level", "warn", "--disable-hot-restart"],
        "sluice": lambda p: [sluice, "run", "--envoy-config", p, "--workers", "1", "--no-watch", "--log-level", "warning"],
    }
    threads = [threading.Thread(target=run_scenarios, args=(k, argvs[k], scenarios, results[k], errors), daemon=True) for k in argvs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for e in errors:
            print(e)
        print("0 passed, %d failed" % len(scenarios))
        return 1
    counts = {"identical": 0, "expected": 0, "UNEXPLAINED": 0}
    passed = failed = 0
    width = max(len(s["name"]) for s in scenarios)
    dump = {}
    for sc in scenarios:
        name = sc["name"]
        e, s = results["envoy"][name], results["sluice"][name]
        dump[name] = {"envoy": e, "sluice": s}
        same = (status_class(e["status"]) == status_class(s["status"]) and e["closed"] == s["closed"]
                and e["upstream"] == s["upstream"])
        note = ""
        if same:
            verdict = "identical"
        else:
            exp = expected.get(name)
            if exp and exp["envoy"] == outcome_key(e) and exp["sluice"] == outcome_key(s):
                verdict, note = "expected", "HOST-DIFFERENCES #%s" % exp["row"]
            else:
                verdict = "UNEXPLAINED"
                note = "listed in wire-expected.json (#%s) but the outcome changed" % exp["row"] if exp else ""
        counts[verdict] += 1
        unsafe = sluice_safety(s)
        if verdict == "UNEXPLAINED" or unsafe:
            failed += 1
        else:
            passed += 1
        print(("%-11s %-*s %s" % (verdict, width, name, note)).rstrip())
        if verdict != "identical" or verbose:
            print("    envoy:  %s" % brief(e, verbose))
            print("    sluice: %s" % brief(s, verbose))
        for u in unsafe:
            print("    SLUICE SAFETY: %s" % u)
        if e["smuggled"] or e["malformed"] or ("probe_ok" in e and not e["probe_ok"]):
            print("    (envoy, not counted: %s)" % "; ".join(sluice_safety(e)))
    with open(os.path.join(OUT, "wire-results.json"), "w") as f:
        json.dump(dump, f, indent=1)
    print("%d identical, %d expected differences, %d unexplained differences; %.1f s"
          % (counts["identical"], counts["expected"], counts["UNEXPLAINED"], time.monotonic() - started))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _terminate)  # also when started in the background with SIGINT ignored
    try:
        code = main(sys.argv[1:])
    finally:
        for p in PROCS:
            stop_proc(p)
    sys.exit(code)
