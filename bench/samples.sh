#!/usr/bin/env bash
# Requests/s through each sample filter relative to no filter, one run, same machine, and
# each filter's Wasm memory after 100,000 requests (a per-request leak would show as growth).
#   bench/samples.sh                  # 5 s per filter
#   RUNTIME=wasmkit bench/samples.sh  # on one engine (default: Sluice's default engine)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null; }
swift build -c release --product sluice >/dev/null
filters/build.sh >/dev/null
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
UP=18181; PORT=18183; ADMIN=18184
cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; error_log $work/error.log warn; pid $work/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; default_type application/json; location / { root $work; try_files /1k =404; } } }
NGINX
nginx -c "$work/nginx.conf" -p "$work" &
now=$(date +%s)
# A token the auth samples accept (HS256, secret "bench").
jwt=$(python3 - <<PY
import base64, hmac, hashlib, json
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
s = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b(json.dumps({"sub": "bench", "exp": $now + 3600}).encode())
print(s + "." + b(hmac.new(b"bench", s.encode(), hashlib.sha256).digest()))
PY
)
run() { # name plugin-yaml wrk-headers...
  local name=$1 plugin=$2; shift 2
  local filters="[]" plugins=""
  if [ -n "$plugin" ]; then filters="[f]"; plugins="plugins: [ $plugin ]"; fi
  cat > "$work/s.yaml" <<YAML
admin: { address: "127.0.0.1:$ADMIN" }
access_log: { format: off }
listeners:
  - { name: b, address: "127.0.0.1:$PORT", http_filters: $filters, routes: [{ match: { prefix: / }, cluster: o }] }
clusters:
  - { name: o, endpoints: ["127.0.0.1:$UP"] }
  - { name: authz, endpoints: ["127.0.0.1:$UP"] }
$plugins
YAML
  .build/release/sluice run -c "$work/s.yaml" --workers 1 --no-watch --log-level error ${RUNTIME:+--wasm-runtime "$RUNTIME"} & local pid=$!
  for i in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/ready" >/dev/null && break; sleep 0.1; done
  wrk -t1 -c32 -d2s "$@" "http://127.0.0.1:$PORT/" >/dev/null
  local rps; rps=$(wrk -t1 -c32 -d"$DURATION" "$@" "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2}')
  local mem_before mem_after
  mem_before=$(curl -s "127.0.0.1:$ADMIN/stats" | awk '/^sluice_plugin_memory_bytes/ {print $2}')
  # Top up to 100,000 requests through the filter in total, then read the memory again.
  wrk -t1 -c32 -d15s "$@" "http://127.0.0.1:$PORT/" >/dev/null
  mem_after=$(curl -s "127.0.0.1:$ADMIN/stats" | awk '/^sluice_plugin_memory_bytes/ {print $2}')
  local total; total=$(curl -s "127.0.0.1:$ADMIN/stats" | awk '/^sluice_listener_requests_total/ {print $2}')
  kill $pid; wait $pid 2>/dev/null || true
  echo "$name $rps ${mem_before:--} ${mem_after:--} $total"
}
results=$(
  run none ""
  run headers '{ name: f, module: "'$PWD'/filters/build/sample-headers.wasm", configuration: { request: { add: { x-a: b } }, response: { remove: [x-b] } } }'
  run auth-apikey '{ name: f, module: "'$PWD'/filters/build/sample-auth-apikey.wasm", configuration: { keys: { k1: team } } }' -H "x-api-key: k1"
  run auth-apikey-c '{ name: f, module: "'$PWD'/filters/build/sample-auth-apikey-c.wasm", configuration: { keys: { k1: team } } }' -H "x-api-key: k1"
  run auth-jwt '{ name: f, module: "'$PWD'/filters/build/sample-auth-jwt.wasm", configuration: { secret: bench } }' -H "authorization: Bearer $jwt"
  run auth-jwt-c '{ name: f, module: "'$PWD'/filters/build/sample-auth-jwt-c.wasm", configuration: { secret: bench } }' -H "authorization: Bearer $jwt"
  run ext-authz '{ name: f, module: "'$PWD'/filters/build/sample-ext-authz.wasm", configuration: { cluster: authz } }'
  run ratelimit '{ name: f, module: "'$PWD'/filters/build/sample-ratelimit.wasm", configuration: { requests_per_second: 1000000, burst: 1000000 } }'
  run observability '{ name: f, module: "'$PWD'/filters/build/sample-observability.wasm", configuration: { log: false } }'
  run body-rewrite '{ name: f, module: "'$PWD'/filters/build/sample-body-rewrite.wasm", configuration: { replace: { xxxx: yyyy } } }'
)
base=$(echo "$results" | awk '$1 == "none" {print $2}')
echo "wrk -t1 -c32 -d$DURATION, 1 KiB JSON responses, 1 worker, engine: ${RUNTIME:-default}; memory sampled by Sluice every 256 streams"
printf "%-15s %12s %8s %14s %14s %10s\n" filter requests/s ratio mem-early mem-after requests
echo "$results" | while read -r name rps before after total; do
  printf "%-15s %12s %8s %14s %14s %10s\n" "$name" "$rps" "$(awk -v a="$rps" -v b="$base" 'BEGIN {printf "%.2f", a/b}')" "$before" "$after" "$total"
done
