# Ignis python zygote: a warmed interpreter that forks new python instances (SOCK-style).
#
# Run by the server (as root, outside any sandbox) as
#   python3 -u -B ignis_zygote.py BOOTSTRAP_PATH_IN_SANDBOX
# with a SOCK_SEQPACKET control socket on fd 3. It imports the bootstrap's modules and common
# standard library modules once, then, for each FORK message (JSON, with descriptors attached:
# the instance's channel, stdout, stderr, then the cgroup.procs files of its sandbox):
#
#   zygote ─fork─► helper: joins the holder's cgroup and namespaces (setns), forks again
#                    └─fork─► instance: PID namespace entered; new session; fds 3/1/2 set;
#                             rlimits; capabilities dropped; unprivileged uid; no_new_privs;
#                             seccomp filters — then runs the bootstrap (READY, INIT, …)
#
# and answers {"id", "pid"} (the instance's host pid) or {"id", "error"}. The zygote is the
# instances' subreaper: it reaps them and posts {"exit": pid, "status": raw wait status}.
# Only this file's own code runs before the instance has dropped every privilege; user code is
# imported by the bootstrap at INIT, inside the sandbox.
import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys

# What the bootstrap and typical handlers import, loaded once here and shared copy-on-write by
# every instance forked from this process.
import asyncio  # noqa: F401
import base64  # noqa: F401
import collections  # noqa: F401
import concurrent.futures  # noqa: F401
import contextvars  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import hashlib  # noqa: F401
import http.client  # noqa: F401
import importlib  # noqa: F401
import logging  # noqa: F401
import re  # noqa: F401
import struct  # noqa: F401
import threading  # noqa: F401
import time  # noqa: F401
import traceback  # noqa: F401
import typing  # noqa: F401
import urllib.parse  # noqa: F401
import urllib.request  # noqa: F401
import uuid  # noqa: F401

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_SET_MODE_FILTER = 1

HERE = os.path.dirname(os.path.abspath(__file__))
BOOT_PATH = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "ignis_bootstrap.py")
with open(os.path.join(HERE, "ignis_bootstrap.py")) as f:
    BOOT = compile(f.read(), BOOT_PATH, "exec")
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def helper(req, fds, report):
    """In the first fork: enter the cgroup and namespaces, fork the instance, report its pid."""
    chan, out, err, *cgroup = fds
    for fd in cgroup:
        os.write(fd, b"0")
    ns = [os.open(f"/proc/{req['ns_pid']}/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
          for n in req["namespaces"]]
    for fd, name in zip(ns, req["namespaces"]):
        check(libc.setns(fd, 0), f"setns {name}")
    pid = os.fork()  # the first process born in the holder's PID namespace
    if pid == 0:
        instance(req, chan, out, err)
    os.write(report, f"pid {pid}".encode())


def instance(req, chan, out, err):
    """In the second fork, inside the sandbox: become the instance and run the bootstrap."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.dup2(chan, 3)
        os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.chdir("/")
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        for cap in range(64):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last one: fine
        if req.get("drop_to"):
            uid, gid = req["drop_to"]
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # from root: every capability set is cleared
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        for prog in req.get("seccomp") or []:
            raw = base64.b64decode(prog)
            buf = ctypes.create_string_buffer(raw, len(raw))
            fprog = SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
            rc = libc.syscall(ctypes.c_long(req["seccomp_nr"]),
                              ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(0),
                              ctypes.byref(fprog))
            check(rc, "seccomp")
        os.environ.clear()
        os.environ.update(req.get("env") or {})
        sys.argv = [BOOT_PATH]
        exec(BOOT, {"__name__": "__main__", "__file__": BOOT_PATH, "__builtins__": __builtins__})
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # before the bootstrap runs: say why on the instance's stderr
        try:
            os.write(2, f"ignis zygote: cannot enter the sandbox: {e}\n".encode())
        except OSError:
            pass
    os._exit(code)


def fork_instance(req, fds):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            helper(req, fds, w)
            os._exit(0)
        except BaseException as e:
            try:
                os.write(w, f"error {e}".encode())
            finally:
                os._exit(1)
    os.close(w)
    for fd in fds:
        os.close(fd)
    with os.fdopen(r, "rb") as report:
        said = report.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if said.startswith("pid "):
        return {"id": req["id"], "pid": int(said[4:])}
    return {"id": req["id"], "error": said[6:] or "the helper process died"}


def main():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    ctl = socket.socket(fileno=3)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    ctl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    instances = set()
    early = {}  # instances reaped before their pid was answered
    while True:
        ready, _, _ = select.select([ctl, wake_r], [], [])
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in instances:
                    instances.discard(pid)
                    ctl.send(json.dumps({"exit": pid, "status": status}).encode())
                else:
                    early[pid] = status
        if ctl in ready:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 16)
            if not msg:
                return 0  # the server is gone
            req = json.loads(msg)
            try:
                answer = fork_instance(req, fds)
            except Exception as e:
                answer = {"id": req.get("id"), "error": str(e)}
            ctl.send(json.dumps(answer).encode())
            if "pid" in answer:
                pid = answer["pid"]
                if pid in early:
                    ctl.send(json.dumps({"exit": pid, "status": early.pop(pid)}).encode())
                else:
                    instances.add(pid)


if __name__ == "__main__":
    sys.exit(main())
