"""A compact, bounded summary of the twin's state for an LLM prompt.

The model never sees raw history. It sees, for the ``max_series`` series most
relevant to the question (name overlap with the question, the requested system,
anomalous behaviour), the latest value, a trend (least-squares slope over the last
``trend_points`` samples) and a robust z-score of the latest value against that
window; the current anomalies across *all* series; the newest actions from the
action log; recent calibration results; the prediction ledger's measured accuracy of
this twin's forecasts, what-ifs and plans for the system (when the ledger has scored
some); and, when a forecaster is available (the
statistical model), a few forecast points. The rendered text is cut to
``max_chars``; what was left out is counted in the text so the model knows.

Store reads happen on the event-loop thread (the caller is an async model method)
and touch at most ``trend_points`` samples of at most ``max_scan_series`` series.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.core.events import iso
from twin.core.state import TwinState
from twin.models.domain import PredictedState, SimulationResult
from twin.models.settings import parse_settings

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {
    "the",
    "and",
    "for",
    "what",
    "why",
    "how",
    "is",
    "are",
    "was",
    "of",
    "to",
    "in",
    "on",
    "at",
    "a",
    "an",
    "it",
    "if",
    "we",
    "do",
    "be",
    "now",
    "will",
    "with",
    "this",
    "that",
    "from",
    "by",
    "or",
}


@dataclass(frozen=True, slots=True)
class GroundingConfig:
    max_series: int = 12
    trend_points: int = 60
    anomaly_z: float = 3.0
    max_anomalies: int = 8
    max_actions: int = 8
    max_calibrations: int = 3
    max_forecast_points: int = 3
    max_scan_series: int = 5000
    max_chars: int = 6000

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> GroundingConfig:
        return parse_settings(cls, settings.get("grounding") or {}, prefix="settings.grounding")


@dataclass(slots=True)
class SeriesSummary:
    source: str
    name: str
    unit: str
    value: float
    t: float
    samples: int
    slope_per_min: float | None
    span_min: float
    z: float
    relevance: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"

    @property
    def anomalous(self) -> bool:
        return math.isfinite(self.z) and abs(self.z) >= 3.0


@dataclass(slots=True)
class Grounding:
    text: str
    now: float
    series_total: int = 0
    series_shown: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    actions_shown: int = 0
    forecasts_shown: int = 0
    truncated: bool = False


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOP}


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e6 or a < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4g}"


def _summarise(s: Any, points: int) -> SeriesSummary | None:
    if not len(s):
        return None
    t, v = s.tail(points)
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if v.shape[0] == 0:
        return None
    latest_t, latest_v = float(t[-1]), float(v[-1])
    slope: float | None = None
    span = float(t[-1] - t[0]) / 60.0 if v.shape[0] > 1 else 0.0
    if v.shape[0] >= 3 and span > 0:
        x = (t - t[0]) / 60.0
        xm = x.mean()
        denom = float(((x - xm) ** 2).sum())
        if denom > 0:
            slope = float(((x - xm) * (v - v.mean())).sum() / denom)
    z = 0.0
    if v.shape[0] >= 5:
        ref = v[:-1]
        med = float(np.median(ref))
        scale = 1.4826 * float(np.median(np.abs(ref - med)))
        if scale <= 0:
            scale = float(np.std(ref))
        if scale > 0:
            z = (latest_v - med) / scale
        elif latest_v != med:
            z = math.copysign(99.0, latest_v - med)
    return SeriesSummary(
        s.source, s.name, s.unit, latest_v, latest_t, int(len(s)), slope, span, float(z)
    )


def _relevance(s: SeriesSummary, qwords: set[str], system: str | None) -> float:
    sw = words(f"{s.source} {s.name}")
    score = 3.0 * len(qwords & sw)
    if system and s.source == system:
        score += 5.0
    if s.anomalous:
        score += 4.0
    if math.isfinite(s.z):
        score += min(abs(s.z), 10.0) / 5.0
    return score


def _series_line(s: SeriesSummary) -> str:
    parts = [
        f"- {s.key} = {_fmt(s.value)}"
        + (f" {s.unit}" if s.unit and s.unit != "unknown" else "")
        + f" @ {iso(s.t)}"
    ]
    if s.slope_per_min is not None:
        parts.append(
            f"trend {'+' if s.slope_per_min >= 0 else ''}{_fmt(s.slope_per_min)}/min over "
            f"{s.span_min:.0f} min"
        )
    if abs(s.z) >= 1.0:
        parts.append(f"z={s.z:+.1f}" + (" ANOMALY" if s.anomalous else ""))
    return "; ".join(parts)


def summarise_forecast(
    result: SimulationResult, wanted: Iterable[str], max_points: int
) -> list[str]:
    """A few points of a forecast for the metrics in ``wanted`` (all if empty)."""
    if not result.success or not result.future_states:
        return []
    names = set(wanted)
    states: Sequence[PredictedState] = result.future_states
    if len(states) > max_points:
        idx = sorted(
            {round(i * (len(states) - 1) / max(1, max_points - 1)) for i in range(max_points)}
        )
        states = [states[i] for i in idx]
    lines = []
    for st in states:
        m = st.metrics
        keys = [k for k in m if not (k.endswith((".lower", ".upper")) and k.rsplit(".", 1)[0] in m)]
        keys = [k for k in keys if not names or k in names] or keys[:6]
        parts = []
        for k in keys[:8]:
            lo, hi = m.get(f"{k}.lower"), m.get(f"{k}.upper")
            parts.append(
                f"{k}={_fmt(m[k])}"
                + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else "")
            )
        shown = ", ".join(parts)
        lines.append(f"- {iso(st.t)} (confidence {st.confidence:.2f}): {shown}")
    return lines


TRACK_KINDS = ("forecast", "what_if", "plan")


def track_record(state: TwinState, system: str | None) -> list[str]:
    """The prediction ledger's measured figures for ``system``: how far this twin's own
    forecasts and what-ifs have been from what then happened (empty without a ledger or
    before anything was scored). Lets the LLM weigh its answer by measured, not assumed,
    accuracy."""
    ledger = getattr(state, "ledger", None)
    if system is None or ledger is None or not callable(getattr(ledger, "skill", None)):
        return []
    lines = []
    for kind in TRACK_KINDS:
        try:
            sk = ledger.skill(system, kind)
        except Exception:  # noqa: BLE001 - grounding must never fail a request
            continue
        n = int(getattr(sk, "n", 0) or 0) if sk is not None else 0
        if n <= 0:
            continue
        bits = [f"{n} scored"]
        for label, attr, fmt in (
            ("relative error", "rel_error", "{:.1%}"),
            ("within ±10 %", "within_tolerance", "{:.0%}"),
            ("interval coverage", "coverage", "{:.0%}"),
            ("MASE", "mase", "{:.2f}"),
        ):
            v = getattr(sk, attr, math.nan)
            if isinstance(v, (int, float)) and math.isfinite(v):
                bits.append(f"{label} {fmt.format(v)}")
        lines.append(f"- {kind}: " + ", ".join(bits))
    if not lines:
        return []
    return [
        f"track record of this twin's predictions for {system} "
        "(prediction ledger, scored against later telemetry):"
    ] + lines


def build(
    state: TwinState,
    question: str,
    cfg: GroundingConfig,
    *,
    system: str | None = None,
    now: float | None = None,
    forecast: tuple[str, SimulationResult] | None = None,
    extra_anomalies: Sequence[str] = (),
) -> Grounding:
    """Renders the grounded state for a question about ``system`` (or everything)."""
    store = state.store
    summaries: list[SeriesSummary] = []
    total = 0
    for s in store:
        total += 1
        if len(summaries) >= cfg.max_scan_series:
            continue
        sm = _summarise(s, cfg.trend_points)
        if sm is not None:
            summaries.append(sm)
    newest = store.newest_time
    if now is None or not math.isfinite(now):
        now = newest if math.isfinite(newest) else 0.0
    qwords = words(question)
    for sm in summaries:
        sm.relevance = _relevance(sm, qwords, system)
    summaries.sort(key=lambda x: (-x.relevance, x.source, x.name))
    if system:
        # Other systems only when they matter: named in the question or anomalous.
        pool = [x for x in summaries if x.source == system or x.relevance >= 3.0]
    else:
        pool = summaries
    shown = pool[: cfg.max_series]
    anomalies = sorted(
        (x for x in summaries if abs(x.z) >= cfg.anomaly_z), key=lambda x: -abs(x.z)
    )[: cfg.max_anomalies]

    sections: list[list[str]] = []
    head = [f"now: {iso(now)} (event time)"]
    sources = store.sources()
    if sources:
        head.append(
            "systems: "
            + ", ".join(f"{src} ({len(store.metrics_of(src))} series)" for src in sources[:20])
            + (" ..." if len(sources) > 20 else "")
        )
    else:
        head.append("systems: none (the twin has received no telemetry yet)")
    if system:
        head.append(f"system in question: {system}")
    sections.append(head)
    if shown:
        sections.append(
            [
                f"series (top {len(shown)} of {total} by relevance; latest value @ time; trend = "
                f"least-squares slope over the last {cfg.trend_points} samples; z = robust z-score "
                "of the latest value):"
            ]
            + [_series_line(x) for x in shown]
        )
    if anomalies or extra_anomalies:
        lines = [f"current anomalies (|z| >= {cfg.anomaly_z:g}):"]
        lines += [f"- {x.key} = {_fmt(x.value)} (z={x.z:+.1f})" for x in anomalies]
        lines += [f"- {a}" for a in extra_anomalies[: cfg.max_anomalies]]
        sections.append(lines)
    else:
        sections.append(["current anomalies: none detected"])
    actions = list(state.actions)[-cfg.max_actions :] if cfg.max_actions else []
    if actions:
        lines = [f"recent actions (newest last, {len(actions)} of {len(state.actions)}):"]
        for a in actions:
            ok = "" if a.success is None else (" ok" if a.success else " FAILED")
            msg = (": " + a.message[:120]) if a.message else ""
            t = iso(a.t) if math.isfinite(a.t) else "?"
            lines.append(
                f"- {t} {a.action_type}"
                + (f" target={a.target}" if a.target else "")
                + f" status={a.status}{ok}{msg}"
            )
        sections.append(lines)
    cals = list(state.calibrations)[-cfg.max_calibrations :] if cfg.max_calibrations else []
    if cals:
        lines = ["recent calibrations (predicted vs actual):"]
        for c in cals:
            acc = ", ".join(f"{k}={v}" for k, v in list(c.accuracy.items())[:4])
            lines.append(
                f"- {iso(c.t) if math.isfinite(c.t) else '?'} prediction {c.prediction_id or '?'}"
                + (f": {acc}" if acc else "")
            )
        sections.append(lines)
    track = track_record(state, system or (sources[0] if len(sources) == 1 else None))
    if track:
        sections.append(track)
    forecasts_shown = 0
    if forecast is not None:
        label, result = forecast
        wanted = [x.name for x in shown if system is None or x.source == system]
        lines = summarise_forecast(result, wanted, cfg.max_forecast_points)
        if lines:
            forecasts_shown = len(lines)
            sections.append([f"forecast ({label}):"] + lines)

    out: list[str] = []
    used = 0
    truncated = False
    for sec in sections:
        for i, line in enumerate(sec):
            if used + len(line) + 1 > cfg.max_chars:
                left = len(sec) - i
                note = f"  ... {left} more line(s) omitted (prompt budget)"
                if i > 0:
                    out.append(note)
                    used += len(note) + 1
                truncated = True
                break
            out.append(line)
            used += len(line) + 1
    return Grounding(
        "\n".join(out),
        now,
        total,
        [x.key for x in shown],
        [x.key for x in anomalies],
        len(actions),
        forecasts_shown,
        truncated,
    )
