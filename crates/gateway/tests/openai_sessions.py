#!/usr/bin/env python3
"""The gateway over sessions, checked with the official `openai` client.

    openai_sessions.py --base-url http://127.0.0.1:PORT/v1 --api-key pz-... --chat-model M \
        --fixture crates/engine/tests/fixtures/minilm_reference.json

A streamed chat arrives in several chunks (time to first chunk vs total printed), the last
chunk carrying the session receipt; `usage.prompt_tokens` is the prompt's token count the
provider states (streamed with `include_usage` and whole alike); embeddings equal the MiniLM reference fixture; every
answer carries its receipt (`piazza` and `x-piazza-receipt`); `x-piazza-mode: job` still runs
an on-chain job. The last line is a JSON summary for the caller (the receipts' prices).
"""

import argparse
import json
import math
import sys
import time

import openai

EMBEDDING_MODEL = "all-minilm-l6-v2"
CHAT_PROMPT = "Write three sentences about the sea."
TOLERANCE = 1e-5
COSINE_MIN = 0.99999


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"ok   {message}", flush=True)


def extra(obj, name):
    value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value if value is not None else getattr(obj, name, None)


def check_session_receipts(receipts, count, headers, what):
    if not isinstance(receipts, list) or len(receipts) != count:
        fail(f"{what}: expected {count} session receipts, got {receipts!r}")
    for r in receipts:
        for field in ("session", "seq", "provider", "trace_root", "output_hash", "units", "price", "receipt"):
            if field not in r:
                fail(f"{what}: receipt without `{field}`: {r}")
        if len(r["trace_root"]) != 64 or not r["provider"].startswith("pz1") or len(r["receipt"]) < 128:
            fail(f"{what}: malformed receipt {r}")
    if headers is not None:
        want = ",".join(r["receipt"] for r in receipts)
        if headers.get("x-piazza-receipt") != want:
            fail(f"{what}: x-piazza-receipt {headers.get('x-piazza-receipt')!r} is not the body's {want!r}")
    return sum(int(r["price"]) for r in receipts)


def compare(got, want, what):
    if len(got) != len(want):
        fail(f"{what}: {len(got)} dimensions, the reference has {len(want)}")
    worst = max(abs(a - b) for a, b in zip(got, want))
    dot = sum(a * b for a, b in zip(got, want))
    cosine = dot / (math.sqrt(sum(a * a for a in got)) * math.sqrt(sum(b * b for b in want)) or 1.0)
    if worst > TOLERANCE or cosine < COSINE_MIN:
        fail(f"{what}: max |diff| {worst:.2e}, cosine {cosine:.7f}")
    return worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--chat-model", required=True)
    parser.add_argument("--fixture", required=True)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)
    with open(args.fixture) as f:
        fixture = json.load(f)
    kept = [i for i, s in enumerate(fixture["sentences"]) if s]
    sentences = [fixture["sentences"][i] for i in kept]
    reference = [fixture["embeddings"][i] for i in kept]
    paid = 0

    # A streamed chat: content chunks as the provider generates them, the receipt last.
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=args.chat_model,
        messages=[{"role": "user", "content": CHAT_PROMPT}],
        max_tokens=48, temperature=0, stream=True, stream_options={"include_usage": True})
    first, pieces, last = None, [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.monotonic() - started
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    total = time.monotonic() - started
    if len(pieces) < 2:
        fail(f"streamed chat: {len(pieces)} content chunks")
    paid += check_session_receipts(extra(last, "piazza"), 1, None, "streamed chat")
    if not last.usage or last.usage.prompt_tokens <= 0:
        fail(f"streamed chat: usage {last.usage} has no prompt tokens")
    prompt_tokens = last.usage.prompt_tokens
    text = "".join(pieces)
    ok(f"streamed chat: first content chunk after {first * 1000:.0f} ms, last after {total * 1000:.0f} ms, "
       f"{len(pieces)} chunks, {extra(last, 'piazza')[0]['units']} tokens: {text[:60]!r}")

    # The same chat whole: the same text (temperature 0), the receipt in body and header.
    raw = client.chat.completions.with_raw_response.create(
        model=args.chat_model,
        messages=[{"role": "user", "content": CHAT_PROMPT}],
        max_tokens=48, temperature=0)
    whole = raw.parse()
    if whole.choices[0].message.content != text:
        fail(f"whole chat {whole.choices[0].message.content!r} is not the streamed {text!r}")
    paid += check_session_receipts(extra(whole, "piazza"), 1, raw.headers, "whole chat")
    if whole.usage.prompt_tokens != prompt_tokens:
        fail(f"whole chat: {whole.usage.prompt_tokens} prompt tokens, streamed {prompt_tokens}")
    if whole.usage.total_tokens != prompt_tokens + whole.usage.completion_tokens:
        fail(f"whole chat: usage {whole.usage} does not add up")
    ok(f"whole chat: the streamed text, receipt in `piazza` and x-piazza-receipt, {prompt_tokens} prompt tokens")

    # Embeddings over the session: equal to the reference.
    raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=sentences, encoding_format="float")
    batch = raw.parse()
    worst = max(compare(d.embedding, reference[i], f"embedding {i}") for i, d in enumerate(batch.data))
    paid += check_session_receipts(extra(batch, "piazza"), len(sentences), raw.headers, "embeddings")
    ok(f"{len(sentences)} embeddings over a session equal the fixture (max |diff| {worst:.1e})")

    # The on-chain job path, asked for by header.
    raw = client.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input=sentences[0], extra_headers={"x-piazza-mode": "job"})
    job = raw.parse()
    compare(job.data[0].embedding, reference[0], "embedding as a job")
    receipts = extra(job, "piazza")
    if not receipts or "job" not in receipts[0] or not raw.headers.get("x-piazza-job"):
        fail(f"x-piazza-mode: job answered without a job receipt: {receipts}")
    job_charge = int(receipts[0]["price"]) + int(receipts[0]["fee"])
    ok(f"x-piazza-mode: job ran job {receipts[0]['job']}")
    print("all checks passed")
    print(json.dumps({"session_paid": paid, "job_charge": job_charge, "ttfc_ms": first * 1000, "total_ms": total * 1000,
                      "chat_prompt": CHAT_PROMPT, "chat_prompt_tokens": prompt_tokens}))


if __name__ == "__main__":
    main()
