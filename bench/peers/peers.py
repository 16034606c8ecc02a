#!/usr/bin/env python3
"""Helpers of bench/peers/run.sh: cold-start timing, a free port, waiting for an idle machine,
and the report. Standard library only, so that it runs with the system python3.

Every cold-start figure, for every platform, is taken by this one client: a new TCP connection
per request, timed from before the connect to the end of the response body.

  peers.py free-port
  peers.py quiet --max-busy PCT --timeout SECS
  peers.py spawn    --runs N --url URL [--ready-url URL] [--body F] [--auth KEY] --log F -- CMD…
  peers.py deployed --runs N --gap SECS --url URL_WITH_{name} [--body F] [--auth KEY] -- CMD_WITH_{name}…
  peers.py idle     --runs N --idle SECS --url URL [--body F] [--auth KEY]
  peers.py during   --tree SERVER_PID -- CMD…   (CMD, then the CPU share of other processes)
  peers.py report   RESULTS.jsonl
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

# --- HTTP -------------------------------------------------------------------------------------


def post(url, body=b"{}", auth=None, method="POST", timeout=30.0):
    """One request on a new connection: (status, headers, body, milliseconds)."""
    u = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    path = u.path + (f"?{u.query}" if u.query else "")
    start = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        took = (time.perf_counter() - start) * 1000.0
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, took
    finally:
        conn.close()


def poll(url, body, auth, deadline, want_ok, method="POST"):
    """Requests `url` every 2 ms until it answers (any status, or a 2xx if `want_ok`)."""
    last = None
    while time.perf_counter() < deadline:
        try:
            status, headers, data, took = post(url, body, auth, method=method, timeout=5.0)
            if not want_ok or 200 <= status < 300:
                return status, headers, data, took
            last = f"HTTP {status}: {data[:200]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.002)
    raise SystemExit(f"peers.py: {url} did not answer in time (last: {last})")


def ignis_headers(headers):
    keep = ("x-ignis-cold", "x-ignis-init-ms", "x-ignis-duration-ms")
    return {k: headers[k] for k in keep if k in headers}


def read_body(path):
    if not path:
        return b"{}"
    with open(path, "rb") as f:
        return f.read()


# --- process control --------------------------------------------------------------------------


def stop(proc, grace=15.0):
    """Stops a server this script started: SIGTERM to its own process group (its id is the
    server's pid, made by start_new_session), SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- subcommands ------------------------------------------------------------------------------


def cmd_free_port(_args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def proc_cpu():
    """{pid: (ppid, user+system ticks of the process and of its waited-for children)}."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return out


def tree(procs, root):
    kids = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in seen:
            seen.add(pid)
            todo.extend(kids.get(pid, []))
    return seen


def busy_ticks():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user, nice, system: time in processes (interrupts and softirqs left out: the loopback
    # traffic of the run itself lands there)
    return fields[0] + fields[1] + fields[2], sum(fields[:8])


def cmd_during(args):
    """Runs CMD (the load generator), then prints how much of the machine's CPU went to
    processes other than CMD and the process tree of the server at --tree, as a share of all
    cores over the run: `OTHERS {"others_pct": …}` after CMD's own output."""
    before = proc_cpu()
    b0, t0 = busy_ticks()
    proc = subprocess.Popen(args.cmd)
    proc.wait()
    b1, t1 = busy_ticks()
    after = proc_cpu()
    ours = tree(before, args.tree) | tree(after, args.tree)
    used = 0
    for pid in ours:
        if pid in after:
            used += after[pid][1] - (before[pid][1] if pid in before else 0)
    # the load generator has exited and been waited for: its ticks are in our own counters
    me = os.times()
    used += round((me.children_user + me.children_system) * os.sysconf("SC_CLK_TCK"))
    others = max(0, (b1 - b0) - used)
    print("OTHERS " + json.dumps({"others_pct": round(100.0 * others / max(1, t1 - t0), 1)}),
          flush=True)
    return proc.returncode


def cmd_quiet(args):
    """Waits until the machine was at most `max_busy` % busy for 3 seconds in a row (or the
    timeout passes), then prints what it saw: the busy share of the last second and loadavg."""
    start = time.monotonic()
    calm = 0
    busy = 100.0
    while True:
        t0, i0 = cpu_times()
        time.sleep(1.0)
        t1, i1 = cpu_times()
        busy = 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
        calm = calm + 1 if busy <= args.max_busy else 0
        waited = time.monotonic() - start
        if calm >= 3 or waited >= args.timeout:
            break
    with open("/proc/loadavg") as f:
        load = [float(x) for x in f.read().split()[:3]]
    print(json.dumps({"busy_pct": round(busy, 1), "load": load, "waited_s": round(waited),
                      "quiet": calm >= 3}))


def cmd_spawn(args):
    """Process start → first successful response, `runs` times; with --ready-url, also when
    the server first answered anything at all, and the time of the first function request."""
    body = read_body(args.body)
    log = open(args.log, "ab")
    for run in range(args.runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(args.cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out = {"run": run}
            deadline = t0 + args.timeout
            if args.ready_url:
                poll(args.ready_url, None, None, deadline, want_ok=False, method="GET")
                out["ready_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
                status, headers, data, took = post(args.url, body, args.auth)
                if not 200 <= status < 300:
                    raise SystemExit(f"peers.py: first request: HTTP {status}: {data[:200]!r}")
                out["first_request_ms"] = round(took, 2)
            else:
                status, headers, data, took = poll(args.url, body, args.auth, deadline, True)
            out["first_ok_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
            out.update(ignis_headers(headers))
            print(json.dumps(out), flush=True)
        finally:
            stop(proc)
        time.sleep(args.gap)


def cmd_deployed(args):
    """Deploys a new function (the command, with {name} replaced) and invokes it once after
    `gap` seconds: the invocation finds the code deployed and no instance running."""
    body = read_body(args.body)
    for run in range(args.runs):
        name = f"{args.prefix}{run}"
        cmd = [part.replace("{name}", name) for part in args.cmd]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        deploy_ms = (time.perf_counter() - t0) * 1000.0
        time.sleep(args.gap)
        status, headers, data, took = post(args.url.replace("{name}", name), body, args.auth)
        if not 200 <= status < 300:
            raise SystemExit(f"peers.py: {name}: HTTP {status}: {data[:200]!r}")
        out = {"run": run, "deploy_cli_ms": round(deploy_ms, 2), "first_request_ms": round(took, 2)}
        out.update(ignis_headers(headers))
        print(json.dumps(out), flush=True)


def cmd_idle(args):
    """Invokes, stays idle for `idle` seconds (past the platform's keep-alive), invokes again:
    that second request is timed, and a third right after it for comparison."""
    body = read_body(args.body)
    for run in range(args.runs):
        poll(args.url, body, args.auth, time.perf_counter() + 30, True)
        time.sleep(args.idle)
        status, headers, data, took = post(args.url, body, args.auth)
        if not 200 <= status < 300:
            raise SystemExit(f"peers.py: HTTP {status}: {data[:200]!r}")
        _, _, _, again = post(args.url, body, args.auth)
        out = {"run": run, "after_idle_ms": round(took, 2), "next_ms": round(again, 2)}
        out.update(ignis_headers(headers))
        print(json.dumps(out), flush=True)


# --- report -----------------------------------------------------------------------------------


def fmt_us(us):
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.2f} s"


def fmt_ms(ms):
    return fmt_us(ms * 1000.0)


def cmd_report(args):
    warm, cold, meta = [], [], {}
    with open(args.results) as f:
        for line in f:
            rec = json.loads(line)
            if rec["kind"] == "warm":
                warm.append(rec)
            elif rec["kind"] == "cold":
                cold.append(rec)
            elif rec["kind"] == "meta":
                meta.update(rec)
    out = []
    if meta:
        out.append(f"Machine: {meta.get('machine', '?')}")
        out.append(f"Versions: {meta.get('versions', '?')}")
        out.append("")
    out.append("### Warm invocations (wrk, closed loop; latency of successful requests)")
    out.append("")
    out.append("| platform | route | handler | conc. | requests | req/s | p50 | p90 | p99 | "
               "errors | others during | busy before / load |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in warm:
        secs = r["duration_us"] / 1e6
        errors = r["non2xx"] + r["socket_errors"]
        out.append(
            f"| {r['platform']} | {r['route']} | {r['handler']} | {r['c']} | {r['requests']:,} | "
            f"{r['requests'] / secs:,.0f} | {fmt_us(r['p50_us'])} | {fmt_us(r['p90_us'])} | "
            f"{fmt_us(r['p99_us'])} | {errors} | {r['others_pct']:.0f} % | "
            f"{r['busy_pct']:.0f} % / {r['load1']:.2f} |")
    out.append("")
    out.append("### Cold starts (one client for all: new connection per request)")
    out.append("")
    out.append("| platform | what is timed | runs | p50 | min | max | busy before / load | note |")
    out.append("|---|---|---:|---:|---:|---:|---|---|")
    for r in cold:
        v = r["samples_ms"]
        out.append(
            f"| {r['platform']} | {r['what']} | {len(v)} | {fmt_ms(statistics.median(v))} | "
            f"{fmt_ms(min(v))} | {fmt_ms(max(v))} | {r['busy_pct']:.0f} % / {r['load1']:.2f} | "
            f"{r.get('note', '')} |")
    print("\n".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd_name", required=True)
    sub.add_parser("free-port").set_defaults(fn=cmd_free_port)
    q = sub.add_parser("quiet")
    q.add_argument("--max-busy", type=float, default=10.0)
    q.add_argument("--timeout", type=float, default=120.0)
    q.set_defaults(fn=cmd_quiet)
    for name, fn in (("spawn", cmd_spawn), ("deployed", cmd_deployed), ("idle", cmd_idle)):
        s = sub.add_parser(name)
        s.add_argument("--runs", type=int, default=10)
        s.add_argument("--url", required=True)
        s.add_argument("--body")
        s.add_argument("--auth")
        s.set_defaults(fn=fn)
        if name == "spawn":
            s.add_argument("--ready-url")
            s.add_argument("--log", required=True)
            s.add_argument("--timeout", type=float, default=120.0)
            s.add_argument("--gap", type=float, default=0.5)
        if name == "deployed":
            s.add_argument("--gap", type=float, default=0.4)
            s.add_argument("--prefix", default="cold-")
        if name == "idle":
            s.add_argument("--idle", type=float, required=True)
        if name in ("spawn", "deployed"):
            s.add_argument("cmd", nargs=argparse.REMAINDER)
    d = sub.add_parser("during")
    d.add_argument("--tree", type=int, required=True)
    d.add_argument("cmd", nargs=argparse.REMAINDER)
    d.set_defaults(fn=cmd_during)
    r = sub.add_parser("report")
    r.add_argument("results")
    r.set_defaults(fn=cmd_report)
    args = p.parse_args()
    if getattr(args, "cmd", None) and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
