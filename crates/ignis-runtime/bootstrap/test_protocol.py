#!/usr/bin/env python3
"""Drives the python and node bootstraps through the Ignis instance protocol (v1).

Each case starts a bootstrap the way the invoker does (the protocol socket on fd 3, stdout and
stderr as pipes), speaks the protocol to it, and checks the frames, the logs and the exit code.
Standard library only; run as `python3 test_protocol.py [-v] [name-filter]`; exit 0 = all
passed. The protocol is described in docs/runtime-protocol.md.
"""
import concurrent.futures
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
READY, INIT, INIT_OK, INIT_ERROR, INVOKE, RESULT, ERROR, LOG = range(1, 9)
HEADER = struct.Struct(">IBQ")
U32 = struct.Struct(">I")
TIMEOUT_MS = 60000
COMMANDS = {
    "python": [sys.executable, "-u", "-B", os.path.join(HERE, "python", "ignis_bootstrap.py")],
    "node": ["node", os.path.join(HERE, "node", "ignis_bootstrap.js")],
}


class Failure(Exception):
    pass


def check(cond, what, *detail):
    if not cond:
        raise Failure(" ".join([what] + [repr(d) for d in detail]))


class Process:
    """A child started with posix_spawn (thread-safe, unlike Popen's preexec_fn): stdin from
    /dev/null, stdout and stderr to non-blocking pipes, `channel` on fd 3."""

    def __init__(self, argv, channel, env):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        high = fcntl.fcntl(channel, fcntl.F_DUPFD_CLOEXEC, 10)  # never 3 itself
        try:
            self.pid = os.posix_spawnp(argv[0], argv, env, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
                (os.POSIX_SPAWN_DUP2, high, 3),
            ])
        finally:
            for fd in (out_w, err_w, high):
                os.close(fd)
        self.stdout, self.stderr = out_r, err_r
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout):
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                return None
            time.sleep(0.005)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait(5)
        os.close(self.stdout)
        os.close(self.stderr)


class Instance:
    """One bootstrap process with the test's end of its protocol socket."""

    def __init__(self, runtime, files, nonblocking=False):
        self.runtime = runtime
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="ignis-proto-"))
        for name, text in files.items():
            path = os.path.join(self.dir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child.setblocking(not nonblocking)  # tokio hands over non-blocking socket pairs
        env = dict(os.environ, IGNIS_PROTOCOL_FD="3")
        try:
            self.proc = Process(COMMANDS[runtime], child.fileno(), env)
        finally:
            child.close()
        self.sock.settimeout(5)
        self.out = self.err = b""
        self.next_id = 1

    # -- frames
    def send(self, kind, ident, payload):
        self.sock.sendall(HEADER.pack(len(payload) + 9, kind, ident) + payload)

    def recv_exact(self, n, timeout=5):
        """Reads n bytes of the channel, reading the log pipes meanwhile (as the invoker does)."""
        buf = bytearray()
        end = time.monotonic() + timeout
        while len(buf) < n:
            ready, _, _ = select.select([self.sock, self.proc.stdout, self.proc.stderr], [], [],
                                        max(0, end - time.monotonic()))
            if not ready:
                raise Failure(f"no frame within {timeout}s")
            if self.proc.stdout in ready or self.proc.stderr in ready:
                self.logs()
            if self.sock in ready:
                chunk = self.sock.recv(n - len(buf))
                if not chunk:
                    return None
                buf += chunk
        return bytes(buf)

    def frame(self):
        """(kind, id, payload) of the next frame, or None at EOF."""
        header = self.recv_exact(13)
        if header is None:
            return None
        length, kind, ident = HEADER.unpack(header)
        check(9 <= length <= 16 * 1024 * 1024, "frame length out of bounds", length)
        payload = self.recv_exact(length - 9)
        check(payload is not None, "EOF inside a frame")
        return kind, ident, payload

    def expect(self, kind, ident=None):
        f = self.frame()
        check(f is not None, f"EOF while waiting for frame kind {kind}; stderr:", self.logs()[1])
        check(f[0] == kind, f"expected frame kind {kind}, got", f[0], f[2][:2000], self.logs()[1])
        if ident is not None:
            check(f[1] == ident, "answer has the wrong id", f[1], ident)
        return f[2]

    # -- protocol steps
    def ready(self):
        return json.loads(self.expect(READY, 0))

    def init(self, handler, env=None, **extra):
        msg = {
            "code_dir": self.dir,
            "handler": handler,
            "namespace": "default",
            "function": "hello",
            "version": 3,
            "memory_mb": 256,
            "timeout_ms": TIMEOUT_MS,
            "env": env or {},
        }
        msg.update(extra)
        self.send(INIT, 0, json.dumps(msg).encode())
        f = self.frame()
        check(f is not None, "EOF after INIT; stderr:", self.logs()[1])
        check(f[1] == 0, "INIT answer id must be 0", f[1])
        return f[0], json.loads(f[2])

    def start(self, handler, env=None):
        """READY + INIT, expecting INIT_OK; returns the style."""
        self.ready()
        kind, body = self.init(handler, env)
        check(kind == INIT_OK, "expected INIT_OK, got", kind, body)
        return body["style"]

    def invoke_frame(self, event, ident, raw=None, deadline_in=TIMEOUT_MS):
        meta = json.dumps({
            "request_id": "%032x" % ident,
            "deadline_ms": int(time.time() * 1000) + deadline_in,
        }).encode()
        body = raw if raw is not None else json.dumps(event).encode()
        return HEADER.pack(9 + 4 + len(meta) + len(body), INVOKE, ident) + U32.pack(len(meta)) + meta + body

    def invoke(self, event=None, raw=None, ident=None):
        """Sends one INVOKE; returns (kind, decoded payload)."""
        if ident is None:
            ident, self.next_id = self.next_id, self.next_id + 1
        self.sock.sendall(self.invoke_frame(event, ident, raw))
        f = self.frame()
        check(f is not None, "EOF instead of an answer; stderr:", self.logs()[1])
        check(f[0] in (RESULT, ERROR), "unexpected answer kind", f[0])
        check(f[1] == ident, "answer has the wrong id", f[1], ident)
        return f[0], json.loads(f[2])

    def result(self, event=None, **kw):
        kind, body = self.invoke(event, **kw)
        check(kind == RESULT, "expected RESULT, got ERROR", body)
        return body

    def error(self, event=None, **kw):
        kind, body = self.invoke(event, **kw)
        check(kind == ERROR, "expected ERROR, got RESULT", body)
        check(set(body) >= {"type", "message", "stack"}, "error payload lacks fields", body)
        return body

    # -- logs and exit
    def logs(self):
        """Everything on stdout / stderr so far, read without blocking."""
        for name in ("out", "err"):
            fd = self.proc.stdout if name == "out" else self.proc.stderr
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                setattr(self, name, getattr(self, name) + chunk)
        return self.out.decode(errors="replace"), self.err.decode(errors="replace")

    def wait(self, timeout=5):
        code = self.proc.wait(timeout)
        if code is None:
            raise Failure(f"instance did not exit within {timeout}s")
        return code

    def close(self):
        self.sock.close()
        self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- the functions under test

PY_APP = r'''
import os, sys
print("module loaded")
count = 0

def handler(event, context):
    global count
    count += 1
    print("hello from handler", count)
    print("to stderr", file=sys.stderr)
    names = ["aws_request_id", "request_id", "function_name", "function_version",
             "memory_limit_in_mb", "namespace", "deadline_ms", "invoked_function_arn",
             "log_group_name", "log_stream_name"]
    ctx = {n: getattr(context, n) for n in names}
    ctx["remaining"] = context.get_remaining_time_in_millis()
    return {"event": event, "count": count, "cwd": os.getcwd(), "ctx": ctx,
            "env": {k: os.environ.get(k) for k in ("GREETING", "IGNIS_FUNCTION_NAME")}}

def main(args):
    return {"greeting": "Hello " + args.get("name", "stranger")}

def echo(args):
    return args

def fail(event, context):
    raise ValueError("bad input: " + str(event.get("n")))

def oom(event, context):
    raise MemoryError()

def exit_now(event, context):
    sys.exit(3)

def too_large(event, context):
    return "x" * (7 * 1024 * 1024)

def not_json(event, context):
    return {"when": object()}

def nothing(event, context):
    print("returning None")

def chatty(event, context):
    for i in range(event["lines"]):
        print(f"line {i:05d} " + "." * 90)
    return "done"

class Greeter:
    def greet(self, event, context):
        return "bound " + context.function_name

class Callable:
    def __call__(self, event, context):
        return "callable " + context.request_id

greet = Greeter().greet
callable_obj = Callable()
value = 42
'''

PY_ASYNC = r'''
import asyncio
async def handler(event, context):
    await asyncio.sleep(0.01)
    return {"async": True, "loop": id(asyncio.get_running_loop())}
'''

NODE_APP = r'''
let count = 0;
console.log('module loaded');
exports.handler = async (event, context) => {
  count += 1;
  console.log('hello from handler', count);
  console.error('to stderr');
  const names = ['awsRequestId', 'requestId', 'functionName', 'functionVersion', 'memoryLimitInMB',
    'namespace', 'deadlineMs', 'invokedFunctionArn', 'callbackWaitsForEmptyEventLoop'];
  const ctx = Object.fromEntries(names.map((n) => [n, context[n]]));
  ctx.remaining = context.getRemainingTimeInMillis();
  return { event, count, cwd: process.cwd(), ctx,
    env: { GREETING: process.env.GREETING, IGNIS_FUNCTION_NAME: process.env.IGNIS_FUNCTION_NAME } };
};
exports.main = function main(args) { return { greeting: 'Hello ' + (args.name || 'stranger') }; };
exports.echo = (args) => args;
exports.sync = (event, context) => 'sync ' + context.functionName;
exports.fail = async (event, context) => { throw new TypeError('bad input: ' + event.n); };
class ValidationError extends Error {}
exports.custom = (event, context) => { throw new ValidationError('not valid'); };
exports.throwString = (event, context) => { throw 'boom'; };
exports.later = async (event, context) => { await new Promise((r) => setTimeout(r, 10)); return { later: true }; };
exports.callback = (event, context, callback) => { setTimeout(() => callback(null, { cb: event.n }), 5); };
exports.callbackError = (event, context, callback) => { callback(new RangeError('cb failed')); };
exports.tooLarge = async () => 'x'.repeat(7 * 1024 * 1024);
exports.bigint = async () => ({ n: 10n });
exports.circular = async () => { const o = {}; o.self = o; return o; };
exports.chatty = (event, context) => {
  for (let i = 0; i < event.lines; i++) console.log(`line ${String(i).padStart(5, '0')} ` + '.'.repeat(90));
  return 'done';
};
exports.nothing = async (event, context) => { console.log('returning undefined'); };
exports.crash = (event, context) => { setTimeout(() => { throw new Error('async crash'); }, 1); return new Promise(() => {}); };
exports.value = 42;
'''

NODE_ESM = r'''
import { setTimeout as sleep } from 'node:timers/promises';
let count = 0;
export async function handler(event, context) {
  await sleep(1);
  count += 1;
  return { esm: true, count, name: context.functionName };
}
export default function main(args) { return { esmDefault: args.x }; }
'''

NODE_CJS_OBJECT = r'''
function handler(event, context) { return { cjs: true, name: context.functionName }; }
module.exports = { handler };
'''

# ---------------------------------------------------------------- cases

CASES = []


def case(*runtimes):
    def register(fn):
        for rt in runtimes or ("python", "node"):
            CASES.append((f"{rt}: {fn.__name__}", rt, fn))
        return fn
    return register


def app(rt):
    return {"app.py": PY_APP} if rt == "python" else {"app.js": NODE_APP}


def write(inst, files):
    for name, text in files.items():
        path = os.path.join(inst.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def ext(rt):
    return "py" if rt == "python" else "js"


@case()
def ready_frame(inst, rt):
    ready = inst.ready()
    check(ready.get("runtime") == rt, "READY runtime", ready)
    check(ready.get("pid") == inst.proc.pid, "READY pid", ready, inst.proc.pid)
    check(isinstance(ready.get("version"), str) and ready["version"][:1].isdigit(), "READY version", ready)


@case()
def lambda_style_context_env_and_logs(inst, rt):
    env = {"GREETING": "hi there", "IGNIS_FUNCTION_NAME": "hello"}
    check(inst.start("app.handler", env) == "lambda", "style should be lambda")
    before = time.time() * 1000
    body = inst.result({"name": "ada", "nested": [1, 2.5, None, "é"]}, ident=7)
    check(body["event"] == {"name": "ada", "nested": [1, 2.5, None, "é"]}, "event round trip", body)
    check(body["env"] == env, "INIT env visible to the handler", body["env"])
    check(body["cwd"] == inst.dir, "cwd is the code dir", body["cwd"], inst.dir)
    ctx = body["ctx"]
    req = "%032x" % 7
    if rt == "python":
        want = {"aws_request_id": req, "request_id": req, "function_name": "hello",
                "function_version": "3", "memory_limit_in_mb": 256, "namespace": "default",
                "invoked_function_arn": "arn:ignis:function:default:hello:3"}
        deadline = ctx["deadline_ms"]
    else:
        want = {"awsRequestId": req, "requestId": req, "functionName": "hello",
                "functionVersion": "3", "memoryLimitInMB": "256", "namespace": "default",
                "invokedFunctionArn": "arn:ignis:function:default:hello:3",
                "callbackWaitsForEmptyEventLoop": True}
        deadline = ctx["deadlineMs"]
    for k, v in want.items():
        check(ctx.get(k) == v, f"context {k}", ctx.get(k), v)
    check(0 < ctx["remaining"] <= TIMEOUT_MS, "remaining time in (0, timeout]", ctx["remaining"])
    check(abs(deadline - (before + TIMEOUT_MS)) < 2000, "deadline from INVOKE meta", deadline)
    out, err = inst.logs()  # read right after RESULT: the logs must already be in the pipes
    check("module loaded" in out, "module-level output on stdout", out)
    check("hello from handler 1" in out, "handler output on stdout before RESULT", out)
    check("to stderr" in err, "handler stderr output before RESULT", err)


@case()
def warm_reuse_keeps_module_state(inst, rt):
    inst.start("app.handler")
    counts = [inst.result({}, ident=(1 << 40) + i)["count"] for i in range(3)]
    check(counts == [1, 2, 3], "module state kept across invocations", counts)
    check(inst.logs()[0].count("module loaded") == 1, "module loaded once", inst.logs()[0])


@case()
def openwhisk_style(inst, rt):
    check(inst.start("app.main") == "openwhisk", "style should be openwhisk")
    check(inst.result({"name": "ada"}) == {"greeting": "Hello ada"}, "openwhisk result")
    check(inst.result(raw=b"") == {"greeting": "Hello stranger"}, "empty event is {}")


@case()
def default_export_is_main(inst, rt):
    handler = "app" if rt == "python" else "index"
    files = {"app.py": PY_APP} if rt == "python" else {"index.js": NODE_APP}
    write(inst, files)
    check(inst.start(handler) == "openwhisk", "a handler without export means main")
    check(inst.result({"name": "bo"}) == {"greeting": "Hello bo"}, "main called")


@case()
def large_event_round_trip(inst, rt):
    inst.start("app.echo")
    event = {"blob": "é" * (600 * 1024), "n": list(range(1000))}
    check(inst.result(event) == event, "1.2 MB event echoed back")


@case()
def pipelined_and_split_frames_keep_ids(inst, rt):
    inst.start("app.echo")
    two = inst.invoke_frame({"n": 1}, 11) + inst.invoke_frame({"n": 2}, 12)
    inst.sock.sendall(two)  # two frames in one write
    for ident, n in ((11, 1), (12, 2)):
        check(json.loads(inst.expect(RESULT, ident)) == {"n": n}, "pipelined answer", ident)
    frame = inst.invoke_frame({"n": 3}, 13)
    for piece in (frame[:2], frame[2:7], frame[7:20], frame[20:]):  # one frame in pieces
        inst.sock.sendall(piece)
        time.sleep(0.01)
    check(json.loads(inst.expect(RESULT, 13)) == {"n": 3}, "split frame answered")


@case()
def handler_exception_is_an_error(inst, rt):
    inst.start("app.fail")
    err = inst.error({"n": 5})
    want = "ValueError" if rt == "python" else "TypeError"
    check(err["type"] == want, "error type", err)
    check(err["message"] == "bad input: 5", "error message", err)
    check(f"app.{ext(rt)}" in err["stack"] and "fail" in err["stack"], "stack names the code", err)
    if rt == "python":
        check(err["stack"].startswith("Traceback"), "python traceback", err["stack"])
        check("ignis_bootstrap" not in err["stack"], "bootstrap frames left out", err["stack"])
    check(inst.error({"n": 6})["message"] == "bad input: 6", "instance usable after an error")


@case("node")
def node_error_shapes(inst, rt):
    inst.start("app.custom")
    err = inst.error({})
    check(err["type"] == "ValidationError" and err["message"] == "not valid", "subclass name", err)


@case("node")
def node_thrown_string(inst, rt):
    inst.start("app.throwString")
    err = inst.error({})
    check(err["type"] == "Error" and err["message"] == "boom", "thrown non-Error", err)


@case()
def async_handler(inst, rt):
    if rt == "python":
        write(inst, {"aio.py": PY_ASYNC})
        check(inst.start("aio.handler") == "lambda", "async def style")
        a, b = inst.result({}), inst.result({})
        check(a["async"] and a["loop"] == b["loop"], "async result, one loop reused", a, b)
    else:
        check(inst.start("app.later") == "lambda", "async style")
        check(inst.result({}) == {"later": True}, "async result")


@case("node")
def node_callback_style(inst, rt):
    check(inst.start("app.callback") == "lambda", "callback handler reported as lambda")
    check(inst.result({"n": 4}) == {"cb": 4}, "callback result")
    check(inst.result({"n": 5}) == {"cb": 5}, "callback result, second call")


@case("node")
def node_callback_error(inst, rt):
    inst.start("app.callbackError")
    err = inst.error({})
    check(err["type"] == "RangeError" and err["message"] == "cb failed", "callback(err)", err)


@case("node")
def node_sync_lambda(inst, rt):
    check(inst.start("app.sync") == "lambda", "sync lambda style")
    check(inst.result({}) == "sync hello", "sync return value")


@case()
def none_result_is_null(inst, rt):
    inst.start("app.nothing")
    check(inst.result({}) is None, "None/undefined becomes null")
    check("returning" in inst.logs()[0], "log line before the answer", inst.logs())


@case()
def many_logs_complete_before_answer(inst, rt):
    inst.start("app.chatty")
    check(inst.result({"lines": 5000}) == "done", "chatty result")
    out = inst.logs()[0]  # nothing more is read after the answer: all of it must be there
    lines = [l for l in out.splitlines() if l.startswith("line ")]
    check(len(lines) == 5000 and lines[-1].startswith("line 04999"), "all 500 KB of logs", len(lines))


@case()
def result_too_large(inst, rt):
    inst.start("app.too_large" if rt == "python" else "app.tooLarge")
    err = inst.error({})
    check(err["type"] == "ResultTooLarge", "type", err)
    check(str(7 * 1024 * 1024 + 2) in err["message"], "message gives the size", err)
    err = inst.error({})  # the instance stays usable
    check(err["type"] == "ResultTooLarge", "second invocation answered", err)


@case()
def result_not_serializable(inst, rt):
    inst.start("app.not_json" if rt == "python" else "app.bigint")
    err = inst.error({})
    check(err["type"] == "ResultNotSerializable", "type", err)
    check(inst.error({})["type"] == "ResultNotSerializable", "instance usable afterwards")


@case("node")
def node_circular_result(inst, rt):
    inst.start("app.circular")
    check(inst.error({})["type"] == "ResultNotSerializable", "circular object")


@case()
def init_syntax_error(inst, rt):
    files = {"bad.py": "def handler(event, context)\n    return 1\n"} if rt == "python" else \
        {"bad.js": "exports.handler = async (event) => {\n  return {;\n};\n"}
    write(inst, files)
    inst.ready()
    kind, err = inst.init("bad.handler")
    check(kind == INIT_ERROR, "INIT_ERROR expected", kind, err)
    check(err["type"] == "SyntaxError", "type", err)
    check(f"bad.{ext(rt)}" in err["stack"], "stack names the file", err)
    if rt == "python":
        check("line 1" in err["stack"], "stack gives the line", err)
    check(inst.wait() == 1, "instance exits 1 after INIT_ERROR")


@case("node")
def node_esm_syntax_error(inst, rt):
    write(inst, {"bad.mjs": "export const handler = async (event) => {\n  return {;\n};\n"})
    inst.ready()
    kind, err = inst.init("bad.handler")
    check(kind == INIT_ERROR and err["type"] == "SyntaxError", "INIT_ERROR SyntaxError", kind, err)
    check("bad.mjs:2" in err["stack"], "stack gives the file and line", err)
    check(inst.wait() == 1, "instance exits 1 after INIT_ERROR")


@case()
def init_missing_handler_function(inst, rt):
    inst.ready()
    kind, err = inst.init("app.nothere")
    check(kind == INIT_ERROR and err["type"] == "HandlerNotFound", "HandlerNotFound", kind, err)
    check("nothere" in err["message"] and f"app.{ext(rt)}" in err["message"], "message", err)
    check(inst.wait() == 1, "instance exits 1 after INIT_ERROR")


@case()
def init_handler_not_callable(inst, rt):
    inst.ready()
    kind, err = inst.init("app.value")
    check(kind == INIT_ERROR and err["type"] == "HandlerNotFound", "not callable", kind, err)
    check("value" in err["message"] and "not" in err["message"], "message", err)


@case()
def init_missing_module(inst, rt):
    inst.ready()
    kind, err = inst.init("nomod.handler")
    check(kind == INIT_ERROR and err["type"] == "ModuleNotFoundError", "missing module", kind, err)
    check("nomod" in err["message"] and inst.dir in err["message"], "message", err)
    check(inst.wait() == 1, "instance exits 1 after INIT_ERROR")


@case()
def init_import_error_in_user_code(inst, rt):
    files = {"dep.py": "import not_a_real_module\ndef main(a):\n    return a\n"} if rt == "python" \
        else {"dep.js": "require('not-a-real-module');\nexports.main = (a) => a;\n"}
    write(inst, files)
    inst.ready()
    kind, err = inst.init("dep.main")
    check(kind == INIT_ERROR, "INIT_ERROR expected", kind, err)
    check("not_a_real_module" in err["message"] or "not-a-real-module" in err["message"], "msg", err)
    check("dep." in err["stack"], "stack names the importing file", err)


@case()
def eof_exits_zero(inst, rt):
    inst.start("app.handler")
    inst.result({})
    inst.sock.shutdown(socket.SHUT_WR)
    check(inst.wait() == 0, "exit code 0 on EOF")


@case()
def nonblocking_channel(inst, rt):
    inst.start("app.echo")
    check(inst.result({"big": "y" * 300000}) == {"big": "y" * 300000}, "echo over non-blocking fd")
    inst.sock.close()
    check(inst.wait() == 0, "exit 0 on EOF")


nonblocking_channel.nonblocking = True  # the instance's end of the socket pair is O_NONBLOCK


@case()
def invoke_before_init(inst, rt):
    inst.ready()
    err = inst.error({})
    check(err["type"] == "NotInitialized", "INVOKE before INIT", err)


@case("python")
def python_memory_error(inst, rt):
    inst.start("app.oom")
    check(inst.error({})["type"] == "MemoryError", "MemoryError type")


@case("python")
def python_system_exit_ends_process(inst, rt):
    inst.start("app.exit_now")
    inst.sock.sendall(inst.invoke_frame({}, 1))
    check(inst.frame() is None, "no answer: the process ended")
    check(inst.wait() == 3, "exit code of sys.exit", inst.proc.returncode)


@case("python")
def python_dotted_and_slash_modules(inst, rt):
    write(inst, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "from . import helper\ndef fn(a):\n    return helper.X\n",
        "pkg/sub/helper.py": "X = 'dotted'\n",
    })
    check(inst.start("pkg.sub.mod.fn") == "openwhisk", "dotted module")
    check(inst.result({}) == "dotted", "dotted module result")


@case("python")
def python_slash_path(inst, rt):
    write(inst, {"src/mod.py": "def handler(event, context):\n    return 'slash ' + context.function_name\n"})
    check(inst.start("src/mod.handler") == "lambda", "slash path module")
    check(inst.result({}) == "slash hello", "slash path result")


@case("python")
def python_bound_method(inst, rt):
    check(inst.start("app.greet") == "lambda", "bound method with (self, event, context)")
    check(inst.result({}) == "bound hello", "bound method result")


@case("python")
def python_callable_object(inst, rt):
    check(inst.start("app.callable_obj") == "lambda", "callable object falls back to lambda")
    check(inst.result({}, ident=9) == "callable " + "%032x" % 9, "callable object result")


@case("node")
def node_esm_module(inst, rt):
    write(inst, {"esm.mjs": NODE_ESM})
    check(inst.start("esm.handler") == "lambda", "ESM handler style")
    check(inst.result({}) == {"esm": True, "count": 1, "name": "hello"}, "ESM result")
    check(inst.result({})["count"] == 2, "ESM module state kept")


@case("node")
def node_esm_default_export(inst, rt):
    write(inst, {"esm.mjs": NODE_ESM})
    check(inst.start("esm.default") == "openwhisk", "default export")
    check(inst.result({"x": 1}) == {"esmDefault": 1}, "default export result")


@case("node")
def node_cjs_module_exports_object(inst, rt):
    write(inst, {"lib/fn.cjs": NODE_CJS_OBJECT})
    check(inst.start("lib/fn.handler") == "lambda", "module.exports = { handler } in lib/fn.cjs")
    check(inst.result({}) == {"cjs": True, "name": "hello"}, "cjs result")


@case("node")
def node_file_name_with_dots(inst, rt):
    write(inst, {"my.app.js": "exports.handler = async (e, c) => 'dotted file';\n"})
    check(inst.start("my.app.handler") == "lambda", "file my.app.js")
    check(inst.result({}) == "dotted file", "dotted file result")


@case("node")
def node_uncaught_exception_crashes(inst, rt):
    inst.start("app.crash")
    inst.sock.sendall(inst.invoke_frame({}, 1))
    check(inst.frame() is None, "no answer: the process crashed")
    check(inst.wait() == 1, "exit code 1", inst.proc.returncode)
    check("async crash" in inst.logs()[1], "crash printed to stderr", inst.logs()[1])


CONCURRENT_PY = r'''
import asyncio, sys, time

def slow(event, context):
    print("start", event["n"])
    time.sleep(0.5)
    print("end", event["n"], file=sys.stderr)
    return event["n"]

async def aslow(event, context):
    print("start", event["n"])
    await asyncio.sleep(0.5)
    print("end", event["n"], file=sys.stderr)
    return event["n"]

def outside(event, context):
    sys.__stdout__.write("raw write\n")
    return "ok"
'''

CONCURRENT_NODE = r'''
exports.slow = async (event) => {
  console.log('start', event.n);
  await new Promise((resolve) => setTimeout(resolve, 500));
  console.error('end', event.n);
  return event.n;
};
'''


def run_concurrently(inst, rt, handler, n=4):
    """INIT with concurrency n, n overlapping INVOKEs; checks they overlap and that each one's
    output comes back as its own LOG frames, none on the pipes."""
    write(inst, {f"conc.{ext(rt)}": CONCURRENT_PY if rt == "python" else CONCURRENT_NODE})
    inst.ready()
    kind, body = inst.init(handler, concurrency=n)
    check(kind == INIT_OK, "expected INIT_OK", body)
    started = time.monotonic()
    for i in range(1, n + 1):
        inst.sock.sendall(inst.invoke_frame({"n": i}, i))
    results, logs = {}, {i: {1: "", 2: ""} for i in range(1, n + 1)}
    while len(results) < n:
        f = inst.frame()
        check(f is not None, "EOF before every answer; stderr:", inst.logs()[1])
        kind, ident, payload = f
        check(ident in logs, "frame for an unknown invocation", kind, ident)
        if kind == LOG:
            check(payload[:1] in (b"\x01", b"\x02"), "LOG frame names a stream", payload[:10])
            check(ident not in results, "LOG frame after the answer", ident)
            logs[ident][payload[0]] += payload[1:].decode()
        else:
            check(kind == RESULT, "expected RESULT", kind, payload)
            results[ident] = json.loads(payload)
    elapsed = time.monotonic() - started
    check(results == {i: i for i in range(1, n + 1)}, "every invocation answered", results)
    check(elapsed < 1.5, f"{n} invocations of 0.5 s overlapped", elapsed)
    for i in range(1, n + 1):
        check(logs[i][1] == f"start {i}\n", "stdout of invocation", i, logs[i])
        check(logs[i][2] == f"end {i}\n", "stderr of invocation", i, logs[i])
    check(inst.logs() == ("", ""), "nothing of the handlers on the pipes", inst.logs())


@case()
def concurrent_invocations_overlap_with_their_own_logs(inst, rt):
    run_concurrently(inst, rt, "conc.slow")


@case("python")
def concurrent_coroutine_handlers_share_one_loop(inst, rt):
    run_concurrently(inst, rt, "conc.aslow", n=8)


@case("python")
def concurrent_output_outside_print_goes_to_the_pipe(inst, rt):
    write(inst, {"conc.py": CONCURRENT_PY})
    inst.ready()
    kind, _ = inst.init("conc.outside", concurrency=2)
    check(kind == INIT_OK, "expected INIT_OK")
    check(inst.result({}) == "ok", "result")
    time.sleep(0.05)
    check("raw write" in inst.logs()[0], "a raw write to fd 1 is on the pipe", inst.logs())


def run_case(name, rt, fn):
    """Runs one case on a fresh instance; returns None when it passed, else what went wrong."""
    inst = Instance(rt, app(rt), nonblocking=getattr(fn, "nonblocking", False))
    try:
        fn(inst, rt)
        return None
    except Exception as exc:
        what = str(exc) if isinstance(exc, Failure) else f"{type(exc).__name__}: {exc}"
        err = inst.logs()[1].strip()
        return what + ("\n  stderr: " + err[-2000:].replace("\n", "\n  ") if err else "")
    finally:
        inst.close()


def main(argv):
    verbose = "-v" in argv
    only = [a for a in argv if not a.startswith("-")]
    have_node = shutil.which("node") is not None
    if not have_node:
        print("node not found on PATH: node cases skipped")
    selected = [c for c in CASES if (c[1] != "node" or have_node)
                and (not only or any(o in c[0] for o in only))]
    started = time.time()
    # Cases are independent (one instance and one temp dir each): run a few at once.
    workers = max(1, min(8, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda c: run_case(*c), selected))
    failed = 0
    for (name, _, _), problem in zip(selected, outcomes):
        if problem is not None:
            failed += 1
            print(f"FAIL {name}: {problem}")
        elif verbose:
            print(f"ok   {name}")
    if verbose:
        print(f"took {time.time() - started:.1f}s")
    print(f"{len(selected) - failed} passed, {failed} failed")
    return 1 if failed or not selected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
