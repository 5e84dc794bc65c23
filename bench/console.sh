#!/usr/bin/env bash
# Jobplane: the dead-letter console at 100,000 letters (BENCH_LETTERS): the first page and a
# cursor page, a text search reading every letter, a bulk replay of all of them with pacing
# lifted, and a purge. Uses the local Redis (started if need be) under a namespace of its own,
# and deletes what it wrote.
#
#   bench/console.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
jp_ensure_services
cargo build --release -q -p dlq-console --example dead_letters
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/dead_letters" "$@"
