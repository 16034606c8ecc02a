"""functions-framework entry points (HTTP functions: a Flask request in, a response out)."""

from transform import summarize


def noop(request):
    return {"ok": True}


def transform(request):
    return summarize(request.get_json(force=True))
