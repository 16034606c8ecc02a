"""The `ignis` module of python functions: the namespace's data from inside the sandbox.

    import ignis
    n = ignis.kv.incr("visits")
    ignis.objects.put("photos", "a.txt", b"hello")
    ignis.publish("orders", {"id": 42})

It speaks the HTTP API (docs/baas.md) at $IGNIS_API_URL with the instance's token
($IGNIS_TOKEN), both given at INIT. Standard library only; http.client is imported on first use.
"""

import json as _json
import os as _os
import threading as _threading
from urllib.parse import quote as _quote

__all__ = ["kv", "objects", "publish", "step_input", "IgnisError", "VersionConflict", "NotFound"]

_local = _threading.local()


class IgnisError(Exception):
    """An API error: `status`, `code` and `message` from the server."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class NotFound(IgnisError):
    """404: no such key, bucket or object."""


class VersionConflict(IgnisError):
    """412: a compare-and-swap's condition did not hold."""


def _conn(own=False):
    """The thread's keep-alive connection; with `own`, a new one (a streamed response holds
    its connection until it is read: the next request must not share it)."""
    import http.client
    from urllib.parse import urlsplit

    url = _os.environ.get("IGNIS_API_URL")
    if not url:
        raise IgnisError(0, "unavailable", "no IGNIS_API_URL: this instance has no data access")
    c = None if own else getattr(_local, "conn", None)
    if c is None or getattr(_local, "url", None) != url:
        u = urlsplit(url)
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=300, blocksize=1 << 20)
        if not own:
            _local.conn, _local.url = c, url
    return c


def _ns():
    return _quote(_os.environ.get("IGNIS_NAMESPACE", "default"), safe="")


def _request(method, path, body=None, headers=None, stream=False):
    """One request; retried once on a connection the server closed meanwhile."""
    h = {"Authorization": "Bearer " + _os.environ.get("IGNIS_TOKEN", "")}
    h.update(headers or {})
    for attempt in (0, 1):
        c = _conn(own=stream)
        try:
            c.request(method, path, body=body, headers=h)
            resp = c.getresponse()
            break
        except (ConnectionError, OSError) as exc:
            c.close()
            if not stream:
                _local.conn = None
            seekable = body is None or isinstance(body, (bytes, str))
            if attempt or not seekable:
                raise IgnisError(0, "unavailable", f"cannot reach the API: {exc}") from None
    if resp.status >= 400:
        raw = resp.read()
        try:
            err = _json.loads(raw)["error"]
            code, message = err.get("code", ""), err.get("message", "")
        except Exception:
            code, message = "error", raw.decode("utf-8", "replace")
        cls = {404: NotFound, 412: VersionConflict}.get(resp.status, IgnisError)
        raise cls(resp.status, code, message)
    if stream:
        return resp
    data = resp.read()
    return resp, data


def _value(v):
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return _json.dumps(v).encode()


def _query(**params):
    from urllib.parse import urlencode

    q = {k: v for k, v in params.items() if v is not None}
    return ("?" + urlencode(q)) if q else ""


class _KV:
    """The namespace's key-value store."""

    def _path(self, key):
        return f"/v1/namespaces/{_ns()}/kv/{_quote(key, safe='/')}"

    def get(self, key, default=None):
        """The value (bytes), or `default` if there is none."""
        value, _ = self.get_versioned(key)
        return default if value is None else value

    def get_json(self, key, default=None):
        """The value decoded from JSON, or `default`."""
        value = self.get(key)
        return default if value is None else _json.loads(value)

    def get_versioned(self, key):
        """(value, version), or (None, None) if there is no entry."""
        try:
            resp, data = _request("GET", self._path(key))
        except NotFound:
            return None, None
        return data, int(resp.getheader("x-ignis-version"))

    def put(self, key, value, ttl=None, if_version=None, if_absent=False):
        """Writes bytes, a string, or anything else as JSON; returns the new version. With
        `if_version` / `if_absent`, raises VersionConflict unless the entry is at that version /
        absent (compare-and-swap)."""
        q = _query(ttl=ttl, if_version=if_version, if_absent="true" if if_absent else None)
        _, data = _request("PUT", self._path(key) + q, body=_value(value))
        return _json.loads(data)["version"]

    def delete(self, key, if_version=None):
        """Deletes an entry; False if there was none."""
        try:
            _request("DELETE", self._path(key) + _query(if_version=if_version))
            return True
        except NotFound:
            return False

    def incr(self, key, by=1, ttl=None):
        """Adds `by` to an integer entry (absent: 0) atomically; returns the new value."""
        body = {"increment": by}
        if ttl is not None:
            body["ttl"] = ttl
        _, data = _request(
            "POST", self._path(key), body=_json.dumps(body), headers={"Content-Type": "application/json"}
        )
        return _json.loads(data)["value"]

    def keys(self, prefix=""):
        """Every key starting with `prefix`, in order."""
        after = None
        while True:
            q = _query(prefix=prefix or None, after=after, limit=1000)
            _, data = _request("GET", f"/v1/namespaces/{_ns()}/kv{q}")
            page = _json.loads(data)
            for e in page["keys"]:
                yield e["key"]
            after = page.get("next")
            if not after:
                return


class _Objects:
    """The namespace's object storage."""

    def _path(self, bucket, key=None):
        p = f"/v1/namespaces/{_ns()}/buckets/{_quote(bucket, safe='')}"
        return p if key is None else f"{p}/objects/{_quote(key, safe='/')}"

    def create_bucket(self, bucket):
        """Creates a bucket (nothing if it exists)."""
        _request("PUT", self._path(bucket))

    def put(self, bucket, key, data, content_type=None, metadata=None):
        """Stores bytes, a string, or a binary file object (streamed); returns the object's
        metadata (size, etag…)."""
        h = {"Content-Type": content_type or "application/octet-stream"}
        for k, v in (metadata or {}).items():
            h["x-ignis-meta-" + k.lower()] = str(v)
        if isinstance(data, str):
            data = data.encode()
        # A file object goes out in chunks (chunked transfer encoding), never read whole.
        _, body = _request("PUT", self._path(bucket, key), body=data, headers=h)
        return _json.loads(body)

    def upload_file(self, bucket, key, path, content_type=None, metadata=None):
        """Streams a local file into an object."""
        with open(path, "rb") as f:
            return self.put(bucket, key, f, content_type, metadata)

    def get(self, bucket, key):
        """The whole body (bytes). For large objects, `open`."""
        return _request("GET", self._path(bucket, key))[1]

    def open(self, bucket, key):
        """A readable binary stream of the body (call `.read(n)`, then `.close()`)."""
        return _request("GET", self._path(bucket, key), stream=True)

    def download_file(self, bucket, key, path):
        """Streams an object into a local file; returns its size."""
        resp = self.open(bucket, key)
        n = 0
        with open(path, "wb") as f:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                n += len(chunk)
        return n

    def head(self, bucket, key):
        """The object's metadata (a dict of its headers), or None if it does not exist."""
        try:
            resp, _ = _request("HEAD", self._path(bucket, key))
        except NotFound:
            return None
        return {k.lower(): v for k, v in resp.getheaders()}

    def delete(self, bucket, key):
        """Deletes an object; False if there was none."""
        try:
            _request("DELETE", self._path(bucket, key))
            return True
        except NotFound:
            return False

    def list(self, bucket, prefix=""):
        """The metadata of every object whose key starts with `prefix`, in order."""
        after = None
        while True:
            q = _query(prefix=prefix or None, after=after, limit=1000)
            _, data = _request("GET", self._path(bucket) + "/objects" + q)
            page = _json.loads(data)
            yield from page["objects"]
            after = page.get("next")
            if not after:
                return


def publish(topic, message):
    """Publishes `message` (anything JSON) to a topic of the namespace."""
    _request(
        "POST",
        f"/v1/namespaces/{_ns()}/topics/{_quote(topic, safe='')}",
        body=_json.dumps(message),
        headers={"Content-Type": "application/json"},
    )


def step_input(event):
    """The input of a workflow or sequence step: one bigger than the payload limit arrives as
    `{"ignis_input_ref": {"bucket", "key", "size"}}`, an object the engine stored; this fetches
    and decodes it. Any other event is returned as it is."""
    ref = event.get("ignis_input_ref") if isinstance(event, dict) and len(event) == 1 else None
    if not isinstance(ref, dict):
        return event
    return _json.loads(objects.get(ref["bucket"], ref["key"]))


kv = _KV()
objects = _Objects()
