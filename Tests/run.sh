#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, builds
# everything (the `sluice` binary included, which the process tests start), runs all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
Tests/install-deps.sh
swift build --build-tests
swift test --skip-build
