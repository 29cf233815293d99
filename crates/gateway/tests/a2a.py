"""a2a-sdk reads an agent card the gateway renders from the chain's agent record, and the
ERC-8004 registration file beside it is checked for its shape.

    a2a.py --base-url http://127.0.0.1:PORT --agent NAME --a2a-url URL --tags t1,t2

Prints one JSON summary line last.
"""

import argparse
import asyncio
import json
import os
import sys

# This file's name is the SDK's package name: import the package, not this script.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import httpx  # noqa: E402
from a2a.client.card_resolver import A2ACardResolver  # noqa: E402


async def main(args):
    base = f"{args.base_url}/agents/{args.agent}"
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, base).get_agent_card()
        assert card.name == args.agent, card
        urls = [i.url for i in card.supported_interfaces]
        assert urls and urls[0] == args.a2a_url, urls
        skills = sorted(s.id for s in card.skills)
        assert skills == sorted(args.tags.split(",")), skills
        registration = (await http.get(f"{base}/registration.json")).json()
        assert registration["type"] == "https://eips.ethereum.org/EIPS/eip-8004#registration-v1"
        assert registration["name"] == args.agent
        names = [s["name"] for s in registration["services"]]
        assert "A2A" in names, names
        unknown = await http.get(f"{args.base_url}/agents/no-such-agent/.well-known/agent-card.json")
        assert unknown.status_code == 404, unknown.status_code
    print(json.dumps({
        "name": card.name,
        "interfaces": urls,
        "skills": skills,
        "binding": card.supported_interfaces[0].protocol_binding,
        "services": names,
        "agent_id": registration["registrations"][0]["agentId"],
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--a2a-url", required=True)
    parser.add_argument("--tags", required=True)
    asyncio.run(main(parser.parse_args()))
