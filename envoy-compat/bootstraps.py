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

    python3 envoy-compat/bootstraps.py                 # both proxies
    python3 envoy-compat/bootstraps.py --envoy-only    # re-check the oracle only
    python3 envoy-compat/bootstraps.py --only wasm     # files whose name contains "wasm"
    python3 envoy-compat/bootstraps.py --record        # write Envoy's verdicts to expected.json

SLUICE (environment) names the Sluice binary; default .build/debug/sluice in the repository.
Exit status 1 when any verdict differs from expected.json.
"""
import argparse, errno, json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxies import envoy_binary  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "bootstraps")
EXPECTED = os.path.join(CORPUS, "expected.json")
WASM = os.path.join(ROOT, "filters", "build", "c-conformance.wasm")
EXTENSIONS = (".yaml", ".yml", ".json")
ENVOY_TIMEOUT = 30
SLUICE_TIMEOUT = 60


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", metavar="PATTERN", help="only files whose name contains PATTERN")
    ap.add_argument("--envoy-only", action="store_true", help="check Envoy's verdicts only")
    ap.add_argument("--record", action="store_true",
                    help="write Envoy's measured verdicts into expected.json (sluice/why kept)")
    args = ap.parse_args()

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
        for name in names:
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

    if not args.only:
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
