"""The official MCP Python SDK against the gateway's `/mcp` (Streamable HTTP).

    mcp.py --url http://127.0.0.1:PORT/mcp --api-key pz-... --embedding-model M \
        --fixture crates/engine/tests/fixtures/minilm_reference.json [--agent-tag TAG]

Connects (the SDK probes, then falls back to the initialize handshake), lists the tools, calls
`list_models`, `embed` (the vector must equal the MiniLM fixture's), `submit_job` then `show_job`
on the job it names, `balance`, `find_agents` when asked, and checks that a wrong argument is a
tool error, not a protocol failure. Prints one JSON summary line last.
"""

import argparse
import asyncio
import json
import os
import sys

# This file's name is the SDK's package name: import the package, not this script.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def structured(result):
    assert not result.is_error, f"tool error: {result.content}"
    assert result.structured_content is not None, result
    text = result.content[0].text
    assert json.loads(text) is not None
    return result.structured_content


async def main(args):
    with open(args.fixture) as f:
        fixture = json.load(f)
    first = next(i for i, s in enumerate(fixture["sentences"]) if s)
    sentence, expected = fixture["sentences"][first], fixture["embeddings"][first]
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {args.api_key}"})
    summary = {}
    async with http:
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(transport) as client:
            summary["protocol_version"] = client.protocol_version
            summary["server"] = client.server_info.name if client.server_info else None
            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            summary["tools"] = names
            for needed in ["list_models", "embed", "chat", "submit_job", "show_job", "balance",
                           "find_agents", "get_agent", "search_agents", "call_agent"]:
                assert needed in names, (needed, names)
            for t in tools.tools:
                assert t.input_schema["type"] == "object", t

            models = structured(await client.call_tool("list_models", {}))
            ids = [m["id"] for m in models["data"]]
            assert args.embedding_model in ids, ids

            embedded = structured(await client.call_tool(
                "embed", {"model": args.embedding_model, "input": sentence}))
            vector = embedded["data"][0]["embedding"]
            assert len(vector) == len(expected), (len(vector), len(expected))
            worst = max(abs(a - b) for a, b in zip(vector, expected))
            assert worst < 1e-5, worst
            assert embedded["piazza"], "receipts on the answer"
            summary["embed_dims"] = len(vector)

            job = structured(await client.call_tool(
                "submit_job", {"model": args.embedding_model, "input": sentence}))
            job_id = job["piazza"][0]["job"]
            shown = structured(await client.call_tool("show_job", {"id": job_id}))
            assert shown["id"] == job_id, shown
            assert shown["status"] in ("posted", "settled"), shown
            assert shown["model"] == args.embedding_model, shown
            summary["job"] = job_id
            summary["job_status"] = shown["status"]

            balance = structured(await client.call_tool("balance", {}))
            assert int(balance["balance"]) > 0, balance
            summary["balance"] = balance["balance"]

            if args.agent_tag:
                found = structured(await client.call_tool(
                    "find_agents", {"tag": args.agent_tag, "limit": 5}))
                summary["agents_found"] = [a["name"] for a in found["agents"]]

            if args.paid_agent:
                paid = structured(await client.call_tool("call_agent", {
                    "agent": args.paid_agent, "max_price": args.max_price,
                    "body": {"model": args.embedding_model, "input": sentence}}))
                assert paid["status"] == 200, paid
                assert len(paid["answer"]["data"][0]["embedding"]) == len(expected), paid
                summary["paid_agent_paid"] = paid["paid"]
                summary["paid_agent_transaction"] = paid["transaction"]

            wrong = await client.call_tool("embed", {"model": "no-such-model", "input": "x"})
            assert wrong.is_error, wrong
            summary["wrong_model_error"] = wrong.content[0].text
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--embedding-model", required=True)
    parser.add_argument("--fixture", required=True)
    parser.add_argument("--agent-tag")
    parser.add_argument("--paid-agent")
    parser.add_argument("--max-price", default="1")
    try:
        asyncio.run(main(parser.parse_args()))
    except Exception as e:  # one readable line for the Rust test's assertion message
        print(f"mcp.py failed: {type(e).__name__}: {e}", file=sys.stderr)
        raise
