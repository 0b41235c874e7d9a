#!/usr/bin/env bash
# The admin panel's reads at 1,000 and at 1,000,000 users, on both backends:
# role statistics and a page of the user list (all users, and filtered by
# role), each read REQUESTS times one at a time, RUNS times; the medians of
# the runs' p50 and p99 are printed.
#
#   loadgen/bench-read.sh            # from the repository root
#   RUNS=3 REQUESTS=1000 loadgen/bench-read.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-2000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18301}
export CLERK_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
key=tests/testkit/keys/primary.key.pem

# shellcheck source=loadgen/bench-common.sh
source loadgen/bench-common.sh

measure() {
    local backend=$1 users=$2 name=$3 path=$4 out="$work/$1-$2-$3.out"
    for _ in $(seq 1 "$RUNS"); do
        "$loadgen" get --url "http://127.0.0.1:$PORT" --key "$key" --requests "$REQUESTS" --path "$path" |
            tee -a "$out" >&2
    done
    local p50 p99 bad
    p50=$(sed -n 's/^latency ms: p50 \([0-9.]*\).*/\1/p' "$out" | median)
    p99=$(sed -n 's/.* p99 \([0-9.]*\).*/\1/p' "$out" | median)
    bad=$(grep '^results:' "$out" | grep -v '^results: 200 [0-9]*$' || true)
    [ -z "$bad" ] || { echo "non-200 answers: $bad" >&2; exit 1; }
    printf '%-9s %9s users  %-12s p50 %6s ms  p99 %6s ms\n' "$backend" "$users" "$name" "$p50" "$p99"
}

for backend in postgres sqlite; do
    if [ "$backend" = postgres ]; then
        dropdb -h 127.0.0.1 -U postgres --if-exists bench_read
        createdb -h 127.0.0.1 -U postgres bench_read
        url="$PG/bench_read"
    else
        url="sqlite://$work/bench.db"
    fi
    seeded=0
    for users in 1000 1000000; do
        "$loadgen" seed --database-url "$url" --users $((users - seeded)) >&2
        seeded=$users
        start "$url" CLERK_JWT_KEY="$(cat tests/testkit/keys/primary.pub.pem)"
        measure "$backend" "$users" stats /api/admin/stats
        measure "$backend" "$users" "page" "/api/admin/users?limit=50"
        measure "$backend" "$users" "role page" "/api/admin/users?limit=50&role=INSTRUCTOR"
        stop
    done
done
dropdb -h 127.0.0.1 -U postgres --if-exists bench_read
