#!/usr/bin/env bash
# Runs a one-process Piazza devnet. Builds `piazza` (release) first; arguments go to
# `piazza devnet` (e.g. --data-dir DIR --rpc-addr HOST:PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/fetch-models.sh >&2
cargo build --release --locked -p piazza-cli
exec "$CARGO_TARGET_DIR/release/piazza" devnet "$@"
