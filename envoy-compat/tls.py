#!/usr/bin/env python3
"""TLS and HTTP/2 side by side: one Envoy bootstrap (two listeners terminating TLS, server
names chosen by SNI through the TLS inspector, ALPN h2 and http/1.1, client certificates
optional on one listener and required on the other, a cleartext listener for h2c) run by the
real Envoy and by `sluice run --envoy-config`, with the C conformance filter answering each
request with the connection's TLS properties (`x-test: tls-props`). Every request goes to
both with curl (SNI, ALPN, TLS version and client certificate chosen per case); the status,
the negotiated HTTP version, the certificate the client was shown and the property headers
must be identical, and a handshake one refuses the other must refuse too.

Certificates are made fresh by Tests/support/make_certs.py (trustme). Prints one line per
case and "N passed, M failed"; exits 1 on any difference.
"""
import os, shutil, ssl, subprocess, sys, tempfile, threading
from http.server import ThreadingHTTPServer

from proxies import Origin, compare, envoy_binary, free_port, running

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FILTER = os.path.join(ROOT, "filters", "build", "c-conformance.wasm")

BOOTSTRAP = """
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
{listeners}
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {origin} }} }} }} }}] }}]
  - name: origin_tls
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin_tls
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {origin_tls} }} }} }} }}] }}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: alpha.test
        common_tls_context:
          validation_context: {{ trusted_ca: {{ filename: {certs}/ca.pem }} }}
          tls_certificates: [{{ certificate_chain: {{ filename: {certs}/client.pem }}, private_key: {{ filename: {certs}/client.key }} }}]
  - name: grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: grpc
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {grpc} }} }} }} }}] }}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: alpha.test
        common_tls_context:
          alpn_protocols: [h2]
          validation_context: {{ trusted_ca: {{ filename: {certs}/ca.pem }} }}
"""

HCM = """
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{ match: {{ prefix: /sluice.test.Echo/ }}, route: {{ cluster: grpc }} }}
              - {{ match: {{ prefix: /up/ }}, route: {{ cluster: origin_tls }} }}
              - {{ match: {{ prefix: / }}, route: {{ cluster: origin }} }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: conformance
                root_id: conformance
                vm_config: {{ runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: {filter} }} }} }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}"""


def tls_socket(cert, certs, require=False):
    return """
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: {require}
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{{ certificate_chain: {{ filename: {d}/{c}.pem }}, private_key: {{ filename: {d}/{c}.key }} }}]
            validation_context: {{ trusted_ca: {{ filename: {d}/ca.pem }} }}""".format(require="true" if require else "false", d=certs, c=cert)


def bootstrap(ports, certs, origin, origin_tls, grpc):
    edge = """  - name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
    - filter_chain_match: {{ server_names: [alpha.test, "*.alpha.test"] }}
      filters:{hcm}{alpha}
    - filter_chain_match: {{ server_names: [beta.test] }}
      filters:{hcm}{beta}
""".format(port=ports["edge"], hcm=HCM.format(name="edge", filter=FILTER), alpha=tls_socket("alpha", certs), beta=tls_socket("beta", certs))
    mtls = """  - name: mtls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:{hcm}{tls}
""".format(port=ports["mtls"], hcm=HCM.format(name="mtls", filter=FILTER), tls=tls_socket("alpha", certs, require=True))
    plain = """  - name: plain
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:{hcm}
""".format(port=ports["plain"], hcm=HCM.format(name="plain", filter=FILTER))
    return BOOTSTRAP.format(admin=ports["admin"], listeners=edge + mtls + plain, origin=origin, origin_tls=origin_tls, grpc=grpc, certs=certs)


# (name, listener, SNI or None, curl options)
CASES = [
    ("alpha over h2", "edge", "alpha.test", ["--http2"]),
    ("alpha over http/1.1", "edge", "alpha.test", ["--http1.1"]),
    ("wildcard name, TLS 1.2", "edge", "www.alpha.test", ["--http2", "--tls-max", "1.2"]),
    ("beta with a client certificate", "edge", "beta.test", ["--http2", "--cert", "{certs}/client.pem", "--key", "{certs}/client.key"]),
    ("beta with an untrusted client certificate", "edge", "beta.test", ["--http2", "--cert", "{certs}/rogue.pem", "--key", "{certs}/rogue.key"]),
    ("no ALPN", "edge", "alpha.test", ["--no-alpn"]),
    ("unknown server name", "edge", "gamma.test", ["--http2"]),
    ("no server name", "edge", None, ["--http2"]),
    ("mTLS required, certificate given", "mtls", "alpha.test", ["--http2", "--cert", "{certs}/client.pem", "--key", "{certs}/client.key"]),
    ("mTLS required, none given", "mtls", "alpha.test", ["--http2"]),
    ("mTLS required, untrusted", "mtls", "alpha.test", ["--http1.1", "--cert", "{certs}/rogue.pem", "--key", "{certs}/rogue.key"]),
    ("h2c by prior knowledge", "plain", None, ["--http2-prior-knowledge"]),
    ("cleartext http/1.1", "plain", None, ["--http1.1"]),
]

# Through the upstream TLS cluster (SNI, CA, client certificate): the filter adds the
# upstream.* TLS properties to the response (x-test: upstream-tls-props).
UPSTREAM_CASE = ("upstream TLS properties", "plain", None, ["--http1.1", "-H", "x-test: upstream-tls-props"], "/up/")


def ask(case, ports, certs, path="/"):
    """What the client got: an error (curl's exit code stands for the kind of failure) or
    the status, HTTP version, certificate subject shown, and the property headers."""
    name, listener, sni, options = case[:4]
    port = ports[listener]
    scheme = "http" if listener == "plain" else "https"
    host = sni or "127.0.0.1"
    test = [] if "-H" in options else ["-H", "x-test: tls-props"]
    argv = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5"] + test + [
            "-w", "%{http_version}|%{ssl_verify_result}", "--cacert", os.path.join(certs, "ca.pem")]
    if sni:
        argv += ["--resolve", "%s:%d:127.0.0.1" % (sni, port)]
    else:
        argv += ["-k"]  # no name to verify the certificate against
    argv += [o.format(certs=certs) for o in options] + ["%s://%s:%d%s" % (scheme, host, port, path)]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        # A refused handshake shows as 35 (during it) or, with TLS 1.3, where the server's
        # verdict on a client certificate arrives after the client has finished: 55 or 56
        # (sending or reading the request) or 16 (inside HTTP/2). Which one is timing.
        return "refused by TLS" if r.returncode in (16, 35, 55, 56) else "failed (curl %d)" % r.returncode
    lines = r.stdout.replace("\r", "").split("\n")
    status = lines[0].split(" ")[1] if lines and " " in lines[0] else "?"
    props = sorted(l.lower() for l in lines if l.lower().startswith(("x-p-", "x-up-", "x-grpc-")))
    version = lines[-1].split("|")[0]
    return "%s HTTP/%s\n  %s" % (status, version, "\n  ".join(props))


def shown_certificate(ports, sni):
    """The subject of the certificate a proxy presents for an SNI (openssl s_client)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % ports["edge"]] + (["-servername", sni] if sni else ["-noservername"]),
                       input="", capture_output=True, text=True, timeout=10)
    for line in r.stdout.splitlines():
        if line.startswith("subject="):
            return line
    return "no certificate"


def grpc_calls(ports, certs):
    """The gRPC client's report, through the cleartext listener to the TLS gRPC server."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "Tests", "support", "grpc_peer.py"), "client", "127.0.0.1:%d" % ports["plain"]],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.strip()


def run(argv, config, ports, certs, label):
    log_path = os.path.join(HERE, "out", "tls-%s.log" % label)
    with open(config, "w") as f:
        f.write(bootstrap(ports, certs, ports["origin"], ports["origin_tls"], ports["grpc"]))
    with running(argv + [config], ports["admin"], log_path) as ready:
        if not ready:
            return None, "%s did not start (see %s)" % (label, log_path)
        answers = [ask(c, ports, certs) for c in CASES]
        answers += [shown_certificate(ports, sni) for sni in ("alpha.test", "www.alpha.test", "beta.test")]
        answers.append(ask(UPSTREAM_CASE, ports, certs, path=UPSTREAM_CASE[4]))
        answers.append(grpc_calls(ports, certs))
        # response.grpc_status as the filter's on_log saw it, per status, over those calls.
        answers.append(ask(("grpc statuses", "plain", None, ["--http1.1", "-H", "x-test: grpc-read"]), ports, certs))
        return answers, None

def main():
    if not os.path.exists(FILTER):
        sys.exit("%s missing: run filters/build.sh" % FILTER)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="sluice-tls-")
    certs = os.path.join(work, "certs")
    subprocess.run([sys.executable, os.path.join(ROOT, "Tests", "support", "make_certs.py"), certs], check=True)
    origin = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    # The same origin over TLS (alpha.test's certificate, client certificates verified).
    origin_tls = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(certs, "alpha.pem"), os.path.join(certs, "alpha.key"))
    context.load_verify_locations(os.path.join(certs, "ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    origin_tls.socket = context.wrap_socket(origin_tls.socket, server_side=True)
    threading.Thread(target=origin_tls.serve_forever, daemon=True).start()
    grpc_server = subprocess.Popen([sys.executable, os.path.join(ROOT, "Tests", "support", "grpc_peer.py"), "server", "--tls",
                                    os.path.join(certs, "alpha.pem"), os.path.join(certs, "alpha.key")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    grpc_port = int(grpc_server.stdout.readline().split()[1])
    sluice = os.path.join(ROOT, ".build", "debug", "sluice")
    try:
        results = {}
        for label, argv in (("envoy", [envoy_binary(), "--concurrency", "1", "--log-level", "warning", "-c"]),
                            ("sluice", [sluice, "run", "--workers", "1", "--envoy-config"])):
            ports = {k: free_port() for k in ("edge", "mtls", "plain", "admin")}
            ports["origin"] = origin.server_address[1]
            ports["origin_tls"] = origin_tls.server_address[1]
            ports["grpc"] = grpc_port
            answers, problem = run(argv, os.path.join(work, "%s.yaml" % label), ports, certs, label)
            if problem:
                print("FAIL %s" % problem)
                print("0 passed, 1 failed")
                return 1
            results[label] = answers
        names = [c[0] for c in CASES] + ["certificate for alpha.test", "certificate for www.alpha.test", "certificate for beta.test",
                                         UPSTREAM_CASE[0], "gRPC to an HTTP/2 TLS upstream", "response.grpc_status in on_log"]
        return compare(names, results["envoy"], results["sluice"])
    finally:
        origin.shutdown()
        origin_tls.shutdown()
        grpc_server.stdin.close()
        grpc_server.terminate()
        grpc_server.wait(10)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


if __name__ == "__main__":
    sys.exit(main())
