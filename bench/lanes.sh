#!/usr/bin/env bash
# Jobplane: priorities and per-tenant fairness under load (issue 15).
#
#   bench/lanes.sh
#
# (1) a backlog of LANES_BACKLOG (100,000) normal webhook jobs being drained, then LANES_HIGH
# (100) high ones: p50/p99/max of each high job's start (its record's `sa` − `ca`); target p99
# ≤ 50 ms. (2) group A enqueues LANES_FLOOD (200,000) jobs, then group B LANES_B (100) at
# LANES_B_RATE (10) per second: B's start latency (target p99 ≤ 100 ms), and A's throughput
# over that window against a run without B (target: a drop of at most 10 %).
# One release worker (concurrency BENCH_CONCURRENCY, 200; batch 100) delivers to an in-process
# receiver that answers 200 at once. Uses the local Redis (started if need be, see
# scripts/lib/services.sh) under namespaces of its own, and deletes what it wrote.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services
cargo build --release -q --bin worker --example lanes -p workers
WORKER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/worker" \
    exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/lanes" "$@"
