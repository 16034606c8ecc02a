// The `ignis` module of node functions: the namespace's data from inside the sandbox.
//
//   const ignis = require('ignis');            // or the global `ignis`
//   const n = await ignis.kv.incr('visits');
//   await ignis.objects.put('photos', 'a.txt', 'hello');
//   await ignis.publish('orders', { id: 42 });
//
// It speaks the HTTP API (docs/baas.md) at $IGNIS_API_URL with the instance's token
// ($IGNIS_TOKEN), both given at INIT. Every call returns a promise.
'use strict';

const http = require('http');

class IgnisError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.name = status === 404 ? 'NotFound' : status === 412 ? 'VersionConflict' : 'IgnisError';
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
const enc = (s) => encodeURIComponent(s);
const encKey = (k) => k.split('/').map(enc).join('/');
const ns = () => enc(process.env.IGNIS_NAMESPACE || 'default');

function query(params) {
  const q = Object.entries(params).filter(([, v]) => v !== undefined && v !== null);
  return q.length ? '?' + q.map(([k, v]) => `${enc(k)}=${enc(String(v))}`).join('&') : '';
}

// One request. `body`: a Buffer, a string, or a readable stream (piped). `raw`: resolve with
// the response stream instead of reading it.
function request(method, path, { body, headers = {}, raw = false } = {}) {
  const base = process.env.IGNIS_API_URL;
  if (!base) return Promise.reject(new IgnisError(0, 'unavailable', 'no IGNIS_API_URL: this instance has no data access'));
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), {
      method,
      agent,
      headers: { Authorization: `Bearer ${process.env.IGNIS_TOKEN || ''}`, ...headers },
    }, (res) => {
      if (res.statusCode < 400 && raw) return resolve(res);
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const data = Buffer.concat(chunks);
        if (res.statusCode >= 400) {
          let code = 'error';
          let message = data.toString();
          try { ({ code, message } = JSON.parse(message).error); } catch (e) { /* not JSON */ }
          return reject(new IgnisError(res.statusCode, code, message));
        }
        resolve({ res, data });
      });
    });
    req.on('error', (e) => reject(new IgnisError(0, 'unavailable', `cannot reach the API: ${e.message}`)));
    if (body && typeof body.pipe === 'function') body.pipe(req);
    else req.end(body);
  });
}

const value = (v) => (Buffer.isBuffer(v) || typeof v === 'string' ? v : JSON.stringify(v));
const notFound = (fallback) => (e) => { if (e.status === 404) return fallback; throw e; };

const kv = {
  path: (key) => `/v1/namespaces/${ns()}/kv/${encKey(key)}`,
  /** The value (a Buffer), or `fallback` if there is none. */
  async get(key, fallback = null) {
    const got = await this.getVersioned(key);
    return got.value === null ? fallback : got.value;
  },
  /** The value parsed as JSON, or `fallback`. */
  async getJson(key, fallback = null) {
    const v = await this.get(key);
    return v === null ? fallback : JSON.parse(v.toString());
  },
  /** { value, version }, both null if there is no entry. */
  getVersioned(key) {
    return request('GET', this.path(key))
      .then(({ res, data }) => ({ value: data, version: Number(res.headers['x-ignis-version']) }))
      .catch(notFound({ value: null, version: null }));
  },
  /** Writes a Buffer, a string or JSON; returns the new version. `opts`: ttl (s), ifVersion, ifAbsent. */
  async put(key, v, opts = {}) {
    const q = query({ ttl: opts.ttl, if_version: opts.ifVersion, if_absent: opts.ifAbsent ? 'true' : undefined });
    const { data } = await request('PUT', this.path(key) + q, { body: value(v) });
    return JSON.parse(data).version;
  },
  /** Deletes an entry; false if there was none. `opts`: ifVersion. */
  delete(key, opts = {}) {
    return request('DELETE', this.path(key) + query({ if_version: opts.ifVersion }))
      .then(() => true, notFound(false));
  },
  /** Adds `by` to an integer entry atomically; returns the new value. */
  async incr(key, by = 1, opts = {}) {
    const body = JSON.stringify({ increment: by, ...(opts.ttl ? { ttl: opts.ttl } : {}) });
    const { data } = await request('POST', this.path(key), { body, headers: { 'Content-Type': 'application/json' } });
    return JSON.parse(data).value;
  },
  /** Every key starting with `prefix`. */
  async keys(prefix = '') {
    const out = [];
    let after;
    do {
      const { data } = await request('GET', `/v1/namespaces/${ns()}/kv` + query({ prefix: prefix || undefined, after, limit: 1000 }));
      const page = JSON.parse(data);
      out.push(...page.keys.map((e) => e.key));
      after = page.next;
    } while (after);
    return out;
  },
};

const objects = {
  path: (bucket, key) => `/v1/namespaces/${ns()}/buckets/${enc(bucket)}` + (key === undefined ? '' : `/objects/${encKey(key)}`),
  /** Creates a bucket (nothing if it exists). */
  createBucket(bucket) { return request('PUT', this.path(bucket)).then(() => undefined); },
  /** Stores a Buffer, a string or a readable stream; returns the object's metadata. */
  async put(bucket, key, data, opts = {}) {
    const headers = { 'Content-Type': opts.contentType || 'application/octet-stream' };
    for (const [k, v] of Object.entries(opts.metadata || {})) headers[`x-ignis-meta-${k.toLowerCase()}`] = String(v);
    const res = await request('PUT', this.path(bucket, key), { body: data, headers });
    return JSON.parse(res.data);
  },
  /** The whole body as a Buffer. For large objects, `open`. */
  async get(bucket, key) { return (await request('GET', this.path(bucket, key))).data; },
  /** The body as a readable stream. */
  open(bucket, key) { return request('GET', this.path(bucket, key), { raw: true }); },
  /** The object's headers, or null if it does not exist. */
  head(bucket, key) {
    return request('HEAD', this.path(bucket, key)).then(({ res }) => res.headers, notFound(null));
  },
  /** Deletes an object; false if there was none. */
  delete(bucket, key) { return request('DELETE', this.path(bucket, key)).then(() => true, notFound(false)); },
  /** The metadata of every object whose key starts with `prefix`. */
  async list(bucket, prefix = '') {
    const out = [];
    let after;
    do {
      const { data } = await request('GET', this.path(bucket) + '/objects' + query({ prefix: prefix || undefined, after, limit: 1000 }));
      const page = JSON.parse(data);
      out.push(...page.objects);
      after = page.next;
    } while (after);
    return out;
  },
};

/** Publishes `message` (anything JSON) to a topic of the namespace. */
function publish(topic, message) {
  return request('POST', `/v1/namespaces/${ns()}/topics/${enc(topic)}`, {
    body: JSON.stringify(message),
    headers: { 'Content-Type': 'application/json' },
  }).then(() => undefined);
}

/**
 * The input of a workflow or sequence step: one bigger than the payload limit arrives as
 * `{ignis_input_ref: {bucket, key, size}}`, an object the engine stored; this fetches and
 * decodes it. Any other event is returned as it is.
 */
async function stepInput(event) {
  const ref = event && typeof event === 'object' && Object.keys(event).length === 1 ? event.ignis_input_ref : undefined;
  if (!ref || typeof ref !== 'object') return event;
  return JSON.parse((await objects.get(ref.bucket, ref.key)).toString());
}

module.exports = { kv, objects, publish, stepInput, IgnisError };
