#!/usr/bin/env bash
# Admin role changes through the REST API (`loadgen patch`), on a fresh
# PostgreSQL database and a fresh SQLite file, with no Clerk configured (the
# changes queue in the outbox): the cost of the PATCH path itself. Each
# backend gets a warm-up, then RUNS runs; the medians of the runs' rate,
# p50 and p99 are printed.
#
#   loadgen/bench-patch.sh            # from the repository root
#   RUNS=5 REQUESTS=2000 CONCURRENCY=1 loadgen/bench-patch.sh
#   SERVICE=/path/to/old/clerk-role-sync loadgen/bench-patch.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-1000}
CONCURRENCY=${CONCURRENCY:-8}
USERS=${USERS:-200}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18302}
BACKENDS=${BACKENDS:-postgres sqlite}
export CLERK_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
key=tests/testkit/keys/primary.key.pem

# shellcheck source=loadgen/bench-common.sh
source loadgen/bench-common.sh
service=${SERVICE:-$service}

run_patches() {
    "$loadgen" patch --url "http://127.0.0.1:$PORT" --key "$key" --requests "$1" \
        --concurrency "$CONCURRENCY" --users "$USERS"
}

for backend in $BACKENDS; do
    if [ "$backend" = postgres ]; then
        dropdb --maintenance-db="$PG/postgres" --if-exists bench_patch
        createdb --maintenance-db="$PG/postgres" bench_patch
        start "$PG/bench_patch" CLERK_JWT_KEY="$(cat "${key%.key.pem}.pub.pem")"
    else
        start "sqlite://$work/bench.db" CLERK_JWT_KEY="$(cat "${key%.key.pem}.pub.pem")"
    fi
    echo "== $backend: warm-up" >&2
    run_patches 300 >/dev/null
    for run in $(seq 1 "$RUNS"); do
        echo "== $backend: run $run" >&2
        run_patches "$REQUESTS" | tee -a "$work/$backend.out" >&2
    done
    stop
    bad=$(grep '^results:' "$work/$backend.out" | grep -v '^results: 200 [0-9]*$' || true)
    [ -z "$bad" ] || { echo "non-200 answers: $bad" >&2; exit 1; }
    rate=$(sed -n 's/.* s: \([0-9]*\)\/s$/\1/p' "$work/$backend.out" | median)
    p50=$(sed -n 's/^latency ms: p50 \([0-9.]*\).*/\1/p' "$work/$backend.out" | median)
    p99=$(sed -n 's/.* p99 \([0-9.]*\).*/\1/p' "$work/$backend.out" | median)
    echo "$backend PATCH: median $rate PATCHes/s, p50 $p50 ms, p99 $p99 ms ($RUNS runs of $REQUESTS at concurrency $CONCURRENCY)"
done
