"""Ignis entry points (Lambda style). Deployed once with `--web public`, so each is reached both
through the invoke API (the event is the request body) and as a web function at /fn/default/NAME
(the event is a function-URL event whose `body` is the request body as a string)."""

import json

from transform import summarize


def noop(event, context):
    return {"ok": True}


def transform(event, context):
    if isinstance(event, dict) and "requestContext" in event:
        event = json.loads(event.get("body") or "{}")
    return summarize(event)
