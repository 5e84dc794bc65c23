#!/usr/bin/env bash
# Jobplane: a rate limit shared by a fleet of workers (section `ratelimit` of bench/run).
#
#   bench/ratelimit.sh            BENCH_WORKERS (3) workers, BENCH_LIMIT (50/s), BENCH_JOBS (3000)
#
# Builds the release worker, starts the workers with RATE_LIMIT_WEBHOOK on a namespace of their
# own on the local Redis (started if need be), queues the jobs and records each delivery's
# arrival at an in-process receiver: prints the most deliveries in any one second (at most rate
# + burst) and the run's duration, first delivery to last (target: (jobs - burst) / rate).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services
cargo build --release -q --bin worker --example ratelimit -p workers
WORKER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/worker" \
    exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/ratelimit"
