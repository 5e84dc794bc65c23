#!/usr/bin/env bash
# Jobplane: audit-log ingestion, over BENCH_RUNS runs (default 3) of BENCH_EVENTS events (default
# 100,000), each run measuring, in turn on the same machine:
#   ceiling       PostgreSQL alone: the same rows by binary COPY straight into audit_logs and
#                 audit_event_ids (two connections), no queue, no deduplication statement;
#   writer alone  PostgreSQL alone: the worker's own write path (binary COPY into a staging
#                 table, one INSERT ... ON CONFLICT statement) in batches of 1000, two at once;
#   batched       end to end through the producer API and a worker into PostgreSQL;
#   (with BENCH_BASELINE=1 also one INSERT per event, AUDIT_BATCH_SIZE=1 with 8 in flight).
# Prints each run (with the CPU time per event of each process), the medians with min–max, and
# end to end as a share of the ceiling. Run it when the machine is quiet, and note `uptime`:
#
#   uptime; nice -n 0 bench/audit.sh
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
