// The Meridian console: read-only views over the region's own API. It polls
// GET /v1/status every 2 s (published figures, no store scan) and the
// keyspace and merge lists every 10 s; the conflict ledger and backups are
// read when asked for. A region that refuses the token (401) is not polled
// again until another token is given. Every value is put into the page as
// text, never as markup: keys and values are user data.
"use strict";

const POLL_MS = 2000;
const SLOW_POLL_MS = 10000;
const HISTORY_POINTS = 150; // 5 minutes at one point per poll
const state = {
  token: sessionStorage.getItem("meridian-token") || "",
  history: [], // [{t, lag: {peer: seconds}}]
  lastSlow: 0,
  ownership: {}, // keyspace -> ownership summary from /v1/status
  refused: false, // the last poll was refused (401): wait for a token
};

function txt(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function body(id) {
  return document.querySelector(`#${id} .body`);
}

function show(id, ...nodes) {
  const b = body(id);
  b.className = "body";
  b.replaceChildren(...nodes);
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const r = await fetch(path, { headers });
  let b = {};
  try { b = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const e = new Error(b.message || `${r.status}`);
    e.status = r.status;
    e.code = b.error;
    throw e;
  }
  return b;
}

function explain(e) {
  if (e.status === 401) return "this region needs an access token: paste one above";
  if (e.status === 403) return "your token does not have the right for this view";
  return `could not read: ${e.message}`;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

function vvKey(vv) {
  return (vv || []).map((e) => `${e.region}/${e.incarnation}:${e.seq}`).sort().join(",");
}

function renderStatus(s) {
  document.getElementById("region").textContent =
    `region ${s.region} · ${s.ops} ops · up ${s.uptime_s} s · ${s.standby.role}`;
  const mine = vvKey(s.vv);
  const peers = s.peers || [];
  const same = peers.filter((p) => vvKey(p.acked_vv) === mine && p.lag_ops === 0);
  const conv = document.getElementById("converged");
  if (peers.length === 0) {
    conv.textContent = "single region";
    conv.className = "muted";
  } else if (same.length === peers.length) {
    conv.textContent = "converged: every peer holds the same ops";
    conv.className = "ok";
  } else {
    conv.textContent = `not converged: ${peers.length - same.length} of ${peers.length} peers differ`;
    conv.className = "warn";
  }
  show("links", peers.length === 0
    ? el("p", { class: "muted" }, "No peers configured.")
    : table(["peer", "link", "lag", "ops behind", "clock offset", "errors", "last error"],
      peers.map((p) => [
        p.region,
        el("span", { class: p.link === "connected" ? "ok" : "bad" }, p.link),
        ago(p.lag_ms),
        p.lag_ops,
        p.clock_offset_ms === null ? "–" : `${p.clock_offset_ms} ms`,
        p.errors,
        p.last_error || "",
      ])));
  const lag = {};
  for (const p of peers) lag[p.region] = p.lag_ms / 1000;
  state.history.push({ t: Date.now(), lag });
  if (state.history.length > HISTORY_POINTS) state.history.shift();
  renderChart();
  renderStandby(s.standby);
  for (const k of s.keyspaces || []) state.ownership[k.name] = k.ownership;
}

const COLOURS = ["#2f6fde", "#d9534f", "#1a7f4b", "#b26b00", "#7b3fb8"];

function renderChart() {
  const h = state.history;
  const peers = [...new Set(h.flatMap((p) => Object.keys(p.lag)))].sort();
  const W = 600, H = 180, L = 40, B = 20;
  const max = Math.max(1, ...h.flatMap((p) => Object.values(p.lag)));
  const t0 = h.length ? h[0].t : 0, t1 = h.length ? h[h.length - 1].t : 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 5);
  const y = (v) => H - B - (v / max) * (H - B - 10);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "replication lag per peer" });
  root.append(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, stroke: "#dde1ea" }));
  for (const v of [0, max / 2, max]) {
    const label = svg("text", { x: 2, y: y(v) + 4, "font-size": 10, fill: "#6b7385" });
    label.textContent = v.toFixed(max < 3 ? 2 : 0);
    root.append(label);
  }
  peers.forEach((peer, i) => {
    const pts = h.filter((p) => peer in p.lag).map((p) => `${x(p.t).toFixed(1)},${y(p.lag[peer]).toFixed(1)}`);
    root.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: COLOURS[i % COLOURS.length], "stroke-width": 2, "data-peer": peer }));
    const label = svg("text", { x: L + 8 + i * 110, y: 12, "font-size": 11, fill: COLOURS[i % COLOURS.length] });
    label.textContent = `→ ${peer}`;
    root.append(label);
  });
  show("chart", root);
}

function renderStandby(sb) {
  const rows = (sb.followers || []).map((f) => [f.client_url || f.peer_url || "", ago(f.lag_ms), f.lag_ops, f.live === false ? "no" : "yes"]);
  show("standby",
    el("p", {}, `This member is the ${sb.role} of its region (epoch ${sb.epoch}).`,
      sb.role === "follower" && sb.leader ? ` Leader: ${sb.leader.client_url || sb.leader.peer_url}; staleness ${ago(sb.staleness_ms)}.` : ""),
    rows.length ? table(["standby", "lag", "ops behind", "live"], rows) : el("p", { class: "muted" }, "No standbys follow this member."));
}

function renderKeyspaces(k) {
  show("keyspaces", table(["keyspace", "policy", "write concern", "ownership", "conflicts stored"],
    k.keyspaces.map((d) => {
      const name = el("a", { href: `#conflicts`, "data-keyspace": d.name }, d.name);
      name.addEventListener("click", () => { document.getElementById("c-keyspace").value = d.name; loadConflicts(); });
      const own = state.ownership[d.name];
      return [
        name,
        txt(d.policy) + (d.merge ? ` (merge ${d.merge})` : ""),
        txt(d.write_concern || "local"),
        own ? `epoch ${own.epoch}, ${own.rules} rules, default ${txt(own.default)}, ${txt(own.mode)}` : "–",
        d.conflicts_stored ?? 0,
      ];
    })));
}

function renderMerges(m) {
  show("merges", table(["name", "kind", "hash"],
    m.merges.map((f) => [f.name, f.builtin ? "built in" : "script", el("code", {}, f.hash || "")])));
}

function side(s) {
  return `${s.deleted ? "a delete" : JSON.stringify(s.value)} from ${s.origin} at ${s.hlc}`;
}

function renderConflicts(c) {
  if (!c.conflicts.length) {
    show("conflicts", el("p", { class: "muted" }, "No conflicts recorded for this choice."));
    return;
  }
  show("conflicts", ...c.conflicts.map((e) => el("div", { class: "entry" },
    el("div", {}, el("b", {}, `${e.keyspace}/${e.key}`), e.path && e.path.length ? ` field ${txt(e.path)}` : "",
      el("span", { class: "muted" }, ` · #${e.id} · ${new Date(e.resolved_at_ms).toISOString()}`)),
    el("div", {}, "winner: ", side(e.winner)),
    el("div", {}, "lost: ", e.losers.map(side).join("; ")),
    el("div", {}, `rule: ${e.rule}`, e.merge ? ` (function ${e.merge.function}${e.merge.failed ? ", failed: kept the newest" : ""})` : "",
      e.ambiguous ? el("span", { class: "warn" }, " · ambiguous: the clocks could not order these writes") : ""))));
}

async function loadConflicts() {
  const ks = document.getElementById("c-keyspace").value.trim();
  const key = document.getElementById("c-key").value;
  if (!ks) return;
  let q = `/v1/conflicts?keyspace=${encodeURIComponent(ks)}&limit=50`;
  if (key) q += `&key=${encodeURIComponent(key)}`;
  try { renderConflicts(await api(q)); } catch (e) { show("conflicts", el("p", { class: "bad" }, explain(e))); }
}

async function loadBackups() {
  try {
    const b = await api("/v1/admin/backups");
    show("backups",
      el("p", {}, `Target: ${b.target}`),
      b.backups.length
        ? table(["backup", "snapshot", "covers to", "bytes"], b.backups.map((x) => [x.id, new Date(x.snapshot_ms).toISOString(), new Date(x.covers_to_ms).toISOString(), x.bytes]))
        : el("p", { class: "muted" }, "No backups yet."));
  } catch (e) {
    show("backups", el("p", { class: "muted" },
      e.status === 404 || e.code === "no_backup_target" ? "No backup target is configured." : explain(e)));
  }
}

async function poll() {
  const err = document.getElementById("error");
  try {
    renderStatus(await api("/v1/status"));
    err.textContent = "";
    if (Date.now() - state.lastSlow >= SLOW_POLL_MS) {
      state.lastSlow = Date.now();
      const [k, m] = await Promise.allSettled([api("/v1/keyspaces"), api("/v1/merges")]);
      if (k.status === "fulfilled") renderKeyspaces(k.value); else show("keyspaces", el("p", { class: "bad" }, explain(k.reason)));
      if (m.status === "fulfilled") renderMerges(m.value); else show("merges", el("p", { class: "bad" }, explain(m.reason)));
    }
  } catch (e) {
    err.textContent = explain(e);
    if (e.status === 401) state.refused = true;
  }
}

document.getElementById("token").value = state.token;
document.getElementById("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("meridian-token", state.token);
  state.lastSlow = 0;
  state.refused = false;
  poll();
});
document.getElementById("backup-load").addEventListener("click", loadBackups);
document.getElementById("conflict-query").addEventListener("submit", (ev) => { ev.preventDefault(); loadConflicts(); });
// ?keyspace=K&key=X opens the ledger there (links from alerts, tests).
const params = new URLSearchParams(location.search);
if (params.get("keyspace")) {
  document.getElementById("c-keyspace").value = params.get("keyspace");
  document.getElementById("c-key").value = params.get("key") || "";
  loadConflicts();
}
poll();
setInterval(() => { if (!state.refused) poll(); }, POLL_MS);
