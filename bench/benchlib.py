"""What the Sluice-beside-Envoy benchmarks share: a proxy's CPU time, the nginx origin with
1 KiB responses, and the proxies a run starts (each stopped, or killed, before it exits)."""
import os, signal, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "envoy-compat"))
from proxies import free_port, wait_ready  # noqa: E402


def cpu_seconds(pid):
    """utime + stime of a process so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_origin(work):
    """nginx answering every request with a 1 KiB body, its files in `work` (which nginx's
    workers, running as nobody, must be able to read). Returns (process, port)."""
    port = free_port()
    with open(os.path.join(work, "1k"), "w") as f:
        f.write("x" * 1024)
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; error_log %s/nginx.log warn; pid %s/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:%d; location / { root %s; try_files /1k =404; } } }
""" % (work, work, port, work))
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if nginx.poll() is not None:
        sys.exit("nginx did not start:\n" + open(os.path.join(work, "nginx.log")).read()[-2000:])
    return nginx, port


def stop_origin(nginx):
    nginx.send_signal(signal.SIGQUIT)  # the master takes its workers with it
    nginx.wait(10)


class Proxies:
    """The proxies a benchmark runs, their stderr logged in `work`."""

    def __init__(self, work):
        self.work = work
        self.running = []

    def start(self, cmd, admin, name):
        """Starts a proxy and waits for its admin /ready (exits with its log if it never is)."""
        log = os.path.join(self.work, "log-%s" % name)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        self.running.append(p)
        if not wait_ready(admin, p, timeout=60):
            sys.exit("did not start: %s\n%s" % (" ".join(cmd), open(log).read()[-3000:]))
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        self.running.remove(p)

    def kill_all(self):
        for p in self.running:
            p.kill()
        self.running = []
