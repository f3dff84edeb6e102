#!/usr/bin/env bash
# Builds Sluice, starts two demo upstreams on :8081 and :8082 and Sluice on :8080
# (admin on :9901) with examples/quickstart.yaml. Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product sluice
filters/build.sh   # the demo filter (installs wasi-libc and Go on first use)
scripts/install-wasmtime.sh   # the JIT engine (PyPI wasmtime); without it filters run on WasmKit
bin=.build/release/sluice
"$bin" demo-upstream --listen 127.0.0.1:8081 --name a & a=$!
"$bin" demo-upstream --listen 127.0.0.1:8082 --name b & b=$!
trap 'kill $a $b 2>/dev/null' EXIT
echo "try: curl -si localhost:8080/api/hello ; curl -s localhost:9901/stats"
"$bin" run -c examples/quickstart.yaml
