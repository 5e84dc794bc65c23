#!/usr/bin/env bash
# Jobplane: one slow webhook destination must not hurt the others (issue 15).
#
#   bench/destinations.sh          (knobs: DEST_RATE 1000, DEST_SECONDS 30, DEST_FAST 50,
#                                   DEST_SLOW_DELAY 5, DEST_CONCURRENCY 200, DEST_PROFILE release)
#
# Starts a producer API and one worker (WORKER_CONCURRENCY_WEBHOOK=DEST_CONCURRENCY) on the
# local Redis, and bench/destinations.py's receivers: DEST_FAST endpoints that answer at once and,
# in some runs, one that answers after DEST_SLOW_DELAY s. DEST_RATE webhooks a second for
# DEST_SECONDS, spread evenly over the endpoints. Three runs, each in a namespace of its own:
#   without   the fast endpoints only
#   with      the slow one too, WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION at its default (8)
#   unlimited the slow one too, the limit lifted to 10000 (what a worker did before issue 15)
# and prints the fast endpoints' delivery latency (enqueue -> received) p50/p99 of each, one JSON
# line a run. The target: `with`'s p99 within 2x of `without`'s.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services

rate="${DEST_RATE:-1000}"
seconds="${DEST_SECONDS:-30}"
fast="${DEST_FAST:-50}"
slow_delay="${DEST_SLOW_DELAY:-5}"
concurrency="${DEST_CONCURRENCY:-200}"
profile="${DEST_PROFILE:-release}"
redis_url="redis://127.0.0.1:${JP_REDIS_PORT:-6379}"
if [[ $profile == release ]]; then
    cargo build --release -q --bin worker --bin producer-api
else
    cargo build -q --bin worker --bin producer-api
fi
bin="${CARGO_TARGET_DIR:-$ROOT/target}/$profile"
key="bench-key-0123456789"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() {
    local label=$1 slow=$2 limit=$3
    local ns="bench-dest-$label-$RANDOM"
    local api_port
    api_port=$(free_port)
    env -i PATH="$PATH" RUST_LOG=warn REDIS_URL="$redis_url" REDIS_NAMESPACE="$ns" \
        PRODUCER_API_KEYS="bench:$key" PRODUCER_ADDR="127.0.0.1:$api_port" \
        DATABASE_URL="postgres://postgres@127.0.0.1:1/none" "$bin/producer-api" >/dev/null 2>&1 &
    pids+=($!)
    env -i PATH="$PATH" RUST_LOG=warn REDIS_URL="$redis_url" REDIS_NAMESPACE="$ns" WORKER_KINDS=webhook \
        WORKER_METRICS_ADDR=0 WORKER_SCHEDULER=false WORKER_CONCURRENCY_WEBHOOK="$concurrency" \
        WEBHOOK_SIGNING_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" WEBHOOK_ALLOW_PRIVATE_NETWORKS=true \
        WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION="$limit" DATABASE_URL="postgres://postgres@127.0.0.1:1/none" \
        "$bin/worker" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local flags=()
    [[ $slow == 1 ]] && flags+=(--slow)
    python3 bench/destinations.py --api "127.0.0.1:$api_port" --key "$key" --fast "$fast" \
        --slow-delay "$slow_delay" --rate "$rate" --seconds "$seconds" --label "$label" "${flags[@]}"
    cleanup
    pids=()
    redis-cli -u "$redis_url" --scan --pattern "$ns:*" | xargs -r -n 1000 redis-cli -u "$redis_url" del >/dev/null
}

echo "destinations: $rate jobs/s for $seconds s over $fast fast endpoints (+1 answering after $slow_delay s), worker concurrency $concurrency, $profile build"
run without 0 8
run with 1 8
run unlimited 1 10000
