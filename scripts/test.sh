#!/usr/bin/env bash
# Runs Skygate's whole test suite on a fresh machine: installs what is
# missing (cmake for pingora's zlib-ng build; redis-server and redis-cli for
# the tests that start their own servers and a cluster; chromium, Node.js
# and playwright-core for the status page's browser test; a Python venv with
# the official `openai` SDK, botocore, jsonschema and PyYAML), builds the
# gateway once, then runs every unit and end-to-end test.
#
#   scripts/test.sh            # everything
#   scripts/test.sh streaming  # only tests whose name matches a filter
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

. scripts/prereqs.sh
install_missing cmake:cmake redis-server:redis-server redis-cli:redis-tools python3:python3 python3-venv:python3-venv \
  chromium:chromium node:nodejs npm:npm

# The status page's browser test: playwright-core, pinned by the lock file.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "==> installing playwright-core into tests/browser/node_modules"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

venv="$root/target/venv-sdk"
if ! "$venv/bin/python" -c 'import openai, botocore, jsonschema, yaml' >/dev/null 2>&1; then
  echo "==> installing the openai Python SDK, botocore (an independent SigV4 signer), jsonschema and PyYAML (the config schema test) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'openai>=1.40,<3' 'botocore>=1.34,<2' 'jsonschema>=4.18,<5' 'PyYAML>=6,<7'
fi

echo "==> building skygate"
cargo build -q -p skygate --bin skygate

export SKYGATE_BIN="$root/target/debug/skygate"
export SKYGATE_TEST_PYTHON="$venv/bin/python"

echo "==> running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast -- "$@"
fi
