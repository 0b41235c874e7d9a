#!/usr/bin/env bash
# Webhook ingest against the database's own limit, in one run:
#   1. the release service on a fresh PostgreSQL database (and on a fresh
#      SQLite file), driven by `loadgen webhooks` at concurrency 32;
#   2. pgbench running the same writes as one prepared statement
#      (loadgen/pgbench/ingest.sql) at the same concurrency.
# Each is run RUNS times (default 5), alternating; the medians are printed.
#
#   loadgen/bench-ingest.sh            # from the repository root
#   RUNS=3 EVENTS=10000 loadgen/bench-ingest.sh
#   CONCURRENCY=1 EVENTS=3000 loadgen/bench-ingest.sh      # one sender
#   SERVICE=/path/to/old/clerk-role-sync loadgen/bench-ingest.sh   # another build
#   BACKENDS=sqlite loadgen/bench-ingest.sh                  # one backend only
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
EVENTS=${EVENTS:-20000}
SECONDS_PER_PGBENCH=${SECONDS_PER_PGBENCH:-10}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18300}
CONCURRENCY=${CONCURRENCY:-32}
BACKENDS=${BACKENDS:-postgres sqlite}
export CLERK_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

# shellcheck source=loadgen/bench-common.sh
source loadgen/bench-common.sh
service=${SERVICE:-$service}

ingest() {
    "$loadgen" webhooks --url "http://127.0.0.1:$PORT" --events "$EVENTS" --concurrency "$CONCURRENCY" --service-pid "$pid" | tee -a "$work/$1.out" >&2
}

for backend in $BACKENDS; do
    if [ "$backend" = postgres ]; then
        dropdb -h 127.0.0.1 -U postgres --if-exists bench_ingest
        createdb -h 127.0.0.1 -U postgres bench_ingest
        start "$PG/bench_ingest"
    else
        start "sqlite://$work/bench.db"
    fi
    echo "== $backend: warm-up" >&2
    "$loadgen" webhooks --url "http://127.0.0.1:$PORT" --events 2000 >/dev/null
    for run in $(seq 1 "$RUNS"); do
        echo "== $backend: run $run" >&2
        ingest "$backend"
        if [ "$backend" = postgres ]; then
            pgbench -h 127.0.0.1 -U postgres -n -M prepared -c "$CONCURRENCY" -j "$((CONCURRENCY < 2 ? 1 : 2))" -T "$SECONDS_PER_PGBENCH" \
                -f loadgen/pgbench/ingest.sql bench_ingest 2>&1 | tee -a "$work/pgbench.out" | grep -E '^(tps|latency average)' >&2
        fi
    done
    # How the events were grouped into transactions (builds with group commit).
    curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -E '^clerk_role_sync_ingest_batch_(size|seconds)_(bucket|sum|count)' |
        sed "s/^/$backend /" >"$work/$backend.batches" || true
    stop
    rate=$(sed -n 's/.* s: \([0-9]*\)\/s$/\1/p' "$work/$backend.out" | median)
    p50=$(sed -n 's/^latency ms: p50 \([0-9.]*\).*/\1/p' "$work/$backend.out" | median)
    p99=$(sed -n 's/.* p99 \([0-9.]*\).*/\1/p' "$work/$backend.out" | median)
    peak=$(sed -n 's/.*, \([0-9.]*\) MiB peak.*/\1/p' "$work/$backend.out" | median)
    echo "$backend ingest: median $rate events/s, p50 $p50 ms, p99 $p99 ms, peak RSS $peak MiB ($RUNS runs of $EVENTS events)"
    cat "$work/$backend.batches"
    if [ "$backend" = postgres ]; then
        tps=$(sed -n 's/^tps = \([0-9]*\).*/\1/p' "$work/pgbench.out" | median)
        # Each run next to the pgbench run right after it: the machine's
        # load drifts, so the ratio is taken pairwise.
        ratio=$(paste <(sed -n 's/.* s: \([0-9]*\)\/s$/\1/p' "$work/postgres.out") \
            <(sed -n 's/^tps = \([0-9]*\).*/\1/p' "$work/pgbench.out") |
            awk '{ printf "%.0f\n", 100 * $1 / $2 }' | median)
        echo "pgbench, the same writes as one statement: median $tps tps; service/pgbench, run by run: median $ratio%"
    fi
done
dropdb -h 127.0.0.1 -U postgres --if-exists bench_ingest
