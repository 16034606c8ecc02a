#!/usr/bin/env python3
"""Cold starts of python functions through the HTTP API of a running Ignis server.

  python3 bench/cold_starts.py single URL KEY [N]   N new functions (default 30), each invoked
      once 300 ms after its deploy; tmp_mb=100, which no stem cell fits, so every invocation
      starts an instance (forked from the zygote, or a fresh interpreter with --zygote false)
  python3 bench/cold_starts.py burst URL KEY [N]    one function, N (default 40) invocations at
      once, each sleeping 2 s: N instances start together

Prints x-ignis-init-ms (instance start + code load) percentiles and end-to-end times. Standard
library only. KEY is the `key` of the CLI config `ignis serve` writes. The functions it deploys
are left in place (use a scratch data directory).
"""
import concurrent.futures
import sys
import time
import urllib.error
import urllib.request


def request(url, key, method, path, body=None, ctype="application/json"):
    r = urllib.request.Request(url + path, data=body, method=method,
                               headers={"Authorization": f"Bearer {key}", "Content-Type": ctype})
    try:
        with urllib.request.urlopen(r, timeout=120) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def deploy(url, key, name, code, query=""):
    path = (f"/v1/namespaces/default/functions/{name}?runtime=python&handler=app.handler"
            f"&filename=app.py{query}")
    status, _, body = request(url, key, "PUT", path, code, "application/octet-stream")
    if status not in (200, 201):
        sys.exit(f"deploy {name}: {status} {body[:300]!r}")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def single(url, key, n):
    inits, e2e = [], []
    for i in range(n):
        deploy(url, key, f"cold{i}", b"def handler(e, c):\n    return 1\n", "&tmp_mb=100")
        time.sleep(0.3)
        t0 = time.monotonic()
        status, headers, body = request(url, key, "POST",
                                        f"/v1/namespaces/default/functions/cold{i}/invoke", b"{}")
        e2e.append((time.monotonic() - t0) * 1000)
        if status != 200:
            sys.exit(f"invoke cold{i}: {status} {body[:300]!r}")
        inits.append(int(headers["x-ignis-init-ms"]))
    print(f"{n} cold starts, one at a time: init p50 {pct(inits, .5)} ms, p90 {pct(inits, .9)} ms;"
          f" end to end p50 {pct(e2e, .5):.1f} ms, p90 {pct(e2e, .9):.1f} ms")


def burst(url, key, n):
    deploy(url, key, "burst", b"import time\ndef handler(e, c):\n    time.sleep(2)\n    return 1\n",
           f"&max_instances={n}")

    def one(_):
        status, headers, _ = request(url, key, "POST",
                                     "/v1/namespaces/default/functions/burst/invoke", b"{}")
        return status, int(headers.get("x-ignis-init-ms", -1))

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    took = time.monotonic() - t0
    bad = [s for s, _ in results if s != 200]
    inits = [i for _, i in results]
    print(f"{n} cold starts at once: all answered in {took:.2f} s ({len(bad)} failed);"
          f" init p50 {pct(inits, .5)} ms, p90 {pct(inits, .9)} ms, max {max(inits)} ms")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("single", "burst"):
        sys.exit(__doc__)
    mode, url, key = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else (30 if mode == "single" else 40)
    (single if mode == "single" else burst)(url.rstrip("/"), key, count)
