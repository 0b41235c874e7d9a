# Shared by the benchmark scripts (sourced from the repository root): builds
# the release binaries, starts and stops the service, and takes medians.

cargo build --release --locked -p clerk-role-sync -p loadgen >&2
service=target/release/clerk-role-sync
loadgen=target/release/loadgen
work=$(mktemp -d)
pid=

stop() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    pid=
}
trap 'stop; rm -rf "$work"' EXIT

# start DATABASE_URL [NAME=value ...]: the service on $PORT over that
# database, with the extra environment given; returns once /readyz answers.
start() {
    local url=$1
    shift
    env DATABASE_URL="$url" BIND_ADDR="127.0.0.1:$PORT" "$@" "$service" >"$work/service.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && return
        sleep 0.1
    done
    cat "$work/service.log" >&2
    exit 1
}

# The median of the numbers on standard input, one per line.
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
