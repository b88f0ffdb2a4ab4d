#!/usr/bin/env bash
# Supply chain: `cargo deny check` (advisories, licenses, bans, sources; deny.toml). Installs
# cargo-deny once. The advisory database is a git repository outside the package registries;
# when it cannot be fetched (no network to it) and no copy is cached, the advisories check is
# skipped with a message and the other three still run. Anything else that fails, fails.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  echo ".ci/deny.sh: installing cargo-deny $DENY_VERSION"
  cargo install cargo-deny --locked --version "$DENY_VERSION" --quiet
fi

if timeout 120 cargo deny fetch db >/tmp/cargo-deny-fetch.log 2>&1; then
  cargo deny check advisories licenses bans sources
elif compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-*/crates" >/dev/null; then
  echo ".ci/deny.sh: advisory database unreachable ($(grep -m1 -i 'error' /tmp/cargo-deny-fetch.log)); using the cached copy"
  cargo deny check --offline advisories licenses bans sources
else
  echo ".ci/deny.sh: advisory database unreachable and not cached ($(grep -m1 -i 'error' /tmp/cargo-deny-fetch.log)):" \
       "SKIPPING the advisories check; licenses, bans and sources are still checked"
  cargo deny check licenses bans sources
fi
