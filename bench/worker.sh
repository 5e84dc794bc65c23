#!/usr/bin/env bash
# Jobplane: worker throughput at a backlog of 10k, 100k and 1M no-op-fast webhook jobs.
#
#   bench/worker.sh [SIZE ...]        e.g. bench/worker.sh 10000 100000
#
# Builds the release worker, fills a queue of its own namespace on the local Redis (started if
# need be) through the enqueue path, starts one worker process (concurrency 200, batch 100) and
# times the drain to an in-process receiver that answers 200 at once. The worker, Redis and the
# receiver share this machine's cores. Needs ~1.1 KiB of Redis memory per queued job.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services
cargo build --release -q --bin worker --example throughput -p workers
WORKER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/worker" \
    exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/throughput" "$@"
