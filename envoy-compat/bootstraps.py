#!/usr/bin/env python3
"""Oracle corpus of Envoy bootstraps: real Envoy's verdict vs Sluice's.

Every envoy-compat/bootstraps/NN-*.yaml|.json is copied to a temp directory (the placeholder
@WASM@ replaced by the absolute path of filters/build/c-conformance.wasm, the file name and
extension kept), then checked with

    envoy --mode validate -c FILE --log-level error      (exit 0 = accept)
    $SLUICE validate --envoy-config FILE                 (exit 0 = accept)

and compared with bootstraps/expected.json: {"FILE": {"envoy": "accept"|"refuse",
"sluice": "accept"|"refuse"|"unsupported", "why": "..."}}. An "unsupported" expectation
is met when Sluice exits non-zero and says "unsupported" or "not supported".

Then every file that both proxies are expected to accept is run side by side: a copy with
every listener and the admin on free loopback ports (an admin is added when the file has
none) and every cluster endpoint pointed at one local echo origin (envoy-compat/proxies.py's
Origin) is started under Envoy, then under `sluice run --envoy-config`, and each gets the same
requests: per HTTP listener `GET /` and one request per distinct route prefix/path (at most 4
per file), with a Host matching the first virtual host's first domain (`*` becomes `x`, a
lone `*` becomes `t`); per tcp_proxy listener a plain `GET /`. Status, headers (volatile
ones dropped, as in run.py) and body must be identical, or the difference must be explained
in bootstraps-run-expected.json ({"FILE": {"why": "...", "requests": [LABEL, ...]}}, each
also in docs/HOST-DIFFERENCES.md; "requests" limits the explanation to those requests,
labelled as printed: "LISTENER GET /path Host:h" or "LISTENER(tcp) GET /"). The rewrite edits the ports and addresses in place (the rest of
the file is byte for byte the corpus file); the document is read with PyYAML when it is
installed, else with a small built-in reader of the YAML the corpus uses
(BOOTSTRAPS_YAML=builtin forces it).

    python3 envoy-compat/bootstraps.py                 # validate verdicts, then the runs
    python3 envoy-compat/bootstraps.py --no-run        # validate verdicts only
    python3 envoy-compat/bootstraps.py --run           # the side-by-side runs only
    python3 envoy-compat/bootstraps.py --envoy-only    # re-check the oracle only
    python3 envoy-compat/bootstraps.py --only wasm     # files whose name contains "wasm"
    python3 envoy-compat/bootstraps.py --record        # write Envoy's verdicts to expected.json

SLUICE (environment) names the Sluice binary; default .build/debug/sluice in the repository.
The rewritten copies and both proxies' logs are kept in envoy-compat/out/bootstraps/.
Exit status 1 when any verdict differs from expected.json or any run differs unexplained.
"""
import argparse, errno, json, os, re, shutil, subprocess, sys, tempfile, threading, time
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxies import Origin, envoy_binary, free_port, normalise, send, wait_ready  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "bootstraps")
EXPECTED = os.path.join(CORPUS, "expected.json")
RUN_EXPECTED = os.path.join(HERE, "bootstraps-run-expected.json")
RUN_OUT = os.path.join(HERE, "out", "bootstraps")
WASM = os.path.join(ROOT, "filters", "build", "c-conformance.wasm")
EXTENSIONS = (".yaml", ".yml", ".json")
ENVOY_TIMEOUT = 30
SLUICE_TIMEOUT = 60
READY_TIMEOUT = 15      # seconds each proxy gets to answer /ready with 200
REQUEST_TIMEOUT = 5     # seconds a request may take (a hanging proxy answers "no response")
MAX_PATH_REQUESTS = 4   # route-specific requests per file, besides GET / on each listener


def corpus_files(only):
    names = sorted(n for n in os.listdir(CORPUS)
                   if n.endswith(EXTENSIONS) and n != "expected.json")
    return [n for n in names if not only or only in n]


def ensure_wasm(names):
    needs = any("@WASM@" in open(os.path.join(CORPUS, n), encoding="utf-8").read() for n in names)
    if needs and not os.path.exists(WASM):
        print("building Wasm filters (filters/build.sh) for %s" % os.path.relpath(WASM, ROOT), flush=True)
        subprocess.run(["bash", os.path.join(ROOT, "filters", "build.sh")], check=True)
        if not os.path.exists(WASM):
            sys.exit("filters/build.sh did not produce %s" % WASM)


def materialise(name, tmpdir):
    """Copies a corpus file into tmpdir with @WASM@ filled in; returns the copy's path."""
    text = open(os.path.join(CORPUS, name), encoding="utf-8").read()
    wasm = json.dumps(WASM)[1:-1] if name.endswith(".json") else WASM
    path = os.path.join(tmpdir, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace("@WASM@", wasm))
    return path


def run(argv, timeout):
    """(returncode or None on timeout, combined output). Waits (up to a minute) while the
    binary is being rewritten by a build (ETXTBSY)."""
    for attempt in range(60):
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout, cwd=ROOT)
            return p.returncode, p.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            return None, out + "\n(timed out after %ds)" % timeout
        except OSError as e:
            if e.errno != errno.ETXTBSY or attempt == 59:
                sys.exit("cannot run %s: %s" % (argv[0], e))
            time.sleep(1)


def envoy_verdict(envoy, path):
    rc, out = run([envoy, "--mode", "validate", "-c", path, "--log-level", "error"], ENVOY_TIMEOUT)
    if rc is None:
        return "timeout", out
    return ("accept" if rc == 0 else "refuse"), out


def sluice_verdict(sluice, path):
    """accept (exit 0), unsupported (non-zero, says so), refuse (other non-zero), or
    crash/timeout (never a match)."""
    rc, out = run([sluice, "validate", "--envoy-config", path], SLUICE_TIMEOUT)
    if rc is None:
        return "timeout", out
    if rc == 0:
        return "accept", out
    if rc < 0:
        return "crash(signal %d)" % -rc, out
    low = out.lower()
    if "unsupported" in low or "not supported" in low:
        return "unsupported", out
    return "refuse", out


def sluice_matches(expected, got):
    if expected == "accept":
        return got == "accept"
    if expected == "unsupported":
        return got == "unsupported"
    if expected == "refuse":
        return got in ("refuse", "unsupported")
    return False


def first_lines(text, n, tmpdir, name):
    shown = text.replace(os.path.join(tmpdir, name), os.path.relpath(os.path.join(CORPUS, name), ROOT))
    lines = [l for l in shown.splitlines() if l.strip()]
    return lines[:n]


# ---------------------------------------------------------------------------------------------
# Side-by-side runs of the accepted bootstraps.

class Node:
    """One YAML/JSON node with its character span in the text: kind "map" (value: list of
    (key Node, value Node)), "seq" (value: list of Node) or "str" (value: the scalar's text;
    style: None for plain, '"' or "'" for quoted, "|"/">" for block scalars)."""
    __slots__ = ("kind", "value", "start", "end", "style")

    def __init__(self, kind, value, start, end, style=None):
        self.kind, self.value, self.start, self.end, self.style = kind, value, start, end, style


def compose(text):
    """The document's node tree, with PyYAML when it is installed, else with MiniYAML."""
    if os.environ.get("BOOTSTRAPS_YAML") != "builtin":
        try:
            import yaml
        except ImportError:
            yaml = None
        if yaml is not None:
            def convert(n):
                if isinstance(n, yaml.MappingNode):
                    return Node("map", [(convert(k), convert(v)) for k, v in n.value], n.start_mark.index, n.end_mark.index)
                if isinstance(n, yaml.SequenceNode):
                    return Node("seq", [convert(v) for v in n.value], n.start_mark.index, n.end_mark.index)
                return Node("str", n.value, n.start_mark.index, n.end_mark.index, n.style or None)
            return convert(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return MiniYAML(text).parse()


class MiniYAML:
    """Just enough YAML for the corpus (and JSON, which is flow YAML): block mappings and
    sequences (compact `- key: v` items, sequences at their key's indentation), flow `{}`/`[]`
    (trailing commas allowed), plain, quoted and literal/folded block scalars, comments. No
    anchors, tags, multi-line plain scalars or multi-document streams. Keeps each node's span."""

    def __init__(self, text):
        self.t = text

    def fail(self, i, msg):
        raise ValueError("%s at line %d" % (msg, self.t.count("\n", 0, i) + 1))

    def col(self, i):
        return i - (self.t.rfind("\n", 0, i) + 1)

    def skip(self, i, newlines=True):
        """The index of the next content character: past blanks, comments and (if newlines) line ends."""
        t = self.t
        while i < len(t):
            c = t[i]
            if c in " \t" or (newlines and c in "\r\n"):
                i += 1
            elif c == "#" and (i == 0 or t[i - 1] in " \t\r\n"):
                while i < len(t) and t[i] != "\n":
                    i += 1
            else:
                break
        return i

    def eol(self, i):
        return i >= len(self.t) or self.t[i] in "\r\n"

    def is_dash(self, i):
        return self.t[i] == "-" and (i + 1 == len(self.t) or self.t[i + 1] in " \t\r\n")

    def parse(self):
        i = self.skip(0)
        if self.t.startswith("---", i):
            i = self.skip(i + 3)
        node, i = self.block(i, 0)
        i = self.skip(i)
        if i < len(self.t):
            self.fail(i, "unexpected content")
        return node

    def block(self, i, min_indent):
        """The node at the next content, if it is indented at least min_indent (else an empty scalar at i)."""
        j = self.skip(i)
        if j >= len(self.t) or self.col(j) < min_indent:
            return Node("str", "", i, i), i
        c = self.col(j)
        if self.is_dash(j):
            return self.block_seq(j, c)
        if self.key(j):
            return self.block_map(j, c)
        return self.inline(j, c)

    def key(self, i):
        """(key Node, index after the colon) when a block mapping key starts at i, else None."""
        t = self.t
        if t[i] in "\"'":
            k, j = self.quoted(i)
            j = self.skip(j, newlines=False)
            if j < len(t) and t[j] == ":" and (self.eol(j + 1) or t[j + 1] in " \t"):
                return k, j + 1
            return None
        if t[i] in "{[|>#&*!%@`" or self.is_dash(i):
            return None
        j = i
        while not self.eol(j):
            if t[j] == ":" and (self.eol(j + 1) or t[j + 1] in " \t"):
                text = t[i:j].rstrip()
                return Node("str", text, i, i + len(text)), j + 1
            if t[j] == "#" and t[j - 1] in " \t":
                return None
            j += 1
        return None

    def block_map(self, i, c):
        t, pairs, start = self.t, [], i
        while True:
            found = self.key(i)
            if found is None:
                self.fail(i, "expected a mapping key")
            k, j = found
            j = self.skip(j, newlines=False)
            if self.eol(j):
                nxt = self.skip(j)
                if nxt < len(t) and self.col(nxt) == c and self.is_dash(nxt):
                    v, i = self.block_seq(nxt, c)  # a sequence at its key's indentation
                else:
                    v, i = self.block(j, c + 1)
            else:
                v, i = self.inline(j, c)
            pairs.append((k, v))
            nxt = self.skip(i)
            if nxt >= len(t) or self.col(nxt) < c or (self.col(nxt) == c and self.is_dash(nxt)):
                return Node("map", pairs, start, max(v.end, k.end)), i
            if self.col(nxt) > c:
                self.fail(nxt, "unexpected indentation")
            i = nxt

    def block_seq(self, i, c):
        t, items, start = self.t, [], i
        while True:
            j = self.skip(i + 1, newlines=False)
            if self.eol(j):
                v, i = self.block(j, c + 1)
            elif self.is_dash(j):
                v, i = self.block_seq(j, self.col(j))
            elif self.key(j):
                v, i = self.block_map(j, self.col(j))
            else:
                v, i = self.inline(j, c)
            items.append(v)
            nxt = self.skip(i)
            if nxt < len(t) and self.col(nxt) == c and self.is_dash(nxt):
                i = nxt
                continue
            if nxt < len(t) and self.col(nxt) > c:
                self.fail(nxt, "unexpected indentation")
            return Node("seq", items, start, items[-1].end), i

    def inline(self, j, c):
        """A value that starts on the current line at j, in a block whose indentation is c."""
        t = self.t
        if t[j] in "{[":
            return self.flow(j)
        if t[j] in "\"'":
            return self.quoted(j)
        if t[j] in "|>":
            return self.block_scalar(j, c)
        k = j
        while not self.eol(k) and not (t[k] == "#" and t[k - 1] in " \t"):
            k += 1
        text = t[j:k].rstrip()
        return Node("str", text, j, j + len(text)), j + len(text)

    def block_scalar(self, j, c):
        t, style = self.t, self.t[j]
        header_end = t.find("\n", j)
        if header_end < 0:
            return Node("str", "", j, len(t), style), len(t)
        lines, indent, pos, end = [], None, header_end + 1, header_end + 1
        while pos < len(t):
            nl = t.find("\n", pos)
            nl = len(t) if nl < 0 else nl
            line = t[pos:nl]
            if line.strip():
                ind = len(line) - len(line.lstrip(" "))
                if ind <= c or (indent is not None and ind < indent):
                    break
                indent = ind if indent is None else indent
                lines.append(line[indent:])
                end = nl
            else:
                lines.append("")
            pos = nl + 1
        while lines and not lines[-1]:
            lines.pop()
        joiner = "\n" if style == "|" else " "
        value = joiner.join(lines) + ("\n" if lines and "-" not in t[j:header_end] else "")
        return Node("str", value, j, end, style), end

    def quoted(self, i):
        t, q, out, j = self.t, self.t[i], [], i + 1
        escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "/": "/", " ": " "}
        while j < len(t):
            ch = t[j]
            if q == "'" and ch == "'":
                if t[j + 1:j + 2] == "'":
                    out.append("'")
                    j += 2
                    continue
                return Node("str", "".join(out), i, j + 1, q), j + 1
            if q == '"' and ch == "\\":
                nxt = t[j + 1:j + 2]
                if nxt == "u":
                    out.append(chr(int(t[j + 2:j + 6], 16)))
                    j += 6
                else:
                    out.append(escapes.get(nxt, nxt))
                    j += 2
                continue
            if q == '"' and ch == '"':
                return Node("str", "".join(out), i, j + 1, q), j + 1
            out.append(ch)
            j += 1
        self.fail(i, "unterminated string")

    def flow(self, i):
        t, start = self.t, i
        close = "}" if t[i] == "{" else "]"
        items = []
        i = self.skip(i + 1)
        while True:
            if i >= len(t):
                self.fail(start, "unclosed " + t[start])
            if t[i] == close:
                return Node("map" if close == "}" else "seq", items, start, i + 1), i + 1
            if close == "}":
                k, i = self.flow_value(i)
                i = self.skip(i)
                if i >= len(t) or t[i] != ":":
                    self.fail(i, "expected ':'")
                v, i = self.flow_value(self.skip(i + 1))
                items.append((k, v))
            else:
                v, i = self.flow_value(i)
                items.append(v)
            i = self.skip(i)
            if i < len(t) and t[i] == ",":
                i = self.skip(i + 1)
            elif i >= len(t) or t[i] != close:
                self.fail(i, "expected ',' or '%s'" % close)

    def flow_value(self, i):
        t = self.t
        if t[i] in "{[":
            return self.flow(i)
        if t[i] in "\"'":
            return self.quoted(i)
        j = i
        while j < len(t) and t[j] not in ",[]{}\r\n" and not (
                t[j] == ":" and (j + 1 == len(t) or t[j + 1] in " \t\r\n,[]{}")) and not (t[j] == "#" and t[j - 1] in " \t"):
            j += 1
        text = t[i:j].rstrip()
        return Node("str", text, i, i + len(text)), i + len(text)


def field(node, name):
    """A mapping's field by its proto name or its lowerCamelCase JSON name (the last one wins)."""
    if node is None or node.kind != "map":
        return None
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)
    found = None
    for k, v in node.value:
        if k.value in (name, camel):
            found = v
    return found


def items(node):
    """A repeated field's elements: a list, or one mapping written in its place."""
    if node is None:
        return []
    if node.kind == "seq":
        return node.value
    return [node] if node.kind == "map" else []


def scalar(node):
    return node.value if node is not None and node.kind == "str" else None


def typed(node):
    """(type name, configuration node) of a typed_config, TypedStructs unwrapped."""
    kind = scalar(field(node, "@type")) or ""
    if kind.endswith(("udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct")):
        return scalar(field(node, "type_url")) or "", field(node, "value")
    return kind, node


def host_for(domain):
    """A Host that the virtual host's domain matches: `*` -> t, other wildcards -> x."""
    return "t" if domain in ("*", "") else domain.replace("*", "x")


class RunPlan:
    """The rewritten bootstrap text, its admin port and the requests: (label, port, request)."""

    def __init__(self, text, admin_port, requests):
        self.text, self.admin_port, self.requests = text, admin_port, requests


def plan_run(name, text, origin_port, new_port):
    """Rewrites a bootstrap (listeners and admin to new_port(), endpoints to the origin) and
    lists the requests to send; raises ValueError when the file has a shape it cannot rewrite."""
    root = compose(text)
    if root.kind != "map":
        raise ValueError("the document is not a mapping")
    is_json = name.endswith(".json")
    edits = []  # (start, end, replacement)

    def put(node, value):
        if node is None or node.kind != "str":
            raise ValueError("no scalar to rewrite at a socket_address")
        quote = node.style if node.style in ('"', "'") else ('"' if is_json and not value.isdigit() else "")
        edits.append((node.start, node.end, quote + value + quote))

    def socket_address(holder):
        sa = field(field(holder, "address"), "socket_address")
        if sa is None:
            raise ValueError("an address without socket_address")
        return sa

    admin_port = new_port()
    admin = field(root, "admin")
    if admin is None:
        if is_json:
            block = '"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}' % admin_port
            edits.append((root.start + 1, root.start + 1, "\n  " + block + ("," if root.value else "")))
        else:
            block = "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: %d }\n" % admin_port
            edits.append((len(text), len(text), ("" if text.endswith("\n") else "\n") + block))
    else:
        put(field(socket_address(admin), "port_value"), str(admin_port))

    static = field(root, "static_resources")
    for cluster in items(field(static, "clusters")):
        for locality in items(field(field(cluster, "load_assignment"), "endpoints")):
            for lb in items(field(locality, "lb_endpoints")):
                sa = socket_address(field(lb, "endpoint"))
                put(field(sa, "address"), "127.0.0.1")
                put(field(sa, "port_value"), str(origin_port))

    requests, path_requests, names = [], 0, set()
    for listener in items(field(static, "listeners")):
        port = new_port()
        put(field(socket_address(listener), "port_value"), str(port))
        lname = scalar(field(listener, "name")) or "listener"
        lname += "#%d" % len(names) if lname in names else ""
        names.add(lname.split("#")[0])
        chains = items(field(listener, "filter_chains"))
        filters = items(field(chains[0], "filters")) if chains else []
        for flt in filters:
            kind, config = typed(field(flt, "typed_config"))
            if kind.endswith(".TcpProxy"):
                requests.append(("%s(tcp) GET /" % lname, port, {"path": "/"}))
                break
            if kind.endswith(".HttpConnectionManager"):
                vhosts = items(field(field(config, "route_config"), "virtual_hosts"))
                domains = field(vhosts[0], "domains") if vhosts else None
                first = items(domains)[0] if domains is not None and domains.kind == "seq" and domains.value else domains
                host = host_for(scalar(first) or "")
                paths = ["/"]
                for route in items(field(vhosts[0], "routes")) if vhosts else []:
                    match = field(route, "match")
                    for key in ("prefix", "path"):
                        p = scalar(field(match, key))
                        if p and p not in paths and path_requests < MAX_PATH_REQUESTS:
                            paths.append(p)
                            path_requests += 1
                for p in paths:
                    requests.append(("%s GET %s Host:%s" % (lname, p, host), port, {"path": p, "host": host}))
                break
    out = text
    for start, end, replacement in sorted(edits, reverse=True):
        out = out[:start] + replacement + out[end:]
    return RunPlan(out, admin_port, requests)


def ask(port, req):
    try:
        return normalise(send(port, req, timeout=REQUEST_TIMEOUT))
    except OSError as e:
        return ("connection failed (%s)" % (e.strerror or e.__class__.__name__), {}, "")


def popen(argv, log):
    for attempt in range(60):
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        except OSError as e:
            if e.errno != errno.ETXTBSY or attempt == 59:
                raise
            time.sleep(1)


def run_side(argv, plan, log_path):
    """Starts one proxy, sends the plan's requests, stops it: (answers, None) or (None, why)."""
    with open(log_path, "w") as log:
        proc = popen(argv, log)
        try:
            if not wait_ready(plan.admin_port, proc, READY_TIMEOUT):
                why = ("exited with status %d" % proc.returncode if proc.poll() is not None
                       else "not ready after %ds" % READY_TIMEOUT)
                return None, "%s (%s)" % (why, os.path.relpath(log_path, ROOT))
            return [ask(port, req) for _, port, req in plan.requests], None
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def differences(e, s):
    """The fields in which two normalised answers differ."""
    fields = []
    if e[0] != s[0]:
        fields.append("status")
    if not isinstance(e[0], str) and not isinstance(s[0], str):
        fields += ["header %s" % k for k in sorted(set(e[1]) | set(s[1])) if e[1].get(k) != s[1].get(k)]
        if e[2] != s[2]:
            fields.append("body")
    return fields


def show(answer):
    status, headers, body = answer
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return "%s, body %s" % (status, json.dumps(body[:200]))


class Runner:
    def __init__(self, envoy, sluice):
        self.envoy, self.sluice = envoy, sluice
        self.origin = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
        self.origin.daemon_threads = True
        threading.Thread(target=self.origin.serve_forever, daemon=True).start()
        self.used = set()
        self.base_id = 2000 + os.getpid() % 10000 * 100  # --base-id: unique per Envoy

    def new_port(self):
        while True:
            p = free_port()
            if p not in self.used and p != self.origin.server_address[1]:
                self.used.add(p)
                return p

    def run(self, name):
        """([differences], plan): each difference {label, fields, details}; [] when both answered alike."""
        os.makedirs(RUN_OUT, exist_ok=True)
        path = materialise(name, RUN_OUT)
        text = open(path, encoding="utf-8").read()
        try:
            plan = plan_run(name, text, self.origin.server_address[1], self.new_port)
        except ValueError as e:
            return [{"label": "rewrite", "fields": ["cannot rewrite the bootstrap: %s" % e], "details": []}], None
        with open(path, "w", encoding="utf-8") as f:
            f.write(plan.text)
        self.base_id += 1
        stem = os.path.join(RUN_OUT, name)
        e_answers, e_err = run_side([self.envoy, "-c", path, "--log-level", "warn", "--concurrency", "1",
                                     "--disable-hot-restart", "--base-id", str(self.base_id)], plan, stem + ".envoy.log")
        s_answers, s_err = run_side([self.sluice, "run", "--envoy-config", path, "--workers", "1", "--no-watch",
                                     "--log-level", "warning"], plan, stem + ".sluice.log")
        if e_err or s_err:
            return [{"label": "start", "fields": ["envoy: %s" % (e_err or "ready"), "sluice: %s" % (s_err or "ready")],
                     "details": []}], plan
        diffs = []
        for (label, _, _), e, s in zip(plan.requests, e_answers, s_answers):
            fields = differences(e, s)
            if fields:
                details = ["envoy:  %s" % show(e), "sluice: %s" % show(s)]
                details += ["%s: %s vs %s" % (f, e[1].get(f[7:]), s[1].get(f[7:])) for f in fields if f.startswith("header ")]
                diffs.append({"label": label, "fields": fields, "details": details})
        return diffs, plan

    def close(self):
        self.origin.shutdown()


def run_names(expected, names):
    return [n for n in names if expected.get(n, {}).get("envoy") == "accept" and expected.get(n, {}).get("sluice") == "accept"]


def run_all(envoy, sluice, expected, names, only):
    """Runs every file both proxies accept through both; (passed, failed)."""
    explained = json.load(open(RUN_EXPECTED, encoding="utf-8")) if os.path.exists(RUN_EXPECTED) else {}
    chosen = run_names(expected, names)
    passed = failed = 0
    if not chosen:
        return 0, 0
    width = max(len(n) for n in chosen)
    runner = Runner(envoy, sluice)
    print("running %d accepted bootstraps through Envoy, then Sluice (origin 127.0.0.1:%d, copies and logs in %s)"
          % (len(chosen), runner.origin.server_address[1], os.path.relpath(RUN_OUT, ROOT)), flush=True)
    try:
        for name in chosen:
            started = time.time()
            diffs, plan = runner.run(name)
            head = "%-*s %4.1fs  %d req" % (width, name, time.time() - started, len(plan.requests) if plan else 0)
            entry = explained.get(name)
            # An explanation covers the requests it lists (all of them when it lists none);
            # a proxy that does not start is never explained.
            covered = set(entry.get("requests") or [d["label"] for d in diffs]) if entry else set()
            unexplained = [d for d in diffs if d["label"] not in covered or d["label"] in ("start", "rewrite")]
            if unexplained:
                failed += 1
                print("DIFFERENT %s  %s" % (head, "; ".join("%s: %s" % (d["label"], ", ".join(d["fields"])) for d in unexplained)),
                      flush=True)
                for d in unexplained:
                    for line in d["details"]:
                        print("    %s %s" % (d["label"], line))
            elif entry and not diffs:
                failed += 1
                print("STALE     %s  both answer alike; remove it from bootstraps-run-expected.json" % head, flush=True)
            elif diffs:
                passed += 1
                print("explained %s  %s" % (head, "; ".join("%s: %s" % (d["label"], ", ".join(d["fields"])) for d in diffs)),
                      flush=True)
                print("    why: %s" % entry["why"])
            else:
                passed += 1
                print("same      %s" % head, flush=True)
        if not only:
            for gone in sorted(set(explained) - set(chosen)):
                failed += 1
                print("STALE     %s  listed in bootstraps-run-expected.json but not run (missing, or not accepted by both)" % gone)
    finally:
        runner.close()
    return passed, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", metavar="PATTERN", help="only files whose name contains PATTERN")
    ap.add_argument("--envoy-only", action="store_true", help="check Envoy's verdicts only")
    ap.add_argument("--record", action="store_true",
                    help="write Envoy's measured verdicts into expected.json (sluice/why kept)")
    ap.add_argument("--run", action="store_true",
                    help="only the side-by-side runs of the files both proxies accept (no validate verdicts)")
    ap.add_argument("--no-run", action="store_true", help="only the validate verdicts")
    args = ap.parse_args()
    if args.run and (args.no_run or args.envoy_only or args.record):
        ap.error("--run cannot be combined with --no-run, --envoy-only or --record")
    validating = not args.run
    running = not (args.no_run or args.envoy_only or args.record)

    expected = json.load(open(EXPECTED, encoding="utf-8")) if os.path.exists(EXPECTED) else {}
    names = corpus_files(args.only)
    if not names:
        sys.exit("no corpus files match %r" % args.only)
    ensure_wasm(names)
    envoy = envoy_binary()
    sluice = None
    if not args.envoy_only:
        sluice = os.environ.get("SLUICE") or os.path.join(ROOT, ".build", "debug", "sluice")
        if os.sep not in sluice:
            sluice = shutil.which(sluice) or sluice
        elif not os.path.isabs(sluice) and not os.path.exists(sluice):
            sluice = os.path.join(ROOT, sluice)
        sluice = os.path.abspath(sluice)
        if not os.path.exists(sluice):
            sys.exit("Sluice binary not found: %s (set SLUICE, or use --envoy-only)" % sluice)

    passed = failed = 0
    width = max(len(n) for n in names)
    with tempfile.TemporaryDirectory(prefix="sluice-bootstraps-") as tmpdir:
        for name in (names if validating else []):
            path = materialise(name, tmpdir)
            exp = expected.get(name)
            ev, eout = envoy_verdict(envoy, path)
            problems = []
            if exp is None:
                problems.append("no entry in expected.json")
            elif ev != exp.get("envoy") and not args.record:
                problems.append("Envoy says %s, expected.json says %s (the oracle moved)" % (ev, exp.get("envoy")))
            if args.record:
                entry = expected.setdefault(name, {"envoy": ev, "sluice": ev, "why": ""})
                entry["envoy"] = ev
                exp = entry
            line = "%-8s %-*s  envoy=%-7s" % ("", width, name, ev)
            sout = ""
            if sluice:
                sv, sout = sluice_verdict(sluice, path)
                line += " sluice=%s" % sv
                if exp is not None and not sluice_matches(exp.get("sluice"), sv):
                    problems.append("Sluice says %s, expected %s" % (sv, exp.get("sluice")))
            ok = not problems
            passed += ok
            failed += not ok
            print(("ok" if ok else "MISMATCH").ljust(8) + line[8:], flush=True)
            if not ok:
                for p in problems:
                    print("    - %s" % p)
                if exp is not None and exp.get("why"):
                    print("    why: %s" % exp["why"])
                if any("Envoy says" in p for p in problems):
                    for l in first_lines(eout, 2, tmpdir, name):
                        print("    envoy| %s" % l[:300])
                if sluice and any("Sluice says" in p for p in problems):
                    for l in first_lines(sout, 3, tmpdir, name):
                        print("    sluice| %s" % l[:300])

    if running:
        p, f = run_all(envoy, sluice, expected, names, args.only)
        passed += p
        failed += f
    if not args.only and validating:
        for gone in sorted(set(expected) - set(names)):
            print("MISMATCH %s  listed in expected.json but the file is missing" % gone)
            failed += 1
            if args.record:
                del expected[gone]
    if args.record:
        with open(EXPECTED, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(expected.items())), f, indent=2, ensure_ascii=False)
            f.write("\n")
        print("recorded Envoy verdicts in %s" % os.path.relpath(EXPECTED, ROOT))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
