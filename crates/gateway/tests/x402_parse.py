"""The `x402` PyPI package parses the gateway's 402 answer on Piazza's network.

    x402_parse.py --url http://127.0.0.1:PORT/paid

Fetches the paid URL without payment, decodes `PAYMENT-REQUIRED` with the package's own header
decoder and validates the body with its `PaymentRequired` model. Prints one JSON summary line.
"""

import argparse
import json
import urllib.error
import urllib.request

from x402.http import PAYMENT_REQUIRED_HEADER, decode_payment_required_header
from x402.schemas import PaymentRequired


def main(args):
    try:
        urllib.request.urlopen(args.url, timeout=30)
        raise AssertionError("the paid URL answered without a payment")
    except urllib.error.HTTPError as e:
        assert e.code == 402, e.code
        header = e.headers[PAYMENT_REQUIRED_HEADER]
        body = json.loads(e.read())
    from_header = decode_payment_required_header(header)
    from_body = PaymentRequired.model_validate(body)
    assert from_header == from_body, (from_header, from_body)
    accepted = from_header.accepts[0]
    print(json.dumps({
        "x402_version": from_header.x402_version,
        "scheme": accepted.scheme,
        "network": accepted.network,
        "amount": accepted.amount,
        "asset": accepted.asset,
        "pay_to": accepted.pay_to,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    main(parser.parse_args())
