#!/usr/bin/env python3
"""A real gRPC peer for proxying tests (grpcio from PyPI), with raw-bytes methods so no
generated code is needed.

  grpc_peer.py server [--tls CERT KEY] [--max-age-ms N]
                                         serves on an ephemeral port, prints "PORT <n>",
                                         runs until stdin closes; with --max-age-ms it ends
                                         each connection with GOAWAY after N ms (gRPC's
                                         max connection age)
  grpc_peer.py client TARGET [--tls CA NAME]
                                         calls every method through TARGET (host:port),
                                         prints one line per check, "N passed, M failed"

Service `sluice.test.Echo`:
  Unary(bytes) -> the same bytes, with initial metadata x-peer: grpcio and trailing metadata
                  x-trailer: done
  Fail(bytes)  -> status NOT_FOUND, details "no such thing"
  Count(bytes) -> server stream: N messages "n=<i>" where N is the request as an integer
  Sum(stream)  -> client stream: total length of the messages, as text
  Chat(stream) -> bidirectional: each message upper-cased
  Slow(bytes)  -> the same bytes after as many milliseconds as the request says
  Meta(bytes)  -> the request metadata the server received, "name=value" lines (name order),
                  without the ones the HTTP/2 transport adds

  grpc_peer.py cut-server                 an HTTP/2 server (the h2 library) that answers any
                                         call with headers and two messages ("n=0", "n=1"),
                                         then drops the connection mid-stream, except a call
                                         to a method named Many, answered with three messages
                                         and status OK (a unary reply must have one), and a
                                         call to a method named Hold, which it never answers (a
                                         deadline then depends on the caller's timer alone,
                                         where grpcio would race it with its own);
                                         prints "PORT n"

  grpc_peer.py goaway-check TARGET       one Slow(1500) call, and while it runs (after the
                                         server's max connection age) 20 unary calls; all
                                         must succeed
"""
import os
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "sluice.test.Echo"


def identity(b):
    return b


class Echo:
    def unary(self, request, context):
        context.send_initial_metadata((("x-peer", "grpcio"),))
        context.set_trailing_metadata((("x-trailer", "done"),))
        return request

    def fail(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def count(self, request, context):
        for i in range(int(request.decode() or "0")):
            yield b"n=%d" % i

    def sum(self, requests, context):
        return str(sum(len(r) for r in requests)).encode()

    def chat(self, requests, context):
        for r in requests:
            yield r.upper()

    def meta(self, request, context):
        transport = {"user-agent", "grpc-accept-encoding", "accept-encoding", "grpc-timeout", "te", "content-type"}
        pairs = sorted((k, v) for k, v in context.invocation_metadata() if k not in transport and not k.startswith("x-envoy"))
        return "".join("%s=%s\n" % p for p in pairs).encode()

    def slow(self, request, context):
        import time
        time.sleep(int(request.decode()) / 1000)
        return request


def serve(tls, max_age_ms=None):
    echo = Echo()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(echo.unary, identity, identity),
        "Fail": grpc.unary_unary_rpc_method_handler(echo.fail, identity, identity),
        "Count": grpc.unary_stream_rpc_method_handler(echo.count, identity, identity),
        "Sum": grpc.stream_unary_rpc_method_handler(echo.sum, identity, identity),
        "Chat": grpc.stream_stream_rpc_method_handler(echo.chat, identity, identity),
        "Slow": grpc.unary_unary_rpc_method_handler(echo.slow, identity, identity),
        "Meta": grpc.unary_unary_rpc_method_handler(echo.meta, identity, identity),
    }
    options = [("grpc.max_connection_age_ms", max_age_ms), ("grpc.max_connection_age_grace_ms", 5000)] if max_age_ms else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if tls:
        cert, key = (open(p, "rb").read() for p in tls)
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(0)


def client(target, tls):
    if tls:
        ca, name = tls
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()),
                                      options=(("grpc.ssl_target_name_override", name),))
    else:
        channel = grpc.insecure_channel(target)
    method = lambda kind, name: getattr(channel, kind)("/%s/%s" % (SERVICE, name), request_serializer=identity, response_deserializer=identity)
    checks = []

    def check(name, fn):
        try:
            detail = fn()
            checks.append((True, name, detail))
        except Exception as e:  # noqa: BLE001 - any failure is a failed check
            checks.append((False, name, repr(e)[:300]))

    def unary():
        payload = b"x" * 100_000
        response, call = method("unary_unary", "Unary").with_call(payload, timeout=10)
        assert response == payload, "echo differs"
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        assert initial.get("x-peer") == "grpcio", initial
        assert trailing.get("x-trailer") == "done", trailing
        return "100000 bytes echoed, metadata both ways"

    def fail():
        try:
            method("unary_unary", "Fail")(b"", timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
            assert e.details() == "no such thing", e.details()
            return "NOT_FOUND with its details"
        raise AssertionError("no error")

    def count():
        got = list(method("unary_stream", "Count")(b"50", timeout=10))
        assert got == [b"n=%d" % i for i in range(50)], got[:3]
        return "50 messages streamed"

    def total():
        n = method("stream_unary", "Sum")(iter([b"a" * 1000] * 200), timeout=10)
        assert n == b"200000", n
        return "200 messages summed"

    def chat():
        got = list(method("stream_stream", "Chat")(iter([b"hello", b"grpc"]), timeout=10))
        assert got == [b"HELLO", b"GRPC"], got
        return "bidirectional"

    def concurrent():
        calls = [method("unary_unary", "Unary").future(b"c%d" % i, timeout=10) for i in range(100)]
        assert [c.result() for c in calls] == [b"c%d" % i for i in range(100)]
        return "100 concurrent calls"

    for name, fn in (("unary", unary), ("status", fail), ("server-stream", count), ("client-stream", total),
                     ("bidi-stream", chat), ("concurrent", concurrent)):
        check(name, fn)
    for ok, name, detail in checks:
        print("%s %s: %s" % ("PASS" if ok else "FAIL", name, detail))
    failed = sum(1 for c in checks if not c[0])
    print("%d passed, %d failed" % (len(checks) - failed, failed))
    return 1 if failed else 0


def goaway_check(target):
    import time
    channel = grpc.insecure_channel(target)
    slow = channel.unary_unary("/%s/Slow" % SERVICE, request_serializer=identity, response_deserializer=identity).future(b"1500", timeout=10)
    time.sleep(0.6)  # past the server's max connection age: its GOAWAY has arrived at the proxy
    unary = channel.unary_unary("/%s/Unary" % SERVICE, request_serializer=identity, response_deserializer=identity)
    failures = 0
    for i in range(20):
        try:
            assert unary(b"g%d" % i, timeout=10) == b"g%d" % i
        except Exception as e:  # noqa: BLE001
            failures += 1
            print("FAIL call %d: %r" % (i, e))
    ok = slow.result() == b"1500"
    print("%d passed, %d failed" % (20 - failures + (1 if ok else 0), failures + (0 if ok else 1)))
    return 1 if failures or not ok else 0


def cut_server():
    import socket
    import struct
    import h2.config
    import h2.connection
    import h2.events
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print("PORT %d" % listener.getsockname()[1], flush=True)

    def serve(sock):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers).get(b":path", b"")
                    if path.endswith(b"/Hold"):
                        continue
                    if path.endswith(b"/Many"):
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        for message in (b"one", b"two", b"three"):
                            conn.send_data(event.stream_id, struct.pack(">BI", 0, len(message)) + message)
                        conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                        sock.sendall(conn.data_to_send())
                        continue
                    conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                    for i in range(2):
                        message = b"n=%d" % i
                        conn.send_data(event.stream_id, struct.pack(">BI", 0, len(message)) + message)
                    sock.sendall(conn.data_to_send())
                    time.sleep(0.1)
                    sock.close()  # mid-stream: no trailers, no END_STREAM
                    return
            sock.sendall(conn.data_to_send())
        sock.close()

    import time
    listener.settimeout(0.5)
    while not sys.stdin.closed:
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "cut-server":
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
        cut_server()
    if args[0] == "goaway-check":
        sys.exit(goaway_check(args[1]))
    if args[0] == "server":
        tls = args[args.index("--tls") + 1:args.index("--tls") + 3] if "--tls" in args else None
        age = int(args[args.index("--max-age-ms") + 1]) if "--max-age-ms" in args else None
        serve(tls, age)
    else:
        sys.exit(client(args[1], args[3:5] if "--tls" in args else None))
