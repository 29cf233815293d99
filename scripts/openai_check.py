#!/usr/bin/env python3
"""Checks a Piazza gateway with the official `openai` Python client.

Usage: openai_check.py --base-url http://HOST:PORT/v1 --api-key pz-... \
           --quota-key pz-... [--fixture crates/engine/tests/fixtures/minilm_reference.json]

Embeddings (single and batch, float and base64) must match the MiniLM reference fixture
(components within 1e-5, cosine >= 0.99999) and carry their job receipts; a chat completion and a
streamed one run when the chain lists a generation model; an unknown model gives 404, a bad key
401, a key whose spend limit cannot cover a request 429 `insufficient_quota` (not retried), and
parameters the gateway cannot honour (an unknown response format, `tool_choice` without tools,
log probabilities, n > 1, streamed embeddings, structured outputs whose shortest answer exceeds
`max_tokens`) 400 naming the parameter, while harmless ones (`user`) are accepted.
Prints each check; exits non-zero on the first failure.
"""

import argparse
import json
import math
import os
import sys

try:
    import openai
    from openai import OpenAI
except ImportError:
    print("openai_check: the `openai` package is missing: pip install openai", file=sys.stderr)
    sys.exit(3)

EMBEDDING_MODEL = "all-minilm-l6-v2"
TOLERANCE = 1e-5
COSINE_MIN = 0.99999


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"ok   {message}", flush=True)


def extra(obj, name):
    """A field the OpenAI types do not declare (the gateway's `piazza` receipts)."""
    value = (getattr(obj, "model_extra", None) or {}).get(name)
    if value is None:
        value = getattr(obj, name, None)
    return value


def check_receipts(receipts, count, headers, what):
    if not isinstance(receipts, list) or len(receipts) != count:
        fail(f"{what}: expected {count} receipts in `piazza`, got {receipts!r}")
    for r in receipts:
        for field in ("job", "provider", "trace_root", "tx", "price", "height"):
            if field not in r:
                fail(f"{what}: receipt without `{field}`: {r}")
        if len(r["trace_root"]) != 64 or len(r["tx"]) != 64 or not r["provider"].startswith("pz1"):
            fail(f"{what}: malformed receipt {r}")
    if headers is not None:
        expect = {
            "x-piazza-job": ",".join(str(r["job"]) for r in receipts),
            "x-piazza-provider": ",".join(r["provider"] for r in receipts),
            "x-piazza-trace-root": ",".join(r["trace_root"] for r in receipts),
            "x-piazza-tx": ",".join(r["tx"] for r in receipts),
        }
        for name, value in expect.items():
            if headers.get(name) != value:
                fail(f"{what}: header {name} = {headers.get(name)!r}, body says {value!r}")


def compare(got, want, what):
    if len(got) != len(want):
        fail(f"{what}: {len(got)} dimensions, reference has {len(want)}")
    worst = max(abs(a - b) for a, b in zip(got, want))
    dot = sum(a * b for a, b in zip(got, want))
    cosine = dot / (math.sqrt(sum(a * a for a in got)) * math.sqrt(sum(b * b for b in want)) or 1.0)
    if worst > TOLERANCE or cosine < COSINE_MIN:
        fail(f"{what}: max |diff| {worst:.2e}, cosine {cosine:.7f}")
    return worst, cosine


def expect_error(call, status, code, what, param=None):
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        got_code = body.get("code") if "code" in body else getattr(e, "code", None)
        if e.status_code != status or (code is not None and got_code != code):
            fail(f"{what}: expected {status} {code}, got {e.status_code} {got_code}: {e}")
        if param is not None and body.get("param") != param:
            fail(f"{what}: expected the error to name `{param}`, got {body}")
        for field in ("message", "type"):
            if field not in body:
                fail(f"{what}: error body without `{field}`: {e.body}")
        ok(f"{what}: {status} {got_code}")
        return
    fail(f"{what}: expected HTTP {status}, the call succeeded")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--quota-key", required=True, help="a key whose spend limit covers no request")
    parser.add_argument("--fixture", default=os.path.join(here, "..", "crates", "engine", "tests", "fixtures", "minilm_reference.json"))
    parser.add_argument("--require-generation", action="store_true", help="fail when no generation model is listed")
    args = parser.parse_args()

    with open(args.fixture) as f:
        fixture = json.load(f)
    # The chain runs no job on an empty input (the gateway answers 400, as OpenAI does).
    kept = [i for i, s in enumerate(fixture["sentences"]) if s]
    sentences = [fixture["sentences"][i] for i in kept]
    reference = [fixture["embeddings"][i] for i in kept]
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)

    models = client.models.list()
    ids = [m.id for m in models.data]
    if EMBEDDING_MODEL not in ids:
        fail(f"/v1/models lists {ids}, not {EMBEDDING_MODEL}")
    ok(f"/v1/models: {ids}")
    generation = [m.id for m in models.data if (extra(m, "piazza") or {}).get("kind") == "generation" and (extra(m, "piazza") or {}).get("providers")]

    # One input, the client's default encoding (base64).
    raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=sentences[0])
    single = raw.parse()
    worst, cosine = compare(single.data[0].embedding, reference[0], "single embedding (base64)")
    check_receipts(extra(single, "piazza"), 1, raw.headers, "single embedding")
    if not single.usage or single.usage.prompt_tokens <= 0 or single.usage.total_tokens != single.usage.prompt_tokens:
        fail(f"single embedding: usage {single.usage}")
    ok(f"single embedding (base64): max |diff| {worst:.1e}, cosine {cosine:.7f}, {single.usage.prompt_tokens} tokens, job {extra(single, 'piazza')[0]['job']}")

    # The whole fixture as one batch, as floats.
    raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=sentences, encoding_format="float")
    batch = raw.parse()
    if [d.index for d in batch.data] != list(range(len(sentences))):
        fail(f"batch: indices {[d.index for d in batch.data]}")
    for i, d in enumerate(batch.data):
        compare(d.embedding, reference[i], f"batch embedding {i} ({sentences[i][:30]!r})")
    receipts = extra(batch, "piazza")
    check_receipts(receipts, len(sentences), raw.headers, "batch embedding")
    if len({r["job"] for r in receipts}) != len(sentences):
        fail("batch: jobs are not distinct")
    ok(f"batch of {len(sentences)} embeddings (float): all within {TOLERANCE} of the reference, {batch.usage.prompt_tokens} tokens, jobs {[r['job'] for r in receipts]}")

    if generation:
        model = generation[0]
        messages = [{"role": "system", "content": "You are a concise assistant."}, {"role": "user", "content": "What is the capital of France?"}]
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=12, temperature=0, seed=7)
        chat = raw.parse()
        text = chat.choices[0].message.content
        if not isinstance(text, str) or not text or chat.choices[0].finish_reason not in ("stop", "length"):
            fail(f"chat: {chat}")
        if not chat.usage or not (0 < chat.usage.completion_tokens <= 12):
            fail(f"chat: usage {chat.usage}")
        check_receipts(extra(chat, "piazza"), 1, raw.headers, "chat")
        r = extra(chat, "piazza")[0]
        ok(f"chat completion ({model}): {text!r}, {chat.usage.completion_tokens} tokens, finish {chat.choices[0].finish_reason}, price {int(r['price']) / 1e9:.9f} PZA, fee {int(r['fee']) / 1e9:.9f} PZA")

        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, seed=7, stream=True, stream_options={"include_usage": True})
        pieces, finish, streamed_receipts, usage = [], None, None, None
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
            streamed_receipts = extra(chunk, "piazza") or streamed_receipts
            usage = chunk.usage or usage
        if "".join(pieces) != text:
            fail(f"streamed chat: {''.join(pieces)!r} differs from the same request unstreamed {text!r}")
        if finish is None or streamed_receipts is None or usage is None:
            fail(f"streamed chat: finish {finish}, receipts {streamed_receipts}, usage {usage}")
        check_receipts(streamed_receipts, 1, None, "streamed chat")
        ok(f"streamed chat: {len(pieces)} chunks, equal to the unstreamed answer (same seed), finish {finish}")

        completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
        if not completion.choices[0].text or not (0 < completion.usage.completion_tokens <= 8):
            fail(f"completion: {completion}")
        ok(f"text completion: {completion.choices[0].text!r}")
    elif args.require_generation:
        fail("no generation model is served")
    else:
        print("skip chat, streamed chat and completions: no generation model is served on this chain", flush=True)

    # Parameters the gateway cannot honour are refused before anything is paid, naming them.
    hello = [{"role": "user", "content": "hello"}]
    chat_model = generation[0] if generation else EMBEDDING_MODEL
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    for kwargs, param in [
        # Structured outputs are served (gateway/tests/structured.rs); one whose shortest valid
        # answer cannot fit in `max_tokens` is refused before anything is paid.
        ({"tools": [tool]}, "max_tokens"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}}, "max_tokens"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
    ]:
        expect_error(lambda: client.chat.completions.create(model=chat_model, messages=hello, max_tokens=4, **kwargs), 400, None, f"chat with {param}", param=param)
    expect_error(lambda: client.embeddings.create(model=EMBEDDING_MODEL, input="x", extra_body={"stream": True}), 400, None, "streamed embeddings", param="stream")
    expect_error(lambda: client.embeddings.create(model=EMBEDDING_MODEL, input=["x", ""]), 400, None, "an empty input", param="input")
    with_user = client.embeddings.create(model=EMBEDDING_MODEL, input=sentences[0], user="someone")
    compare(with_user.data[0].embedding, reference[0], "embedding with `user`")
    ok("embedding with the harmless `user` parameter")

    expect_error(lambda: client.embeddings.create(model="no-such-model", input="x"), 404, "model_not_found", "unknown model")
    bad = OpenAI(base_url=args.base_url, api_key="pz-not-a-key", max_retries=0)
    expect_error(lambda: bad.embeddings.create(model=EMBEDDING_MODEL, input="x"), 401, "invalid_api_key", "bad key")
    # With the client's default retries: a spent limit says not to retry, so one attempt answers.
    poor = OpenAI(base_url=args.base_url, api_key=args.quota_key, max_retries=2)
    expect_error(lambda: poor.embeddings.create(model=EMBEDDING_MODEL, input="x"), 429, "insufficient_quota", "exhausted spend limit")
    try:
        poor.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input="x")
    except openai.APIStatusError as e:
        if e.response.headers.get("x-should-retry") != "false":
            fail(f"exhausted spend limit: no `x-should-retry: false` header: {dict(e.response.headers)}")
        message = (e.body or {}).get("message", "") if isinstance(e.body, dict) else ""
        if "worst-case cost" not in message:
            fail(f"exhausted spend limit: the message does not name the request's worst case: {message!r}")
        ok(f"exhausted spend limit is not retried: {message[:90]}...")
    print("openai_check: all checks passed", flush=True)


if __name__ == "__main__":
    main()
