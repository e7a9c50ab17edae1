#!/usr/bin/env bash
# Runs Skygate's whole test suite on a fresh machine: installs what is
# missing (cmake for pingora's zlib-ng build, redis-server and redis-cli for
# the rate-limit tests, which start their own servers and a cluster, a Python venv with the official `openai` SDK and botocore), builds the gateway
# once, then runs every unit and end-to-end test.
#
#   scripts/test.sh            # everything
#   scripts/test.sh streaming  # only tests whose name matches a filter
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

. scripts/prereqs.sh
install_missing cmake:cmake redis-server:redis-server redis-cli:redis-tools python3:python3 python3-venv:python3-venv

venv="$root/target/venv-sdk"
if ! "$venv/bin/python" -c 'import openai, botocore' >/dev/null 2>&1; then
  echo "==> installing the openai Python SDK and botocore (an independent SigV4 signer) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'openai>=1.40,<3' 'botocore>=1.34,<2'
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
