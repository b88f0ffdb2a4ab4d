#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 60) on the stable toolchain, seeded from tests/fixtures.
# Usage: crates/espm-model/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
fx=../../../tests/fixtures
export RUSTC_BOOTSTRAP=1 # lets cargo-fuzz's -Z flags through on stable
declare -A seeds=(
  [parse_notifications]="$fx/notifications $fx/lenient $fx/bad"
  [parse_pending]="$fx/pending $fx/lenient $fx/bad"
  [normalize_document]="$fx/notifications $fx/pending $fx/lenient $fx/bad $fx/responses"
  [salvage_notifications]="$fx/notifications $fx/lenient $fx/bad"
  [stream_notifications]="$fx/notifications $fx/lenient $fx/bad"
)
for t in parse_notifications parse_pending normalize_document salvage_notifications stream_notifications; do
  mkdir -p "corpus/$t"
  # shellcheck disable=SC2086 # the seed list is meant to split
  cargo fuzz run "$t" "corpus/$t" ${seeds[$t]} -- -max_total_time="$secs"
done
