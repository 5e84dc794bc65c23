#!/usr/bin/env bash
# Jobplane: processing throughput on a 3-master Redis Cluster against one Redis node, same run.
#
#   bench/cluster.sh [JOBS_PER_KIND [ROUNDS]]      default 50000 and 3
#
# Builds the release worker and starts redis-servers of its own (one node, and a 3-master
# cluster formed with redis-cli --cluster create) on free ports; needs redis-server and redis-cli.
# Each round fills a webhook and an email queue, drains both with one worker, and times it,
# alternating the topologies. Everything shares this machine's cores, so the figure says what
# the cluster client and the slot routing cost, not what more machines would buy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_redis_binary
cargo build --release -q --bin worker --example scale -p workers
WORKER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/worker" \
    exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/scale" "$@"
