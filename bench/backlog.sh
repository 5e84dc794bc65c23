#!/usr/bin/env bash
# Jobplane: the Redis layout at scale. Enqueues a backlog (default 1,000,000 jobs) through the
# producer's enqueue path (Store::enqueue, 1000 jobs a script call), then drains it with a
# batched pop over the same keys, printing the drain rate for every tenth of the backlog.
#
#   bench/backlog.sh [--jobs N] [--batch N] [--fetch N]
#
# Uses the local Redis (started if need be, see scripts/lib/services.sh) under a namespace of
# its own, and deletes what it wrote. Needs about 1.1 KiB of Redis memory per queued job.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services
cargo build --release -p jobs --example backlog
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/backlog" "$@"
