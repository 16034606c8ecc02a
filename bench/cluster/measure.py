#!/usr/bin/env python3
"""Runs one `ignis bench` and says where the CPU went meanwhile (bench/cluster/run.sh).

    measure.py GROUP=PID[,PID…] GROUP~TEXT … -- ignis bench … --json

Prints one JSON object: the bench's JSON summary as "run"; "cpu_ms", the CPU time (user +
system) each group of processes used during the run, plus "bench" (the load generator) and
"measure" (this script); "others_pct", the share of the machine's CPU that processes outside
them used during the run, and "irq_pct", the share spent in interrupts and softirqs (mostly the
loopback network's), which no process is charged with (both from /proc/stat).

A group is made of the processes `GROUP=PID` names and those whose command line contains a
`GROUP~TEXT` (a node's data directory: the node and its python zygote, which is not the
node's child), with every process below them (its instances); a process belongs to the first
group that has it. /proc is read every 200 ms while the bench runs, so that processes ending
before it does (the instances of the functions it deletes) keep the CPU they used.
"""
import json
import os
import resource
import subprocess
import sys
import threading
import time

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = float(os.environ.get("MEASURE_EVERY", "0.2"))


def stat(pid):
    """(parent, CPU ticks) of a process, or None once it is gone."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def machine_ticks():
    """CPU ticks the whole machine spent so far in processes (user, nice, system), and in
    interrupts and softirqs."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[0] + f[1] + f[2], f[5] + f[6]


class Sampler:
    """The CPU ticks last seen of every process of every group."""

    def __init__(self, groups):
        self.groups = groups
        self.lines = {}  # pid -> command line, read once
        self.seen = {}  # pid -> (group, ticks)
        self.everyone = {}  # pid -> ticks, of every process

    def cmdline(self, pid):
        if pid not in self.lines:
            try:
                raw = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                raw = b""
            self.lines[pid] = raw.replace(b"\0", b" ").decode(errors="replace")
        return self.lines[pid]

    def sample(self):
        parents, ticks = {}, {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                s = stat(int(name))
                if s:
                    parents.setdefault(s[0], []).append(int(name))
                    ticks[int(name)] = s[1]
        self.everyone.update(ticks)
        me, taken = os.getpid(), set()
        for group, (pids, texts) in self.groups.items():
            # Not this process: its own command line holds the texts.
            roots = [p for p in pids if p != me]
            if texts:
                roots += [p for p in ticks if p != me and any(t in self.cmdline(p) for t in texts)]
            todo = roots
            while todo:
                p = todo.pop()
                if p in taken:
                    continue
                taken.add(p)
                todo.extend(parents.get(p, []))
                if p in ticks:
                    self.seen[p] = (group, ticks[p])


def main():
    args = sys.argv[1:]
    split = args.index("--")
    groups = {}
    for spec in args[:split]:
        if "=" in spec:
            group, pids = spec.split("=", 1)
            groups.setdefault(group, ([], []))[0].extend(int(p) for p in pids.split(",") if p)
        else:
            group, text = spec.split("~", 1)
            groups.setdefault(group, ([], []))[1].append(text)
    sampler = Sampler(groups)
    sampler.sample()
    # Processes of the groups that already exist: only what they use from now on counts.
    start_ticks = {p: t for p, (_, t) in sampler.seen.items()}
    start_everyone = dict(sampler.everyone)
    (busy_before, irq_before), started = machine_ticks(), time.monotonic()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    bench = subprocess.Popen(args[split + 1:], stdout=subprocess.PIPE)
    done = threading.Event()

    def keep_sampling():
        while not done.wait(SAMPLE_EVERY):
            sampler.sample()

    thread = threading.Thread(target=keep_sampling)
    thread.start()
    out = bench.stdout.read()
    _, status, usage = os.wait4(bench.pid, 0)
    done.set()
    thread.join()
    sampler.sample()
    busy_after, irq_after = machine_ticks()
    busy_ms = (busy_after - busy_before) * TICK_MS
    irq_ms = (irq_after - irq_before) * TICK_MS
    wall_ms = (time.monotonic() - started) * 1000
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {g: 0 for g in groups}
    for p, (group, t) in sampler.seen.items():
        cpu[group] += t - start_ticks.get(p, 0)
    cpu = {g: round(t * TICK_MS) for g, t in cpu.items()}
    cpu["bench"] = round((usage.ru_utime + usage.ru_stime) * 1000)
    cpu["measure"] = round(
        (self_after.ru_utime - self_before.ru_utime + self_after.ru_stime - self_before.ru_stime)
        * 1000
    )
    others = max(busy_ms - sum(cpu.values()), 0)
    others_pct = round(100 * others / (wall_ms * os.cpu_count()))
    irq_pct = round(100 * irq_ms / (wall_ms * os.cpu_count()))
    # Who the others were: the processes outside the groups that used the most.
    outside = [
        (t - start_everyone.get(p, 0), p)
        for p, t in sampler.everyone.items()
        if p not in sampler.seen and p not in (bench.pid, os.getpid())
    ]
    others_top = [
        {"pid": p, "cpu_ms": round(t * TICK_MS), "cmd": sampler.cmdline(p)[:80]}
        for t, p in sorted(outside, reverse=True)[:3]
    ]
    try:
        run = json.loads(out)
    except ValueError:
        run = {"error": out.decode(errors="replace")}
    print(json.dumps({"run": run, "cpu_ms": cpu, "others_pct": others_pct, "irq_pct": irq_pct,
                      "others_top": others_top, "exit": os.waitstatus_to_exitcode(status)}))


main()
