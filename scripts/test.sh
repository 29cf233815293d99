#!/usr/bin/env bash
# Every test Piazza has: fetches the models (cached), checks that consensus code links no ML
# stack, runs clippy and the workspace's tests, checks that the fuzz targets build, then that
# inference is bitwise identical across CPU targets.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/fetch-models.sh

# The ledger, mempool, store, consensus, bft, api and client reach the engines only through the
# ledger's `Arbiter` trait: none of them may depend on the ML crates.
for crate in piazza-ledger piazza-mempool piazza-store piazza-consensus piazza-bft piazza-api piazza-client; do
  if cargo tree --locked -p "$crate" --edges normal --prefix none \
      | grep -E '^(piazza-(engine|llm|tensor|arbiter)|tokenizers|candle)' >/dev/null; then
    echo "test: $crate depends on the ML stack:" >&2
    cargo tree --locked -p "$crate" --edges normal | grep -E 'piazza-(engine|llm|tensor|arbiter)|tokenizers' >&2
    exit 1
  fi
done

cargo fmt --all --check
# Both lock files must be current before the long steps run (the fuzz one is checked again, built,
# after the tests).
cargo metadata --locked --format-version 1 >/dev/null
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --workspace --locked
cargo check --locked --manifest-path fuzz/Cargo.toml --bins
bash scripts/repro-check.sh
