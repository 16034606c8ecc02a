// Ignis node bootstrap: loads a function's handler once per instance, then serves invocations.
//
// Run by the invoker as `node ignis_bootstrap.js`. It speaks the Ignis instance protocol (v1)
// over the Unix stream socket on fd $IGNIS_PROTOCOL_FD (default 3): READY, INIT -> INIT_OK |
// INIT_ERROR, then INVOKE -> RESULT | ERROR until EOF. console.log and friends go straight to
// fd 1/2 (the activation's logs), except when INIT asks for concurrency > 1: then invocations
// overlap, and what each writes goes as LOG frames tagged with its id (AsyncLocalStorage
// follows an invocation through its awaits). See docs/runtime-protocol.md for the full
// description.
//
// Standard library only. Works whether node treats this file as CommonJS or as an ES module.
'use strict';

const READY = 1, INIT = 2, INIT_OK = 3, INIT_ERROR = 4, INVOKE = 5, RESULT = 6, ERROR = 7, LOG = 8;
const LOG_CHUNK = 1 << 20; // largest piece of output in one LOG frame
const MAX_FRAME = 16 * 1024 * 1024;
const MAX_RESULT = 6 * 1024 * 1024;
const MAX_TEXT = 256 * 1024; // longest message / stack sent in an error frame

function start(net, fs, path, url, asyncHooks) {
  const fd = Number(process.env.IGNIS_PROTOCOL_FD || 3);
  const sock = new net.Socket({ fd, readable: true, writable: true });
  let handler = null; // the user's function
  let style = null; // 'lambda' | 'callback' | 'openwhisk'
  let fn = {}; // function fields of the context, set at INIT
  let timeoutMs = 60000;
  let initDone = null; // promise of the INIT in progress
  let loading = null; // the handler's file, once found
  let invocation = null; // AsyncLocalStorage of the running invocation's id (concurrent only)

  function send(kind, id, body) {
    // body: a string (encoded straight into the frame) or a Buffer.
    const n = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    const frame = Buffer.allocUnsafe(13 + n);
    frame.writeUInt32BE(n + 9, 0);
    frame[4] = kind;
    frame.writeBigUInt64BE(BigInt(id), 5);
    if (typeof body === 'string') frame.write(body, 13);
    else body.copy(frame, 13);
    return new Promise((resolve) => sock.write(frame, resolve));
  }

  // In a concurrent instance, what is written while an invocation runs goes as LOG frames.
  function goConcurrent() {
    invocation = new asyncHooks.AsyncLocalStorage();
    for (const [stream, tag] of [[process.stdout, 1], [process.stderr, 2]]) {
      const write = stream.write.bind(stream);
      stream.write = (chunk, encoding, cb) => {
        const id = invocation.getStore();
        if (id === undefined) return write(chunk, encoding, cb);
        const data = typeof chunk === 'string'
          ? Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8')
          : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        for (let at = 0; at < data.length; at += LOG_CHUNK) {
          send(LOG, id, Buffer.concat([Buffer.of(tag), data.subarray(at, at + LOG_CHUNK)]));
        }
        const done = typeof encoding === 'function' ? encoding : cb;
        if (typeof done === 'function') process.nextTick(done);
        return true;
      };
    }
  }

  // Resolves once everything the function wrote to stdout/stderr is in the pipes.
  function flushLogs() {
    const pending = [process.stdout, process.stderr].filter((s) => s.writableLength > 0);
    return Promise.all(pending.map((s) => new Promise((resolve) => s.write('', resolve))));
  }

  // Stack lines of node's internals and of this file are left out of reported stacks.
  const self = path.resolve(process.argv[1] || '');
  const selfUrl = url.pathToFileURL(self).href;
  const internalFrame = (line) => /^\s+at /.test(line) &&
    (/\bnode:/.test(line) || line.includes(self) || line.includes(selfUrl));
  const cleanStack = (stack) => stack.split('\n').filter((l) => !internalFrame(l)).join('\n');

  function errorPayload(err) {
    let type = 'Error', message, stack = '';
    try {
      const isError = err instanceof Error;
      if (isError || (err && typeof err === 'object' && 'message' in err)) {
        type = String(err.name || 'Error'); // a subclass without its own name: the class name
        if (isError && type === 'Error' && err.constructor && err.constructor.name) type = err.constructor.name;
        message = String(err.message);
        stack = err.stack ? cleanStack(String(err.stack)) : '';
      } else {
        message = String(err);
      }
    } catch (e) {
      message = Object.prototype.toString.call(err);
    }
    return { type, message: message.slice(0, MAX_TEXT), stack: stack.slice(0, MAX_TEXT) };
  }

  // `require('ignis')` and the global `ignis`: the data client (ignis_client.js beside this
  // file), loaded on first use.
  function installClient() {
    const client = path.join(__dirname, 'ignis_client.js');
    if (!fs.existsSync(client)) return;
    const Module = require('module');
    const resolve = Module._resolveFilename;
    Module._resolveFilename = function (request, ...rest) {
      return request === 'ignis' ? client : resolve.call(this, request, ...rest);
    };
    Object.defineProperty(globalThis, 'ignis', { get: () => require(client), configurable: true });
  }

  async function init(msg) {
    for (const [k, v] of Object.entries(msg.env || {})) process.env[k] = String(v);
    process.chdir(msg.code_dir);
    installClient();
    timeoutMs = Number(msg.timeout_ms) || 60000;
    const { namespace = '', function: name = '', version = 0 } = msg;
    fn = {
      functionName: name,
      functionVersion: String(version),
      memoryLimitInMB: String(msg.memory_mb),
      namespace,
      invokedFunctionArn: `arn:ignis:function:${namespace}:${name}:${version}`,
      logGroupName: `/ignis/${namespace}/${name}`,
      logStreamName: `${version}/${process.pid}`,
    };
    // "dir/file.export": the file is what comes before the last dot; "index" alone: export main.
    const spec = msg.handler;
    const dot = spec.lastIndexOf('.') > spec.lastIndexOf('/') ? spec.lastIndexOf('.') : -1;
    const file = dot < 0 ? spec : spec.slice(0, dot);
    const exportName = dot < 0 ? 'main' : spec.slice(dot + 1);
    const base = path.resolve(msg.code_dir, file);
    const found = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((p) => {
      try { return fs.statSync(p).isFile(); } catch (e) { return false; }
    });
    if (!found) {
      throw named('ModuleNotFoundError', `handler module '${file}' not found: no ${file}.js, ${file}.mjs or ${file}.cjs in ${msg.code_dir}`);
    }
    loading = found;
    const mod = await import(url.pathToFileURL(found).href);
    // CommonJS: named exports the loader could detect are on the namespace, all on default.
    let f = mod[exportName];
    if (typeof f !== 'function' && mod.default != null) f = mod.default[exportName] ?? f;
    if (f === undefined) throw named('HandlerNotFound', `handler '${spec}': no export '${exportName}' in ${found}`);
    if (typeof f !== 'function') throw named('HandlerNotFound', `handler '${spec}': '${exportName}' in ${found} is not a function`);
    handler = f;
    style = f.length >= 3 ? 'callback' : f.length === 2 ? 'lambda' : 'openwhisk';
    if (Number(msg.concurrency) > 1) goConcurrent();
    return { style: style === 'callback' ? 'lambda' : style };
  }

  function named(name, message) {
    const err = new Error(message);
    err.name = name;
    return err;
  }

  function context(meta) {
    const deadlineMs = Number(meta.deadline_ms) || Date.now() + timeoutMs;
    return Object.assign({
      awsRequestId: meta.request_id,
      requestId: meta.request_id,
      deadlineMs,
      callbackWaitsForEmptyEventLoop: true, // accepted for compatibility; not enforced
      getRemainingTimeInMillis: () => Math.max(0, deadlineMs - Date.now()),
    }, fn);
  }

  function call(event, meta) {
    if (style === 'openwhisk') return handler(event);
    if (style === 'lambda') return handler(event, context(meta));
    return new Promise((resolve, reject) => {
      const callback = (err, result) => (err != null ? reject(err) : resolve(result));
      const ret = handler(event, context(meta), callback);
      if (ret && typeof ret.then === 'function') ret.then(resolve, reject);
    });
  }

  async function invoke(id, frame) {
    let kind = RESULT, body;
    try {
      if (!handler && initDone) await initDone;
      if (!handler) throw named('NotInitialized', 'INVOKE before INIT');
      const metaLen = frame.readUInt32BE(13);
      const meta = JSON.parse(frame.toString('utf8', 17, 17 + metaLen));
      const eventText = frame.toString('utf8', 17 + metaLen);
      const result = await call(eventText.length ? JSON.parse(eventText) : {}, meta);
      try {
        body = result === undefined ? 'null' : JSON.stringify(result);
        if (body === undefined) throw new TypeError(`a ${typeof result} is not JSON`);
      } catch (e) {
        throw named('ResultNotSerializable', `the handler's result cannot be serialised as JSON: ${e.message}`);
      }
      const size = Buffer.byteLength(body);
      if (size > MAX_RESULT) {
        kind = ERROR;
        body = JSON.stringify({ type: 'ResultTooLarge', message: `the result is ${size} bytes; the limit is ${MAX_RESULT} bytes`, stack: '' });
      }
    } catch (err) {
      kind = ERROR;
      body = JSON.stringify(errorPayload(err));
    }
    await flushLogs();
    await send(kind, id, body);
  }

  async function onInit(payload) {
    try {
      const ok = await init(JSON.parse(payload.toString('utf8')));
      await flushLogs();
      await send(INIT_OK, 0, JSON.stringify(ok));
    } catch (err) {
      const payload = errorPayload(err);
      if (payload.type === 'SyntaxError' && loading && !payload.stack.includes(loading)) {
        payload.stack = (await syntaxDetail(loading)) || payload.stack;
      }
      await flushLogs();
      await send(INIT_ERROR, 0, JSON.stringify(payload));
      process.exit(1);
    }
  }

  // Node does not put the place of a syntax error of an ES module in its stack: ask `node --check`.
  async function syntaxDetail(file) {
    try {
      const { spawnSync } = await import('node:child_process');
      const r = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 5000 });
      const text = String(r.stderr || '').replace(/\n\s*Node\.js v[\d.]+\s*$/, '').replace(/\n{3,}/g, '\n\n');
      return cleanStack(text).trim() || null;
    } catch (e) {
      return null;
    }
  }

  function onFrame(frame) {
    const kind = frame[4];
    const id = frame.readBigUInt64BE(5);
    if (kind === INVOKE) {
      if (invocation) invocation.run(id, invoke, id, frame);
      else invoke(id, frame);
    }
    else if (kind === INIT && !initDone) initDone = onInit(frame.subarray(13));
    else fatal(`protocol error: unexpected frame kind ${kind}`, 2);
  }

  // Frame parser: chunks are queued until a whole frame is there; a frame inside one chunk is
  // a view of it (no copy), one spanning chunks is copied once.
  const chunks = [];
  let queued = 0;
  function take(n) {
    queued -= n;
    const head = chunks[0];
    if (head.length >= n) {
      if (head.length === n) chunks.shift();
      else chunks[0] = head.subarray(n);
      return head.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let off = 0; off < n;) {
      const c = chunks[0];
      const m = Math.min(c.length, n - off);
      c.copy(out, off, 0, m);
      off += m;
      if (m < c.length) chunks[0] = c.subarray(m);
      else chunks.shift();
    }
    return out;
  }
  function peekLen() {
    if (chunks[0].length < 4) {
      chunks.unshift(take(4));
      queued += 4;
    }
    return chunks[0].readUInt32BE(0);
  }

  sock.on('data', (chunk) => {
    chunks.push(chunk);
    queued += chunk.length;
    while (queued >= 4) {
      const len = peekLen();
      if (len < 9 || len > MAX_FRAME) return fatal(`protocol error: frame of ${len} bytes`, 2);
      if (queued < 4 + len) break;
      onFrame(take(4 + len));
    }
  });
  sock.on('end', () => process.exit(0));
  sock.on('error', (err) => fatal(`channel error: ${err.message}`, 1));

  const crash = (what) => (err) => {
    process.stderr.write(`${what}: ${(err && err.stack) || String(err)}\n`);
    process.exit(1);
  };
  process.on('uncaughtException', crash('Uncaught exception'));
  process.on('unhandledRejection', crash('Unhandled promise rejection'));

  function fatal(message, code) {
    process.stderr.write(`ignis bootstrap: ${message}\n`);
    process.exit(code);
  }

  // Load a tiny module the way a handler is loaded, so that the module loader is warm before
  // READY: the first import costs several milliseconds, later ones about one (a stem cell
  // pays it while waiting, not during a cold start).
  const ready = () =>
    send(READY, 0, JSON.stringify({ runtime: 'node', version: process.versions.node, pid: process.pid }));
  const warm = path.join(path.dirname(self), 'ignis_warm.js');
  if (fs.existsSync(warm)) {
    import(url.pathToFileURL(warm).href).then(ready, ready);
  } else {
    ready();
  }
}

if (typeof require === 'function') {
  start(require('net'), require('fs'), require('path'), require('url'), require('async_hooks'));
} else {
  Promise.all(['node:net', 'node:fs', 'node:path', 'node:url', 'node:async_hooks'].map((m) => import(m)))
    .then((mods) => start(...mods.map((m) => m.default)));
}
