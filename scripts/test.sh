#!/usr/bin/env bash
# Every test Piazza has: fetches the models (cached), runs the workspace's tests, then checks
# that inference is bitwise identical across CPU targets.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/fetch-models.sh
cargo test --workspace --locked
bash scripts/repro-check.sh
