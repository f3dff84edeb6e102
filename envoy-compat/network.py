#!/usr/bin/env python3
"""Network (TCP) filters and gRPC callouts side by side: one Envoy bootstrap run by the real
Envoy and by `sluice run --envoy-config`, with filters built here:

- filters/test/c/network.c as `envoy.filters.network.wasm` in front of tcp_proxy on one
  listener per mode (count, rewrite, pause-line, pause-new, hold-once, close-on), in front of
  an http_connection_manager, and as an HTTP filter (`report`, the same module and vm_id)
  that answers with the counters and the per-connection callback traces the network filters
  left in shared data;
- filters/test/c/grpc.c as an HTTP filter making gRPC callouts to a real grpcio server
  (Tests/support/grpc_peer.py), to a cluster nothing listens on, and to a server that drops
  the connection mid-stream.

Each TCP scenario is a client doing what a real one does (send, wait for the echo, half-close,
reset); what the client received and the callbacks the filter saw (with the status of the
properties it read) must be identical, and so must every gRPC callout's report. Prints one
line per case and "N passed, M failed"; exits 1 on any difference.
"""
import os, socket, struct, subprocess, sys, tempfile, threading, time, urllib.request

from proxies import compare, envoy_binary, free_port, running, tcp_server

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NETWORK = os.path.join(ROOT, "filters", "build", "c-network.wasm")
GRPC = os.path.join(ROOT, "filters", "build", "c-grpc.wasm")
PEER = os.path.join(ROOT, "Tests", "support", "grpc_peer.py")

MODES = ["count", "rewrite", "pause-line", "pause-new 300", "hold-mark 300", "close-on"]


def wasm(kind, name, module, configuration, vm_id):
    return """
      - name: envoy.filters.{kind}.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.{kind}.wasm.v3.Wasm
          config:
            name: {name}
            root_id: {name}
            configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{configuration}" }}
            vm_config:
              vm_id: {vm_id}
              runtime: envoy.wasm.runtime.v8
              code: {{ local: {{ filename: {module} }} }}""".format(kind=kind, name=name, module=module, configuration=configuration, vm_id=vm_id)


def indent(block):
    """An HTTP filter sits four columns deeper than a network filter."""
    return block.replace("\n", "\n    ")


def tcp_listener(name, port, mode, cluster="echo"):
    """A tcp_proxy listener, behind the network test filter in `mode` (None: no filter)."""
    return """
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:{filter}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {name}
          cluster: {cluster}""".format(name=name, port=port, cluster=cluster,
                                      filter=wasm("network", name + "_net", NETWORK, mode, "net") if mode else "")


def http_listener(name, port, network_filter, http_filter, cluster):
    return """
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:{network}
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}]
          http_filters:{http}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}""".format(
        name=name, port=port, cluster=cluster, network=network_filter, http=http_filter)


def cluster(name, port, h2=False):
    options = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }""" if h2 else ""
    return """
  - name: {name}
    type: STATIC
    connect_timeout: 1s{options}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]""".format(
        name=name, port=port, options=options)


def bootstrap(ports):
    listeners = [tcp_listener("tcp_%s" % m.split()[0].replace("-", "_"), ports[m], m) for m in MODES]
    listeners.append(tcp_listener("tcp_dead", ports["dead_listener"], "count", cluster="dead"))
    listeners.append(tcp_listener("tcp_greet", ports["greet_listener"], "count", cluster="greet"))
    listeners.append(http_listener("http_net", ports["http_net"], wasm("network", "http_net_net", NETWORK, "observe", "net"), "", "echo_http"))
    listeners.append(http_listener("report", ports["report"], "", indent(wasm("http", "report", NETWORK, "report", "net")), "echo_http"))
    listeners.append(http_listener("grpc", ports["grpc_listener"], "",
                                   indent(wasm("http", "grpc_caller", GRPC, "grpc dead cut", "grpc")), "echo_http"))
    clusters = [cluster("echo", ports["echo"]), cluster("greet", ports["greet"]), cluster("echo_http", ports["echo_http"]), cluster("dead", ports["dead"], h2=True),
                cluster("grpc", ports["grpc"], h2=True), cluster("cut", ports["cut"], h2=True)]
    return static_bootstrap(ports["admin"], listeners, clusters)


def static_bootstrap(admin, listeners, clusters):
    """A bootstrap of these listener and cluster blocks, its admin on `admin`."""
    return """admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:{listeners}
  clusters:{clusters}
""".format(admin=admin, listeners="".join(listeners), clusters="".join(clusters))


# ---- upstreams ----

def echo_server():
    """Echoes every read at once; after the client's FIN, sends its own and closes."""
    def serve(c):
        while True:
            data = c.recv(65536)
            if not data:
                break
            c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    return tcp_server(serve)


def greeter_server():
    """Says "hello", sends its FIN, and closes once the client has closed too: the upstream
    ends first."""
    def serve(c):
        c.sendall(b"hello")
        # Apart from the bytes: a FIN read with them is one callback in Envoy (5,1), two in
        # Sluice (5,0)(0,1) (HOST-DIFFERENCES #50).
        time.sleep(0.2)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    return tcp_server(serve)


def upstream_ends_first(port):
    c = connect(port)
    got = read_until_eof(c)
    c.sendall(b"bye")
    time.sleep(0.1)
    c.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    c.close()
    return got


def http_echo_server():
    """A tiny HTTP/1.1 origin: 200 with body "ok" to every request, keep-alive."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, address: None  # a client that resets is part of the test
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


# ---- TCP scenarios: what the client gets ----

def connect(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=3)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def read_some(c, wait=1.0):
    c.settimeout(wait)
    try:
        data = c.recv(65536)
        return data.decode(errors="replace") if data else "<EOF>"
    except socket.timeout:
        return "<nothing>"
    except ConnectionResetError:
        return "<RST>"


def read_until_eof(c):
    out = b""
    c.settimeout(3)
    try:
        while True:
            data = c.recv(65536)
            if not data:
                return out.decode(errors="replace") + "<EOF>"
            out += data
    except socket.timeout:
        return out.decode(errors="replace") + "<open>"
    except ConnectionResetError:
        return out.decode(errors="replace") + "<RST>"


def exchange(port, *messages, wait_first=0.0, half_close=True):
    c = connect(port)
    if wait_first:
        time.sleep(wait_first)
    seen = []
    for m in messages:
        c.sendall(m.encode())
        seen.append(read_some(c))
    if half_close:
        c.shutdown(socket.SHUT_WR)
    seen.append(read_until_eof(c))
    c.close()
    return " | ".join(seen)


def pause_line(port):
    c = connect(port)
    c.sendall(b"abc")
    first = read_some(c, 0.3)
    c.sendall(b"def\n")
    second = read_some(c)
    c.shutdown(socket.SHUT_WR)
    return " | ".join([first, second, read_until_eof(c)])


def pause_new(port):
    c = connect(port)
    c.sendall(b"early")
    held = read_some(c, 0.1)
    released = read_some(c, 2)
    c.shutdown(socket.SHUT_WR)
    return " | ".join([held, released, read_until_eof(c)])


def hold_once(port):
    c = connect(port)
    c.sendall(b"held")
    early = read_some(c, 0.1)
    late = read_some(c, 2)
    c.sendall(b"more")
    then = read_some(c)
    c.shutdown(socket.SHUT_WR)
    return " | ".join([early, late, then, read_until_eof(c)])


def client_reset(port):
    c = connect(port)
    c.sendall(b"x")
    got = read_some(c)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    return got


def http_through_network_filter(port):
    c = connect(port)
    c.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
    first = read_some(c)
    c.close()
    return first.split("\r\n")[0]


SCENARIOS = [
    ("count: echo and half-close", "count", lambda p: exchange(p["count"], "hello tcp")),
    ("count: two round trips", "count", lambda p: exchange(p["count"], "one", "two")),
    ("rewrite both ways", "rewrite", lambda p: exchange(p["rewrite"], "hello")),
    ("pause-line holds until a newline", "pause-line", lambda p: pause_line(p["pause-line"])),
    ("pause-new: held at new connection, resumed from a tick", "pause-new", lambda p: pause_new(p["pause-new 300"])),
    ("hold-mark: paused, edited and resumed from a tick", "hold-mark", lambda p: hold_once(p["hold-mark 300"])),
    ("close-on EVIL from the client", "close-on", lambda p: exchange(p["close-on"], "fine", "EVIL", half_close=False)),
    ("close-on LEAK from the upstream", "close-on", lambda p: exchange(p["close-on"], "LEAK", half_close=False)),
    ("client reset", "count", lambda p: client_reset(p["count"])),
    ("the upstream ends first, then the client", "count", lambda p: upstream_ends_first(p["greet_listener"])),
    # No bytes sent: a close with the client's bytes unread is a reset on either proxy, and
    # whether they arrive before the close is timing.
    ("upstream refuses the connection", "count", lambda p: exchange(p["dead_listener"], half_close=False)),
    ("network filter before the HTTP codec", "http", lambda p: http_through_network_filter(p["http_net"])),
]

GRPC_PATHS = ["/unary/hello", "/meta", "/fail", "/hold/200", "/unknown", "/dead", "/count/3", "/sum", "/chat", "/cut", "/many", "/cancel"]


def report(ports):
    """The counters line, and the traces of every connection so far."""
    with urllib.request.urlopen("http://127.0.0.1:%d/" % ports["report"], timeout=5) as r:
        text = r.read().decode()
    counters, _, traces = text.partition("\n")
    return counters, traces


def normalise_http_trace(trace):
    """HTTP bytes differ between proxies (each writes its own response headers, in its own
    number of writes): sizes of the HTTP listener's data callbacks are left out, and
    repeated callbacks counted once."""
    import re
    trace = re.sub(r"(down|up)\(\d+,", r"\1(*,", trace)
    return re.sub(r"(\S+)( \1)+", r"\1", trace)


def run(argv, config_path, ports, label):
    log_path = os.path.join(HERE, "out", "network-%s.log" % label)
    with open(config_path, "w") as f:
        f.write(bootstrap(ports))
    with running(argv + [config_path], ports["admin"], log_path) as ready:
        if not ready:
            return None, "%s did not start (see %s)" % (label, log_path)
        answers = []
        for name, kind, scenario in SCENARIOS:
            before = report(ports)[1]
            got = scenario(ports)
            trace = ""
            for _ in range(40):  # the trace lands when the connection's contexts are deleted
                time.sleep(0.05)
                trace = report(ports)[1][len(before):].strip()
                if trace:
                    break
            if kind == "http":
                trace = normalise_http_trace(trace)
            answers.append("client: %s\n    filter: %s" % (got, trace))
        answers.append(report(ports)[0])
        for path in GRPC_PATHS:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (ports["grpc_listener"], path), timeout=10) as r:
                    answers.append("%d %s" % (r.status, r.read().decode().strip().replace("\n", " / ")))
            except Exception as e:  # noqa: BLE001
                answers.append("error %s" % e)
        return answers, None


def main():
    for f in (NETWORK, GRPC):
        if not os.path.exists(f):
            sys.exit("%s missing: run filters/build.sh" % f)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="sluice-network-")
    echo = echo_server()
    greet = greeter_server()
    echo_http = http_echo_server()
    grpc_server = subprocess.Popen([sys.executable, PEER, "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cut_server = subprocess.Popen([sys.executable, PEER, "cut-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    grpc_port = int(grpc_server.stdout.readline().split()[1])
    cut_port = int(cut_server.stdout.readline().split()[1])
    sluice = os.environ.get("SLUICE", os.path.join(ROOT, ".build", "debug", "sluice"))
    try:
        results = {}
        for label, argv in (("envoy", [envoy_binary(), "--concurrency", "1", "--log-level", "warning", "-c"]),
                            ("sluice", [sluice, "run", "--workers", "1", "--envoy-config"])):
            ports = {k: free_port() for k in MODES + ["dead_listener", "greet_listener", "http_net", "report", "grpc_listener", "admin", "dead"]}
            ports.update(echo=echo, greet=greet, echo_http=echo_http, grpc=grpc_port, cut=cut_port)
            answers, problem = run(argv, os.path.join(work, "%s.yaml" % label), ports, label)
            if problem:
                print("FAIL %s" % problem)
                print("0 passed, 1 failed")
                return 1
            results[label] = answers
        names = [s[0] for s in SCENARIOS] + ["counters in shared data"] + ["gRPC %s" % p for p in GRPC_PATHS]
        return compare(names, results["envoy"], results["sluice"])
    finally:
        for p in (grpc_server, cut_server):
            p.stdin.close()
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    sys.exit(main())
