#!/usr/bin/env bash
# Bitwise reproducibility across CPU targets: builds the engine's trace_root example for the
# baseline x86-64, x86-64-v3 (AVX2) and, when this CPU has AVX-512, x86-64-v4, each in its own
# target dir, runs each, and fails unless every build prints the same trace roots.
# Needs the models: run scripts/fetch-models.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${CARGO_TARGET_DIR:-/work/target}"
targets=("x86-64" "x86-64-v3")
if grep -qw avx512f /proc/cpuinfo; then
  targets+=("x86-64-v4")
fi

reference=""
for cpu in "${targets[@]}"; do
  echo "repro-check: building for $cpu" >&2
  out="$(CARGO_TARGET_DIR="$base-repro-$cpu" RUSTFLAGS="-C target-cpu=$cpu" \
    cargo run --quiet --release -p piazza-engine --example trace_root)"
  echo "$cpu:" >&2
  echo "$out" | sed 's/^/  /' >&2
  if [[ -z "$reference" ]]; then
    reference="$out"
  elif [[ "$out" != "$reference" ]]; then
    echo "repro-check: FAILED: $cpu gives different trace roots than ${targets[0]}" >&2
    exit 1
  fi
done
echo "repro-check: ${#targets[@]} targets (${targets[*]}) give identical trace roots"
