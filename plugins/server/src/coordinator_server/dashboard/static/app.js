// The dashboard: polls /ui/api/overview once a second for the tiles, charts and panels,
// and /ui/api/executions when the filters change (and every few seconds). No build step:
// plain browser JavaScript and uPlot (vendor/), drawn into the elements of index.html.
"use strict";

const $ = (id) => document.getElementById(id);
const charts = {};
const STATUS_COLOURS = {succeeded: "#2a9d5c", failed: "#d1495b", rejected: "#e3a21a",
                        cancelled: "#7a7a7a", timed_out: "#8e44ad", queued: "#3a7bd5",
                        running: "#1abc9c"};
const PALETTE = ["#3a7bd5", "#d1495b", "#2a9d5c", "#e3a21a", "#8e44ad", "#1abc9c", "#7a7a7a",
                 "#c0392b", "#16a085", "#2c3e50"];
let viewer = null;
let listing = {since: null};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Math.abs(value) >= 1000 ? Math.round(value).toLocaleString("en") : value.toFixed(digits);
}

function short(id) { return id ? String(id).slice(0, 12) : "–"; }
function when(t) { return t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "–"; }

async function getJSON(url, options) {
  const response = await fetch(url, {credentials: "same-origin", ...(options || {})});
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) {
    const err = new Error(body.error || response.statusText);
    err.status = response.status; err.kind = body.kind;
    throw err;
  }
  return body;
}

// -- charts -----------------------------------------------------------------------------------
function chart(id, names, t, columns, colours) {
  const box = $(id);
  const key = names.join("|");
  if (!names.length || !t.length) {
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    box.replaceChildren(el("p", {class: "empty"}, box.dataset.empty || "no data yet"));
    return;
  }
  const data = [t, ...columns];
  if (charts[id] && charts[id]._key === key) { charts[id].setData(data); return; }
  if (charts[id]) charts[id].destroy();
  box.replaceChildren();
  const series = [{}, ...names.map((name, i) => ({
    label: name, stroke: (colours && colours[name]) || PALETTE[i % PALETTE.length],
    width: 1.5, spanGaps: true}))];
  const opts = {width: Math.max(280, box.clientWidth || 420), height: 170, series,
                scales: {x: {time: true}}, legend: {live: false},
                axes: [{}, {size: 50}]};
  charts[id] = new uPlot(opts, data, box);
  charts[id]._key = key;
}

function drawCharts(s) {
  const statuses = Object.keys(s.throughput);
  chart("chart-throughput", statuses, s.t, statuses.map((k) => s.throughput[k]), STATUS_COLOURS);
  chart("chart-latency", ["p50", "p90", "p99", "mean per second"], s.t,
        [s.latency.p50_ms, s.latency.p90_ms, s.latency.p99_ms, s.window_mean_ms]);
  const stages = Object.keys(s.stages);
  chart("chart-stages", stages, s.t, stages.map((k) => s.stages[k]));
  const models = Object.keys(s.models);
  const queue = models.filter((k) => /queue|compute/i.test(k));
  const batch = models.filter((k) => /batch/i.test(k) && !queue.includes(k));
  $("chart-queue").dataset.empty = "no model reports queue or compute time";
  $("chart-batch").dataset.empty = "no model reports batch sizes";
  chart("chart-queue", queue, s.t, queue.map((k) => s.models[k]));
  chart("chart-batch", batch, s.t, batch.map((k) => s.models[k]));
  chart("chart-inflight", ["in flight", "queued"], s.t, [s.inflight, s.queued]);
}

// -- tiles and panels -------------------------------------------------------------------------
function drawTiles(t) {
  $("tile-rate").textContent = fmt(t.executions_per_s, 1);
  $("tile-success").textContent = t.success_rate === null || t.success_rate === undefined
    ? "–" : (t.success_rate * 100).toFixed(1) + " %";
  $("tile-p50").textContent = fmt(t.p50_ms, 3) + " ms";
  $("tile-p99").textContent = fmt(t.p99_ms, 3) + " ms";
  $("tile-inflight").textContent = `${t.inflight} / ${t.queued}`;
  $("tile-fee").textContent = fmt(t.fee_used, 0);
  $("tile-total").textContent = fmt(t.executions, 0);
}

function drawEngines(engines, workers) {
  const rows = engines.map((e) => el("tr", {},
    el("td", {}, e.name),
    el("td", {class: e.healthy === false ? "bad" : "good"}, e.healthy === false ? "unhealthy" : "healthy"),
    el("td", {}, e.utilisation === undefined ? "–" : (e.utilisation * 100).toFixed(1) + " %"),
    el("td", {}, `${fmt(e.inflight, 0)} / ${fmt(e.capacity, 0)}`),
    el("td", {}, fmt(e.executions, 0)),
    el("td", {}, e.executor || "–"),
    el("td", {class: "error"}, e.last_error
      ? `${e.last_error.error_kind}: ${e.last_error.message || ""} (${when(e.last_error.timestamp)})` : "–")));
  $("engines").tBodies[0].replaceChildren(...rows);
  const box = $("workers");
  if (workers && workers.processes) {
    box.replaceChildren(el("h3", {}, `Worker processes (restarts ${workers.restarts})`),
      el("ul", {}, ...workers.processes.map((p) => el("li", {},
        `#${p.index} pid ${p.pid}: ${p.alive ? "alive" : "dead"}, ${p.inflight} in flight`))));
  } else box.replaceChildren();
}

function keyValues(obj, skip) {
  return Object.entries(obj || {}).filter(([k, v]) => !skip.includes(k) && typeof v !== "object")
    .map(([k, v]) => `${k} ${fmt(v, 2)}`).join(", ");
}

const LIMIT_KEYS = ["rate", "burst", "mode", "max_wait", "limit", "budget", "unlimited", "period"];
function drawQuota(quota) {
  const rows = [];
  for (const [policy, snap] of Object.entries(quota)) {
    const callers = Object.entries(snap.callers || {});
    if (snap.overall) callers.unshift(["(overall)", snap.overall]);
    callers.push(["(default)", snap.default || {}]);
    for (const [caller, values] of callers) {
      const limits = keyValues(Object.fromEntries(Object.entries(values).filter(([k]) => LIMIT_KEYS.includes(k))), []);
      const use = keyValues(values, LIMIT_KEYS);
      rows.push(el("tr", {}, el("td", {}, policy), el("td", {}, caller),
                   el("td", {class: "wrap"}, limits || "–"), el("td", {class: "wrap"}, use || "–")));
    }
  }
  $("quota").tBodies[0].replaceChildren(...rows);
}

function drawAudit(audit) {
  $("audit-length").textContent = fmt(audit.length, 0) + " records";
  $("audit-head").textContent = audit.head || "–";
  const v = audit.last_verify;
  if (v) {
    $("audit-verified").textContent = v.ok
      ? `intact: ${v.count} records at ${when(v.at)} by ${v.by} (${v.seconds} s)`
      : `BROKEN at seq ${v.first_bad_seq}: ${v.reason} (${when(v.at)})`;
    $("audit-verified").className = v.ok ? "good" : "bad";
  }
}

async function refresh() {
  try {
    const o = await getJSON("/ui/api/overview");
    viewer = o.viewer;
    $("viewer").textContent = `${o.viewer.name} (${o.viewer.scope})`;
    $("verify-now").disabled = !o.viewer.can_verify;
    $("verify-now").title = o.viewer.can_verify ? "" : "verifying needs the admin scope";
    $("updated").textContent = "updated " + when(o.now);
    drawTiles(o.tiles);
    drawCharts(o.series);
    drawEngines(o.engines, o.workers);
    drawQuota(o.quota);
    drawAudit(o.audit);
  } catch (err) {
    if (err.status === 401) { window.location.href = "/ui/login"; return; }
    $("updated").textContent = "not updated: " + err.message;
  }
}

// -- executions -------------------------------------------------------------------------------
function query() {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  for (const name of ["caller", "resource", "engine", "status"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  const window_ = String(form.get("window") || "");
  if (window_) params.set("since", String(Date.now() / 1000 - Number(window_)));
  params.set("limit", "100");
  return params;
}

async function loadExecutions() {
  try {
    const body = await getJSON("/ui/api/executions?" + query().toString());
    $("filter-error").textContent = "";
    const rows = body.executions.map((r) => el("tr", {class: "row", "data-id": r.execution_id,
        onclick: () => drill(r.execution_id)},
      el("td", {}, when(r.timestamp)),
      el("td", {class: "mono"}, r.execution_id, r.parent_id ? el("span", {class: "muted"}, " (nested)") : null),
      el("td", {}, r.caller),
      el("td", {}, (r.resource && r.resource.name) || short(r.resource_id)),
      el("td", {}, (r.detail && r.detail.engine) || "–"),
      el("td", {class: "status " + r.status}, r.status),
      el("td", {}, fmt(r.fee_used, 0)),
      el("td", {}, fmt(r.duration * 1000, 3)),
      el("td", {class: "error"}, r.error_kind ? `${r.error_kind}: ${r.message || ""}` : "")));
    $("executions").tBodies[0].replaceChildren(...rows);
    $("executions").dataset.count = String(rows.length);
  } catch (err) {
    $("filter-error").textContent = err.message;
  }
}

function section(title, content) {
  return el("section", {}, el("h3", {}, title), content);
}

function pairs(obj) {
  return el("dl", {}, ...Object.entries(obj || {}).flatMap(([k, v]) => [
    el("dt", {}, k), el("dd", {class: /hash|digest/.test(k) ? "hash" : ""},
                        typeof v === "object" && v !== null ? JSON.stringify(v) : fmt(v, 3))]));
}

function execLink(record) {
  return el("a", {href: "#", onclick: (e) => { e.preventDefault(); drill(record.execution_id); }},
            `${record.execution_id} (${record.status})`);
}

async function drill(id) {
  const body = $("drill-body");
  body.replaceChildren(el("p", {}, "loading " + id));
  if (!$("drill").open) $("drill").showModal();
  try {
    const d = await getJSON("/ui/api/executions/" + encodeURIComponent(id));
    const parts = [el("h2", {}, `Execution ${d.execution_id}`),
                   el("p", {class: "status " + d.status}, d.status)];
    parts.push(section("Request", pairs(d.request)));
    parts.push(section("Fee and time", pairs({fee_used: d.fee_used, duration_ms: d.duration_ms})));
    parts.push(section("Resource use", d.resource_use ? pairs(d.resource_use)
      : el("p", {class: "muted"}, "not reported for this execution")));
    parts.push(section("Error", d.error ? el("p", {class: "error"}, `${d.error.kind}: ${d.error.message}`)
      : el("p", {class: "muted"}, "none")));
    parts.push(section("Effects", d.effects === null
      ? el("p", {class: "muted"}, "kept only for executions this server started with wait=false and still holds")
      : d.effects.length ? el("ul", {}, ...d.effects.map((e) => el("li", {class: "mono"},
          `${e.kind} ${e.key ?? e.key_base64 ?? ""} ${e.value ?? e.value_base64 ?? ""}`)))
      : el("p", {class: "muted"}, "none")));
    parts.push(section("Events", d.events && d.events.length
      ? el("ul", {}, ...d.events.map((e) => el("li", {class: "mono"},
          `${e.kind}${e.level ? " " + e.level : ""}: ${e.payload ?? e.payload_base64}`)))
      : el("p", {class: "muted"}, "none")));
    parts.push(section("Parent", d.parent ? execLink(d.parent) : el("p", {class: "muted"}, "none")));
    parts.push(section("Children", d.children && d.children.length
      ? el("ul", {}, ...d.children.map((c) => el("li", {}, execLink(c))))
      : el("p", {class: "muted"}, "none")));
    const record = d.record ? el("div", {id: "drill-record"}, pairs({
      seq: d.record.seq, record_kind: d.record.record_kind, execution_id: d.record.execution_id,
      parent_id: d.record.parent_id, timestamp: d.record.timestamp,
      effect_digest: d.record.effect_digest, leaf_hash: d.record.leaf_hash,
      chain_hash: d.record.chain_hash, detail: d.record.detail}))
      : el("p", {class: "muted"}, "no final record yet (the execution has not finished)");
    parts.push(section("Audit record", record));
    body.replaceChildren(...parts);
  } catch (err) {
    body.replaceChildren(el("p", {class: "error"}, err.message));
  }
}

async function verifyNow() {
  $("verify-now").disabled = true;
  $("audit-verified").textContent = "verifying…";
  try {
    const v = await getJSON("/ui/api/audit/verify", {method: "POST"});
    drawAudit({length: v.count, head: v.head, last_verify: v});
  } catch (err) {
    $("audit-verified").textContent = "not verified: " + err.message;
  } finally {
    $("verify-now").disabled = !(viewer && viewer.can_verify);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); loadExecutions(); });
  $("filters").addEventListener("change", () => loadExecutions());
  $("verify-now").addEventListener("click", verifyNow);
  refresh();
  loadExecutions();
  setInterval(refresh, 1000);
  setInterval(() => { if (!$("drill").open) loadExecutions(); }, 3000);
});
