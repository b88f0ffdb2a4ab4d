#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: brings up what the tests need
# (tests/setup.sh), then runs every test in the workspace, plus the tests of the opt-in
# OpenTelemetry feature.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup.sh
cargo test --workspace --no-fail-fast "$@"
cargo test -p espm-bridge --features otel --bin espm-bridge "$@"
