# Ignis python bootstrap: loads a function's handler once per instance, then serves invocations.
#
# Run by the invoker as `python3 -u -B ignis_bootstrap.py`. It speaks the Ignis instance
# protocol (v1) over the Unix stream socket on fd $IGNIS_PROTOCOL_FD (default 3): READY, INIT ->
# INIT_OK | INIT_ERROR, then INVOKE -> RESULT | ERROR until EOF. The handler's prints go straight
# to fd 1/2 (the activation's logs), except when INIT asks for concurrency > 1: then invocations
# run on a pool of threads and what they print goes as LOG frames tagged with the invocation.
# See docs/runtime-protocol.md for the full description.
#
# Keep it small, dependency-free and quick to start: only cheap standard modules at the top;
# traceback and asyncio are imported when first needed.
import json
import os
import struct
import sys
import time

READY, INIT, INIT_OK, INIT_ERROR, INVOKE, RESULT, ERROR, LOG = range(1, 9)
HEADER = struct.Struct(">IBQ")  # LEN (counts KIND + ID + payload), KIND, ID
U32 = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
MAX_RESULT = 6 * 1024 * 1024
MAX_TEXT = 256 * 1024  # longest message / stack sent in an error frame
LOG_CHUNK = 1 << 20  # largest piece of output in one LOG frame
CO_VARARGS, CO_COROUTINE = 0x04, 0x80
INTERNAL = ("importlib", "/asyncio/")  # frames left out of stack traces, with our own

FD = int(os.environ.get("IGNIS_PROTOCOL_FD") or 3)
os.set_inheritable(FD, False)  # the user's child processes must not hold the channel open
os.set_blocking(FD, True)  # the invoker may have created the socket pair non-blocking
reader = open(FD, "rb", buffering=1 << 16, closefd=False)
send_lock = None  # a threading.Lock once invocations run concurrently
current = None  # contextvars.ContextVar: the invocation whose output a thread or task writes
workers = None  # the thread pool of concurrent invocations
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def send(kind, ident, payload):
    """Writes one frame; header and payload go out in one writev, without concatenating."""
    if send_lock is None:
        _send(kind, ident, payload)
    else:
        with send_lock:  # concurrent invocations answer from several threads
            _send(kind, ident, payload)


def _send(kind, ident, payload):
    header = HEADER.pack(len(payload) + 9, kind, ident)
    total, view = 13 + len(payload), memoryview(payload)
    sent = os.writev(FD, (header, view))
    while sent < total:  # a partial write, for large payloads
        if sent < 13:
            sent += os.writev(FD, (header[sent:], view))
        else:
            sent += os.write(FD, view[sent - 13 :])


def send_json(kind, ident, value):
    send(kind, ident, _dumps(value).encode())


def read_frame():
    """Returns (kind, id, payload), or None at EOF."""
    header = reader.read(13)
    if len(header) < 13:
        return None
    length, kind, ident = HEADER.unpack(header)
    if not 9 <= length <= MAX_FRAME:
        sys.stderr.write(f"ignis bootstrap: protocol error: frame of {length} bytes\n")
        sys.exit(2)
    payload = reader.read(length - 9)
    if len(payload) < length - 9:
        return None
    return kind, ident, payload


def flush_logs():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def internal(filename):
    return filename == __file__ or any(part in filename for part in INTERNAL)


def error_payload(exc):
    """{"type","message","stack"} for an exception; our own and importlib's frames left out."""
    try:
        import traceback

        tb = exc.__traceback__  # skip the frames of the bootstrap, importlib and asyncio
        while tb is not None and internal(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
        stack = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        stack = ""
    try:
        message = str(exc)
    except Exception:
        message = repr(type(exc))
    return {
        "type": type(exc).__name__,
        "message": message[:MAX_TEXT],
        "stack": stack[-MAX_TEXT:],
    }


class HandlerNotFound(Exception):
    pass


class Context:
    """The Lambda-style context: function fields are set on the class at INIT."""

    identity = None
    client_context = None

    def __init__(self, request_id, deadline_ms):
        self.aws_request_id = self.request_id = request_id
        self.deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return f"<Context {self.function_name}:{self.function_version} {self.request_id}>"


handler = None  # the user's callable
style = None  # "lambda" | "openwhisk" | "none" (openwhisk main() taking no argument)
loop = None  # asyncio loop, created when the first coroutine handler is seen
timeout_ms = 60000


def install_client(here):
    """Makes `import ignis` give the data client (ignis_client.py beside this file)."""
    path = os.path.join(here, "ignis_client.py")
    if "ignis" in sys.modules or not os.path.exists(path):
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("ignis", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["ignis"] = module


def load_handler(init):
    """Loads the handler named by INIT; returns the style. Raises on any failure."""
    global handler, style, timeout_ms
    code_dir = init["code_dir"]
    for key, value in (init.get("env") or {}).items():
        os.environ[key] = str(value)
    os.chdir(code_dir)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [code_dir] + [p for p in sys.path if p not in ("", here)]
    install_client(here)
    timeout_ms = int(init.get("timeout_ms") or 60000)
    ns, name, version = init.get("namespace", ""), init.get("function", ""), init.get("version", 0)
    Context.function_name = name
    Context.function_version = str(version)
    Context.memory_limit_in_mb = int(init.get("memory_mb") or 0)
    Context.namespace = ns
    Context.invoked_function_arn = f"arn:ignis:function:{ns}:{name}:{version}"
    Context.log_group_name = f"/ignis/{ns}/{name}"
    Context.log_stream_name = f"{version}/{os.getpid()}"

    spec = init["handler"]
    module_name, _, fn_name = spec.rpartition(".")
    if not module_name:
        module_name, fn_name = spec, "main"
    module_name = module_name.strip("/").replace("/", ".")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):  # not found itself
            path = module_name.replace(".", "/") + ".py"
            msg = f"handler module '{module_name}' not found: no {path} in {code_dir}"
            raise ModuleNotFoundError(msg, name=exc.name) from None
        raise
    fn = getattr(module, fn_name, None)
    where = getattr(module, "__file__", None) or module_name
    if fn is None:
        raise HandlerNotFound(f"handler '{spec}': no '{fn_name}' in {where}")
    if not callable(fn):
        raise HandlerNotFound(f"handler '{spec}': '{fn_name}' in {where} is not callable")
    func = getattr(fn, "__func__", fn)
    code = getattr(func, "__code__", None)
    if code is None or code.co_flags & CO_VARARGS:
        style = "lambda"
    else:
        argc = code.co_argcount - (func is not fn)
        style = "lambda" if argc >= 2 else "openwhisk" if argc == 1 else "none"
        if code.co_flags & CO_COROUTINE:
            event_loop()
    handler = fn
    return "openwhisk" if style == "none" else style


def event_loop():
    global loop
    if loop is None:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


async def _await(awaitable):
    return await awaitable


def invoke(ident, payload):
    try:
        (meta_len,) = U32.unpack_from(payload, 0)
        meta = json.loads(payload[4 : 4 + meta_len])
        body = payload[4 + meta_len :]
        event = json.loads(body) if body else {}
        if style == "lambda":
            deadline = meta.get("deadline_ms") or int(time.time() * 1000) + timeout_ms
            result = handler(event, Context(meta.get("request_id", ""), deadline))
        elif style == "openwhisk":
            result = handler(event)
        else:
            result = handler()
        if hasattr(result, "__await__"):
            result = run_coroutine(result)
    except Exception as exc:  # SystemExit / KeyboardInterrupt end the process on purpose
        answer = ERROR, error_payload(exc)
    else:
        answer = encode_result(result)
    flush_logs()
    kind, out = answer
    if kind == ERROR:
        send_json(ERROR, ident, out)
    else:
        send(RESULT, ident, out)


def encode_result(result):
    try:
        out = _dumps(result).encode()
    except MemoryError as exc:
        return ERROR, error_payload(exc)
    except Exception as exc:
        msg = f"the handler's result cannot be serialised as JSON: {exc}"
        return ERROR, {"type": "ResultNotSerializable", "message": msg[:MAX_TEXT], "stack": ""}
    if len(out) > MAX_RESULT:
        msg = f"the result is {len(out)} bytes; the limit is {MAX_RESULT} bytes"
        return ERROR, {"type": "ResultTooLarge", "message": msg, "stack": ""}
    return RESULT, out


class LogRouter:
    """sys.stdout / sys.stderr of a concurrent instance: text written while an invocation runs
    goes to the invoker as LOG frames with its id; anything else to the real stream."""

    def __init__(self, stream_byte, real):
        self.tag, self.real = bytes([stream_byte]), real
        self.encoding, self.errors = "utf-8", "replace"

    def write(self, text):
        ident = current.get()
        if ident is None:
            return self.real.write(text)
        data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
        for at in range(0, len(data), LOG_CHUNK):
            send(LOG, ident, self.tag + data[at : at + LOG_CHUNK])
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        self.real.flush()

    def isatty(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        return self.real.fileno()


def go_concurrent(n):
    """From now on invocations run on n threads; their output goes as LOG frames."""
    global send_lock, current, workers
    import contextvars
    import threading
    from concurrent.futures import ThreadPoolExecutor

    send_lock = threading.Lock()
    current = contextvars.ContextVar("ignis_invocation", default=None)
    sys.stdout, sys.stderr = LogRouter(1, sys.stdout), LogRouter(2, sys.stderr)
    workers = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ignis-invoke")


def invoke_threaded(ident, payload):
    current.set(ident)  # each worker thread has its own context
    try:
        invoke(ident, payload)
    except BaseException as exc:  # SystemExit and friends end the instance, as they would alone
        sys.__stderr__.write(f"ignis bootstrap: {type(exc).__name__} in a handler: ending\n")
        flush_logs()
        os._exit(1)
    finally:
        current.set(None)


_loop_thread = None


def run_coroutine(awaitable):
    """Runs an awaitable: on this thread's loop, or in a concurrent instance on one shared loop
    thread, with the invocation's id set in the task so that its prints are attributed."""
    if workers is None:
        return event_loop().run_until_complete(_await(awaitable))
    global _loop_thread
    import asyncio
    import threading

    with send_lock:
        if _loop_thread is None:
            shared = asyncio.new_event_loop()
            _loop_thread = threading.Thread(target=shared.run_forever, daemon=True)
            _loop_thread.loop = shared
            _loop_thread.start()
    ident = current.get()

    async def attributed():
        current.set(ident)
        return await awaitable

    return asyncio.run_coroutine_threadsafe(attributed(), _loop_thread.loop).result()


def main():
    version = sys.version.split()[0]
    send_json(READY, 0, {"runtime": "python", "version": version, "pid": os.getpid()})
    while True:
        frame = read_frame()
        if frame is None:  # the invoker is done with this instance
            flush_logs()
            os._exit(0)
        kind, ident, payload = frame
        if kind == INVOKE and handler is not None:
            if workers is None:
                invoke(ident, payload)
            else:
                workers.submit(invoke_threaded, ident, payload)
        elif kind == INIT and handler is None:
            try:
                init = json.loads(payload)
                found_style = load_handler(init)
            except Exception as exc:
                flush_logs()
                send_json(INIT_ERROR, 0, error_payload(exc))
                os._exit(1)
            flush_logs()
            if int(init.get("concurrency") or 1) > 1:
                go_concurrent(int(init["concurrency"]))
            send_json(INIT_OK, 0, {"style": found_style})
        elif kind == INVOKE:
            err = {"type": "NotInitialized", "message": "INVOKE before INIT", "stack": ""}
            send_json(ERROR, ident, err)
        else:
            sys.stderr.write(f"ignis bootstrap: protocol error: unexpected frame kind {kind}\n")
            return 2


if __name__ == "__main__":
    sys.exit(main())
