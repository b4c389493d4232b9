// The POLARIS Digital Twin console: a static client of the twin's REST API
// (/v1/query, /v1/simulate, /v1/diagnose, /v1/manage) and its event stream
// (/v1/watch, server-sent events). It holds no model logic: every number shown
// comes from an API answer or a pushed event.

import { TimeChart, formatNumber } from "./chart.js";

const $ = (id) => document.getElementById(id);
const COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2"];
const OVERVIEW_MS = 3000;
const CHARTS_MS = 10000;
const FORECAST_MS = 30000;
const MAX_EVENT_ROWS = 300;

const state = {
  systems: {},            // name -> {metric: {value, timestamp, unit}}
  anomalies: new Map(),   // "system/metric" -> {system, metric, score, since}
  episodes: new Map(),    // "system/metric" -> [{t0, t1}]
  system: null,
  charts: new Map(),      // metric -> {chart, card}
  forecast: null,         // {system, at, states}
  detail: null,           // {metric, chart}
  threshold: 0.9997,
  lastSeq: 0,
  timings: {},
};
window.polarisConsole = state; // read by the browser tests (timings, counts)

// ------------------------------------------------------------------ helpers
async function api(rpc, body) {
  const started = performance.now();
  const r = await fetch(`/v1/${rpc}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let j;
  try {
    j = await r.json();
  } catch {
    throw new Error(`${r.status} ${r.statusText}`);
  }
  state.timings[`api_${rpc}_ms`] = performance.now() - started;
  if (!r.ok) throw new Error(`${j.status || r.status}: ${j.message || r.statusText}`);
  return j;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const ms = (iso) => Date.parse(iso);
const key = (system, metric) => `${system}/${metric}`;

function toast(text, kind = "info") {
  const t = $("toast");
  t.textContent = text;
  t.dataset.kind = kind;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

function ago(iso) {
  const s = (Date.now() - ms(iso)) / 1000;
  if (!Number.isFinite(s)) return "–";
  if (s < 2) return "now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// ------------------------------------------------------------------ overview
async function refreshOverview() {
  const [metricsResp, stateResp] = await Promise.all([
    api("manage", { operation: "get_metrics" }),
    api("query", { query_type: "current_state", parameters: { include: "anomalies" } }),
  ]);
  const m = JSON.parse(metricsResp.result || "{}");
  const h = metricsResp.health_status || {};
  const pill = $("health");
  pill.dataset.status = h.status || "unknown";
  pill.textContent = h.status || "unknown";
  pill.title = (h.issues || []).join("\n") || "no issues";
  $("model").textContent = h.model_type || "–";
  $("rate").textContent = formatNumber(m.messages_per_second ?? 0);
  $("applied").textContent = Math.round(m.events_applied_total ?? 0).toLocaleString();
  $("dead").textContent = Math.round(m.dead_lettered_total ?? 0).toLocaleString();
  renderIngest(m);

  const result = stateResp.result ? JSON.parse(stateResp.result) : {};
  state.systems = result.systems || {};
  const fresh = new Map();
  for (const a of result.anomalies || []) fresh.set(key(a.system, a.metric), a);
  state.anomalies = fresh;
  renderSystems();
  renderAnomalies();
  renderSelects();
  if (!state.system || !state.systems[state.system]) {
    const names = Object.keys(state.systems).sort();
    if (names.length) selectSystem(names[0]);
  } else {
    updateCardValues();
  }
}

function renderIngest(m) {
  const rows = [
    ["messages/s", formatNumber(m.messages_per_second ?? 0)],
    ["events received", Math.round(m.events_received_total ?? 0).toLocaleString()],
    ["events applied", Math.round(m.events_applied_total ?? 0).toLocaleString()],
    ["queue (high water)", `${m.queue_size ?? 0} (${m.queue_high_water ?? 0})`],
    ["series", Math.round(m.series ?? 0).toLocaleString()],
    ["samples retained", Math.round(m.samples_retained ?? 0).toLocaleString()],
    ["watchers", m.events_watchers ?? 0],
  ];
  $("ingest").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  const reasons = Object.entries(m)
    .filter(([k]) => k.startsWith("dead_lettered_total."))
    .map(([k, v]) => [k.slice("dead_lettered_total.".length), v])
    .sort((a, b) => b[1] - a[1]);
  $("dead-reasons").replaceChildren(
    ...(reasons.length
      ? reasons.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(Math.round(v)) })])
      : [el("dt", { class: "muted", text: "none" })]),
  );
}

function systemAnomalies(system) {
  return [...state.anomalies.values()].filter((a) => a.system === system);
}

function renderSystems() {
  const names = Object.keys(state.systems).sort();
  const list = $("systems");
  if (!names.length) {
    list.replaceChildren(el("li", { class: "muted", text: "waiting for telemetry…" }));
    return;
  }
  list.replaceChildren(...names.map((name) => {
    const metrics = state.systems[name];
    const newest = Object.values(metrics).map((v) => v.timestamp).filter(Boolean).sort().pop();
    const stale = newest && Date.now() - ms(newest) > 120000;
    const n = systemAnomalies(name).length;
    const status = stale ? "stale" : n ? "anomalous" : "ok";
    return el("li", {
      class: name === state.system ? "active" : "",
      dataset: { system: name, status },
      onclick: () => selectSystem(name),
    },
    el("span", { class: "dot", dataset: { status } }),
    el("b", { text: name }),
    el("small", { text: `${Object.keys(metrics).length} metrics · ${n ? `${n} anomalous` : status} · ${newest ? ago(newest) : "–"}` }));
  }));
}

function renderAnomalies() {
  const list = $("anomalies");
  const items = [...state.anomalies.values()].sort((a, b) => (b.score ?? 0) - (a.score ?? 0));
  if (!items.length) {
    list.replaceChildren(el("li", { class: "muted none", text: "none" }));
    return;
  }
  list.replaceChildren(...items.map((a) => el("li", {
    dataset: { anomaly: key(a.system, a.metric) },
    onclick: () => { selectSystem(a.system); openDetail(a.metric); },
  },
  el("b", { text: `${a.system} / ${a.metric}` }),
  el("small", { text: `score ${formatNumber(a.score)} · since ${a.since ? ago(a.since) : "–"}` }))));
}

function renderSelects() {
  const names = Object.keys(state.systems).sort();
  for (const id of ["wi-system", "dg-system"]) {
    const sel = $(id);
    const current = sel.value;
    const have = [...sel.options].map((o) => o.value).join(",");
    const want = (id === "dg-system" ? ["", ...names] : names).join(",");
    if (have === want) continue;
    sel.replaceChildren(...(id === "dg-system" ? [el("option", { value: "", text: "any" })] : []),
      ...names.map((n) => el("option", { value: n, text: n })));
    if (names.includes(current)) sel.value = current;
    else if (id === "wi-system" && names.includes("swim")) sel.value = "swim";
  }
}

// ------------------------------------------------------------------ metric charts
function selectSystem(name) {
  if (state.system === name) return;
  state.system = name;
  state.forecast = null;
  $("system-title").textContent = name;
  for (const { chart } of state.charts.values()) chart.destroy();
  state.charts.clear();
  $("charts").replaceChildren();
  closeDetail();
  renderSystems();
  refreshCharts(true);
}

function ensureCard(metric) {
  let entry = state.charts.get(metric);
  if (entry) return entry;
  const value = el("span", { class: "value" });
  const box = el("div");
  const card = el("div", { class: "card chart-card", dataset: { metric }, onclick: () => openDetail(metric) },
    el("div", { class: "card-head" }, el("b", { text: metric }), value), box);
  $("charts").append(card);
  entry = { chart: new TimeChart(box, { height: 150, scoreLane: true }), card, value };
  state.charts.set(metric, entry);
  return entry;
}

function updateCardValues() {
  const metrics = state.systems[state.system] || {};
  for (const [metric, { value, card }] of state.charts) {
    const v = metrics[metric];
    value.textContent = v ? `${formatNumber(v.value)} ${v.unit && v.unit !== "unknown" ? v.unit : ""}` : "";
    card.classList.toggle("anomalous", state.anomalies.has(key(state.system, metric)));
  }
}

async function historical(system, metrics, maxPoints) {
  const resp = await api("query", {
    query_type: "historical",
    parameters: {
      system,
      metrics: metrics.join(","),
      window_minutes: $("window").value,
      max_points: String(maxPoints),
      include: "scores",
    },
  });
  if (resp.metadata && resp.metadata.anomaly_threshold) state.threshold = Number(resp.metadata.anomaly_threshold);
  if (!resp.success) return {};
  return (JSON.parse(resp.result).systems || {})[system] || {};
}

async function forecast(system, metrics, force) {
  const horizon = Number($("horizon").value);
  if (!horizon) return null;
  const f = state.forecast;
  if (!force && f && f.system === system && f.horizon === horizon && Date.now() - f.at < FORECAST_MS
      && metrics.every((m) => f.metrics.includes(m))) return f.states;
  const resp = await api("simulate", {
    simulation_type: "forecast",
    horizon_minutes: horizon,
    parameters: { system, metrics: metrics.join(",") },
  });
  if (!resp.success) return null;
  state.forecast = { system, horizon, metrics, at: Date.now(), states: resp.future_states || [] };
  return state.forecast.states;
}

function chartData(entry, metric, states, color = COLORS[0]) {
  const pts = entry ? entry.points || [] : [];
  const t = Float64Array.from(pts, (p) => ms(p[0]));
  const v = Float64Array.from(pts, (p) => p[1]);
  const lines = [{ t, v, color, width: 1.4, label: "value" }];
  const bands = [];
  if (states && states.length) {
    const fs = states.filter((s) => s.metrics && metric in s.metrics);
    if (fs.length) {
      const ft = Float64Array.from(fs, (s) => ms(s.timestamp));
      const fv = Float64Array.from(fs, (s) => s.metrics[metric]);
      const lo = Float64Array.from(fs, (s) => s.metrics[`${metric}.lower`] ?? s.metrics[metric]);
      const hi = Float64Array.from(fs, (s) => s.metrics[`${metric}.upper`] ?? s.metrics[metric]);
      bands.push({ t: ft, lo, hi, color: "rgba(147, 51, 234, 0.14)" });
      lines.push({ t: ft, v: fv, color: "#9333ea", dash: [5, 3], width: 1.4, label: "forecast" });
    }
  }
  const scores = entry && entry.scores ? entry.scores : [];
  const st = Float64Array.from(scores, (p) => ms(p[0]));
  const ss = Float64Array.from(scores, (p) => p[1]);
  const thr = entry && entry.threshold !== undefined ? entry.threshold : state.threshold;
  const markers = [];
  for (let i = 0; i < st.length; i++) {
    if (ss[i] < thr || !t.length) continue;
    let j = 0;
    let lo = 0, hi = t.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (t[mid] < st[i]) lo = mid + 1; else hi = mid; }
    j = lo;
    markers.push({ t: t[j], v: v[j], color: "#dc2626" });
  }
  const spans = (state.episodes.get(key(state.system, metric)) || []).map((e) => ({ t0: e.t0, t1: e.t1 }));
  const open = state.anomalies.get(key(state.system, metric));
  if (open && open.since && !spans.some((s) => s.t1 === undefined)) spans.push({ t0: ms(open.since), t1: undefined });
  return { lines, bands, markers, spans, score: { t: st, s: ss, threshold: thr }, now: t.length ? t[t.length - 1] : null };
}

let chartsBusy = false;
async function refreshCharts(force = false) {
  const system = state.system;
  if (!system || chartsBusy) return;
  chartsBusy = true;
  try {
    const metrics = Object.keys(state.systems[system] || {}).sort();
    if (!metrics.length) return;
    const [hist, states] = await Promise.all([historical(system, metrics, 400), forecast(system, metrics, force)]);
    if (system !== state.system) return;
    const started = performance.now();
    for (const metric of metrics) {
      const entry = ensureCard(metric);
      entry.chart.setData(chartData(hist[metric], metric, states));
    }
    state.timings.charts_draw_ms = performance.now() - started;
    state.timings.charts_points = metrics.reduce((n, m) => n + ((hist[m] || {}).points || []).length, 0);
    updateCardValues();
    if (state.detail) await refreshDetail();
  } catch (err) {
    toast(`charts: ${err.message}`, "error");
  } finally {
    chartsBusy = false;
  }
}

function openDetail(metric) {
  $("detail").hidden = false;
  $("detail-title").textContent = `${state.system} / ${metric}`;
  if (!state.detail) {
    state.detail = { metric, chart: new TimeChart($("detail-chart"), { height: 300, scoreLane: true }) };
  }
  state.detail.metric = metric;
  refreshDetail();
  $("detail").scrollIntoView({ block: "nearest" });
}

function closeDetail() {
  $("detail").hidden = true;
  if (state.detail) state.detail.metric = null;
}

async function refreshDetail() {
  const d = state.detail;
  if (!d || !d.metric) return;
  const hist = await historical(state.system, [d.metric], 10000);
  const states = await forecast(state.system, [d.metric], false);
  const data = chartData(hist[d.metric], d.metric, states);
  const started = performance.now();
  d.chart.setData(data);
  state.timings.detail_draw_ms = performance.now() - started;
  state.timings.detail_points = data.lines[0].t.length;
  const e = hist[d.metric] || {};
  $("detail-info").textContent = ` ${e.samples ?? 0} samples in window, ${data.lines[0].t.length} drawn${e.downsampled ? " (bucket means)" : ""}; draw ${state.timings.detail_draw_ms.toFixed(1)} ms`;
}

// ------------------------------------------------------------------ what-if
const ACTIONS = {
  ADD_SERVER: { param: "count", value: 1 },
  REMOVE_SERVER: { param: "count", value: 1 },
  SCALE_UP: { param: "count", value: 1 },
  SCALE_DOWN: { param: "count", value: 1 },
  SET_DIMMER: { param: "value", value: 0.5 },
};

function actionRow(type = "ADD_SERVER", amount) {
  const sel = el("select", { class: "action-type" }, ...Object.keys(ACTIONS).map((a) => el("option", { value: a, text: a })));
  sel.value = type;
  const input = el("input", { type: "number", step: "any", class: "action-amount", value: String(amount ?? ACTIONS[type].value) });
  const label = el("span", { class: "muted", text: ACTIONS[type].param });
  sel.addEventListener("change", () => { label.textContent = ACTIONS[sel.value].param; input.value = ACTIONS[sel.value].value; });
  const row = el("div", { class: "action" }, sel, label, input,
    el("button", { type: "button", class: "link", text: "remove", onclick: () => row.remove() }));
  return row;
}

function addPlan(actions = [["ADD_SERVER", 1]]) {
  const plans = $("plans");
  const n = plans.children.length;
  if (n >= COLORS.length - 1) return;
  const name = `Plan ${String.fromCharCode(65 + n)}`;
  const list = el("div", { class: "actions" }, ...actions.map(([t, a]) => actionRow(t, a)));
  const plan = el("div", { class: "plan", dataset: { plan: name } },
    el("div", { class: "plan-head" },
      el("span", { class: "swatch", dataset: { color: String(n + 1) } }), el("b", { text: name }),
      el("button", { type: "button", class: "link", text: "+ action", onclick: () => list.append(actionRow()) }),
      n ? el("button", { type: "button", class: "link", text: "remove plan", onclick: () => plan.remove() }) : null),
    list);
  plans.append(plan);
}

function readPlans() {
  return [...$("plans").children].map((p) => ({
    name: p.dataset.plan,
    actions: [...p.querySelectorAll(".action")].map((row) => {
      const type = row.querySelector(".action-type").value;
      return { type, param: ACTIONS[type].param, amount: row.querySelector(".action-amount").value };
    }),
  }));
}

async function runWhatIf(ev) {
  ev.preventDefault();
  const system = $("wi-system").value;
  const horizon = Number($("wi-horizon").value) || 30;
  const load = $("wi-load").value;
  const plans = readPlans();
  if (!system) { toast("no system yet", "error"); return; }
  $("wi-status").textContent = "running…";
  $("wi-run").disabled = true;
  const started = performance.now();
  try {
    const parameters = { system };
    if (load) parameters.load_factor = String(load);
    const toActions = (p) => p.actions.map((a) => ({ action_type: a.type, target: system, params: { [a.param]: String(a.amount) } }));
    let answers = null;
    if (plans.length > 1 && await supportsCompare()) {
      answers = await compare(system, horizon, parameters, plans, toActions);
    }
    if (!answers) {
      answers = await Promise.all(plans.map((p) => api("simulate", {
        simulation_type: p.actions.length ? "what_if" : "scenario",
        horizon_minutes: horizon,
        parameters,
        actions: toActions(p),
      })));
    }
    state.timings.whatif_ms = performance.now() - started;
    await renderWhatIf(system, plans, answers, horizon);
    $("wi-status").textContent = `done in ${state.timings.whatif_ms.toFixed(0)} ms`;
  } catch (err) {
    $("wi-status").textContent = "";
    $("whatif-result").replaceChildren(el("div", { class: "card error", text: err.message }));
  } finally {
    $("wi-run").disabled = false;
  }
}

// Plan comparison (simulation_type "compare", plans → plan_outcomes) is used when
// the twin's OpenAPI document (generated from its proto) has it; otherwise each plan
// is its own what-if.
async function supportsCompare() {
  if (state.compare === undefined) {
    try {
      const doc = await (await fetch("/openapi.json")).json();
      const props = ((doc.components.schemas.SimulationRequest || {}).properties) || {};
      state.compare = "plans" in props && "plan_outcomes" in (doc.components.schemas.SimulationResponse.properties || {});
    } catch {
      state.compare = false;
    }
  }
  return state.compare;
}

async function compare(system, horizon, parameters, plans, toActions) {
  const resp = await api("simulate", {
    simulation_type: "compare",
    horizon_minutes: horizon,
    parameters,
    plans: plans.map((p) => ({ plan_id: p.name, actions: toActions(p) })),
  });
  const outcomes = resp.plan_outcomes || [];
  if (!resp.success || !outcomes.length) return null;
  const byId = new Map(outcomes.map((o) => [o.plan_id, o]));
  const base = byId.get("do_nothing");
  return plans.map((p) => {
    const o = byId.get(p.name) || {};
    const states = (o.future_states || []).map((st, i) => {
      const m = Object.assign({}, st.metrics);
      const b = base && base.future_states && base.future_states[i];
      if (b) for (const [k, v] of Object.entries(b.metrics || {})) if (!(`baseline.${k}` in m)) m[`baseline.${k}`] = v;
      return Object.assign({}, st, { metrics: m });
    });
    const rank = o.rank ? `rank ${o.rank}` : "";
    const utility = o.utility !== undefined ? `utility ${formatNumber(o.utility)}` : "";
    return {
      success: Boolean(o.plan_id),
      confidence: o.confidence,
      impact_estimates: o.impact_estimates || o.impact || {},
      explanation: [rank, utility, o.explanation || ""].filter(Boolean).join(" · "),
      future_states: states,
    };
  });
}

async function renderWhatIf(system, plans, answers, horizon) {
  const out = $("whatif-result");
  const summary = el("div", { class: "plan-cards" }, ...answers.map((a, i) => {
    const imp = a.impact_estimates || {};
    return el("div", { class: "card plan-result", dataset: { plan: plans[i].name, success: String(a.success) } },
      el("div", { class: "card-head" }, el("span", { class: "swatch", dataset: { color: String(i + 1) } }),
        el("b", { text: plans[i].name }),
        el("span", { class: "muted", text: plans[i].actions.map((x) => `${x.type} ${x.amount}`).join(", ") || "no actions" })),
      el("dl", { class: "kv" },
        el("dt", { text: "confidence" }), el("dd", { text: formatNumber(a.confidence) }),
        el("dt", { text: "cost impact" }), el("dd", { text: `${formatNumber(imp.cost_impact)} ${imp.cost_currency || ""}` }),
        el("dt", { text: "performance impact" }), el("dd", { text: formatNumber(imp.performance_impact) }),
        el("dt", { text: "reliability impact" }), el("dd", { text: formatNumber(imp.reliability_impact) })),
      el("p", { class: "explanation", text: a.explanation || "" }));
  }));
  const first = answers.find((a) => a.success && (a.future_states || []).length);
  const charts = el("div", { class: "grid" });
  out.replaceChildren(summary, charts);
  if (!first) return;
  const keys = Object.keys(first.future_states[0].metrics);
  let metrics = keys.filter((k) => k.startsWith("baseline.")).map((k) => k.slice("baseline.".length));
  if (!metrics.length) metrics = keys.filter((k) => !k.endsWith(".lower") && !k.endsWith(".upper")).slice(0, 4);
  let hist = {};
  try {
    hist = await historicalWindow(system, metrics, horizon);
  } catch { hist = {}; }
  for (const metric of metrics) {
    const box = el("div");
    charts.append(el("div", { class: "card chart-card whatif-chart", dataset: { metric } },
      el("div", { class: "card-head" }, el("b", { text: metric }), el("span", { class: "muted", text: "history · baseline (no action) · plans" })), box));
    const chart = new TimeChart(box, { height: 200, futureFrac: 2 });
    const lines = [];
    const bands = [];
    const h = hist[metric];
    if (h && h.points && h.points.length) {
      lines.push({ t: Float64Array.from(h.points, (p) => ms(p[0])), v: Float64Array.from(h.points, (p) => p[1]), color: "#64748b", width: 1.2, label: "history" });
    }
    const bs = first.future_states.filter((s) => `baseline.${metric}` in s.metrics);
    if (bs.length) {
      lines.push({ t: Float64Array.from(bs, (s) => ms(s.timestamp)), v: Float64Array.from(bs, (s) => s.metrics[`baseline.${metric}`]), color: "#0f172a", dash: [6, 4], width: 1.6, label: "baseline" });
    }
    answers.forEach((a, i) => {
      const fs = (a.future_states || []).filter((s) => metric in s.metrics);
      if (!fs.length) return;
      const t = Float64Array.from(fs, (s) => ms(s.timestamp));
      if (`${metric}.lower` in fs[0].metrics) {
        bands.push({ t, lo: Float64Array.from(fs, (s) => s.metrics[`${metric}.lower`]), hi: Float64Array.from(fs, (s) => s.metrics[`${metric}.upper`]), color: `${COLORS[i + 1]}22` });
      }
      lines.push({ t, v: Float64Array.from(fs, (s) => s.metrics[metric]), color: COLORS[i + 1], width: 2, label: plans[i].name });
    });
    chart.setData({ lines, bands, now: bs.length ? ms(bs[0].timestamp) : null });
  }
}

async function historicalWindow(system, metrics, minutes) {
  const resp = await api("query", {
    query_type: "historical",
    parameters: { system, metrics: metrics.join(","), window_minutes: String(Math.max(5, minutes)), max_points: "300" },
  });
  if (!resp.success) return {};
  return (JSON.parse(resp.result).systems || {})[system] || {};
}

// ------------------------------------------------------------------ diagnosis
async function runDiagnosis(ev) {
  ev.preventDefault();
  const system = $("dg-system").value;
  $("dg-status").textContent = "diagnosing…";
  $("dg-run").disabled = true;
  try {
    const resp = await api("diagnose", {
      anomaly_description: $("dg-desc").value,
      context: system ? { system } : {},
    });
    renderDiagnosis(resp);
    $("dg-status").textContent = "";
  } catch (err) {
    $("dg-status").textContent = "";
    $("diag-result").replaceChildren(el("div", { class: "card error", text: err.message }));
  } finally {
    $("dg-run").disabled = false;
  }
}

function renderDiagnosis(d) {
  const chain = (d.causal_chain || "").split(/\s*(?:->|→|=>)\s*/).filter(Boolean);
  const parts = [];
  parts.push(el("div", { class: "card" },
    el("div", { class: "card-head" }, el("b", { text: d.success ? "Diagnosis" : "No diagnosis" }),
      el("span", { class: "muted", text: `confidence ${formatNumber(d.confidence)}` })),
    chain.length ? el("div", { class: "chain" }, ...chain.flatMap((c, i) => [i ? el("span", { class: "arrow", text: "→" }) : null, el("span", { class: "chip", text: c })])) : null,
    el("p", { class: "explanation", text: d.explanation || "" })));
  const hyps = d.hypotheses || [];
  parts.push(el("ol", { class: "hypotheses" }, ...hyps.map((h) => el("li", { class: "card hypothesis", dataset: { rank: String(h.rank) } },
    el("div", { class: "card-head" }, el("span", { class: "rank", text: `#${h.rank}` }), el("b", { text: h.hypothesis })),
    el("div", { class: "prob" }, el("meter", { min: "0", max: "1", value: String(h.probability ?? 0) }), el("span", { text: `p = ${formatNumber(h.probability)}` })),
    h.reasoning ? el("p", { class: "muted", text: h.reasoning }) : null,
    el("ul", { class: "evidence" }, ...(h.evidence || []).map((e) => el("li", { text: e })))))));
  if ((d.supporting_evidence || []).length) {
    parts.push(el("div", { class: "card" }, el("b", { text: "Supporting evidence" }),
      el("ul", { class: "evidence" }, ...d.supporting_evidence.map((e) => el("li", { text: e })))));
  }
  $("diag-result").replaceChildren(...parts);
}

// ------------------------------------------------------------------ event stream
function describe(ev) {
  const d = ev.data || {};
  switch (ev.kind) {
    case "anomaly_started": return `${d.metric}: score ${formatNumber(d.score)}, value ${formatNumber(d.value)}`;
    case "anomaly_cleared": return `${d.metric}: cleared after ${formatNumber(d.duration_sec)} s (peak ${formatNumber(d.peak_score)})`;
    case "health_changed": return `${d.from} → ${d.to}${(d.issues || []).length ? `: ${d.issues[0]}` : ""}`;
    case "diagnosis": return (d.hypotheses || []).length ? `top: ${d.hypotheses[0].hypothesis} (p ${formatNumber(d.hypotheses[0].probability)})` : "no hypothesis";
    default: return JSON.stringify(d).slice(0, 160);
  }
}

function onEvent(ev, live) {
  state.lastSeq = Math.max(state.lastSeq, Number(ev.sequence));
  const d = ev.data || {};
  const k = key(ev.system, d.metric);
  if (ev.kind === "anomaly_started") {
    state.anomalies.set(k, { system: ev.system, metric: d.metric, score: d.score, since: ev.timestamp });
    const eps = state.episodes.get(k) || [];
    eps.push({ t0: ms(ev.timestamp), t1: undefined });
    state.episodes.set(k, eps.slice(-50));
    if (live) toast(`anomaly: ${ev.system} / ${d.metric} (score ${formatNumber(d.score)})`, "warn");
  } else if (ev.kind === "anomaly_cleared") {
    state.anomalies.delete(k);
    const eps = state.episodes.get(k) || [];
    const open = eps.find((e) => e.t1 === undefined);
    if (open) open.t1 = ms(ev.timestamp);
    else eps.push({ t0: ms(d.since), t1: ms(ev.timestamp) });
    state.episodes.set(k, eps.slice(-50));
  } else if (ev.kind === "health_changed") {
    const pill = $("health");
    pill.dataset.status = d.to;
    pill.textContent = d.to;
    if (live) toast(`health: ${d.from} → ${d.to}`, d.to === "healthy" ? "info" : "warn");
  }
  const rows = $("events");
  rows.prepend(el("tr", { dataset: { kind: ev.kind } },
    el("td", { text: ev.sequence }), el("td", { text: new Date(ms(ev.timestamp)).toLocaleTimeString() }),
    el("td", {}, el("span", { class: "kind", dataset: { kind: ev.kind }, text: ev.kind })),
    el("td", { text: ev.system || "twin" }), el("td", { text: describe(ev) })));
  while (rows.children.length > MAX_EVENT_ROWS) rows.lastChild.remove();
  if (ev.kind.startsWith("anomaly")) {
    renderAnomalies();
    renderSystems();
    updateCardValues();
    if (live && ev.system === state.system) scheduleCharts();
  }
}

let chartTimer = null;
function scheduleCharts() {
  if (chartTimer) return;
  chartTimer = setTimeout(() => { chartTimer = null; refreshCharts(); }, 1500);
}

function connectEvents() {
  const live = $("live");
  const es = new EventSource("/v1/watch?from_start=1");
  let replaying = true;
  es.addEventListener("open", () => { live.dataset.state = "live"; live.textContent = "live"; });
  es.addEventListener("error", () => { live.dataset.state = "reconnecting"; live.textContent = "reconnecting"; });
  for (const kind of ["anomaly_started", "anomaly_cleared", "health_changed", "drift", "diagnosis", "prediction_outcome"]) {
    es.addEventListener(kind, (m) => {
      const ev = JSON.parse(m.data);
      // Replayed history arrives first, timestamped before the page opened.
      if (replaying && Date.parse(ev.emitted_at) > state.openedAt) replaying = false;
      onEvent(ev, !replaying);
    });
  }
  for (const kind of ["dropped", "shutdown"]) {
    es.addEventListener(kind, (m) => {
      live.dataset.state = "reconnecting";
      live.textContent = kind === "shutdown" ? "twin stopping" : "reconnecting";
      toast(`event stream: ${JSON.parse(m.data).reason}`, "warn");
    });
  }
  return es;
}

// ------------------------------------------------------------------ start
function initTabs() {
  const show = (name) => {
    for (const b of $("tabs").children) b.classList.toggle("active", b.dataset.tab === name);
    for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === `tab-${name}`);
    if (name === "metrics") for (const { chart } of state.charts.values()) chart.draw();
  };
  $("tabs").addEventListener("click", (e) => { if (e.target.dataset.tab) show(e.target.dataset.tab); });
}

async function start() {
  state.openedAt = Date.now();
  initTabs();
  addPlan([["ADD_SERVER", 1]]);
  $("add-plan").addEventListener("click", () => addPlan([["SET_DIMMER", 0.5]]));
  $("whatif-form").addEventListener("submit", runWhatIf);
  $("diag-form").addEventListener("submit", runDiagnosis);
  $("detail-close").addEventListener("click", closeDetail);
  $("window").addEventListener("change", () => refreshCharts(true));
  $("horizon").addEventListener("change", () => refreshCharts(true));
  connectEvents();
  const overview = async () => {
    try {
      await refreshOverview();
      if (!state.ready) state.timings.ready_ms = performance.now(); // since navigation start
      state.ready = true;
    } catch (err) {
      $("health").dataset.status = "unreachable";
      $("health").textContent = "unreachable";
    }
  };
  await overview();
  setInterval(overview, OVERVIEW_MS);
  setInterval(() => refreshCharts(), CHARTS_MS);
}

start();
