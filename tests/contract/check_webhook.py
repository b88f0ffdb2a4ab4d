"""Reads webhook requests as the sink sent them and checks them with libraries that are not ours:
the Standard Webhooks reference library verifies each signature, and the CloudEvents Python SDK
parses each request (binary or structured content mode, auto-detected per the HTTP binding).

Usage: check_webhook.py REQUESTS.json SECRET
REQUESTS.json: [{"headers": {name: value}, "body": base64}, ...]
Prints, per request, {"mode", "attributes", "data"} as JSON; exits non-zero on the first
request that fails to verify or to parse.
"""

import base64
import json
import sys
from datetime import datetime

from cloudevents.core.bindings import http as ce_http
from standardwebhooks.webhooks import Webhook


def plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


def main():
    requests = json.load(open(sys.argv[1]))
    hook = Webhook(sys.argv[2])
    out = []
    for i, r in enumerate(requests):
        body = base64.b64decode(r["body"])
        headers = r["headers"]
        try:
            hook.verify(body, headers, json_parse=False)
        except Exception as e:  # noqa: BLE001 - report which request and why
            sys.exit(f"request {i}: signature does not verify: {e!r}")
        binary = any(k.lower().startswith("ce-") for k in headers)
        try:
            event = ce_http.from_http_event(ce_http.HTTPMessage(headers=headers, body=body))
        except Exception as e:  # noqa: BLE001
            sys.exit(f"request {i}: not a CloudEvent: {e!r}")
        attributes = {k: plain(v) for k, v in event.get_attributes().items() if k != "data"}
        out.append(
            {
                "mode": "binary" if binary else "structured",
                "attributes": attributes,
                "data": event.get_data(),
            }
        )
    json.dump(out, sys.stdout)


main()
