"""The ``lb dashboard`` page: plain HTML, CSS and JavaScript served as they are (no build step,
no library). The script follows ``/api/events`` (server-sent events; the browser reconnects by
itself) and renders each frame; every value from Redis is written with ``textContent`` (never
as markup), which the app's Content-Security-Policy backs up.

Stable hooks for tests and scripts: ``#banner`` (``data-kind`` redis / server while
reconnecting), ``#groups > section.group[data-group]``, worker rows
``tr.worker[data-worker][data-state]`` with cells ``td[data-col]``, ``svg.spark[data-group]``
(the backlog over time), ``#takeovers tr.takeover[data-id][data-from][data-to][data-cause]``
(``.recent`` within lb top's highlight window), ``#dead-letters tr.dead-letter[data-id]``
(``.poison`` for a quarantined call), the lookup form ``#lookup-form`` / ``#lookup-id``, its
result ``#lookup-result`` with ``#lookup-state``, ``#children tr.child[data-id]`` and
``#timeline li[data-what]``, and ``body[data-frames]`` (frames rendered since the page loaded).
"""

from __future__ import annotations

__all__ = ["CSS", "JS", "PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lb dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body data-frames="0">
<header>
  <h1>lb dashboard</h1>
  <div id="head">connecting…</div>
  <div id="calls"></div>
</header>
<div id="banner" hidden></div>
<main>
  <div id="groups"></div>
  <section id="takeovers-box">
    <h2>recent takeovers</h2>
    <table id="takeovers">
      <thead><tr><th>at (UTC)</th><th>group</th><th>call</th><th>from</th><th>to</th>
      <th>why</th></tr></thead>
      <tbody></tbody>
    </table>
    <p class="empty" id="no-takeovers">none yet</p>
  </section>
  <section id="dead-box">
    <h2>dead letters and poison calls</h2>
    <div id="dead-reasons"></div>
    <table id="dead-letters">
      <thead><tr><th>at (UTC)</th><th>group</th><th>call</th><th>reason</th></tr></thead>
      <tbody></tbody>
    </table>
    <p class="empty" id="no-dead">none</p>
  </section>
  <section id="lookup-box">
    <h2>promise lookup</h2>
    <form id="lookup-form" autocomplete="off">
      <input id="lookup-id" name="id" placeholder="promise id (job-1, job-1:2, ...)" size="40">
      <button id="lookup-go" type="submit">look up</button>
    </form>
    <div id="lookup-error" class="error" hidden></div>
    <div id="lookup-result" hidden></div>
  </section>
</main>
</body>
</html>
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 10px 18px; }
header h1 { font-size: 18px; margin: 0 0 4px; }
#head, #calls { font-family: ui-monospace, monospace; font-size: 12px; opacity: .9; }
main { padding: 12px 18px; display: grid; gap: 14px; grid-template-columns: 1fr 1fr; }
#groups, #lookup-box { grid-column: 1 / -1; display: grid; gap: 14px; }
#lookup-box { display: block; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 10px 14px; }
h2 { font-size: 15px; margin: 0 0 8px; }
h2 .meta { font-weight: normal; color: #555; margin-left: 10px; font-size: 13px; }
table { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 12px; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid #eef0f3; }
td.num, th.num { text-align: right; }
#banner { background: #ffd24d; color: #3a2d00; padding: 8px 18px; font-weight: bold; }
tr[data-state=alive] td[data-col=state] { color: #1a7f37; }
tr[data-state=stalled] td[data-col=state] { color: #9a6700; font-weight: bold; }
tr[data-state=dead] td[data-col=state] { color: #cf222e; font-weight: bold; }
tr.took { background: #d8f3fb; }
tr.lost { background: #fde2e2; }
tr.takeover.recent { background: #d8f3fb; font-weight: bold; }
tr.dead-letter.poison { background: #f7e1f5; }
.tag { display: inline-block; padding: 0 6px; border-radius: 8px; background: #eef0f3;
  margin-right: 6px; font-size: 12px; }
.tag.poison { background: #f0c4ec; }
.empty { color: #888; margin: 4px 0; }
.spark { background: #fafbfc; border: 1px solid #eef0f3; margin: 0 0 8px; }
.spark polyline { fill: none; stroke: #0969da; stroke-width: 1.5; }
.spark text { font: 10px ui-monospace, monospace; fill: #555; }
button.id { font: inherit; background: none; border: 0; padding: 0; color: #0969da;
  cursor: pointer; text-decoration: underline dotted; }
.error { color: #cf222e; margin: 6px 0; }
#lookup-result h3 { font-size: 13px; margin: 10px 0 4px; }
#lookup-state { font-weight: bold; }
#timeline { font-family: ui-monospace, monospace; font-size: 12px; margin: 0;
  padding-left: 18px; }
#actions { margin-top: 10px; padding: 8px; border: 1px dashed #cf222e; border-radius: 4px; }
#actions input { margin-right: 6px; }
"""

JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let frames = 0, writes = false, current = null, lastLookup = 0;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, String(v));
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}
function clock(ms) { return ms ? new Date(ms).toISOString().substring(11, 19) : "-"; }
function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC") : "-";
}
function shortId(id, width = 10) {
  if (UUID.test(id)) return id.substring(0, 8);
  return id.length <= width ? id : id.substring(0, width - 1) + "\u2026";
}
function idLink(id) {
  const b = el("button", {class: "id", type: "button", title: id, "data-id": id}, shortId(id));
  b.addEventListener("click", () => lookup(id));
  return b;
}
function why(cause) { return cause === "gone" ? "connection gone" : "silent past ttl"; }
function banner(kind, text) {
  const b = $("banner");
  if (!kind) { b.hidden = true; b.removeAttribute("data-kind"); return; }
  b.hidden = false; b.dataset.kind = kind; b.textContent = text;
}

function spark(group, history) {
  const NS = "http://www.w3.org/2000/svg", W = 520, H = 48;
  const svg = document.createElementNS(NS, "svg");
  for (const [k, v] of [["class", "spark"], ["data-group", group], ["width", W],
                        ["height", H], ["viewBox", `0 0 ${W} ${H}`]]) svg.setAttribute(k, v);
  const pts = history.map(([t, b]) => [t, b[group] || 0]);
  const top = Math.max(0, ...pts.map((p) => p[1])), max = Math.max(1, top);
  if (pts.length > 1) {
    const t0 = pts[0][0], span = Math.max(1, pts[pts.length - 1][0] - t0);
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", pts.map(([t, v]) =>
      `${(4 + (W - 150) * (t - t0) / span).toFixed(1)},${(H - 4 - (H - 8) * v / max).toFixed(1)}`
    ).join(" "));
    svg.append(line);
  }
  const label = document.createElementNS(NS, "text");
  label.setAttribute("x", W - 140); label.setAttribute("y", 14);
  const now = pts.length ? pts[pts.length - 1][1] : 0;
  label.textContent = `backlog ${now} (max ${top})`;
  svg.append(label);
  svg.dataset.points = String(pts.length);
  return svg;
}

function holds(held, running) {
  const td = el("td", {"data-col": "held"});
  if (!running) { td.append("-"); return td; }
  held.slice(0, 4).forEach((id) => { td.append(idLink(id), " "); });
  if (running > Math.min(4, held.length)) td.append(`+${running - Math.min(4, held.length)}`);
  return td;
}

function groupSection(name, grp, history) {
  const meta = `backlog ${grp.backlog}  running ${grp.in_flight}  dead letters ` +
    `${grp.dead_letters}` +
    (grp.oldest_waiting_ms ? `  oldest waiting ${(grp.oldest_waiting_ms / 1000).toFixed(1)} s`
                           : "") +
    (grp.hidden ? `  (${grp.hidden} gone: lb forget --gone)` : "");
  const sec = el("section", {class: "group", "data-group": name},
    el("h2", {}, `group ${name}`, el("span", {class: "meta"}, meta)), spark(name, history));
  const head = el("tr", {});
  for (const [c, n] of [["worker"], ["state"], ["run", 1], ["%run", 1], ["held"], ["done", 1],
                        ["%done", 1], ["took", 1]]) head.append(el("th", {class: n && "num"}, c));
  const body = el("tbody", {});
  const names = Object.keys(grp.workers).sort();
  for (const w of names) {
    const wi = grp.workers[w];
    const cls = "worker" + (wi.took_recently ? " took" : wi.lost_recently ? " lost" : "");
    const num = (col, v) => el("td", {class: "num", "data-col": col}, v);
    body.append(el("tr", {class: cls, "data-worker": w, "data-state": wi.state},
      el("td", {"data-col": "worker"}, w), el("td", {"data-col": "state"}, wi.state),
      num("running", wi.running), num("share-running", wi.share_running),
      holds(wi.held, wi.running), num("done", wi.done), num("share-done", wi.share_done),
      num("takeovers", wi.takeovers)));
  }
  if (!names.length) body.append(el("tr", {}, el("td", {colspan: 8}, "(no workers)")));
  sec.append(el("table", {class: "workers"}, el("thead", {}, head), body));
  return sec;
}

function renderTakeovers(s) {
  const events = [];
  for (const [g, grp] of Object.entries(s.groups)) {
    for (const e of grp.takeovers) events.push([g, e]);
  }
  events.sort((a, b) => b[1].at_ms - a[1].at_ms);
  const body = $("takeovers").tBodies[0];
  body.replaceChildren(...events.slice(0, 10).map(([g, e]) => el("tr", {
    class: "takeover" + (e.recent ? " recent" : ""), "data-id": e.id, "data-from": e.from,
    "data-to": e.to, "data-cause": e.cause, "data-group": g},
    el("td", {}, clock(e.at_ms)), el("td", {}, g), el("td", {}, idLink(e.id)),
    el("td", {}, e.from), el("td", {}, e.to), el("td", {}, why(e.cause)))));
  $("no-takeovers").hidden = events.length > 0;
}

function renderDead(s, dead) {
  const reasons = $("dead-reasons");
  reasons.replaceChildren();
  const rows = [];
  for (const [g, grp] of Object.entries(s.groups)) {
    for (const [r, n] of Object.entries(grp.dead_by_reason || {}).sort()) {
      const poison = r === "quarantined";
      reasons.append(el("span", {class: "tag" + (poison ? " poison" : ""), "data-group": g,
        "data-reason": r}, `${g}: ${r}${poison ? " (poison)" : ""} ${n}`));
    }
    for (const d of (dead[g] || [])) rows.push([g, d]);
  }
  rows.sort((a, b) => b[1].at_ms - a[1].at_ms);
  $("dead-letters").tBodies[0].replaceChildren(...rows.map(([g, d]) => el("tr", {
    class: "dead-letter" + (d.poison ? " poison" : ""), "data-id": d.id, "data-group": g},
    el("td", {}, clock(d.at_ms)), el("td", {}, g), el("td", {}, idLink(d.id)),
    el("td", {}, d.reason))));
  $("no-dead").hidden = rows.length > 0;
}

function render(f) {
  frames += 1;
  document.body.dataset.frames = String(frames);
  writes = !!f.writes;
  document.body.dataset.writes = String(writes);
  const s = f.snapshot;
  if (!f.ok) {
    banner("redis", s ? `reconnecting to Redis since ${clock(f.down_since_ms)} UTC: ${f.error}`
                      : `waiting for the first answer from Redis: ${f.error}`);
  } else banner(null);
  if (!s) return;
  $("head").textContent = `${when(s.now_ms)}  ${s.redis}  prefix ${s.prefix}` +
    (writes ? "  (writes allowed)" : "  (read-only)");
  const c = s.calls;
  const settled = Object.entries(c).reduce((n, [k, v]) => n + (k === "pending" ? 0 : v), 0);
  $("calls").textContent = `calls: pending ${c.pending}  settled ${settled} (resolved ` +
    `${c.resolved}, rejected ${settled - c.resolved})` +
    (s.connections_known === false ? "  (no CLIENT LIST: state from heartbeats)" : "");
  const groups = Object.keys(s.groups);
  $("groups").replaceChildren(...groups.map((g) => groupSection(g, s.groups[g], f.history)));
  if (!groups.length) {
    $("groups").append(el("section", {}, "no groups yet: start a worker (lb worker --group G)"));
  }
  renderTakeovers(s);
  renderDead(s, f.dead_letters || {});
  if (current && current.promise.state === "pending" && Date.now() - lastLookup > 1000) {
    lookup(current.promise.id, true);
  }
}

function kv(rows) {
  return el("table", {class: "kv"}, el("tbody", {}, ...rows.filter((r) => r[1] !== undefined)
    .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {"data-key": k},
      v === null ? "-" : v)))));
}

function actions(id) {
  const box = el("div", {id: "actions"}, el("strong", {}, "settle from outside: "));
  const tok = el("input", {id: "token", type: "password", placeholder: "token", size: 14});
  const val = el("input", {id: "settle-value", placeholder: "JSON value (optional)", size: 24});
  const out = el("span", {id: "settle-result"});
  box.append(tok, val);
  for (const a of ["resolve", "reject", "cancel"]) {
    const b = el("button", {type: "button", "data-action": a}, a);
    b.addEventListener("click", async () => {
      out.textContent = "…";
      try {
        const r = await fetch("/api/promise/" + encodeURIComponent(id), {method: "POST",
          headers: {"Content-Type": "application/json", "Authorization": "Bearer " + tok.value},
          body: JSON.stringify({action: a, value: val.value})});
        const body = await r.json();
        out.textContent = r.ok ? ` ${body.state}` : ` ${r.status}: ${body.error}`;
        if (r.ok) lookup(id, true);
      } catch (e) { out.textContent = " " + e; }
    });
    box.append(b, " ");
  }
  box.append(out);
  return box;
}

function renderLookup(d) {
  const p = d.promise, t = d.task, res = $("lookup-result");
  const rows = [["id", p.id], ["state", el("span", {id: "lookup-state", "data-state": p.state},
    p.state)], ["created", when(p.created_at)], ["settled", when(p.settled_at)],
    ["deadline", when(p.timeout_at)]];
  if (p.call) rows.push(["function", p.call.func], ["arguments", p.call.args]);
  if (p.value !== undefined) rows.push(["value", p.value]);
  if (p.error) rows.push(["error", `${p.error.type}: ${p.error.message}`]);
  const parts = [el("h3", {}, "promise"), kv(rows)];
  if (t) {
    parts.push(el("h3", {}, "task"), kv([["state", t.state], ["group", t.group],
      ["holder", t.pid || null], ["delivery (v)", t.v], ["lapses", t.lapses || "0"],
      ["strikes", t.strikes || "0"], ["deaths", t.deaths || "0"], ["dead holder", t.dead]]));
  }
  const ch = el("tbody", {}, ...d.children.map((c) => el("tr", {class: "child", "data-id": c.id,
    "data-state": c.state}, el("td", {}, idLink(c.id)), el("td", {}, c.kind),
    el("td", {}, c.state), el("td", {}, c.holder || "-"), el("td", {}, when(c.created_at)),
    el("td", {}, when(c.settled_at)))));
  parts.push(el("h3", {}, `children (${d.children.length}${d.children_truncated ? "+" : ""})`),
    el("table", {id: "children"}, el("thead", {}, el("tr", {}, ...["id", "kind", "state",
      "holder", "created", "settled"].map((h) => el("th", {}, h)))), ch));
  parts.push(el("h3", {}, "timeline"), el("ol", {id: "timeline"}, ...d.timeline.map((e) =>
    el("li", {"data-what": e.what}, `${e.at_ms ? when(e.at_ms) : "now"}  ${e.what}` +
      (e.detail ? `  ${e.detail}` : "")))));
  if (writes && p.state === "pending") parts.push(actions(p.id));
  const keep = $("actions");  // keep what the user typed across live refreshes
  res.replaceChildren(...parts);
  if (keep && $("actions")) {
    $("token").value = keep.querySelector("#token").value;
    $("settle-value").value = keep.querySelector("#settle-value").value;
    $("settle-result").textContent = keep.querySelector("#settle-result").textContent;
  }
  res.hidden = false;
}

async function lookup(id, quiet) {
  if (!quiet) $("lookup-id").value = id;
  lastLookup = Date.now();
  const err = $("lookup-error");
  try {
    const r = await fetch("/api/promise/" + encodeURIComponent(id));
    const body = await r.json();
    if (!r.ok) {
      err.hidden = false; err.textContent = `${r.status}: ${body.error}`;
      err.dataset.status = String(r.status);
      if (!quiet) { $("lookup-result").hidden = true; current = null; }
      return;
    }
    err.hidden = true; current = body; renderLookup(body);
  } catch (e) { err.hidden = false; err.textContent = String(e); }
}

function start() {
  $("lookup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("lookup-id").value.trim();
    if (id) lookup(id);
  });
  const es = new EventSource("/api/events");
  es.addEventListener("frame", (ev) => render(JSON.parse(ev.data)));
  es.addEventListener("error", () => {
    banner("server", "the dashboard server does not answer: reconnecting");
  });
}
document.addEventListener("DOMContentLoaded", start);
"""
