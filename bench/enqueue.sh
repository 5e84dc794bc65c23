#!/usr/bin/env bash
# Jobplane: throughput of POST /v1/jobs (enqueue), measured with wrk.
#
#   bench/enqueue.sh
#
# Builds producer-api in release, starts it on a free loopback port with its own Redis namespace
# (bench-<random>) against the local Redis (127.0.0.1:6379; started if need be, see
# scripts/lib/services.sh), and runs wrk three times for each of two variants: without an
# Idempotency-Key, and with a unique Idempotency-Key per request. Prints every run's requests/s
# and the median per variant, counts every non-2xx answer, then stops the server and deletes the
# namespace's keys. Exits non-zero when any run saw a non-2xx answer or a socket error.
# Knobs: BENCH_THREADS (2), BENCH_CONNECTIONS (64), BENCH_DURATION (10s), BENCH_RUNS (3).
# Everything stays on 127.0.0.1; each wrk run is bounded by its duration.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

threads="${BENCH_THREADS:-2}"
connections="${BENCH_CONNECTIONS:-64}"
duration="${BENCH_DURATION:-10s}"
runs="${BENCH_RUNS:-3}"
lua="bench/enqueue.lua"

jp_ensure_services
if ! command -v wrk >/dev/null 2>&1; then
    jp_apt_install wrk
fi
command -v redis-cli >/dev/null 2>&1 || jp_apt_install redis-tools

echo "building producer-api (release)..."
cargo build --release -p producer-api --bin producer-api
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/producer-api"

# A free port on 127.0.0.1.
port=""
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 20000))
    if ! jp_tcp_open 127.0.0.1 "$candidate"; then
        port=$candidate
        break
    fi
done
[[ -n $port ]] || jp_die "no free port found"

namespace="bench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
BENCH_API_KEY="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" # a throwaway secret, never printed
export BENCH_API_KEY
redis_cli=(redis-cli -h 127.0.0.1 -p "$JP_REDIS_PORT")

mkdir -p "$JP_LOG_DIR"
log="$JP_LOG_DIR/bench-producer-api.log"
: >"$log"
server_pid=""

delete_namespace_keys() {
    "${redis_cli[@]}" --scan --pattern "$namespace:*" | xargs -r -n 500 "${redis_cli[@]}" del >/dev/null
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n ${namespace:-} ]]; then
        delete_namespace_keys || jp_warn "could not delete the keys of $namespace"
    fi
    jp_stop_started_services
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

env PRODUCER_ADDR="127.0.0.1:$port" \
    PRODUCER_API_KEYS="bench:$BENCH_API_KEY" \
    REDIS_URL="redis://127.0.0.1:$JP_REDIS_PORT" \
    REDIS_NAMESPACE="$namespace" \
    DATABASE_URL="postgres://postgres@127.0.0.1:$JP_PG_PORT/jobs" \
    LOG_FORMAT=text RUST_LOG="${BENCH_RUST_LOG:-warn}" \
    "$bin" >>"$log" 2>&1 </dev/null &
server_pid=$!

deadline=$((SECONDS + 30))
until [[ $(jp_http_status 127.0.0.1 "$port" /healthz) == 200 ]]; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$log" >&2
        jp_die "producer-api exited at start (log: $log)"
    fi
    ((SECONDS < deadline)) || jp_die "producer-api did not answer /healthz within 30s (log: $log)"
    sleep 0.2
done

url="http://127.0.0.1:$port"
nproc_=$(nproc 2>/dev/null || echo '?')
cat <<EOF
producer-api $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(no commit)') (release) on $url, Redis namespace $namespace
machine: $nproc_ cores; wrk and producer-api share them, Redis too
wrk command (RUN = a fresh id per run):
  BENCH_API_KEY=*** wrk -t$threads -c$connections -d$duration --latency -s $lua $url -- plain RUN
  BENCH_API_KEY=*** wrk -t$threads -c$connections -d$duration --latency -s $lua $url -- idem RUN
EOF

# Warm-up (not counted): connection pools, allocator, Redis scripts loaded.
wrk -t"$threads" -c"$connections" -d2s -s "$lua" "$url" -- plain warmup >/dev/null 2>&1 || true
delete_namespace_keys

declare -A rps_list=()
any_errors=0
for variant in plain idem; do
    echo
    echo "== variant: $variant ($([[ $variant == plain ]] && echo 'no Idempotency-Key' || echo 'unique Idempotency-Key per request'))"
    for ((r = 1; r <= runs; r++)); do
        run_id="$namespace-$variant-$r"
        out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$lua" "$url" -- "$variant" "$run_id" 2>&1) || {
            printf '%s\n' "$out" >&2
            jp_die "wrk failed"
        }
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        total=$(awk '/requests in/ {print $1}' <<<"$out")
        stats=$(grep '^bench:' <<<"$out" | sed 's/^bench: //')
        non2xx=$(sed -nE 's/.*non2xx=([0-9]+).*/\1/p' <<<"$stats")
        sockerr=$(grep -c '^  Socket errors' <<<"$out" || true)
        wrk_non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' <<<"$out")
        printf '  run %d: %10s req/s  (%s requests; %s)\n' "$r" "${rps:-?}" "${total:-?}" "${stats:-no stats from the Lua script}"
        if [[ -z $rps || -z $non2xx ]] || ((non2xx > 0 || sockerr > 0)) || [[ -n $wrk_non2xx ]]; then
            any_errors=1
            echo "  run $r HAD ERRORS: non-2xx=${non2xx:-?}${wrk_non2xx:+ (wrk: $wrk_non2xx)}$( ((sockerr)) && printf '; %s' "$(grep '^  Socket errors' <<<"$out" | sed 's/^ *//')")"
        fi
        rps_list[$variant]+="${rps:-0} "
        # Each run starts from an empty namespace.
        delete_namespace_keys
    done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo
echo "== summary (requests/s, median of $runs runs of ${duration}, -t$threads -c$connections)"
for variant in plain idem; do
    printf '  %-6s median %10s   runs: %s\n' "$variant" "$(median "${rps_list[$variant]}")" "${rps_list[$variant]% }"
done
if ((any_errors)); then
    echo "  WARNING: some runs had non-2xx answers or socket errors (see above); their numbers are not clean."
    exit 1
fi
echo "  every response was 2xx"
