#!/usr/bin/env bash
# One benchmark run, same machine, same moment: wrk against
#   1. the upstream directly (nginx serving a 1 KiB body),
#   2. nginx as a reverse proxy in front of it (upstream keep-alive on),
#   3. Sluice as the same reverse proxy,
#   4. Sluice with a header-adding Wasm filter (filters/test/swift/headers.swift, Embedded Swift),
# then prints requests/s, p50 and p99 for each and the Sluice/nginx ratios.
#
#   bench/run.sh                     # defaults: 10 s per target, 32 connections
#   DURATION=30s CONNECTIONS=64 bench/run.sh
#   BASELINE=/path/to/old/sluice ROUNDS=5 bench/run.sh
#       also runs an older Sluice binary on the same config, interleaved with this one
#       (the order alternates each round), and prints medians and the new/old ratio
#
# Both proxies get the same number of workers (WORKERS, default 1) so that wrk and the
# upstream keep a core between them on a 2-core machine. Results go to bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  echo "installing wrk and nginx (Debian packages)"
  apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null
fi
swift build -c release --product sluice >/dev/null
filters/build.sh >/dev/null
SLUICE=.build/release/sluice

out=bench/out; mkdir -p "$out"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
ROUNDS=${ROUNDS:-1}
BASELINE=${BASELINE:-}
UP=18081; NGX=18082; SL=18083; ADMIN=18084; SLF=18085; ADMINF=18086; SLB=18087; ADMINB=18088

cat > "$work/nginx.conf" <<NGINX
worker_processes $WORKERS;
daemon off;
error_log $work/error.log warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$UP; location / { root $work; try_files /1k =404; } }
  server {
    listen 127.0.0.1:$NGX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
# Two nginx instances would be fairer to separate, but one process group serving both the
# origin and the proxy keeps the upstream identical for every target.
nginx -c "$work/nginx.conf" -p "$work" &

cat > "$work/sluice.yaml" <<YAML
admin: { address: "127.0.0.1:$ADMIN" }
access_log: { format: off }
listeners:
  - name: bench
    address: "127.0.0.1:$SL"
    routes: [{ match: { prefix: / }, cluster: origin }]
clusters:
  - { name: origin, endpoints: ["127.0.0.1:$UP"] }
YAML
"$SLUICE" run -c "$work/sluice.yaml" --workers "$WORKERS" --log-level warning &
cat > "$work/sluice-filter.yaml" <<YAML
admin: { address: "127.0.0.1:$ADMINF" }
access_log: { format: off }
listeners:
  - name: bench
    address: "127.0.0.1:$SLF"
    http_filters: [headers]
    routes: [{ match: { prefix: / }, cluster: origin }]
clusters:
  - { name: origin, endpoints: ["127.0.0.1:$UP"] }
plugins:
  - { name: headers, module: "$PWD/filters/build/swift-headers.wasm", configuration: bench }
YAML
"$SLUICE" run -c "$work/sluice-filter.yaml" --workers "$WORKERS" --log-level warning &
if [ -n "$BASELINE" ]; then
  sed -e "s/$ADMIN/$ADMINB/" -e "s/$SL\"/$SLB\"/" "$work/sluice.yaml" > "$work/sluice-baseline.yaml"
  "$BASELINE" run -c "$work/sluice-baseline.yaml" --workers "$WORKERS" --log-level warning &
  for i in $(seq 100); do curl -sf "127.0.0.1:$ADMINB/ready" >/dev/null && break; sleep 0.1; done
fi
for i in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/ready" >/dev/null && curl -sf "127.0.0.1:$ADMINF/ready" >/dev/null && curl -sf "127.0.0.1:$UP/" >/dev/null && break; sleep 0.1; done

run() { # name port
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$2/" >/dev/null  # warm-up
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$2/" > "$out/$1.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$out/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$out/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$out/$1.txt")
  printf "%-22s %12s %10s %10s\n" "$1" "$rps" "$p50" "$p99"
  echo "$1 $rps $p50 $p99" >> "$out/summary.txt"
}
: > "$out/summary.txt"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 1 KiB responses, keep-alive; proxies with $WORKERS worker(s)"
printf "%-22s %12s %10s %10s\n" target requests/s p50 p99
run upstream-direct $UP
run nginx-proxy $NGX
run sluice-proxy $SL
run sluice-wasm-filter $SLF
if [ -n "$BASELINE" ]; then
  # Interleaved rounds, order alternating: drift on the machine hits both alike.
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run sluice-baseline $SLB; run sluice-proxy $SL; else run sluice-proxy $SL; run sluice-baseline $SLB; fi
  done
  median() { grep "^$1 " "$out/summary.txt" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
  new=$(median sluice-proxy); old=$(median sluice-baseline)
  awk -v n="$new" -v o="$old" -v r="$ROUNDS" 'BEGIN { printf "this build / baseline (median of %d interleaved rounds each): %.0f / %.0f requests/s = %.3fx\n", r, n, o, n/o }'
fi

to_us() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) print v+0; else if (v ~ /ms$/) print v*1000; else if (v ~ /s$/) print v*1000000; else print v }'; }
read -r _ n_rps n_p50 n_p99 < <(grep '^nginx-proxy' "$out/summary.txt")
read -r _ s_rps s_p50 s_p99 < <(grep '^sluice-proxy' "$out/summary.txt")
awk -v s="$s_rps" -v n="$n_rps" -v sp50="$(to_us "$s_p50")" -v np50="$(to_us "$n_p50")" -v sp99="$(to_us "$s_p99")" -v np99="$(to_us "$n_p99")" 'BEGIN {
  printf "sluice/nginx: throughput %.2fx, p50 latency %.2fx, p99 latency %.2fx\n", s/n, sp50/np50, sp99/np99 }'
read -r _ f_rps f_p50 f_p99 < <(grep '^sluice-wasm-filter' "$out/summary.txt")
awk -v f="$f_rps" -v s="$s_rps" -v fp99="$(to_us "$f_p99")" -v sp99="$(to_us "$s_p99")" 'BEGIN {
  printf "sluice with a Wasm filter / without: throughput %.2fx, p99 latency %.2fx\n", f/s, fp99/sp99 }'
