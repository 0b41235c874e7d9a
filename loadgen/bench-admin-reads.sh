#!/usr/bin/env bash
# The operators' reads at a million rows on PostgreSQL: GET
# /api/admin/webhook-events with each of its filters, and GET
# /api/admin/sync/status. A fresh database is migrated by the build under
# test, filled by loadgen/bench-admin-reads.sql (ROWS users, clerk_sync rows
# and webhook_events), the queries' plans are printed (a whole-table scan of
# webhook_events or clerk_sync is reported), and each read is timed
# REQUESTS times one at a time, RUNS times; the medians of the runs' p50 and
# p99 are printed.
#
#   loadgen/bench-admin-reads.sh           # from the repository root
#   RUNS=3 REQUESTS=300 ROWS=1000000 loadgen/bench-admin-reads.sh
#   SERVICE=/path/to/old/clerk-role-sync loadgen/bench-admin-reads.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-300}
ROWS=${ROWS:-1000000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18303}
export CLERK_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
key=tests/testkit/keys/primary.key.pem

# shellcheck source=loadgen/bench-common.sh
source loadgen/bench-common.sh
service=${SERVICE:-$service}

measure() {
    local name=$1 path=$2 out
    out="$work/$(printf '%s' "$1" | tr -c 'A-Za-z0-9' _).out"
    for _ in $(seq 1 "$RUNS"); do
        "$loadgen" get --url "http://127.0.0.1:$PORT" --key "$key" --requests "$REQUESTS" --path "$path" |
            tee -a "$out" >&2
    done
    local p50 p99 bad
    p50=$(sed -n 's/^latency ms: p50 \([0-9.]*\).*/\1/p' "$out" | median)
    p99=$(sed -n 's/.* p99 \([0-9.]*\).*/\1/p' "$out" | median)
    bad=$(grep '^results:' "$out" | grep -v '^results: 200 [0-9]*$' || true)
    [ -z "$bad" ] || { echo "non-200 answers: $bad" >&2; exit 1; }
    printf '%-28s p50 %7s ms  p99 %7s ms\n' "$name" "$p50" "$p99"
}

dropdb -h 127.0.0.1 -U postgres --if-exists bench_admin_reads
createdb -h 127.0.0.1 -U postgres bench_admin_reads
url="$PG/bench_admin_reads"
DATABASE_URL="$url" "$service" migrate >&2
echo "== seeding $ROWS rows" >&2
psql -q -h 127.0.0.1 -U postgres -v rows="$ROWS" -f loadgen/bench-admin-reads.sql bench_admin_reads >&2
psql -h 127.0.0.1 -U postgres -f loadgen/bench-admin-reads-explain.sql bench_admin_reads >"$work/plans"
cat "$work/plans"
if grep -E 'Seq Scan on (webhook_events|clerk_sync)' "$work/plans" >/dev/null; then
    echo "some read scans webhook_events or clerk_sync whole"
fi

start "$url" CLERK_JWT_KEY="$(cat tests/testkit/keys/primary.pub.pem)" \
    WEBHOOK_EVENTS_RETENTION_DAYS=3650 RECONCILE_INTERVAL=0
day=$(date -u -d '15 days ago' +%Y-%m-%dT%H:%M:%SZ)
next_day=$(date -u -d '14 days ago' +%Y-%m-%dT%H:%M:%SZ)
measure "webhook-events" "/api/admin/webhook-events?limit=50"
measure "  userId" "/api/admin/webhook-events?limit=50&userId=user_b123"
measure "  type (1%)" "/api/admin/webhook-events?limit=50&type=session.created"
measure "  type (65%)" "/api/admin/webhook-events?limit=50&type=user.updated"
measure "  outcome (0.1%)" "/api/admin/webhook-events?limit=50&outcome=conflict"
measure "  outcome (none)" "/api/admin/webhook-events?limit=50&outcome=missing_id"
measure "  type and outcome (3%)" "/api/admin/webhook-events?limit=50&type=user.created&outcome=stale"
measure "  type and outcome (none)" "/api/admin/webhook-events?limit=50&type=user.deleted&outcome=applied"
measure "  since and until" "/api/admin/webhook-events?limit=50&since=$day&until=$next_day"
measure "  outcome, since" "/api/admin/webhook-events?limit=50&outcome=duplicate&since=$day"
measure "sync/status" "/api/admin/sync/status"
stop
dropdb -h 127.0.0.1 -U postgres --if-exists bench_admin_reads
