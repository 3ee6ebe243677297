// The dashboard: reads status.json (the control socket's document) once a second and draws
// it. Every value goes in through textContent or an SVG attribute, never as markup, so
// nothing a client or peer chose can become part of the page.
"use strict";

const REFRESH_MS = 1000;
const HOUR = 3600;
const SAMPLE_SECONDS = 10;
const SVG = "http://www.w3.org/2000/svg";
const TRANSPORTS = {
  v2: "v2",
  passthrough: "v2 passthrough",
  v1_fallback: "v1 fallback",
  v1: "v1",
  connecting: "connecting",
};
// Transports that are v2 on the wire between this host and the other.
const ENCRYPTED = ["v2", "passthrough"];

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function duration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
}

function percent(part, whole) {
  if (whole === 0) return "–";
  const share = (100 * part) / whole;
  return (Number.isInteger(share) ? share : share.toFixed(1)) + " %";
}

function sum(object) {
  return Object.values(object || {}).reduce((a, b) => a + b, 0);
}

// One row of the connections table per id, updated in place: a session id a person is
// selecting stays selected while the numbers beside it move.
const rows = new Map();
const CELLS = ["id", "front", "direction", "client", "destination", "network", "transport",
  "session", "accepted", "dialled", "age"];

function connectionRow(c) {
  let row = rows.get(c.id);
  if (!row) {
    row = el("tr");
    row.dataset.id = c.id;
    for (const name of CELLS) {
      const cell = el("td");
      cell.dataset.cell = name;
      if (["accepted", "dialled", "age", "id"].includes(name)) cell.className = "num";
      if (name === "session") cell.className = "session";
      if (name === "transport") cell.append(el("span", "", "transport"));
      row.append(cell);
    }
    rows.set(c.id, row);
  }
  const cell = (name) => row.querySelector(`[data-cell="${name}"]`);
  setText(cell("id"), String(c.id));
  setText(cell("front"), c.front);
  setText(cell("direction"), c.direction);
  setText(cell("client"), c.client);
  setText(cell("destination"), c.destination);
  setText(cell("network"), c.network || "–");
  const transport = cell("transport").firstChild;
  setText(transport, TRANSPORTS[c.transport] || c.transport);
  transport.className = "transport " + c.transport;
  setText(cell("session"), c.session_id || "–");
  setText(cell("accepted"), bytes(c.client_in) + " / " + bytes(c.client_out));
  setText(cell("dialled"), bytes(c.remote_in) + " / " + bytes(c.remote_out));
  setText(cell("age"), duration(c.duration_seconds));
  return row;
}

function drawConnections(connections) {
  const body = $("connections").tBodies[0];
  const live = new Set(connections.map((c) => c.id));
  for (const [id, row] of rows) {
    if (!live.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  connections.forEach((c, index) => {
    const row = connectionRow(c);
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
  });
  $("no-connections").hidden = connections.length > 0;
}

// A two-column table of label, value; rows with a zero count left out unless `all`.
function drawTally(id, entries, all) {
  const body = $(id).tBodies[0];
  const shown = entries.filter(([, value]) => all || value !== 0);
  body.replaceChildren(...shown.map(([label, value]) => {
    const row = el("tr");
    row.append(el("td", label), el("td", typeof value === "number" ? String(value) : value, typeof value === "number" ? "num" : ""));
    return row;
  }));
  if (shown.length === 0) {
    const row = el("tr");
    row.append(el("td", "none"));
    body.append(row);
  }
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The next 1, 2 or 5 times a power of 1024 or of ten: a scale a person reads at a glance.
function roundUp(value) {
  let unit = 1;
  while (value > unit * 1024) unit *= 1024;
  let step = 1;
  while (value > unit * step * 5) step *= 10;
  for (const nice of [1, 2, 5, 10]) if (value <= unit * step * nice) return unit * step * nice;
  return value;
}

// The last hour as two lines, v2 and v1, in bytes a second; drawn anew each refresh.
function drawChart(samples, now) {
  const box = $("chart");
  const width = Math.max(box.clientWidth, 300);
  const height = Math.max(box.clientHeight, 120);
  const left = 64, right = 12, top = 12, bottom = 22;
  // Each sample spans from the one before; the last is the span in progress, at least a
  // second long so that a few bytes just now do not read as a burst.
  const rated = samples.map((s, i) => {
    const span = Math.max(1, i === 0 ? SAMPLE_SECONDS : s.at - samples[i - 1].at);
    return { at: s.at, v1: s.v1 / span, v2: s.v2 / span };
  }).filter((s) => s.at >= now - HOUR);
  const peak = roundUp(Math.max(1024, ...rated.map((s) => Math.max(s.v1, s.v2))));
  const x = (at) => left + ((at - (now - HOUR)) / HOUR) * (width - left - right);
  const y = (value) => top + (1 - value / peak) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "bytes a second over the last hour, v2 and v1" });
  for (const fraction of [0, 0.5, 1]) {
    const at = y(peak * fraction);
    chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: at, y2: at }));
    chart.append(svg("text", { class: "axis", x: left - 6, y: at + 4, "text-anchor": "end" }, bytes(peak * fraction) + "/s"));
  }
  for (const [minutes, anchor] of [[60, "start"], [30, "middle"], [0, "end"]]) {
    chart.append(svg("text", { class: "axis", x: x(now - minutes * 60), y: height - 6, "text-anchor": anchor },
      minutes === 0 ? "now" : `−${minutes} min`));
  }
  for (const wire of ["v2", "v1"]) {
    const points = rated.map((s) => `${x(s.at).toFixed(1)},${y(s[wire]).toFixed(1)}`);
    if (points.length > 0) {
      // A history shorter than the hour starts with the proxy: nothing moved before.
      if (rated[0].at - SAMPLE_SECONDS >= now - HOUR) points.unshift(`${x(rated[0].at - SAMPLE_SECONDS).toFixed(1)},${y(0).toFixed(1)}`);
      chart.append(svg("polyline", { class: wire, points: points.join(" ") }));
    }
  }
  box.replaceChildren(chart);
  setText($("chart-scale"), rated.length === 0 ? " · no samples yet" : ` · one point every ${SAMPLE_SECONDS} s`);
}

function draw(doc) {
  const now = Date.now() / 1000;
  const proxy = doc.proxy;
  const tallies = doc.tallies || { opened: {}, refused: {}, failed: {}, wire: { v1: 0, v2: 0 } };
  setText($("version"), proxy.version);
  setText($("open"), String(doc.connections.length));
  const opened = sum(tallies.opened);
  const encrypted = ENCRYPTED.reduce((n, t) => n + (tallies.opened[t] || 0), 0);
  setText($("v2-share"), percent(encrypted, opened));
  setText($("opened-detail"), `${encrypted} of ${opened} since start`);
  const wire = tallies.wire;
  setText($("wire-ratio"), percent(wire.v2, wire.v1 + wire.v2));
  // Both sockets count: a local client's side is v1 on this host, so half is the most an
  // outbound proxy shows.
  setText($("wire-detail"), `${bytes(wire.v2)} v2 · ${bytes(wire.v1)} v1, both sockets`);
  setText($("trouble"), `${sum(tallies.refused)} / ${sum(tallies.failed)}`);
  setText($("uptime"), duration(now - proxy.started));
  setText($("pid"), "pid " + proxy.pid);
  drawConnections(doc.connections);
  drawTally("opened", Object.entries(TRANSPORTS).filter(([t]) => t in tallies.opened)
    .map(([t, label]) => [label, tallies.opened[t]]), true);
  drawTally("refused", Object.entries(tallies.refused), false);
  drawTally("failed", Object.entries(tallies.failed), false);
  const totals = doc.totals;
  drawTally("sides", [
    ["from clients and peers", bytes(totals.client_in)],
    ["to clients and peers", bytes(totals.client_out)],
    ["from remotes and the node", bytes(totals.remote_in)],
    ["to remotes and the node", bytes(totals.remote_out)],
  ], true);
  const list = (addresses) => (addresses && addresses.length ? addresses.join(", ") : "none");
  drawTally("proxy", [
    ["version", proxy.version],
    ["started", new Date(proxy.started * 1000).toLocaleString()],
    ["redirected connections on", list(proxy.listen)],
    ["SOCKS5 on", list(proxy.socks5)],
    ["inbound peers on", list(proxy.inbound)],
    ["upstream SOCKS5", proxy.upstream_socks5 || "none"],
    ["shaping", proxy.shaping || "unknown"],
    ["v1 fallback", proxy.v1_fallback === undefined ? "unknown" : proxy.v1_fallback ? "on" : "off"],
  ], true);
  const traffic = doc.traffic || [];
  drawChart(traffic, traffic.length ? traffic[traffic.length - 1].at : now);
}

let lastSeen = 0;

async function refresh() {
  const state = $("state");
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`status.json: ${response.status}`);
    draw(await response.json());
    lastSeen = Date.now();
    state.className = "state live";
    setText(state, "live, updated every second");
  } catch (error) {
    state.className = "state stale";
    setText(state, lastSeen ? `no answer since ${new Date(lastSeen).toLocaleTimeString()}: ${error.message}` : `no answer: ${error.message}`);
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
