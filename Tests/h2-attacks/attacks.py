#!/usr/bin/env python3
"""HTTP/2 attack check: known HTTP/2 denial-of-service attacks against a running Sluice.

Starts a threaded HTTP/1.1 origin (127.0.0.1, ephemeral port: `/` a small body, `/big` 4 MiB,
POST reads its body) and Sluice (`sluice run --config FILE --no-watch`) with a generated
config in a temporary directory: one HTTP listener (h2c by prior knowledge), route prefix `/`
to the origin, stream_idle_timeout 2s, idle_timeout 5s, access log off, HTTP/2 defaults (100
concurrent streams, 64 KiB stream window, 1 MiB connection window, 60 KiB header list).

Each attack runs on its own raw TCP connection(s) (frames built by hand with hyperframe and
hpack, so that no client state machine refuses to send them) while two honest clients keep
making real requests on other connections for the whole run: HTTP/1.1 through http.client and
HTTP/2 through h2 over a socket, each reconnecting every 20 requests. For every case:
  (a) the Sluice process is still alive afterwards;
  (b) its RSS (VmRSS, sampled every 20 ms) never grows more than RSS_BOUND_MIB over the RSS
      measured just before the case;
  (c) the honest clients saw no failure while the case ran, and one request of each kind
      succeeds right after it;
  (d) the attacker's connection ends as a correct server ends it (GOAWAY with a sensible error
      code and a close, RST_STREAM where a stream error is the answer, or a close after the
      idle timeout), within a bound given per case.

Usage: python3 Tests/h2-attacks/attacks.py [-v] [NAME-SUBSTRING ...]
Environment: SLUICE_BIN overrides the binary (default .build/debug/sluice).
Prints "PASS name: detail" / "FAIL name: detail" per case, then "N passed, M failed"; exit 1
if any failed. About 15 s.
"""
import collections, http.client, http.server, os, select, shutil, signal, socket, struct, subprocess
import sys, tempfile, threading, time, urllib.request

import h2.config, h2.connection, h2.events, hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, ".build", "debug", "sluice"))

RSS_BOUND_MIB = 64          # (b): allowed RSS growth over the pre-case RSS
STREAM_IDLE_TIMEOUT = 2.0
IDLE_TIMEOUT = 5.0
SMALL_BODY = b"hello from the origin\n"
BIG_SIZE = 4 * 1024 * 1024
BIG_CHUNK = b"x" * 65536
MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
VERBOSE = False

ERRORS = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
          0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
          0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR", 0xb: "ENHANCE_YOUR_CALM",
          0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED"}
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x7, 0x8, 0x9, 0xb
SETTINGS_INITIAL_WINDOW_SIZE = 0x4


def ename(code):
    return ERRORS.get(code, "0x%x" % code)


def log(msg):
    if VERBOSE:
        print("    " + msg, flush=True)


# ---------------------------------------------------------------------------------------------
# The origin
# ---------------------------------------------------------------------------------------------

ORIGIN_HITS = collections.Counter()   # path -> requests that reached the origin
ORIGIN_LOCK = threading.Lock()


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _count(self):
        with ORIGIN_LOCK:
            ORIGIN_HITS[self.path.split("?")[0]] += 1

    def _small(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(SMALL_BODY)))
        self.end_headers()
        self.wfile.write(SMALL_BODY)

    def do_GET(self):
        self._count()
        if self.path.split("?")[0] == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(BIG_SIZE))
            self.end_headers()
            try:
                for _ in range(BIG_SIZE // len(BIG_CHUNK)):
                    self.wfile.write(BIG_CHUNK)
            except OSError:
                self.close_connection = True
            return
        self._small()

    def do_POST(self):
        self._count()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    self.close_connection = True
                    return
                size = int(line.split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        else:
            n = int(self.headers.get("Content-Length", "0"))
            if n and len(self.rfile.read(n)) < n:
                self.close_connection = True
                return
        self._small()


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request, client_address):
        pass  # broken pipes from requests Sluice cut are expected


# ---------------------------------------------------------------------------------------------
# Sluice
# ---------------------------------------------------------------------------------------------

CONFIG = """# written by Tests/h2-attacks/attacks.py
admin: {{ address: "127.0.0.1:{admin}" }}
access_log: {{ format: "off" }}
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    stream_idle_timeout: 2s
    idle_timeout: 5s
    routes:
      - match: {{ prefix: / }}
        cluster: origin
clusters:
  - name: origin
    endpoints: ["127.0.0.1:{origin}"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sluice:
    def __init__(self, tmp, origin_port):
        self.tmp = tmp
        self.origin_port = origin_port
        self.proc = None
        self.log_file = None

    def start(self):
        for attempt in range(5):
            self.port, self.admin = free_port(), free_port()
            path = os.path.join(self.tmp, "sluice.yaml")
            with open(path, "w") as f:
                f.write(CONFIG.format(admin=self.admin, port=self.port, origin=self.origin_port))
            for _ in range(300):  # the binary may be being relinked
                if os.access(SLUICE, os.X_OK):
                    break
                time.sleep(0.1)
            self.log_path = os.path.join(self.tmp, "sluice.log")
            self.log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen([SLUICE, "run", "--config", path, "--no-watch", "--log-level", "warning"],
                                         stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/ready" % self.admin, timeout=1) as r:
                        if r.status == 200:
                            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                            return
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop()
            with open(self.log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            if "Address already in use" not in tail:
                raise RuntimeError("sluice did not start:\n" + tail)
        raise RuntimeError("sluice did not start (ports kept being taken)")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def stats(self):
        out = {}
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/stats/prometheus" % self.admin, timeout=3) as r:
                for line in r.read().decode().splitlines():
                    if line and not line.startswith("#"):
                        key, _, value = line.rpartition(" ")
                        try:
                            out[key] = float(value)
                        except ValueError:
                            pass
        except OSError:
            pass
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.log_file:
            self.log_file.close()
            self.log_file = None


def stat(stats, name, **labels):
    key = name + ("{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "}" if labels else "")
    return stats.get(key, 0.0)


class RSSSampler(threading.Thread):
    def __init__(self, sluice):
        super().__init__(daemon=True)
        self.sluice = sluice
        self.samples = []  # (monotonic time, KiB)
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            v = self.sluice.rss_kib()
            if v is not None:
                self.samples.append((time.monotonic(), v))
            time.sleep(0.02)

    def peak(self, since):
        vals = [v for t, v in self.samples if t >= since]
        return max(vals) if vals else None


# ---------------------------------------------------------------------------------------------
# Honest clients
# ---------------------------------------------------------------------------------------------

class Honest:
    """HTTP/1.1 and HTTP/2 clients making real requests on their own connections all along."""

    def __init__(self, port):
        self.port = port
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (start, end, proto, ok, detail)
        self.threads = [threading.Thread(target=self._loop, args=(self._h1_session, "h1"), daemon=True),
                        threading.Thread(target=self._loop, args=(self._h2_session, "h2"), daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def _record(self, start, proto, ok, detail=""):
        with self.lock:
            self.results.append((start, time.monotonic(), proto, ok, detail))

    def _loop(self, session, proto):
        while not self.stop_event.is_set():
            try:
                session()
            except Exception as e:  # the session recorded the failure already
                log("honest %s session ended: %r" % (proto, e))
                time.sleep(0.05)

    def _h1_session(self, count=20, pause=0.02):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            for _ in range(count):
                if self.stop_event.is_set():
                    return
                start = time.monotonic()
                try:
                    conn.request("GET", "/", headers={"Host": "honest"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200 or body != SMALL_BODY:
                        raise RuntimeError("status %d, %d body bytes" % (resp.status, len(body)))
                except Exception as e:
                    self._record(start, "h1", False, "%s: %s" % (type(e).__name__, e))
                    raise
                self._record(start, "h1", True)
                time.sleep(pause)
        finally:
            conn.close()

    def _h2_session(self, count=20, pause=0.02):
        start = time.monotonic()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except Exception as e:
            self._record(start, "h2", False, "connect: %s" % e)
            raise
        try:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            for _ in range(count):
                if self.stop_event.is_set():
                    break
                start = time.monotonic()
                try:
                    self._h2_request(sock, conn, start)
                except Exception as e:
                    self._record(start, "h2", False, "%s: %s" % (type(e).__name__, e))
                    raise
                self._record(start, "h2", True)
                time.sleep(pause)
            conn.close_connection()
            sock.sendall(conn.data_to_send())
        finally:
            sock.close()

    @staticmethod
    def _h2_request(sock, conn, start, path="/"):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "honest")],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body = None, b""
        while True:
            if time.monotonic() - start > 5:
                raise TimeoutError("no complete response in 5 s")
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by Sluice")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = dict(ev.headers).get(":status")
                elif isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id == sid:
                        body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionError("stream reset: %s" % ename(ev.error_code))
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError("GOAWAY %s" % ename(ev.error_code))
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    out = conn.data_to_send()
                    if out:
                        sock.sendall(out)
                    if status != "200" or body != SMALL_BODY:
                        raise RuntimeError("status %s, %d body bytes" % (status, len(body)))
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)

    def window(self, t0, t1):
        with self.lock:
            rs = [r for r in self.results if r[1] >= t0 and r[0] <= t1]
        ok = sum(1 for r in rs if r[3])
        failures = [r for r in rs if not r[3]]
        slowest = max((r[1] - r[0] for r in rs), default=0.0)
        return ok, failures, slowest

    def probe(self):
        """One request of each kind, on fresh connections, right now."""
        problems = []
        start = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/", headers={"Host": "probe"})
            r = conn.getresponse()
            if r.status != 200 or r.read() != SMALL_BODY:
                problems.append("h1 probe: status %d" % r.status)
            conn.close()
        except Exception as e:
            problems.append("h1 probe: %s: %s" % (type(e).__name__, e))
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            try:
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
                conn.initiate_connection()
                sock.sendall(conn.data_to_send())
                self._h2_request(sock, conn, time.monotonic())
            finally:
                sock.close()
        except Exception as e:
            problems.append("h2 probe: %s: %s" % (type(e).__name__, e))
        return problems, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# A raw HTTP/2 attacker connection
# ---------------------------------------------------------------------------------------------

def hpack_int(value, prefix_bits, first_byte_flags):
    """RFC 7541 §5.1 integer with an N-bit prefix; first_byte_flags fills the bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value, indexing=False):
    """A literal header field with a new (raw, non-Huffman) name: with incremental indexing
    (0x40) or without indexing (0x00)."""
    name, value = name.encode(), value.encode()
    return (b"\x40" if indexing else b"\x00") + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


def hpack_literal_indexed_name(index, value):
    """A literal header field without indexing whose name is static-table entry `index`."""
    value = value.encode()
    return hpack_int(index, 4, 0) + hpack_int(len(value), 7, 0) + value


def raw_frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def request_block(path, method="GET", authority="attacker"):
    """:method, :scheme http, :path, :authority without touching the dynamic table."""
    m = {"GET": b"\x82", "POST": b"\x83"}[method]
    return m + b"\x86" + hpack_literal_indexed_name(4, path) + hpack_literal_indexed_name(1, authority)


def headers(sid, block, end_stream=True, end_headers=True):
    flags = []
    if end_headers:
        flags.append("END_HEADERS")
    if end_stream:
        flags.append("END_STREAM")
    return HeadersFrame(sid, data=block, flags=flags).serialize()


class Raw:
    """One attacker connection: sends raw bytes, parses what Sluice sends back."""

    def __init__(self, port, label):
        self.label = label
        self.t0 = time.monotonic()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.block = None           # (sid, bytearray) of a header block awaiting END_HEADERS
        self.goaway = None          # (time, last stream id, code)
        self.closed = None          # (time, "eof" | "reset" | "write: ...")
        self.write_error = None
        self.rst = {}               # sid -> (time, code)
        self.status = {}            # sid -> (time, status)
        self.data = collections.Counter()
        self.ended = {}             # sid -> time END_STREAM was seen
        self.server_settings = None
        self.settings_acks = 0
        self.pings = 0
        self.frames = 0
        self.bytes_in = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def elapsed(self, t):
        return t - self.t0

    # -- sending --

    def send(self, data, deadline=5.0):
        """Sends everything (reading meanwhile) unless Sluice closes or stops reading."""
        self.blast(iter([data]), time.monotonic() + deadline, read=True)

    def blast(self, chunks, deadline, read=True):
        """Writes chunks until they run out, the connection fails or the deadline passes;
        reads whatever arrives meanwhile when `read`. Returns (bytes sent, finished)."""
        sent, pending = 0, memoryview(b"")
        while time.monotonic() < deadline and not self.closed:
            if not pending:
                nxt = next(chunks, None)
                if nxt is None:
                    return sent, True
                pending = memoryview(nxt)
            r, w, _ = select.select([self.sock] if read else [], [self.sock], [], 0.05)
            if r:
                self._recv_once()
            if w and not self.closed:
                try:
                    n = self.sock.send(pending)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self.write_error = (time.monotonic(), type(e).__name__)
                    return sent, False
                sent += n
                pending = pending[n:]
        return sent, False

    # -- receiving --

    def _recv_once(self):
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as e:
            if not self.closed:
                self.closed = (time.monotonic(), "reset" if isinstance(e, ConnectionResetError) else type(e).__name__)
            return
        if not data:
            if not self.closed:
                self.closed = (time.monotonic(), "eof")
            return
        self.bytes_in += len(data)
        self.buf += data
        self._parse()

    def _parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            header, body = bytes(self.buf[:9]), bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            self.frames += 1
            frame, _ = Frame.parse_frame_header(memoryview(header))
            frame.parse_body(memoryview(body))
            self._on_frame(frame)

    def _on_frame(self, f):
        now = time.monotonic()
        kind = type(f).__name__
        if kind == "SettingsFrame":
            if "ACK" in f.flags:
                self.settings_acks += 1
            elif self.server_settings is None:
                self.server_settings = dict(f.settings)
        elif kind == "PingFrame":
            self.pings += 1
        elif kind == "GoAwayFrame":
            if self.goaway is None:
                self.goaway = (now, f.last_stream_id, f.error_code)
                log("%s: GOAWAY %s last=%d %r" % (self.label, ename(f.error_code), f.last_stream_id, f.additional_data[:80]))
        elif kind == "RstStreamFrame":
            self.rst.setdefault(f.stream_id, (now, f.error_code))
        elif kind in ("HeadersFrame", "ContinuationFrame"):
            if kind == "HeadersFrame":
                self.block = (f.stream_id, bytearray(f.data))
            elif self.block:
                self.block[1].extend(f.data)
            if "END_HEADERS" in f.flags and self.block:
                sid, block = self.block
                self.block = None
                fields = dict(self.decoder.decode(bytes(block)))
                if ":status" in fields and not fields[":status"].startswith("1"):
                    self.status.setdefault(sid, (now, int(fields[":status"])))
            if "END_STREAM" in f.flags:
                self.ended.setdefault(f.stream_id, now)
        elif kind == "DataFrame":
            self.data[f.stream_id] += len(f.data)
            if "END_STREAM" in f.flags:
                self.ended.setdefault(f.stream_id, now)

    def pump(self, timeout, until=None):
        """Reads until `until()` holds, the connection closes, or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if until and until():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], min(left, 0.1))
            if r:
                self._recv_once()
        return bool(until and until())

    def wait_closed(self, timeout):
        self.pump(timeout)
        return self.closed

    # -- setup --

    def preface(self, settings=None):
        self.send(MAGIC + SettingsFrame(0, settings=settings or {}).serialize())

    def handshake(self, settings=None):
        """Preface and SETTINGS, then ACK the server's SETTINGS (so its limits are in force)."""
        self.preface(settings)
        if not self.pump(5, lambda: self.server_settings is not None):
            raise RuntimeError("no SETTINGS from Sluice (closed: %s)" % (self.closed,))
        self.send(SettingsFrame(0, flags=["ACK"]).serialize())

    # -- reporting --

    def ending(self):
        """How the connection ended, relative to the connection start."""
        parts = []
        if self.goaway:
            parts.append("GOAWAY %s (last_stream=%d) at %.2fs" % (ename(self.goaway[2]), self.goaway[1], self.elapsed(self.goaway[0])))
        if self.write_error:
            parts.append("write failed (%s) at %.2fs" % (self.write_error[1], self.elapsed(self.write_error[0])))
        if self.closed:
            parts.append("closed (%s) at %.2fs" % (self.closed[1], self.elapsed(self.closed[0])))
        else:
            parts.append("still open")
        return ", ".join(parts)

    def ended_at(self):
        """The first moment the connection was seen to end (close, failed write, or GOAWAY)."""
        ts = [x[0] for x in (self.closed, self.write_error) if x]
        return min(ts) if ts else None


def chunked(frame_bytes, count, per_chunk=4096):
    """`count` copies of a frame, yielded in chunks of up to `per_chunk` frames."""
    left = count
    while left > 0:
        n = min(per_chunk, left)
        yield frame_bytes * n
        left -= n


class CaseFailure(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The attacks. Each returns a detail string, or raises CaseFailure(detail).
# ---------------------------------------------------------------------------------------------

def require_flood_ending(raw, codes, bound, what):
    """The connection must be closed within `bound` seconds of its start; a GOAWAY, if seen,
    must carry one of `codes`; returns the ending text."""
    raw.wait_closed(max(0.0, raw.t0 + bound - time.monotonic()))
    end = raw.ending()
    if not raw.closed and not raw.write_error:
        raise CaseFailure("%s: connection not closed within %.0fs (%s)" % (what, bound, end))
    if raw.goaway and raw.goaway[2] not in codes:
        raise CaseFailure("%s: GOAWAY with unexpected code (%s)" % (what, end))
    return end


def case_rapid_reset(ctx):
    n = 5000
    raw = Raw(ctx.port, "rapid-reset")
    try:
        raw.handshake()
        before = ORIGIN_HITS["/rr"]
        block = request_block("/rr")
        rst_payload = struct.pack(">I", CANCEL)

        def frames():
            out = bytearray()
            for i in range(n):
                sid = 1 + 2 * i
                out += headers(sid, block) + raw_frame(0x3, 0, sid, rst_payload)
                if len(out) > 60000:
                    yield bytes(out)
                    out = bytearray()
            if out:
                yield bytes(out)

        t = time.monotonic()
        sent, finished = raw.blast(frames(), t + 10, read=True)
        end = require_flood_ending(raw, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR}, 10, "rapid reset")
        time.sleep(0.3)
        hits = ORIGIN_HITS["/rr"] - before
        streams = sent // (len(headers(1, block)) + 13)
        detail = "%d HEADERS+RST_STREAM pairs written of %d; %d reached the origin; %s" % (streams, n, hits, end)
        if not raw.goaway:
            raise CaseFailure("closed without GOAWAY: " + detail)
        if hits > 1000:
            raise CaseFailure("too many reset streams proxied: " + detail)
        return detail
    finally:
        raw.close()


def case_continuation_flood(ctx, with_bytes):
    raw = Raw(ctx.port, "continuation")
    try:
        raw.handshake()
        start = headers(1, request_block("/cf"), end_stream=True, end_headers=False)
        if with_bytes:
            cont = b"".join(ContinuationFrame(1, data=hpack_literal("x-cont-%d" % i, "a" * 1000)).serialize()
                            for i in range(16))
        else:
            cont = raw_frame(0x9, 0, 1) * 16

        def frames():
            yield start
            while True:
                yield cont * 16

        t = time.monotonic()
        sent, _ = raw.blast(frames(), t + 10, read=True)
        end = require_flood_ending(raw, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR}, 10, "CONTINUATION flood")
        ended = raw.ended_at()
        detail = "%d KiB of CONTINUATION written before the end (%.2fs after the first); %s" % (
            sent // 1024, (ended - t) if ended else -1, end)
        if ORIGIN_HITS["/cf"]:
            raise CaseFailure("the request reached the origin: " + detail)
        if not raw.goaway:
            raise CaseFailure("closed without GOAWAY: " + detail)
        return detail
    finally:
        raw.close()


def case_control_flood(ctx, kind):
    n = 50000
    raw = Raw(ctx.port, kind)
    try:
        raw.handshake()
        frame = raw_frame(0x4, 0, 0) if kind == "settings" else raw_frame(0x6, 0, 0, b"\x00" * 8)
        t = time.monotonic()
        sent, finished = raw.blast(chunked(frame, n), t + 8, read=False)  # never reads
        written = sent // len(frame)
        if not raw.closed:
            # Only now read: the replies Sluice buffered (in the socket) plus its ending.
            raw.wait_closed(max(0.5, t + 10 - time.monotonic()))
        end = raw.ending()
        replies = raw.settings_acks if kind == "settings" else raw.pings
        detail = "%d of %d %s frames written without reading; %d replies received; %s" % (
            written, n, kind.upper(), replies, end)
        if not raw.closed and not raw.write_error:
            raise CaseFailure("connection not closed within 10s: " + detail)
        if raw.goaway and raw.goaway[2] != ENHANCE_YOUR_CALM and raw.goaway[2] != PROTOCOL_ERROR:
            raise CaseFailure("GOAWAY with unexpected code: " + detail)
        if replies > 10000 + 10:
            raise CaseFailure("more replies than NIOHTTP2's control-frame buffer cap: " + detail)
        return detail
    finally:
        raw.close()


def case_hpack_bomb(ctx):
    refs, bombs = 800, 10
    raw = Raw(ctx.port, "hpack-bomb")
    try:
        raw.handshake()
        before1, before2 = ORIGIN_HITS["/bomb1"], ORIGIN_HITS["/bomb2"]
        big = "b" * 4000   # 6 + 4000 + 32 = 4038 octets of the 4096-octet dynamic table
        raw.send(headers(1, request_block("/bomb1") + hpack_literal("x-bomb", big, indexing=True)))
        raw.pump(5, lambda: 1 in raw.ended or 1 in raw.rst)
        first = raw.status.get(1, (0, None))[1]
        bomb_block = request_block("/bomb2") + b"\xbe" * refs   # index 62: the newest dynamic entry
        t = time.monotonic()
        sids = [3 + 2 * i for i in range(bombs)]
        raw.send(b"".join(headers(sid, bomb_block) for sid in sids))

        def answered(sid):
            return sid in raw.rst or (sid in raw.status and sid in raw.ended)

        raw.pump(5, lambda: all(answered(s) for s in sids))
        end = raw.ending()
        outcomes = collections.Counter()
        for sid in sids:
            if sid in raw.status:
                outcomes["status %d" % raw.status[sid][1]] += 1
            elif sid in raw.rst:
                outcomes["RST_STREAM %s" % ename(raw.rst[sid][1])] += 1
            elif raw.goaway and raw.closed:   # a connection error ends every stream on it
                outcomes["GOAWAY %s" % ename(raw.goaway[2])] += 1
            elif raw.closed:
                outcomes["closed without GOAWAY"] += 1
            else:
                outcomes["no answer"] += 1
        hits = ORIGIN_HITS["/bomb2"] - before2
        detail = ("insertion request (4 KiB header): %s; %d requests of %d references (%.1f MiB decoded each): %s; "
                  "%d reached the origin; %s" % (
                      first, bombs, refs, refs * 4038 / 1048576.0,
                      ", ".join("%d× %s" % (c, k) for k, c in sorted(outcomes.items())), hits, end))
        bad = [k for k in outcomes if k in ("no answer", "closed without GOAWAY")
               or (k.startswith("status") and k != "status 431") or k.endswith("NO_ERROR")]
        if bad or hits:
            raise CaseFailure("bomb not refused: " + detail)
        return detail
    finally:
        raw.close()


def case_zero_window(ctx):
    n = 30
    raw = Raw(ctx.port, "zero-window")
    try:
        raw.handshake({SETTINGS_INITIAL_WINDOW_SIZE: 0})
        s0 = ctx.sluice.stats()
        t = time.monotonic()
        sids = [1 + 2 * i for i in range(n)]
        raw.send(b"".join(headers(sid, request_block("/big")) for sid in sids))
        raw.pump(1.5)
        s_mid = ctx.sluice.stats()
        raw.pump(10 - (time.monotonic() - t), lambda: all(s in raw.rst or s in raw.ended for s in sids))
        s1 = ctx.sluice.stats()
        upstream_mid = stat(s_mid, "sluice_cluster_bytes_received_total", cluster="origin") - stat(s0, "sluice_cluster_bytes_received_total", cluster="origin")
        upstream_end = stat(s1, "sluice_cluster_bytes_received_total", cluster="origin") - stat(s0, "sluice_cluster_bytes_received_total", cluster="origin")
        reset = [s for s in sids if s in raw.rst]
        times = sorted(raw.rst[s][0] - t for s in reset)
        codes = collections.Counter(ename(raw.rst[s][1]) for s in reset)
        heads = sum(1 for s in sids if s in raw.status)
        data = sum(raw.data[s] for s in sids)
        bound = n * 1024 * 1024
        detail = ("%d streams on /big with a 0 window: %d response heads, %d DATA bytes sent to the client; "
                  "Sluice read %.1f MiB from the origin by 1.5s, %.1f MiB in all (bound %d MiB = 1 MiB/stream, "
                  "unbounded would be %d MiB); %d/%d streams reset (%s) %s; connection: %s" % (
                      n, heads, data, upstream_mid / 1048576, upstream_end / 1048576, bound >> 20, n * 4,
                      len(reset), n, ", ".join("%d× %s" % (c, k) for k, c in codes.items()) or "-",
                      ("between %.2fs and %.2fs" % (times[0], times[-1])) if times else "", raw.ending()))
        problems = []
        if data:
            problems.append("DATA sent into a zero window")
        if upstream_end > bound:
            problems.append("response bodies buffered without bound")
        if len(reset) < n:
            problems.append("%d streams never reset within 10s" % (n - len(reset)))
        if times and times[0] < STREAM_IDLE_TIMEOUT - 0.5:
            problems.append("streams reset before stream_idle_timeout")
        if problems:
            raise CaseFailure("; ".join(problems) + ": " + detail)
        return detail
    finally:
        raw.close()


def case_too_many_streams(ctx):
    n, limit = 150, 100
    raw = Raw(ctx.port, "too-many")
    try:
        raw.handshake()
        advertised = raw.server_settings.get(0x3)
        path = "/tms"
        block = request_block(path, method="POST") + hpack_literal("content-length", "5")
        sids = [1 + 2 * i for i in range(n)]
        t = time.monotonic()
        raw.send(b"".join(headers(sid, block, end_stream=False) for sid in sids))
        over = sids[limit:]
        raw.pump(1.0, lambda: all(s in raw.rst for s in over))
        refused = [s for s in sids if s in raw.rst]
        codes = collections.Counter(ename(raw.rst[s][1]) for s in refused)
        early = [s for s in sids[:limit] if s in raw.rst]
        # Now finish the first `limit` streams: each must get its 200.
        raw.send(b"".join(DataFrame(sid, data=b"hello", flags=["END_STREAM"]).serialize() for sid in sids[:limit]))
        raw.pump(5, lambda: all(s in raw.ended or s in raw.rst for s in sids[:limit]))
        ok = [s for s in sids[:limit] if raw.status.get(s, (0, 0))[1] == 200 and s in raw.ended]
        hits = ORIGIN_HITS[path]
        detail = ("max_concurrent_streams advertised %s; %d streams opened: %d refused (%s), "
                  "%d of the first %d reset, %d of the first %d answered 200 after their bodies; origin saw %d; "
                  "connection: %s" % (
                      advertised, n, len(refused),
                      ", ".join("%d× %s" % (c, k) for k, c in codes.items()) or "-",
                      len(early), limit, len(ok), limit, hits, raw.ending()))
        # RFC 9113 §5.1.2 makes a stream past the limit a stream error (Envoy answers
        # REFUSED_STREAM and serves the rest). NIOHTTP2 treats it as a connection error:
        # GOAWAY PROTOCOL_ERROR, and the connection ends (docs/HOST-DIFFERENCES.md #38). Either
        # is accepted here; what is not: the limit bypassed, or the connection left hanging.
        connection_error = raw.goaway is not None and raw.goaway[2] == PROTOCOL_ERROR and raw.closed is not None
        problems = []
        if hits > limit:
            problems.append("the origin saw %d streams, more than the limit %d" % (hits, limit))
        if not connection_error:
            missing = [s for s in over if s not in raw.rst]
            if missing:
                problems.append("%d streams past %d not refused" % (len(missing), limit))
            if any(c not in ("REFUSED_STREAM", "PROTOCOL_ERROR") for c in codes):
                problems.append("refused with an unexpected code")
            if len(ok) < limit:
                problems.append("only %d of the first %d streams served" % (len(ok), limit))
            if raw.goaway or raw.closed:
                problems.append("connection ended without a connection error")
        if problems:
            raise CaseFailure("; ".join(problems) + ": " + detail)
        return detail
    finally:
        raw.close()


def case_stream_limit_unacked(ctx):
    """A client that never ACKs Sluice's SETTINGS must not get past the stream limit: at most
    100 of 150 streams are served, the others refused (a stream or a connection error)."""
    n, limit = 150, 100
    raw = Raw(ctx.port, "limit-unacked")
    try:
        raw.preface()
        raw.pump(2, lambda: raw.server_settings is not None)
        path = "/tms-unacked"
        block = request_block(path, method="POST") + hpack_literal("content-length", "5")
        sids = [1 + 2 * i for i in range(n)]
        raw.send(b"".join(headers(sid, block, end_stream=False) for sid in sids))
        raw.pump(1.0, lambda: all(s in raw.rst for s in sids[limit:]))
        raw.send(b"".join(DataFrame(sid, data=b"hello", flags=["END_STREAM"]).serialize() for sid in sids))
        raw.pump(5, lambda: all(s in raw.ended or s in raw.rst for s in sids))
        served = [s for s in sids if raw.status.get(s, (0, 0))[1] == 200 and s in raw.ended]
        refused = [s for s in sids[limit:] if s in raw.rst and raw.rst[s][1] in (REFUSED_STREAM, PROTOCOL_ERROR)]
        conn_error = raw.goaway is not None and raw.goaway[2] != NO_ERROR and raw.closed is not None
        hits = ORIGIN_HITS[path]
        detail = "SETTINGS never ACKed; %d streams opened: %d served, %d of the %d past the limit refused, origin saw %d; connection: %s" % (
            n, len(served), len(refused), n - limit, hits, raw.ending())
        if len(served) > limit or hits > limit or not (len(refused) == n - limit or conn_error):
            raise CaseFailure("stream limit bypassed: " + detail)
        return detail
    finally:
        raw.close()


def case_empty_data_flood(ctx):
    n = 50000
    raw = Raw(ctx.port, "empty-data")
    try:
        raw.handshake()
        raw.send(headers(1, request_block("/edf", method="POST"), end_stream=False))
        t = time.monotonic()
        sent, _ = raw.blast(chunked(raw_frame(0x0, 0, 1), n), t + 8, read=True)
        end = require_flood_ending(raw, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR}, 10, "empty DATA flood")
        ended = raw.ended_at()
        detail = "%d of %d empty DATA frames written (%.2fs to the end); %s" % (
            sent // 9, n, (ended - t) if ended else -1, end)
        if not raw.goaway:
            raise CaseFailure("closed without GOAWAY: " + detail)
        return detail
    finally:
        raw.close()


def case_slowloris(ctx):
    """Three silent connections at once: half the preface, the preface alone, the preface and
    SETTINGS. Each must be closed by the idle timeout (5 s; checked at a quarter of it)."""
    variants = [("half preface", MAGIC[:16]), ("preface only", MAGIC),
                ("preface+SETTINGS", MAGIC + SettingsFrame(0).serialize())]
    raws = []
    try:
        for name, data in variants:
            raw = Raw(ctx.port, "slowloris " + name)
            raw.send(data)
            raws.append((name, raw))
        deadline = time.monotonic() + IDLE_TIMEOUT + 4
        for _, raw in raws:
            raw.pump(max(0.0, deadline - time.monotonic()))
        parts, problems = [], []
        for name, raw in raws:
            parts.append("%s: %s" % (name, raw.ending()))
            if not raw.closed:
                problems.append("%s never closed within %.0fs" % (name, IDLE_TIMEOUT + 4))
            elif raw.elapsed(raw.closed[0]) < IDLE_TIMEOUT - 0.5:
                problems.append("%s closed before the idle timeout" % name)
            if raw.goaway and raw.goaway[2] != NO_ERROR:
                problems.append("%s: GOAWAY %s" % (name, ename(raw.goaway[2])))
        detail = "; ".join(parts)
        if problems:
            raise CaseFailure("; ".join(problems) + ": " + detail)
        return detail
    finally:
        for _, raw in raws:
            raw.close()


def case_invalid(ctx, what):
    raw = Raw(ctx.port, "invalid " + what)
    try:
        raw.handshake()
        # Stream 1: a good request whose body is still to come; it must survive.
        good = request_block("/inv-good", method="POST") + hpack_literal("content-length", "5")
        raw.send(headers(1, good, end_stream=False))
        path = "/inv-bad-" + what
        enc = {"uppercase": request_block(path) + hpack_literal("X-Upper-Case", "1"),
               "connection-header": request_block(path) + hpack_literal("connection", "keep-alive"),
               "missing-path": b"\x82\x86" + hpack_literal_indexed_name(1, "attacker")}[what]
        raw.send(headers(3, enc))
        raw.pump(3, lambda: 3 in raw.rst or 3 in raw.ended or raw.closed is not None)
        if 3 in raw.rst:
            answer = "RST_STREAM %s" % ename(raw.rst[3][1])
        elif 3 in raw.status:
            answer = "status %d" % raw.status[3][1]
        else:
            answer = "no answer"
        raw.send(DataFrame(1, data=b"hello", flags=["END_STREAM"]).serialize())
        raw.send(headers(5, request_block("/inv-after")))
        raw.pump(5, lambda: all(s in raw.ended or s in raw.rst for s in (1, 5)))
        s1, s5 = raw.status.get(1, (0, None))[1], raw.status.get(5, (0, None))[1]
        hits = ORIGIN_HITS[path]
        detail = "invalid stream 3 -> %s; pending stream 1 -> %s, new stream 5 -> %s; origin saw the bad request %d×; connection: %s" % (
            answer, s1, s5, hits, raw.ending())
        problems = []
        if answer not in ("RST_STREAM PROTOCOL_ERROR", "status 400"):
            problems.append("invalid request not refused with PROTOCOL_ERROR or 400")
        if hits:
            problems.append("invalid request forwarded")
        if s1 != 200 or 1 not in raw.ended or s5 != 200 or 5 not in raw.ended:
            problems.append("other streams affected")
        if raw.goaway or raw.closed:
            problems.append("connection ended")
        if problems:
            raise CaseFailure("; ".join(problems) + ": " + detail)
        return detail
    finally:
        raw.close()


CASES = [
    ("rapid-reset", case_rapid_reset),
    ("continuation-flood-with-bytes", lambda c: case_continuation_flood(c, True)),
    ("continuation-flood-empty", lambda c: case_continuation_flood(c, False)),
    ("settings-flood", lambda c: case_control_flood(c, "settings")),
    ("ping-flood", lambda c: case_control_flood(c, "ping")),
    ("hpack-bomb", case_hpack_bomb),
    ("zero-window-stall", case_zero_window),
    ("too-many-streams", case_too_many_streams),
    ("stream-limit-before-settings-ack", case_stream_limit_unacked),
    ("empty-data-flood", case_empty_data_flood),
    ("slowloris", case_slowloris),
    ("invalid-uppercase-header", lambda c: case_invalid(c, "uppercase")),
    ("invalid-connection-header", lambda c: case_invalid(c, "connection-header")),
    ("invalid-missing-path", lambda c: case_invalid(c, "missing-path")),
]


class Context:
    def __init__(self, sluice, honest, sampler):
        self.sluice, self.honest, self.sampler = sluice, honest, sampler
        self.port = sluice.port


def run_case(ctx, name, fn):
    base = ctx.sluice.rss_kib() or 0
    t0 = time.monotonic()
    problems = []
    try:
        detail = fn(ctx)
    except CaseFailure as e:
        detail = str(e)
        problems.append("attack outcome")
    except Exception as e:
        detail = "%s: %s" % (type(e).__name__, e)
        problems.append("attack raised")
    t1 = time.monotonic()
    time.sleep(0.3)
    peak = ctx.sampler.peak(t0) or base
    growth = (peak - base) / 1024.0
    alive = ctx.sluice.alive()
    ok, failures, slowest = ctx.honest.window(t0, time.monotonic())
    probe_problems, probe_time = ctx.honest.probe() if alive else (["sluice is dead"], 0)
    if not alive:
        problems.append("sluice died (exit %s)" % ctx.sluice.proc.poll())
    if growth > RSS_BOUND_MIB:
        problems.append("RSS grew %.1f MiB > %d MiB" % (growth, RSS_BOUND_MIB))
    if failures:
        problems.append("honest clients failed %d× (first: %s %s)" % (len(failures), failures[0][2], failures[0][4]))
    if probe_problems:
        problems.append("; ".join(probe_problems))
    measures = "rss %.1f->%.1f MiB (+%.1f, bound %d); honest %d ok/%d failed, slowest %.2fs; %.1fs" % (
        base / 1024.0, peak / 1024.0, growth, RSS_BOUND_MIB, ok, len(failures), slowest, t1 - t0)
    verdict = "FAIL" if problems else "PASS"
    print("%s %s: %s%s | %s" % (verdict, name, ("[" + ", ".join(problems) + "] ") if problems else "", detail, measures),
          flush=True)
    return not problems


def main(argv):
    global VERBOSE
    if "-v" in argv:
        VERBOSE = True
        argv = [a for a in argv if a != "-v"]
    selected = [(n, f) for n, f in CASES if not argv or any(a in n for a in argv)]
    tmp = tempfile.mkdtemp(prefix="sluice-h2-attacks-")
    origin = OriginServer(("127.0.0.1", 0), OriginHandler)
    origin_thread = threading.Thread(target=origin.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    origin_thread.start()
    sluice = Sluice(tmp, origin.server_address[1])
    honest = sampler = None
    passed = failed = 0
    started = time.monotonic()
    try:
        sluice.start()
        sampler = RSSSampler(sluice)
        sampler.start()
        honest = Honest(sluice.port)
        honest.start()
        time.sleep(1.0)  # warm up: the honest clients' connections and upstream pool exist
        ok, failures, _ = honest.window(started, time.monotonic())
        if failures or not ok:
            print("FAIL warm-up: honest clients: %d ok, failures: %s" % (ok, failures[:3]))
            failed += 1
        ctx = Context(sluice, honest, sampler)
        for name, fn in selected:
            if not sluice.alive():
                print("FAIL %s: sluice is not running (exit %s)" % (name, sluice.proc.poll()), flush=True)
                failed += 1
                continue
            if run_case(ctx, name, fn):
                passed += 1
            else:
                failed += 1
    except Exception as e:
        print("FAIL setup: %s: %s" % (type(e).__name__, e), flush=True)
        failed += 1
    finally:
        if honest:
            honest.stop()
        if sampler:
            sampler.stop_event.set()
        final_rss = sluice.rss_kib() if sluice.alive() else None
        sluice.stop()
        origin.shutdown()
        origin.server_close()
        if VERBOSE or failed:
            try:
                with open(os.path.join(tmp, "sluice.log"), "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace").strip()
                if tail:
                    print("sluice log (tail):\n" + tail)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    if final_rss:
        print("final sluice RSS %.1f MiB; %.1f s" % (final_rss / 1024.0, time.monotonic() - started))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _terminate)
    sys.exit(main(sys.argv[1:]))
