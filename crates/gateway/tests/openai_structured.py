#!/usr/bin/env python3
"""Structured outputs through the gateway, checked with the official `openai` client.

    openai_structured.py --base-url http://127.0.0.1:PORT/v1 --api-key pz-... --chat-model M [--count 20]

`--count` prompts across three JSON schemas (`response_format: json_schema`) and two tool sets
(`tools`, `tool_choice` auto and named), whole and streamed: every answer must parse and
validate against its schema (with `jsonschema` when installed, else the check below) and carry
its receipt. Hostile schemas (too large, too deep, unsupported keywords) must be a 400 naming
the field. The last line is a JSON summary.
"""

import argparse
import json
import sys

import openai

try:
    import jsonschema
except ImportError:
    jsonschema = None

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16},
    "age": {"type": "integer"},
    "city": {"enum": ["Paris", "Rome", "Tokyo"]}},
    "required": ["name", "age", "city"], "additionalProperties": False}
FRUITS = {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}
VERDICT = {"type": "object", "properties": {
    "answer": {"type": "boolean"}, "confidence": {"type": "number"}},
    "required": ["answer"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                   "required": ["a", "b"], "additionalProperties": False}}}


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"ok   {message}", flush=True)


def valid(value, schema):
    """The schema subset, checked here when `jsonschema` is missing."""
    if jsonschema is not None:
        try:
            jsonschema.validate(value, schema)
            return True
        except jsonschema.ValidationError:
            return False
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema["type"]
    if kind == "object":
        props = schema.get("properties", {})
        return isinstance(value, dict) and all(k in value for k in schema.get("required", [])) \
            and all(k in props and valid(v, props[k]) for k, v in value.items())
    if kind == "array":
        return isinstance(value, list) and len(value) <= schema.get("maxItems", 10**9) \
            and all(valid(v, schema["items"]) for v in value)
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", 10**9)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return False


def receipt_of(obj):
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("piazza")


def cases(count):
    formats = [
        ("person", PERSON, ["Invent a person.", "Describe a traveller.", "Who lives in Rome?"]),
        ("fruits", FRUITS, ["List fruits.", "Name red fruits.", "Three yellow fruits?"]),
        ("verdict", VERDICT, ["Is the sky blue?", "Is water dry?", "Is 7 prime?"]),
    ]
    tools = [
        ([WEATHER, ADD], "auto", ["Weather in Oslo?", "What is 2 plus 40?", "Is it raining in Lima?"]),
        ([WEATHER, ADD], {"type": "function", "function": {"name": "add"}}, ["Sum 3 and 4.", "Add ten and five."]),
    ]
    out = []
    while len(out) < count:
        for name, schema, prompts in formats:
            for p in prompts:
                out.append(("format", name, schema, p))
        for tool_list, choice, prompts in tools:
            for p in prompts:
                out.append(("tools", tool_list, choice, p))
    return out[:count]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--chat-model", required=True)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600)

    passed = 0
    for i, case in enumerate(cases(args.count)):
        stream = i % 4 == 3
        if case[0] == "format":
            _, name, schema, prompt = case
            kwargs = {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}}
        else:
            _, tool_list, choice, prompt = case
            kwargs = {"tools": tool_list, "tool_choice": choice}
        request = dict(model=args.chat_model, messages=[{"role": "user", "content": prompt}],
                       max_tokens=48, temperature=0, **kwargs)
        if stream:
            content, calls, receipt, reason = "", {}, None, None
            for chunk in client.chat.completions.create(stream=True, **request):
                receipt = receipt_of(chunk) or receipt
                for choice in chunk.choices:
                    reason = choice.finish_reason or reason
                    content += choice.delta.content or ""
                    for call in choice.delta.tool_calls or []:
                        calls[call.index] = call
            tool_calls = [c.function for c in calls.values()]
        else:
            answer = client.chat.completions.create(**request)
            receipt = receipt_of(answer)
            message = answer.choices[0].message
            reason = answer.choices[0].finish_reason
            content = message.content or ""
            tool_calls = [c.function for c in (message.tool_calls or [])]
            if tool_calls and not all(c.id.startswith("call_") for c in message.tool_calls):
                fail(f"{prompt}: tool call ids {message.tool_calls}")
        if not receipt:
            fail(f"{prompt}: no receipt")
        if case[0] == "format":
            try:
                value = json.loads(content)
            except ValueError as e:
                fail(f"{prompt}: {content!r} is not JSON ({e})")
            if not valid(value, schema):
                fail(f"{prompt}: {value} does not validate")
            ok(f"{prompt} ({'streamed' if stream else 'whole'}): {content}")
        else:
            if reason != "tool_calls" or len(tool_calls) != 1:
                fail(f"{prompt}: finish {reason}, calls {tool_calls}, content {content!r}")
            call = tool_calls[0]
            tool = next((t for t in tool_list if t["function"]["name"] == call.name), None)
            if tool is None or (isinstance(choice, dict) and call.name != choice["function"]["name"]):
                fail(f"{prompt}: called {call.name}")
            arguments = json.loads(call.arguments)
            if not valid(arguments, tool["function"]["parameters"]):
                fail(f"{prompt}: {arguments} does not validate")
            ok(f"{prompt} ({'streamed' if stream else 'whole'}): {call.name}({call.arguments})")
        passed += 1

    deep = {"type": "string"}
    for _ in range(12):
        deep = {"type": "array", "items": deep}
    hostile = [
        ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": {"type": "string", "description": "x" * 20000}}}}),
        ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": deep}}}),
        ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "re", "schema": {"type": "string", "pattern": "a+"}}}}),
        ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/x"}}}]}),
    ]
    for param, kwargs in hostile:
        try:
            client.chat.completions.create(model=args.chat_model, messages=[{"role": "user", "content": "hi"}], max_tokens=16, **kwargs)
            fail(f"hostile {param} was accepted")
        except openai.BadRequestError as e:
            if (e.body or {}).get("param") != param:
                fail(f"hostile {param}: {e.body}")
            ok(f"hostile {param}: 400 {(e.body or {}).get('message')}")
    print(json.dumps({"passed": passed, "count": args.count, "jsonschema": jsonschema is not None}))


if __name__ == "__main__":
    main()
