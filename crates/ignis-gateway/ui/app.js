// The Ignis dashboard: a single page over the REST API, with the API key kept in
// sessionStorage and sent as a bearer token. No build step, no external assets: charts are
// hand-written SVG.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");
const WINDOW_MIN = 30; // minutes shown by the charts

const session = {
  get key() { return sessionStorage.getItem("ignis.key") || ""; },
  get ns() { return sessionStorage.getItem("ignis.ns") || "default"; },
  set(key, ns) { sessionStorage.setItem("ignis.key", key); sessionStorage.setItem("ignis.ns", ns); },
  clear() { sessionStorage.removeItem("ignis.key"); sessionStorage.removeItem("ignis.ns"); },
};

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function nsPath(rest) { return `/v1/namespaces/${encodeURIComponent(session.ns)}${rest}`; }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

/** One API call; JSON in and out. A 401 sends the user back to the login page. */
async function api(path, opts = {}) {
  const headers = { authorization: `Bearer ${session.key}`, ...(opts.headers || {}) };
  const resp = await fetch(path, { ...opts, headers });
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (resp.status === 401) {
    session.clear();
    location.hash = "#/login";
    throw new ApiError(401, "unauthorized", "the key was refused");
  }
  return { status: resp.status, headers: resp.headers, body, ok: resp.ok };
}

async function apiJson(path) {
  const r = await api(path);
  if (!r.ok) {
    const e = r.body && r.body.error ? r.body.error : { code: "error", message: String(r.body) };
    throw new ApiError(r.status, e.code, e.message);
  }
  return r.body;
}

function fmtTime(ms) { return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"); }
function fmtMs(v) { return v == null || isNaN(v) ? "–" : `${Math.round(v)} ms`; }
function pct(v) { return v == null || isNaN(v) ? "–" : `${(v * 100).toFixed(0)}%`; }
function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}
function statusClass(s) { return s === "success" ? "status-success" : "status-bad"; }

// ---- charts -------------------------------------------------------------------------------

/** A small SVG chart of one or more series of equal length (NaN leaves a gap). */
function chart(series, { max, bars = false } = {}) {
  const w = 300, h = 60, pad = 2;
  const values = series.flatMap((s) => s.values).filter((v) => !isNaN(v));
  const top = max ?? Math.max(1, ...values);
  const n = series[0].values.length;
  const x = (i) => pad + (i * (w - 2 * pad)) / Math.max(1, n - 1);
  const y = (v) => h - pad - (v / top) * (h - 2 * pad);
  let out = `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img">`;
  out += `<line x1="0" y1="${h - pad}" x2="${w}" y2="${h - pad}" stroke="#e3e6ea"/>`;
  for (const s of series) {
    if (bars) {
      const bw = (w - 2 * pad) / n;
      s.values.forEach((v, i) => {
        if (!isNaN(v) && v > 0) out += `<rect x="${pad + i * bw}" y="${y(v)}" width="${Math.max(1, bw - 1)}" height="${h - pad - y(v)}" fill="${s.color}"/>`;
      });
      continue;
    }
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (isNaN(v)) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    out += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"/>`;
    s.values.forEach((v, i) => {
      if (!isNaN(v)) out += `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="1.5" fill="${s.color}"/>`;
    });
  }
  return out + "</svg>";
}

function chartCard(title, value, svg) {
  return `<div class="chart"><div class="title"><span>${esc(title)}</span><span class="value">${esc(value)}</span></div>${svg}</div>`;
}

/** Per-minute statistics of a function's activations over the last WINDOW_MIN minutes. */
function stats(acts, now) {
  const start = now - WINDOW_MIN * 60000;
  const buckets = Array.from({ length: WINDOW_MIN }, () => []);
  for (const a of acts) {
    const i = Math.floor((a.start_ms - start) / 60000);
    if (i >= 0 && i < WINDOW_MIN) buckets[i].push(a);
  }
  const per = (f) => buckets.map((b) => (b.length ? f(b) : NaN));
  const durations = (b) => b.map((a) => a.duration_ms).sort((p, q) => p - q);
  const all = acts.filter((a) => a.start_ms >= start);
  const allDur = durations(all);
  return {
    count: all.length,
    rate: buckets.map((b) => b.length),
    errors: per((b) => b.filter((a) => a.status !== "success").length / b.length),
    p50: per((b) => quantile(durations(b), 0.5)),
    p99: per((b) => quantile(durations(b), 0.99)),
    cold: per((b) => b.filter((a) => a.cold).length / b.length),
    total: {
      rate: all.length / WINDOW_MIN,
      errors: all.length ? all.filter((a) => a.status !== "success").length / all.length : NaN,
      p50: quantile(allDur, 0.5),
      p99: quantile(allDur, 0.99),
      cold: all.length ? all.filter((a) => a.cold).length / all.length : NaN,
    },
  };
}

/** The namespace's activations since `since`, newest first (at most 1000). */
async function recentActivations(since, fn) {
  let out = [], cursor = null;
  for (let page = 0; page < 5; page++) {
    let q = `?limit=200&since=${since}`;
    if (fn) q += `&function=${encodeURIComponent(fn)}`;
    if (cursor) q += `&cursor=${encodeURIComponent(cursor)}`;
    const r = await apiJson(nsPath(`/activations${q}`));
    out = out.concat(r.activations);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  return out;
}

// ---- pages --------------------------------------------------------------------------------

function renderLogin(message) {
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  main().innerHTML = `
    <form class="card login" id="login-form">
      <h1>Log in</h1>
      <p class="muted">With an API key (<code>ignis key show</code>, or <code>admin.key</code> in the data directory). It is kept in this tab only.</p>
      <label for="key">API key</label>
      <input id="key" name="key" type="password" autocomplete="off" placeholder="ik_…:…" required>
      <label for="ns">Namespace</label>
      <input id="ns" name="ns" value="${esc(session.ns)}" required>
      <div class="error" id="login-error">${esc(message || "")}</div>
      <button class="primary" type="submit">Log in</button>
    </form>`;
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = $("#key").value.trim(), ns = $("#ns").value.trim() || "default";
    const resp = await fetch(`/v1/namespaces/${encodeURIComponent(ns)}/functions`, { headers: { authorization: `Bearer ${key}` } });
    if (!resp.ok) {
      let msg = `${resp.status}`;
      try { msg = (await resp.json()).error.message; } catch (_) { /* not JSON */ }
      $("#login-error").textContent = `Cannot log in: ${msg}`;
      return;
    }
    session.set(key, ns);
    location.hash = "#/functions";
  });
}

async function renderFunctions() {
  main().innerHTML = `<h1>Functions <span class="muted">in ${esc(session.ns)}</span></h1>
    <p class="muted">Last ${WINDOW_MIN} minutes, per minute: invocations, error rate, p50/p99 latency, cold-start ratio.</p>
    <div id="fn-list"><p class="muted">Loading…</p></div>`;
  const now = Date.now();
  const [fns, acts] = await Promise.all([
    apiJson(nsPath("/functions")),
    recentActivations(now - WINDOW_MIN * 60000),
  ]);
  const list = $("#fn-list");
  if (!fns.functions.length) {
    list.innerHTML = `<div class="card">No functions yet: <code>ignis fn deploy NAME --runtime python --handler app.handler --code app.py</code></div>`;
    return;
  }
  list.innerHTML = fns.functions.map((f) => {
    const s = stats(acts.filter((a) => a.function === f.name), now);
    return `<section class="fn" data-function="${esc(f.name)}">
      <div class="fn-head"><a href="#/fn/${encodeURIComponent(f.name)}">${esc(f.name)}</a>
        <span class="pill">${esc(f.runtime)}</span><span class="muted">v${f.version} · ${f.memory_mb} MB · ${s.count} invocations</span></div>
      <div class="grid">
        ${chartCard("invocations / min", s.total.rate.toFixed(1), chart([{ values: s.rate, color: "#d9480f" }], { bars: true }))}
        ${chartCard("error rate", pct(s.total.errors), chart([{ values: s.errors, color: "#c92a2a" }], { max: 1 }))}
        ${chartCard("p50 / p99 latency", `${fmtMs(s.total.p50)} / ${fmtMs(s.total.p99)}`, chart([{ values: s.p99, color: "#f08c00" }, { values: s.p50, color: "#1c5fb8" }]))}
        ${chartCard("cold starts", pct(s.total.cold), chart([{ values: s.cold, color: "#5f3dc4" }], { max: 1 }))}
      </div></section>`;
  }).join("");
}

function activationRows(acts) {
  if (!acts.length) return `<tr><td colspan="6" class="muted">No activations yet.</td></tr>`;
  return acts.map((a) => `<tr class="activation" data-id="${esc(a.id)}">
      <td><a href="#/fn/${encodeURIComponent(a.function)}/${esc(a.id)}">${esc(a.id.slice(0, 12))}…</a></td>
      <td class="${statusClass(a.status)}">${esc(a.status)}</td>
      <td>v${a.version}</td><td>${a.cold ? "cold" : "warm"}</td>
      <td class="num">${a.duration_ms} ms</td><td>${fmtTime(a.start_ms)}</td></tr>`).join("");
}

function logText(lines) {
  return lines.map((l) => `<span class="${esc(l.stream)}">${esc(fmtTime(l.ts_ms))} ${esc(l.stream)} ${esc(l.line)}</span>`).join("\n");
}

let liveAbort = null;
let shownFunction = null; // the function whose page is on screen

/** Follows the function's logs (server-sent events over fetch: EventSource cannot send a key). */
async function followLogs(name, pre) {
  if (liveAbort) liveAbort.abort();
  const ctrl = new AbortController();
  liveAbort = ctrl;
  try {
    const resp = await fetch(nsPath(`/functions/${encodeURIComponent(name)}/logs?follow=true`), {
      headers: { authorization: `Bearer ${session.key}`, accept: "text/event-stream" },
      signal: ctrl.signal,
    });
    if (!resp.ok) { pre.textContent = `live logs unavailable (${resp.status})`; return; }
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = /^event: ?(.*)$/m.exec(block), data = /^data: ?(.*)$/m.exec(block);
        if (!ev || !data) continue;
        if (ev[1] === "ready") { pre.dataset.ready = "true"; pre.textContent = "(waiting for lines)"; }
        if (ev[1] === "log") {
          const l = JSON.parse(data[1]);
          if (pre.dataset.lines !== "some") { pre.textContent = ""; pre.dataset.lines = "some"; }
          pre.insertAdjacentHTML("beforeend", logText([l]) + "\n");
          pre.scrollTop = pre.scrollHeight;
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") pre.textContent = `live logs stopped: ${e.message}`;
  }
}

async function renderFunction(name, activationId) {
  const [f, versions, acts] = await Promise.all([
    apiJson(nsPath(`/functions/${encodeURIComponent(name)}`)),
    apiJson(nsPath(`/functions/${encodeURIComponent(name)}/versions`)),
    apiJson(nsPath(`/activations?function=${encodeURIComponent(name)}&limit=20`)),
  ]);
  const example = f.runtime === "python" || f.runtime === "node" ? '{\n  "name": "Ada"\n}' : "{}";
  main().innerHTML = `
    <h1><a href="#/functions">Functions</a> / ${esc(name)} <span class="pill">${esc(f.runtime)}</span></h1>
    <p class="muted">version ${f.version} · handler <code>${esc(f.handler)}</code> · ${f.memory_mb} MB · timeout ${f.timeout_ms} ms ·
      instances: ${f.instances ? `${f.instances.live} live, ${f.instances.idle} idle, ${f.instances.queued} queued` : "–"}</p>
    <div class="two">
      <div class="card">
        <h2>Invoke</h2>
        <textarea class="json" id="event" spellcheck="false" aria-label="event (JSON)">${esc(example)}</textarea>
        <div class="row"><button class="primary" id="invoke">Invoke</button>
          <button class="secondary" id="format">Format JSON</button>
          <span class="error" id="json-error"></span></div>
        <div id="invoke-result"></div>
      </div>
      <div class="card">
        <h2>Live logs</h2>
        <pre class="logs" id="live-logs">(connecting)</pre>
      </div>
    </div>
    <div class="card">
      <h2>Recent activations</h2>
      <table><thead><tr><th>id</th><th>status</th><th>version</th><th>start</th><th class="num">duration</th><th>started</th></tr></thead>
      <tbody id="activations">${activationRows(acts.activations)}</tbody></table>
      <div id="activation-detail"></div>
    </div>
    <div class="card">
      <h2>Versions</h2>
      <table><thead><tr><th>version</th><th>runtime</th><th>handler</th><th class="num">memory</th><th>code</th><th>created</th></tr></thead>
      <tbody>${versions.versions.slice().reverse().map((v) => `<tr><td>v${v.version}</td><td>${esc(v.runtime)}</td>
        <td><code>${esc(v.handler)}</code></td><td class="num">${v.memory_mb} MB</td>
        <td><code>${esc(v.code.sha256.slice(0, 12))}</code> ${v.code.size} B</td><td>${v.created_ms ? fmtTime(v.created_ms) : ""}</td></tr>`).join("")}</tbody></table>
    </div>`;
  const editor = $("#event");
  const check = () => {
    try { JSON.parse(editor.value || "{}"); editor.classList.remove("invalid"); $("#json-error").textContent = ""; $("#invoke").disabled = false; return true; }
    catch (e) { editor.classList.add("invalid"); $("#json-error").textContent = `invalid JSON: ${e.message}`; $("#invoke").disabled = true; return false; }
  };
  editor.addEventListener("input", check);
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Tab") { e.preventDefault(); editor.setRangeText("  ", editor.selectionStart, editor.selectionEnd, "end"); }
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("#invoke").click();
  });
  $("#format").addEventListener("click", () => { if (check()) editor.value = JSON.stringify(JSON.parse(editor.value || "{}"), null, 2); });
  $("#invoke").addEventListener("click", async () => {
    if (!check()) return;
    $("#invoke").disabled = true;
    const out = $("#invoke-result");
    out.innerHTML = `<p class="muted">Running…</p>`;
    const t0 = performance.now();
    const r = await api(nsPath(`/functions/${encodeURIComponent(name)}/invoke`), {
      method: "POST", headers: { "content-type": "application/json" }, body: editor.value || "{}",
    });
    const id = r.headers.get("x-ignis-activation-id");
    const status = r.headers.get("x-ignis-status") || (r.body && r.body.error ? r.body.error.code : String(r.status));
    out.innerHTML = `<p><span class="${statusClass(status)}" id="invoke-status">${esc(status)}</span> · HTTP ${r.status} · ${Math.round(performance.now() - t0)} ms
      ${id ? `· activation <a href="#/fn/${encodeURIComponent(name)}/${esc(id)}" id="invoke-activation">${esc(id)}</a>` : ""}
      ${r.headers.get("x-ignis-cold") === "true" ? "· cold start" : ""}</p>
      <pre id="invoke-output">${esc(typeof r.body === "string" ? r.body : JSON.stringify(r.body, null, 2))}</pre>`;
    $("#invoke").disabled = false;
    const fresh = await apiJson(nsPath(`/activations?function=${encodeURIComponent(name)}&limit=20`));
    $("#activations").innerHTML = activationRows(fresh.activations);
  });
  followLogs(name, $("#live-logs"));
  if (activationId) await showActivation(activationId);
}

async function showActivation(id) {
  const a = await apiJson(nsPath(`/activations/${encodeURIComponent(id)}`));
  const detail = $("#activation-detail");
  detail.innerHTML = `<h2>Activation <code>${esc(a.id)}</code></h2>
    <p><span class="${statusClass(a.status)}">${esc(a.status)}</span> · v${a.version} · ${a.cold ? "cold" : "warm"} ·
      ${a.duration_ms} ms (queue ${a.queue_ms}, init ${a.init_ms}) · billed ${a.billed_ms} ms at ${a.memory_mb} MB · instance ${esc(a.instance)}</p>
    ${a.error ? `<pre class="logs"><span class="stderr">${esc(a.error.type)}: ${esc(a.error.message)}</span></pre>` : ""}
    ${a.result !== undefined ? `<h2>Result</h2><pre id="activation-result">${esc(JSON.stringify(a.result, null, 2))}</pre>` : ""}
    <h2>Logs</h2><pre class="logs" id="activation-logs">${a.logs.length ? logText(a.logs) : "(no lines)"}${a.logs_truncated ? "\n[logs truncated]" : ""}</pre>`;
  detail.scrollIntoView({ block: "nearest" });
}

async function renderUsage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const group = params.get("group_by") || "function";
  const from = params.get("from") || "", to = params.get("to") || "";
  let q = `?group_by=${encodeURIComponent(group)}`;
  if (from) q += `&from=${encodeURIComponent(from)}`;
  if (to) q += `&to=${encodeURIComponent(to)}`;
  const r = await apiJson(nsPath(`/usage${q}`));
  const money = (v) => `$${v.toFixed(6)}`;
  const top = Math.max(1e-12, ...r.groups.map((g) => g.cost));
  main().innerHTML = `<h1>Usage and cost <span class="muted">in ${esc(session.ns)}</span></h1>
    <form class="row card" id="usage-form">
      <label>From <input name="from" placeholder="YYYY-MM-DD" value="${esc(from)}"></label>
      <label>To <input name="to" placeholder="YYYY-MM-DD" value="${esc(to)}"></label>
      <label>Group by <select name="group_by"><option value="function"${group === "function" ? " selected" : ""}>function</option>
        <option value="day"${group === "day" ? " selected" : ""}>day</option></select></label>
      <button class="secondary" type="submit">Show</button>
      <span class="muted">${fmtTime(r.from_ms)} → ${fmtTime(r.to_ms)} · $${r.pricing.per_million_requests} per million requests, $${r.pricing.per_gb_second} per GB-s${r.pricing.free_tier ? " · free tier on" : ""}</span>
    </form>
    <table id="usage-table"><thead><tr><th>${group}</th><th class="num">requests</th><th class="num">GB-seconds</th>
      <th class="num">request cost</th><th class="num">compute cost</th><th class="num">cost</th><th style="width:25%"></th></tr></thead>
    <tbody>${r.groups.map((g) => `<tr><td>${esc(g.key)}</td><td class="num">${g.requests}</td><td class="num">${g.gb_seconds.toFixed(6)}</td>
      <td class="num">${money(g.request_cost)}</td><td class="num">${money(g.compute_cost)}</td><td class="num">${money(g.cost)}</td>
      <td><div class="bar" style="width:${((g.cost / top) * 100).toFixed(1)}%"></div></td></tr>`).join("") || `<tr><td colspan="7" class="muted">No activations in this period.</td></tr>`}
    <tr id="usage-total"><th>total</th><th class="num">${r.total.requests}</th><th class="num">${r.total.gb_seconds.toFixed(6)}</th>
      <th class="num">${money(r.total.request_cost)}</th><th class="num">${money(r.total.compute_cost)}</th>
      <th class="num">${money(r.total.cost)}${r.total.free_tier_credit ? ` (free tier −${money(r.total.free_tier_credit)})` : ""}</th><th></th></tr></tbody></table>`;
  $("#usage-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams(new FormData(ev.target));
    for (const [k, v] of [...p.entries()]) if (!v) p.delete(k);
    location.hash = `#/usage?${p}`;
  });
}

async function renderInstances() {
  const r = await api("/v1/system/instances");
  if (!r.ok) {
    main().innerHTML = `<h1>Live instances</h1><div class="card error">${esc(r.body && r.body.error ? r.body.error.message : r.status)} (an admin key is needed)</div>`;
    return;
  }
  const d = r.body;
  const stem = Object.entries(d.stem_cells || {}).map(([rt, n]) => `${esc(rt)}: ${n}`).join(", ") || "none";
  main().innerHTML = `<h1>Live instances</h1>
    <p class="muted">memory ${d.memory.used_mb} / ${d.memory.budget_mb} MB · stem cells ready: ${stem}</p>
    <table id="instances"><thead><tr><th>instance</th><th>namespace</th><th>function</th><th>version</th><th>runtime</th><th>state</th>
      <th class="num">invocations</th><th class="num">age</th><th class="num">memory</th></tr></thead>
    <tbody>${d.instances.map((i) => `<tr><td>${esc(i.id)}</td><td>${esc(i.namespace)}</td><td>${esc(i.function)}</td><td>v${i.version}</td>
      <td>${esc(i.runtime)}</td><td>${esc(i.state)}</td><td class="num">${i.invocations}</td><td class="num">${(i.age_ms / 1000).toFixed(0)} s</td>
      <td class="num">${i.memory_mb} MB</td></tr>`).join("") || `<tr><td colspan="9" class="muted">No live instances (scaled to zero).</td></tr>`}</tbody></table>`;
  setTimeout(() => { if (location.hash.startsWith("#/instances")) route(); }, 5000);
}

// ---- routing ------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/functions";
  if (liveAbort && !hash.startsWith("#/fn/")) { liveAbort.abort(); liveAbort = null; }
  if (!hash.startsWith("#/fn/")) shownFunction = null;
  if (!session.key) { renderLogin(); return; }
  if (hash.startsWith("#/login")) { renderLogin(); return; }
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `namespace ${session.ns}`;
  const page = hash.slice(2).split(/[/?]/)[0];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page || (page === "fn" && a.dataset.page === "functions"));
  try {
    if (page === "fn") {
      const [, enc, id] = hash.slice(2).split("/");
      const name = decodeURIComponent(enc);
      // Within one function's page, an activation link only opens its details: the invoke
      // result and the live logs stay.
      if (shownFunction === name && id) await showActivation(id);
      else await renderFunction(name, id);
      shownFunction = name;
      return;
    }
    shownFunction = null;
    if (page === "usage") await renderUsage();
    else if (page === "instances") await renderInstances();
    else await renderFunctions();
  } catch (e) {
    shownFunction = null;
    if (e.status === 401) return;
    main().innerHTML = `<div class="card error">${esc(e.message)}</div>`;
  }
}

$("#logout").addEventListener("click", () => { session.clear(); location.hash = "#/login"; route(); });
window.addEventListener("hashchange", route);
route();
