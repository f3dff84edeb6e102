#!/usr/bin/env bash
# Installs, idempotently, everything the test suite needs beyond the Swift toolchain.
# Each entry is checked first so a prepared machine pays nothing.
set -euo pipefail
apt_packages=()
# (The core proxy's tests need nothing beyond Swift; the Wasm toolchains join here.)
if ((${#apt_packages[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
