#!/usr/bin/env bash
# Installs Wasmtime's C library for Sluice's JIT engine, idempotently: the shared library
# that PyPI's `wasmtime` wheel ships, linked to where Sluice looks for it
# (/usr/local/lib/sluice/libwasmtime.so, or ~/.local/lib/sluice/ without write access there).
# The version is pinned: Sources/CWasmtime declares the C API of this version.
set -euo pipefail
VERSION=50.0.1
if [ -w /usr/local/lib ] || [ "$(id -u)" = 0 ]; then dest=/usr/local/lib/sluice; else dest="$HOME/.local/lib/sluice"; fi
# Where pip put the package (system or user site), found without importing it.
library() {
  python3 -c 'import importlib.util, os, platform; s = importlib.util.find_spec("wasmtime"); print(os.path.join(s.submodule_search_locations[0], "linux-" + platform.machine(), "_libwasmtime.so") if s else "")' 2>/dev/null
}
installed=$(python3 -c 'import importlib.metadata as m; print(m.version("wasmtime"))' 2>/dev/null || true)
lib=$(library)
if [ "$installed" != "$VERSION" ] || [ ! -f "$lib" ]; then
  echo "installing Wasmtime $VERSION (PyPI wasmtime)"
  python3 -m pip install -q "wasmtime==$VERSION" >/dev/null 2>&1 || python3 -m pip install "wasmtime==$VERSION"
  lib=$(library)
fi
[ -f "$lib" ] || { echo "install-wasmtime: $lib not found after installing wasmtime $VERSION" >&2; exit 1; }
mkdir -p "$dest"
ln -sf "$lib" "$dest/libwasmtime.so"
