#!/usr/bin/env bash
# Hostile input against /metrics: REQUESTS unauthenticated requests to
# /healthz, each with a different made-up HTTP method of 7 KB, then four
# scrapes of /metrics. Prints the size of /metrics before and after and the
# service's RSS before and at its peak (VmHWM). Every label comes from a
# fixed set, so neither may grow with the burst.
#
#   loadgen/bench-methods.sh                 # from the repository root
#   SERVICE=/path/to/clerk-role-sync loadgen/bench-methods.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-2500}
PORT=${PORT:-18302}

# shellcheck source=loadgen/bench-common.sh
source loadgen/bench-common.sh
service=${SERVICE:-$service}

start "sqlite://$work/methods.db"
rss() { awk "/^$1:/ { print \$2 }" "/proc/$pid/status"; }
size() { curl -fsS "http://127.0.0.1:$PORT/metrics" | wc -c; }

before_size=$(size)
before_rss=$(rss VmRSS)
padding=$(head -c 7000 /dev/zero | tr '\0' M)
for i in $(seq 1 "$REQUESTS"); do
    curl -s -o /dev/null -X "X${i}${padding}" "http://127.0.0.1:$PORT/healthz" || true
done
for _ in 1 2 3; do size >/dev/null; done
after_size=$(size)
printf '/metrics: %s bytes before, %s bytes after %s made-up methods\n' "$before_size" "$after_size" "$REQUESTS"
printf 'RSS: %s kB before, peak %s kB\n' "$before_rss" "$(rss VmHWM)"
