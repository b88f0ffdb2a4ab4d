#!/usr/bin/env bash
# Installs and starts what the test suite needs, idempotently: xmllint, a JetStream-enabled
# nats-server on 127.0.0.1:4222 (unless one is already listening) and the tansu Kafka-protocol
# broker binary (tests start and stop their own tansu processes). Prints TANSU_BIN=... last.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_pkgs=()
command -v xmllint >/dev/null || apt_pkgs+=(libxml2-utils)
command -v nats-server >/dev/null || apt_pkgs+=(nats-server)
command -v pkg-config >/dev/null || apt_pkgs+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || apt_pkgs+=(libssl-dev)
command -v make >/dev/null || apt_pkgs+=(make)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${apt_pkgs[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}"
fi

# Python tools of the chart and contract tests (Helm v4 as a library, Kubernetes schemas, the
# CloudEvents SDK, Standard Webhooks), pinned in
# tests/requirements.txt. pip skips what is already installed at the pinned version.
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" - tests/requirements.txt <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            sys.exit(1)
PY
then
  echo "tests/setup.sh: installing Python packages from tests/requirements.txt"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 4222; then
  echo "tests/run.sh: no NATS on 127.0.0.1:4222, starting nats-server with JetStream"
  nats_dir="${TMPDIR:-/tmp}/espm-nats"
  mkdir -p "$nats_dir"
  nohup "$(command -v nats-server)" -a 127.0.0.1 -p 4222 -js -sd "$nats_dir" >"$nats_dir/log" 2>&1 &
  for _ in $(seq 1 50); do port_open 4222 && break; sleep 0.2; done
  port_open 4222 || { echo "nats-server did not start; see $nats_dir/log" >&2; exit 1; }
fi

if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  echo "tests/run.sh: installing tansu (Kafka-protocol broker, about 10 minutes once)"
  cargo install tansu --locked --features dynostore
fi
export TANSU_BIN="${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}"

# Independent checker of the published contract (tests/contract): the official AsyncAPI parser
# (npm, pinned by tests/contract/package-lock.json, run by Node.js), reinstalled only when the lock
# file changed. The Python checkers are pinned in tests/requirements.txt (installed above).
contract=tests/contract
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "tests/setup.sh: installing nodejs and npm"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
}
if ! cmp -s "$contract/package-lock.json" "$contract/node_modules/.installed-lock" 2>/dev/null; then
  echo "tests/setup.sh: npm ci in $contract"
  (cd "$contract" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  cp "$contract/package-lock.json" "$contract/node_modules/.installed-lock"
fi
