// The operator's dashboard: plain DOM and SVG, no library, nothing from the internet.
// The street view and the fleet come live from /api/dashboard/events (server-sent
// events); the night and the verdict are read from their JSON endpoints.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2f6fd6", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#d35400", "#7f8c8d", "#2c3e50"];

const AUTO_HOURS = 12; // "since the first level" looks this far back at most
const state = { street: null, night: null, nightKey: "", episodes: "", live: {}, view: "street" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function db(x) { return x === null || x === undefined ? "–" : x.toFixed(1); }

function clock(iso) {
  // "2026-12-06T01:02:03+01:00" -> "01:02:03", the site's own time
  return iso ? iso.slice(11, 19) : "–";
}

function ago(now, then) {
  if (then === null || then === undefined) return "never";
  const s = Math.max(0, Math.round(now - then));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function siteTime(epoch, zone) {
  return new Date(epoch * 1000).toLocaleTimeString("en-GB", { timeZone: zone, hour: "2-digit", minute: "2-digit" });
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

// ------------------------------------------------------------------ views

function show(view) {
  state.view = ["street", "night", "verdict", "fleet"].includes(view) ? view : "street";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + state.view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.view === state.view);
  if (state.view === "night") loadNight();
  if (state.view === "verdict") loadVerdict(false);
}

// ------------------------------------------------------------------ street

function zoneBadge(z) {
  if (z.episode) {
    return z.episode.control
      ? el("span", { class: "badge control" }, "control (nothing sent)")
      : el("span", { class: "badge nudge" }, "nudge: " + z.episode.kind + " " + z.episode.level + " %");
  }
  if (z.loud) return el("span", { class: "badge loud" }, "loud");
  if (!z.active_schedule) return el("span", { class: "badge" }, "outside its hours");
  return el("span", { class: "badge" }, "quiet");
}

function renderStreet(data) {
  const root = document.getElementById("zones");
  const cards = [];
  for (const z of data.zones) {
    const thr = z.trigger.threshold_db;
    const sensors = el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "sensor"), el("th", {}, "state"),
        el("th", { class: "num" }, "LAeq"), el("th", { class: "num" }, "LAFmax"),
        el("th", { class: "num" }, "peaks"), el("th", {}, "last seen"))));
    const body = el("tbody");
    for (const s of z.sensors) {
      const st = s.online === null ? "never heard" : !s.online ? "offline" : s.live ? "online" : "silent";
      const cls = s.online === null ? "never" : !s.online || !s.live ? "offline" : "";
      const width = s.laeq === null ? 0 : Math.max(0, Math.min(60, (s.laeq - 30) * 1.2));
      const over = s.laeq !== null && s.laeq >= thr;
      body.append(el("tr", { "data-sensor": s.sensor },
        el("td", {}, s.sensor),
        el("td", { class: cls }, st),
        el("td", { class: "num laeq", id: "laeq-" + z.zone + "-" + s.sensor }, db(s.laeq),
          el("span", { class: over ? "bar over" : "bar", style: "width:" + width + "px" })),
        el("td", { class: "num lafmax", id: "lafmax-" + z.zone + "-" + s.sensor }, db(s.lafmax)),
        el("td", { class: "num" }, s.peaks),
        el("td", {}, ago(data.now, s.last_seen))));
    }
    sensors.append(body);
    const lights = el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "lights"), el("th", { class: "num" }, "level"),
        el("th", {}, "override"))));
    const lbody = el("tbody");
    for (const l of z.lights) {
      const what = l.override
        ? "until " + clock(l.expires_at_iso) + (l.acked ? "" : " (not yet confirmed)")
        : "none: the programme's level";
      lbody.append(el("tr", {}, el("td", {}, l.group), el("td", { class: "num" }, l.level + " %"), el("td", {}, what)));
    }
    lights.append(lbody);
    const rule = z.trigger.kind === "peaks"
      ? z.trigger.peaks_needed + " peaks ≥ " + thr + " dB(A) in " + z.trigger.window_s + " s at " + z.trigger.min_sensors + " sensor(s)"
      : "LAeq over " + z.trigger.window_s + " s ≥ " + thr + " dB(A) at " + z.trigger.min_sensors + " sensor(s)";
    cards.push(el("article", { class: "zone", id: "zone-" + z.zone, "data-episode": z.episode ? z.episode.id : "" },
      el("h2", {}, z.zone, zoneBadge(z)),
      el("div", { class: "explain" }, "Trigger: " + rule + ". " + z.nudges_last_hour + " nudge(s) in the last hour."),
      el("div", { class: "explain" }, z.explain),
      sensors, el("br"), lights));
  }
  root.replaceChildren(...cards);
}

// ------------------------------------------------------------------ fleet

function renderFleet(data) {
  const body = document.querySelector("#fleet tbody");
  const rows = data.fleet.map((f) => {
    const st = f.online === null ? "never heard" : f.online ? "online" : "offline";
    return el("tr", { "data-sensor": f.sensor },
      el("td", {}, f.sensor),
      el("td", { class: f.online ? "" : "offline" }, st),
      el("td", {}, f.fw ?? "–"),
      el("td", { class: "num" }, f.dsp_load === null ? "–" : Math.round(f.dsp_load * 100) + " %"),
      el("td", { class: "num" }, f.free_mem === null ? "–" : (f.free_mem / 1024).toFixed(1) + " KiB"),
      el("td", { class: "num" }, f.buffered ?? "–"),
      el("td", { class: "num" }, f.uptime_s === null ? "–" : ago(0, -f.uptime_s).replace(" ago", "")),
      el("td", { class: "num" }, f.calibration_offset_db === null ? "–" : f.calibration_offset_db.toFixed(2) + " dB"),
      el("td", {}, ago(data.now, f.last_seen)));
  });
  body.replaceChildren(...rows);
}

// ------------------------------------------------------------------ live

function onStreet(data) {
  state.street = data;
  document.getElementById("site").textContent = data.site;
  document.getElementById("clock").textContent = data.now_iso.replace("T", " ").slice(0, 19);
  renderStreet(data);
  renderFleet(data);
  const select = document.getElementById("night-zone");
  if (select.options.length === 0) {
    for (const z of data.zones) select.append(el("option", { value: z.zone }, z.zone));
    if (state.view === "night") loadNight();
  }
  // the window's levels, kept for the night chart until the minute rows arrive
  for (const z of data.zones) {
    for (const s of z.sensors) {
      if (s.laeq === null) continue;
      const key = z.zone + "/" + s.sensor;
      const pts = (state.live[key] = state.live[key] || []);
      pts.push([data.now, s.laeq]);
      while (pts.length && pts[0][0] < data.now - 3600) pts.shift();
    }
  }
  // a new or ended episode shows up on the night at once
  const episodes = data.zones.map((z) => (z.episode ? z.episode.id : "")).join(",");
  if (episodes !== state.episodes) {
    state.episodes = episodes;
    if (state.view === "night") loadNight();
  } else if (state.view === "night" && state.night) {
    drawNight();
  }
}

function connect() {
  const link = document.getElementById("link");
  const source = new EventSource("/api/dashboard/events");
  source.addEventListener("street", (e) => {
    link.textContent = "live";
    link.className = "link on";
    onStreet(JSON.parse(e.data));
  });
  source.onerror = () => {
    // EventSource reconnects by itself; say so meanwhile
    link.textContent = "reconnecting";
    link.className = "link off";
  };
}

// ------------------------------------------------------------------ night

async function loadNight() {
  const zone = document.getElementById("night-zone").value;
  if (!zone) return;
  const chosen = document.getElementById("night-hours").value;
  const hours = chosen === "auto" ? AUTO_HOURS : chosen;
  try {
    state.night = await getJSON("/api/dashboard/night?zone=" + encodeURIComponent(zone) + "&hours=" + hours);
  } catch (err) {
    document.getElementById("night-chart").replaceChildren(el("p", { class: "empty" }, String(err.message)));
    return;
  }
  drawNight();
  renderEpisodes();
}

function drawNight() {
  const n = state.night;
  const W = 960, H = 320, L = 44, R = 12, T = 12, B = 28;
  const t1 = Math.max(n.now, state.street ? state.street.now : n.now);
  let t0 = n.start;
  if (document.getElementById("night-hours").value === "auto") {
    // from a minute before the first level or episode, and at least ten minutes
    const firsts = Object.values(n.series).filter((r) => r.length).map((r) => r[0][0]);
    firsts.push(...n.episodes.map((e) => e.at));
    const first = firsts.length ? Math.min(...firsts) - 60 : t1 - 600;
    t0 = Math.max(n.start, Math.min(first, t1 - 600));
  }
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const lo = 30, hi = 100;
  const y = (v) => T + (1 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (H - T - B);
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "levels of zone " + n.zone });
  for (let v = lo; v <= hi; v += 10) {
    g.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eceff4" }));
    g.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v));
  }
  const tz = state.street ? state.street.timezone : undefined;
  const step = [60, 120, 300, 600, 900, 1800, 3600, 7200].find((s) => (t1 - t0) / s <= 10) || 14400;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    g.append(svg("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, siteTime(t, tz)));
  }
  for (const e of n.episodes) {
    const end = e.ended_at ?? t1;
    if (end < t0) continue;
    const rect = svg("rect", {
      x: x(Math.max(e.at, t0)), y: T, width: Math.max(2, x(end) - x(Math.max(e.at, t0))), height: H - T - B,
      fill: e.control ? "#d9822b" : "#2f6fd6", opacity: 0.22, class: "episode " + (e.control ? "control" : "nudge"),
      "data-episode": e.id,
    });
    rect.append(svg("title", {}, (e.control ? "control" : "nudge (" + e.kind + ")") + " at " + clock(e.at_iso)));
    g.append(rect);
  }
  const thr = svg("line", { x1: L, x2: W - R, y1: y(n.threshold_db), y2: y(n.threshold_db), stroke: "#c8353b", "stroke-dasharray": "6 4", class: "threshold" });
  g.append(thr);
  g.append(svg("text", { x: W - R - 4, y: y(n.threshold_db) - 4, "text-anchor": "end" }, n.trigger + " threshold " + n.threshold_db + " dB(A)"));
  const sensors = Object.keys(n.series);
  sensors.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = n.series[s].filter((r) => r[0] + 30 >= t0).map((r) => [r[0] + 30, r[1]]); // a minute's LAeq at its middle
    if (pts.length) {
      g.append(svg("polyline", { points: pts.map((p) => x(p[0]) + "," + y(p[1])).join(" "), fill: "none", stroke: colour, "stroke-width": 1.6, class: "minutes" }));
    }
    for (const r of n.series[s]) {
      if (r[0] + 30 < t0) continue;
      g.append(svg("circle", { cx: x(r[0] + 30), cy: y(r[2]), r: 2.5, fill: colour, opacity: 0.6, class: "lafmax" }));
    }
    const last = pts.length ? pts[pts.length - 1][0] + 30 : t0;
    const live = (state.live[n.zone + "/" + s] || []).filter((p) => p[0] >= last && p[0] >= t0);
    if (live.length > 1) {
      g.append(svg("polyline", { points: live.map((p) => x(p[0]) + "," + y(p[1])).join(" "), fill: "none", stroke: colour, "stroke-width": 1, "stroke-dasharray": "2 2", class: "live" }));
    }
    g.append(svg("text", { x: L + 8 + i * 70, y: T + 12, fill: colour, style: "fill:" + colour }, s));
  });
  g.append(svg("text", { x: 4, y: T + 4, transform: "rotate(90 4 " + (T + 4) + ")" }, "dB(A)"));
  document.getElementById("night-chart").replaceChildren(g);
}

function renderEpisodes() {
  const body = document.querySelector("#episodes tbody");
  const rows = state.night.episodes.slice().reverse().map((e) => el("tr", { class: e.control ? "control" : "nudge", "data-episode": e.id },
    el("td", {}, clock(e.at_iso)),
    el("td", {}, e.control ? "control (nothing sent)" : "nudge"),
    el("td", {}, e.kind),
    el("td", { class: "num" }, db(e.laeq)),
    el("td", {}, e.ended_at === null ? "running" : (e.end_reason || "") + ", " + Math.round(e.ended_at - e.at) + " s")));
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "no episode in this period")));
  body.replaceChildren(...rows);
}

// ------------------------------------------------------------------ verdict

async function loadVerdict(force) {
  const root = document.getElementById("verdict");
  if (root.dataset.loaded && !force) return;
  root.replaceChildren(el("p", { class: "empty" }, "computing…"));
  const days = document.getElementById("verdict-days").value;
  const minutes = document.getElementById("verdict-minutes").value;
  let v;
  try {
    v = await getJSON("/api/dashboard/verdict?days=" + days + "&minutes=" + minutes);
  } catch (err) {
    root.replaceChildren(el("p", { class: "empty" }, String(err.message)));
    return;
  }
  root.dataset.loaded = "1";
  const parts = [el("p", { class: "hint" }, "Computed at " + v.computed_at_iso + "; episodes from " + (v.first_episode_at_iso || "–") + " to " + (v.last_episode_at_iso || "–") + ".")];
  if (v.rows.length === 0) {
    parts.push(el("p", { class: "empty" }, "No nudge or control in this period yet."));
  } else {
    parts.push(el("div", { class: "chart", id: "verdict-effects" }, forest(v)));
  }
  for (const row of v.rows) {
    parts.push(el("div", { class: "verdict-row", "data-zone": row.zone, "data-kind": row.kind },
      el("pre", {}, row.text.join("\n")),
      el("div", { class: "plots" },
        scatter(row, "peaks_before", "peaks_after", "peaks per sensor", v.minutes_after),
        scatter(row, "laeq_before", "laeq_after", "LAeq, dB(A)", v.minutes_after))));
  }
  root.replaceChildren(...parts);
}

function forest(v) {
  // one line per zone and kind: the effect on peaks (% change) and on LAeq (dB), with the 95 % CI
  const W = 960, rowH = 34, T = 30, B = 34, H = T + B + rowH * v.rows.length, half = W / 2, L = 170;
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "effects of the nudges", class: "forest" });
  const panels = [
    { key: "peaks", x0: L, x1: half - 10, label: "change of peaks in the next " + v.minutes_after + " min, %", f: (r) => 100 * (r - 1) },
    { key: "laeq", x0: half + 30, x1: W - 14, label: "change of LAeq in the next " + v.minutes_after + " min, dB", f: (d) => d },
  ];
  for (const p of panels) {
    const vals = [0];
    for (const row of v.rows) {
      const e = row[p.key];
      if (e && e.estimate !== null) for (const k of ["estimate", "low", "high"]) if (e[k] !== null) vals.push(p.f(e[k]));
    }
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const pad = Math.max(1, (hi - lo) * 0.1);
    lo -= pad; hi += pad;
    const x = (val) => p.x0 + ((val - lo) / (hi - lo)) * (p.x1 - p.x0);
    g.append(svg("line", { x1: x(0), x2: x(0), y1: T - 6, y2: H - B + 6, stroke: "#888", "stroke-dasharray": "5 4" }));
    g.append(svg("text", { x: (p.x0 + p.x1) / 2, y: H - 8, "text-anchor": "middle" }, p.label));
    g.append(svg("text", { x: p.x0, y: H - B + 18 }, lo.toFixed(0)));
    g.append(svg("text", { x: x(0), y: H - B + 18, "text-anchor": "middle" }, "0"));
    g.append(svg("text", { x: p.x1, y: H - B + 18, "text-anchor": "end" }, hi.toFixed(0)));
    v.rows.forEach((row, i) => {
      const cy = T + rowH * i + rowH / 2;
      const e = row[p.key];
      if (!e || e.estimate === null) {
        g.append(svg("text", { x: (p.x0 + p.x1) / 2, y: cy + 4, "text-anchor": "middle" }, "not enough data yet"));
        return;
      }
      const est = p.f(e.estimate);
      const a = e.low === null ? p.x0 : x(p.f(e.low));
      const b = e.high === null ? p.x1 : x(p.f(e.high));
      g.append(svg("line", { x1: a, x2: b, y1: cy, y2: cy, stroke: "#1d2330", "stroke-width": 2, class: "interval" }));
      g.append(svg("circle", { cx: x(est), cy: cy, r: 5, fill: "#1d2330", class: "estimate" }));
    });
  }
  v.rows.forEach((row, i) => {
    g.append(svg("text", { x: 8, y: T + rowH * i + rowH / 2 + 4, style: "fill:#1d2330" }, row.zone + ", " + row.kind));
  });
  return g;
}

function scatter(row, before, after, what, minutes) {
  const W = 460, H = 300, L = 46, R = 10, T = 24, B = 40;
  const pts = row.points || [];
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": what + " before and after", class: "scatter" });
  g.append(svg("text", { x: L, y: 14, style: "fill:#1d2330" }, row.zone + ", " + row.kind + ": " + what));
  if (pts.length === 0) {
    g.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no analysed episode yet"));
    return el("div", { class: "chart" }, g);
  }
  const vals = pts.flatMap((p) => [p[before], p[after]]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  const pad = Math.max(0.5, (hi - lo) * 0.08);
  lo -= pad; hi += pad;
  const x = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  g.append(svg("line", { x1: x(lo), y1: y(lo), x2: x(hi), y2: y(hi), stroke: "#ccc" }));
  g.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#d8dce4" }));
  for (const p of pts) {
    g.append(p.control
      ? svg("circle", { cx: x(p[before]), cy: y(p[after]), r: 4, fill: "none", stroke: "#d9822b", "stroke-width": 1.5, class: "point control" })
      : svg("circle", { cx: x(p[before]), cy: y(p[after]), r: 4, fill: "#2f6fd6", class: "point nudge" }));
  }
  g.append(svg("text", { x: (L + W - R) / 2, y: H - 20, "text-anchor": "middle" }, minutes + " min before the trigger"));
  g.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "● nudge   ○ control"));
  g.append(svg("text", { x: 12, y: (T + H - B) / 2, transform: "rotate(-90 12 " + (T + H - B) / 2 + ")", "text-anchor": "middle" }, minutes + " min after"));
  g.append(svg("text", { x: L - 4, y: y(lo) + 4, "text-anchor": "end" }, lo.toFixed(0)));
  g.append(svg("text", { x: L - 4, y: y(hi) + 10, "text-anchor": "end" }, hi.toFixed(0)));
  return el("div", { class: "chart" }, g);
}

// ------------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  document.getElementById("night-zone").addEventListener("change", loadNight);
  document.getElementById("night-hours").addEventListener("change", loadNight);
  document.getElementById("verdict-refresh").addEventListener("click", () => loadVerdict(true));
  document.getElementById("verdict-days").addEventListener("change", () => loadVerdict(true));
  document.getElementById("verdict-minutes").addEventListener("change", () => loadVerdict(true));
  // the night's minute rows: read again every 20 s while it is shown
  setInterval(() => { if (state.view === "night") loadNight(); }, 20000);
  connect();
  show(location.hash.slice(1));
});
