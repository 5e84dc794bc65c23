#!/usr/bin/env bash
# Jobplane: audit-log ingestion, end to end through the producer API and a worker into
# PostgreSQL, batched (the defaults) against one INSERT per event (AUDIT_BATCH_SIZE=1 with eight
# statements in flight), alternated over BENCH_RUNS runs (default 3) of BENCH_EVENTS events
# (default 100,000). Prints each run (with the CPU time per event of each process), the medians
# with min–max, and the ratio.
#
#   bench/audit.sh
#
# Uses the local Redis and PostgreSQL (started if need be, see scripts/lib/services.sh), a
# database and a namespace of its own per run, and removes them afterwards.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services
cargo build --release -q --bin worker --bin producer-api --example audit_ingest -p workers -p producer-api
BENCH_BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release" \
    exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/audit_ingest" "$@"
