// A small canvas time-series renderer for the console (no dependencies).
//
// Why our own: the console must work air-gapped, so nothing may be fetched at run
// time, and the twin's charts need only a few things: lines, an interval band, a
// score lane with a threshold, marked points and shaded spans. Each line is drawn
// with per-pixel-column min/max decimation, so a 10 k-point series costs one O(n)
// pass and ~2 segments per pixel column, however long the series is.

const DPR = () => window.devicePixelRatio || 1;
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * mag >= raw) return m * mag;
  }
  return 10 * mag;
}

export function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function formatTime(ms, step) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  if (step >= 86400000) return `${d.getMonth() + 1}/${d.getDate()}`;
  if (step >= 60000) return `${p(d.getHours())}:${p(d.getMinutes())}`;
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export class TimeChart {
  // opts: {height, scoreLane: bool, title}
  constructor(container, opts = {}) {
    this.opts = Object.assign({ height: 180, scoreLane: false }, opts);
    this.canvas = document.createElement("canvas");
    this.canvas.className = "chart-canvas";
    this.tip = document.createElement("div");
    this.tip.className = "chart-tip";
    this.tip.hidden = true;
    container.classList.add("chart-box");
    container.append(this.canvas, this.tip);
    this.container = container;
    this.data = { lines: [], bands: [], markers: [], spans: [], score: null, now: null };
    this.lastDrawMs = 0;
    this.canvas.addEventListener("mousemove", (e) => this._hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; this.draw(); });
    this._resize = new ResizeObserver(() => this.draw());
    this._resize.observe(container);
  }

  // lines: [{t: Float64Array(ms), v: Float64Array, color, width, dash, label}]
  // bands: [{t, lo, hi, color}]; markers: [{t, v, color}] ; spans: [{t0, t1, color}]
  // score: {t, s, threshold}
  setData(data) {
    this.data = Object.assign({ lines: [], bands: [], markers: [], spans: [], score: null, now: null }, data);
    this.draw();
  }

  destroy() {
    this._resize.disconnect();
  }

  // Time range: every line, but the future (after data.now) takes at most
  // futureFrac of the history's span, so a long forecast never squeezes a short
  // history. Value range: what is visible in that time range.
  _extent() {
    let t0 = Infinity, t1 = -Infinity, v0 = Infinity, v1 = -Infinity;
    for (const l of this.data.lines) {
      if (l.t.length) { t0 = Math.min(t0, l.t[0]); t1 = Math.max(t1, l.t[l.t.length - 1]); }
    }
    if (!Number.isFinite(t0)) return null;
    const now = this.data.now;
    if (now && t1 > now && now > t0) {
      const frac = this.opts.futureFrac ?? 0.5;
      t1 = Math.min(t1, now + Math.max((now - t0) * frac, 10000));
    }
    const scan = (t, v) => {
      for (let i = 0; i < t.length; i++) {
        const x = t[i], y = v[i];
        if (!Number.isFinite(y) || x < t0 || x > t1) continue;
        if (y < v0) v0 = y;
        if (y > v1) v1 = y;
      }
    };
    for (const l of this.data.lines) scan(l.t, l.v);
    // Interval bands widen the range by at most the lines' own span on each side, so a
    // young model's very wide interval does not flatten the history into a line.
    if (Number.isFinite(v0)) {
      const room = Math.max(v1 - v0, Math.abs(v1) * 0.1, 1e-9);
      const lo0 = v0 - room, hi1 = v1 + room;
      for (const b of this.data.bands) {
        for (let i = 0; i < b.t.length; i++) {
          if (b.t[i] < t0 || b.t[i] > t1) continue;
          if (Number.isFinite(b.lo[i])) v0 = Math.min(v0, Math.max(lo0, b.lo[i]));
          if (Number.isFinite(b.hi[i])) v1 = Math.max(v1, Math.min(hi1, b.hi[i]));
        }
      }
    } else {
      for (const b of this.data.bands) { scan(b.t, b.lo); scan(b.t, b.hi); }
    }
    if (!Number.isFinite(v0)) { v0 = 0; v1 = 1; }
    if (t1 === t0) { t0 -= 30000; t1 += 30000; }
    if (v1 === v0) { const d = Math.abs(v0) * 0.1 || 1; v0 -= d; v1 += d; }
    const pad = (v1 - v0) * 0.08;
    return { t0, t1, v0: v0 - pad, v1: v1 + pad };
  }

  draw() {
    const started = performance.now();
    const c = this.canvas;
    const w = this.container.clientWidth;
    const h = this.opts.height;
    if (!w) return;
    const dpr = DPR();
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
      c.style.width = `${w}px`;
      c.style.height = `${h}px`;
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const ext = this._extent();
    const left = 52, right = 10, top = 8;
    const laneH = this.opts.scoreLane ? 34 : 0;
    const bottom = 20 + laneH;
    const pw = w - left - right, ph = h - top - bottom;
    this.geom = { left, top, pw, ph, ext, laneH, h };
    g.font = "11px system-ui, sans-serif";
    if (!ext) {
      g.fillStyle = "#8a94a6";
      g.fillText("no data yet", left + 8, top + ph / 2);
      this.lastDrawMs = performance.now() - started;
      return;
    }
    const X = (t) => left + ((t - ext.t0) / (ext.t1 - ext.t0)) * pw;
    const Y = (v) => top + (1 - (v - ext.v0) / (ext.v1 - ext.v0)) * ph;
    this._X = X; this._Y = Y;

    // grid + axes
    g.strokeStyle = "#e6e9ef";
    g.fillStyle = "#6b7385";
    g.lineWidth = 1;
    const vs = niceStep(ext.v1 - ext.v0, Math.max(2, Math.floor(ph / 40)));
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let v = Math.ceil(ext.v0 / vs) * vs; v <= ext.v1; v += vs) {
      const y = Math.round(Y(v)) + 0.5;
      g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
      g.fillText(formatNumber(v), left - 6, y);
    }
    const span = ext.t1 - ext.t0;
    const want = span / Math.max(2, Math.floor(pw / 90));
    const ts = TIME_STEPS.find((s) => s >= want) || TIME_STEPS[TIME_STEPS.length - 1];
    g.textAlign = "center";
    g.textBaseline = "top";
    const tz = new Date().getTimezoneOffset() * 60000;
    for (let t = Math.ceil((ext.t0 - tz) / ts) * ts + tz; t <= ext.t1; t += ts) {
      const x = Math.round(X(t)) + 0.5;
      g.beginPath(); g.moveTo(x, top); g.lineTo(x, top + ph); g.stroke();
      if (x > left + 18 && x < left + pw - 18) g.fillText(formatTime(t, ts), x, top + ph + 4);
    }

    g.save();
    g.beginPath();
    g.rect(left, top, pw, ph);
    g.clip();
    for (const s of this.data.spans) {
      g.fillStyle = s.color || "rgba(220, 38, 38, 0.10)";
      const x0 = X(s.t0), x1 = X(s.t1 ?? ext.t1);
      g.fillRect(x0, top, Math.max(2, x1 - x0), ph);
    }
    if (this.data.now) {
      g.strokeStyle = "#b0b7c5";
      g.setLineDash([2, 3]);
      const x = Math.round(X(this.data.now)) + 0.5;
      g.beginPath(); g.moveTo(x, top); g.lineTo(x, top + ph); g.stroke();
      g.setLineDash([]);
    }
    for (const b of this.data.bands) this._band(g, b, X, Y);
    for (const l of this.data.lines) this._line(g, l, X, Y, ext, pw);
    for (const m of this.data.markers) {
      g.fillStyle = m.color || "#dc2626";
      g.beginPath(); g.arc(X(m.t), Y(m.v), 3.2, 0, Math.PI * 2); g.fill();
    }
    g.restore();

    if (this.opts.scoreLane) this._scoreLane(g, X, left, pw, top + ph + 20, laneH - 6);
    if (this.hoverX !== undefined) this._crosshair(g);
    this.lastDrawMs = performance.now() - started;
  }

  // One pass over the points; per pixel column keep min/max/last. Sparse series
  // (fewer points than columns) are stroked as a path; dense ones are drawn as one
  // pixel-aligned rectangle per column spanning [min, max] and the previous column's
  // last value (an envelope that reads as the line), which costs the same for 10 k
  // or 1 M points and needs no anti-aliased path.
  _line(g, l, X, Y, ext, pw) {
    const t = l.t, v = l.v, n = t.length;
    if (!n) return;
    if (n > pw * 1.5 && !l.dash) {
      this._dense(g, l, X, Y);
      return;
    }
    g.strokeStyle = l.color || "#2563eb";
    g.lineWidth = l.width || 1.4;
    g.setLineDash(l.dash || []);
    g.beginPath();
    let col = -1, mn = 0, mx = 0, last = 0, started = false;
    const flush = () => {
      if (col < 0) return;
      const x = col + 0.5;
      if (!started) { g.moveTo(x, Y(mx)); started = true; } else g.lineTo(x, Y(mx));
      if (mn !== mx) g.lineTo(x, Y(mn));
      g.lineTo(x, Y(last));
    };
    for (let i = 0; i < n; i++) {
      const y = v[i];
      if (!Number.isFinite(y)) { flush(); col = -1; started = false; continue; }
      const c = Math.floor(X(t[i]));
      if (c !== col) {
        flush();
        col = c; mn = y; mx = y; last = y;
      } else {
        if (y < mn) mn = y;
        if (y > mx) mx = y;
        last = y;
      }
    }
    flush();
    g.stroke();
    g.setLineDash([]);
  }

  _dense(g, l, X, Y) {
    const t = l.t, v = l.v, n = t.length;
    const w = Math.max(1, Math.round(l.width || 1.4));
    g.fillStyle = l.color || "#2563eb";
    let col = -1, mn = 0, mx = 0, last = NaN, prevCol = -2, prevLast = NaN;
    const flush = () => {
      if (col < 0) return;
      let lo = mn, hi = mx;
      if (prevCol === col - 1 && Number.isFinite(prevLast)) {
        if (prevLast < lo) lo = prevLast;
        if (prevLast > hi) hi = prevLast;
      }
      const yTop = Math.floor(Y(hi)), yBot = Math.ceil(Y(lo));
      g.fillRect(col, yTop - (w >> 1), w, Math.max(w, yBot - yTop + w - 1));
      prevCol = col; prevLast = last;
    };
    for (let i = 0; i < n; i++) {
      const y = v[i];
      if (!Number.isFinite(y)) { flush(); col = -1; prevCol = -2; continue; }
      const c = Math.floor(X(t[i]));
      if (c !== col) {
        flush();
        col = c; mn = y; mx = y; last = y;
      } else {
        if (y < mn) mn = y;
        if (y > mx) mx = y;
        last = y;
      }
    }
    flush();
  }

  _band(g, b, X, Y) {
    const n = b.t.length;
    if (!n) return;
    g.fillStyle = b.color || "rgba(124, 58, 237, 0.15)";
    g.beginPath();
    g.moveTo(X(b.t[0]), Y(b.hi[0]));
    for (let i = 1; i < n; i++) g.lineTo(X(b.t[i]), Y(b.hi[i]));
    for (let i = n - 1; i >= 0; i--) g.lineTo(X(b.t[i]), Y(b.lo[i]));
    g.closePath();
    g.fill();
  }

  _scoreLane(g, X, left, pw, y0, lh) {
    const s = this.data.score;
    g.fillStyle = "#f4f6fa";
    g.fillRect(left, y0, pw, lh);
    g.fillStyle = "#6b7385";
    g.textAlign = "right";
    g.textBaseline = "middle";
    g.fillText("score", left - 6, y0 + lh / 2);
    if (!s || !s.t.length) return;
    const thr = s.threshold ?? 1;
    // Scores sit near 1 for anything unusual; show them on a log scale of (1 - score)
    // so 0.9 .. 0.9999 spread over the lane and the threshold line is readable.
    const floor = 1e-5;
    const Ys = (v) => {
      const q = Math.min(1, Math.max(0, Math.log10(Math.max(floor, 1 - v)) / Math.log10(floor)));
      return y0 + lh - q * lh;
    };
    g.save();
    g.beginPath(); g.rect(left, y0, pw, lh); g.clip();
    g.strokeStyle = "#94a3b8";
    g.lineWidth = 1;
    g.beginPath();
    let col = -1, mx = 0;
    for (let i = 0; i < s.t.length; i++) {
      const c = Math.floor(X(s.t[i]));
      if (c !== col) {
        if (col >= 0) { g.moveTo(col + 0.5, y0 + lh); g.lineTo(col + 0.5, Ys(mx)); }
        col = c; mx = s.s[i];
      } else if (s.s[i] > mx) mx = s.s[i];
    }
    if (col >= 0) { g.moveTo(col + 0.5, y0 + lh); g.lineTo(col + 0.5, Ys(mx)); }
    g.stroke();
    g.fillStyle = "#dc2626";
    for (let i = 0; i < s.t.length; i++) {
      if (s.s[i] >= thr) g.fillRect(Math.floor(X(s.t[i])) - 1, y0, 3, lh);
    }
    g.strokeStyle = "#dc2626";
    g.setLineDash([3, 3]);
    const ty = Math.round(Ys(thr)) + 0.5;
    g.beginPath(); g.moveTo(left, ty); g.lineTo(left + pw, ty); g.stroke();
    g.setLineDash([]);
    g.restore();
  }

  _hover(e) {
    const r = this.canvas.getBoundingClientRect();
    this.hoverX = e.clientX - r.left;
    this.draw();
  }

  _crosshair(g) {
    const { left, top, pw, ph, ext } = this.geom || {};
    if (!ext || this.hoverX < left || this.hoverX > left + pw) { this.tip.hidden = true; return; }
    const tAt = ext.t0 + ((this.hoverX - left) / pw) * (ext.t1 - ext.t0);
    g.strokeStyle = "rgba(15, 23, 42, 0.35)";
    g.beginPath(); g.moveTo(this.hoverX + 0.5, top); g.lineTo(this.hoverX + 0.5, top + ph); g.stroke();
    const head = document.createElement("b");
    head.textContent = new Date(tAt).toLocaleTimeString();
    const rows = [head];
    for (const l of this.data.lines) {
      const i = nearest(l.t, tAt);
      if (i >= 0 && Math.abs(l.t[i] - tAt) <= (ext.t1 - ext.t0) / 50) {
        const row = document.createElement("div");
        const dot = document.createElement("span");
        dot.textContent = "● ";
        dot.style.color = l.color || "#2563eb";
        row.append(dot, `${l.label || ""} ${formatNumber(l.v[i])}`);
        rows.push(row);
      }
    }
    this.tip.replaceChildren(...rows);
    this.tip.hidden = false;
    const x = this.hoverX + 12 > this.container.clientWidth - 160 ? this.hoverX - 170 : this.hoverX + 12;
    this.tip.style.left = `${x}px`;
    this.tip.style.top = `${top + 4}px`;
  }
}

export function nearest(t, x) {
  let lo = 0, hi = t.length - 1;
  if (hi < 0) return -1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (t[mid] < x) lo = mid + 1; else hi = mid;
  }
  if (lo > 0 && Math.abs(t[lo - 1] - x) < Math.abs(t[lo] - x)) return lo - 1;
  return lo;
}
