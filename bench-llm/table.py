#!/usr/bin/env python3
"""SmolLM2 prefill and decode tokens/s: piazza-llm (f32 and quantized profiles) beside llama.cpp
(through llama-cpp-python), one table, same run, same prompt, threads 1 and 2, greedy.

Outside the default build, like the candle comparison: llama-cpp-python is built here by pip.
  python3 -m venv /tmp/llamavenv && /tmp/llamavenv/bin/pip install llama-cpp-python
  cargo build --release -p piazza-llm --example bench_generate
  /tmp/llamavenv/bin/python bench-llm/table.py [NEW_TOKENS] [ROUNDS]

Each tool runs ROUNDS times per thread count, interleaved with the others; the best round is
reported (the machine is shared). llama.cpp's threads are pinned (n_threads and
n_threads_batch); piazza's are its argument. Model loading is not timed.

Then one table of every engine target (issue 19) from the same run: MiniLM beside PyTorch and
ONNX Runtime (`encoder_speed`, when PIAZZA_BENCH_PYTHON names a Python with torch, transformers,
onnx and onnxruntime, and `cargo build --release -p piazza-engine --example encoder_speed` is
done), SmolLM2 prefill and decode beside llama.cpp, the auditor's check with the trace root as a
fraction of the generation (the best audit over the best generation, wall time, with each
round's own ratio beside it), and peak memory.
"""
import os
import re
import subprocess
import sys
import time

from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(
    os.environ.get("PIAZZA_MODELS_DIR", os.path.expanduser("~/.cache/piazza/models")),
    "smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
# `PIAZZA_BENCH=PATH` runs another build of bench_generate (a before/after comparison).
BENCH = os.environ.get(
    "PIAZZA_BENCH", os.path.join(ROOT, "target", "release", "examples", "bench_generate")
)
PROMPT = (
    "Decentralized compute networks let anyone rent out spare machines to run "
    "models for others. The hard part is trust: how does the client know the provider really ran "
    "the model it paid for, and did not return something cheaper? One answer is to make every "
    "operator deterministic, so that any result can be checked by re-running it."
)


def llama_cpp_round(threads, new_tokens):
    """(prefill tok/s, decode tok/s) of one greedy run."""
    llm = Llama(
        model_path=MODEL,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=1024,
        n_batch=512,
        verbose=False,
    )
    tokens = llm.tokenize(PROMPT.encode(), add_bos=False)
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        logits = llm.scores[llm.n_tokens - 1]
        llm.eval([int(logits.argmax())])
    decode_s = time.perf_counter() - start
    return len(tokens) / prefill_s, (new_tokens - 1) / decode_s


ENCODER = os.path.join(ROOT, "target", "release", "examples", "encoder_speed")
# ((audit s, generation s), peak MiB) of each of piazza's rounds, by
# (profile, threads): the audit and memory columns of the summary.
EXTRA = {}


def piazza_round(profile, threads, new_tokens):
    out = subprocess.run(
        [BENCH, str(new_tokens), str(threads)],
        env={**os.environ, "PIAZZA_PROFILE": profile},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"prompt ([\d.]+) tokens/s, generation ([\d.]+) tokens/s", out)
    audit = re.search(
        r"audit with trace root \(one pass\): ([\d.]+) s = [\d.]+ x the generation \(([\d.]+) s\)", out
    )
    peak = re.search(r"^peak memory \(VmHWM\) ([\d.]+) MiB", out, re.MULTILINE)
    EXTRA.setdefault((profile, threads), []).append(
        (
            (float(audit.group(1)), float(audit.group(2))) if audit else None,
            float(peak.group(1)) if peak else None,
        )
    )
    return float(m.group(1)), float(m.group(2))


def encoder_rows(rounds):
    """encoder_speed's table rows as (workload, threads, piazza, pytorch, onnx), or [] when the
    anchors' Python is not given."""
    python = os.environ.get("PIAZZA_BENCH_PYTHON")
    if not python or not os.path.exists(ENCODER):
        return []
    out = subprocess.run(
        [ENCODER, str(rounds)], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("batch"):
            rows.append((cells[0], int(cells[1]), float(cells[2]), float(cells[3]), float(cells[4])))
    return rows


def span(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"


def main():
    new_tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    tools = {
        "llama.cpp (Q4_1, Q8 activations)": lambda t: llama_cpp_round(t, new_tokens),
        "piazza quantized": lambda t: piazza_round("quantized", t, new_tokens),
        "piazza f32": lambda t: piazza_round("f32", t, new_tokens),
    }
    best = {}
    for _ in range(rounds):
        for threads in (1, 2):
            for name, run in tools.items():
                prefill, decode = run(threads)
                old = best.get((name, threads), (0.0, 0.0))
                best[(name, threads)] = (max(old[0], prefill), max(old[1], decode))
    print(f"SmolLM2-135M Q4_1, {new_tokens} greedy tokens, best of {rounds}, load untimed")
    print("| engine | threads | prefill tok/s | decode tok/s | decode vs llama.cpp |")
    print("|---|---|---|---|---|")
    for threads in (1, 2):
        anchor = best[("llama.cpp (Q4_1, Q8 activations)", threads)][1]
        for name in tools:
            prefill, decode = best[(name, threads)]
            print(f"| {name} | {threads} | {prefill:.1f} | {decode:.1f} | {decode / anchor:.2f} |")

    encoder = encoder_rows(rounds)
    print()
    print("Every engine target, this run (ratio: piazza ÷ the best anchor; audit: ÷ generation)")
    print("| workload | threads | best anchor | piazza | ratio | target |")
    print("|---|---|---|---|---|---|")
    for workload, threads, piazza, pytorch, onnx in encoder:
        name, anchor = max(("PyTorch", pytorch), ("ONNX Runtime", onnx), key=lambda a: a[1])
        print(
            f"| MiniLM, {workload} | {threads} | {name} {anchor:.1f} sent/s | {piazza:.1f} sent/s "
            f"| {piazza / anchor:.2f} | ≥ 1.0 |"
        )
    if not encoder:
        print("| MiniLM | — | (set PIAZZA_BENCH_PYTHON and build encoder_speed) | | | ≥ 1.0 |")
    llama = "llama.cpp (Q4_1, Q8 activations)"
    for column, what, target in ((0, "prefill", "—"), (1, "greedy decode", "≥ 1.0")):
        for threads in (1, 2):
            anchor = best[(llama, threads)][column]
            piazza = best[("piazza quantized", threads)][column]
            print(
                f"| SmolLM2 Q4_1, {what}, {new_tokens} tokens | {threads} | llama.cpp "
                f"{anchor:.1f} tok/s | {piazza:.1f} tok/s | {piazza / anchor:.2f} | {target} |"
            )
    for threads in (1, 2):
        # (audit s, generation s) of each round: the best audit over the best generation,
        # as every other cell is a best of the rounds, and each round's own ratio beside it.
        timed = [a for a, _ in EXTRA.get(("quantized", threads), []) if a is not None]
        if not timed:
            continue
        audit, generation = min(a for a, _ in timed), min(g for _, g in timed)
        print(
            f"| auditor's check with trace root, {new_tokens} tokens | {threads} | — | "
            f"{audit:.3f} s ÷ generation {generation:.3f} s (each round: "
            f"{span([a / g for a, g in timed])}) | {audit / generation:.2f} | ≤ 0.25 |"
        )
    peaks = [p for t in (1, 2) for _, p in EXTRA.get(("quantized", t), [])]
    peak = max((p for p in peaks if p is not None), default=None)
    if peak is not None:
        print(f"| peak memory serving SmolLM2 (quantized) | — | — | {peak:.0f} MiB | | ≤ 223 MiB |")


if __name__ == "__main__":
    main()
