#!/usr/bin/env bash
# Runs the demo on a fresh machine: installs cmake (pingora builds zlib-ng
# with it) when missing, then `cargo run --release -- demo`.
#   scripts/demo.sh [--listen 127.0.0.1:8080] [--admin-listen 127.0.0.1:9090]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
install_missing cmake:cmake
exec cargo run --release -- demo "$@"
