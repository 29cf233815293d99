#!/usr/bin/env bash
# Runs a one-process Piazza devnet. Builds `piazza` (release) first; arguments go to
# `piazza devnet` (e.g. --data-dir DIR --rpc-addr HOST:PORT; data in $PIAZZA_HOME/devnet, default
# ~/.piazza/devnet). It prints `piazza devnet: ready` once the first job can run: wait for that
# line, not for the RPC port.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/fetch-models.sh >&2
cargo build --release --locked -p piazza-cli
exec "$CARGO_TARGET_DIR/release/piazza" devnet "$@"
