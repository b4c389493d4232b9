"""The prediction ledger: every forecast, what-if and plan outcome the twin answered,
scored against the telemetry that arrived afterwards.

Why it is a core fact store: a prediction and what then happened are facts, like
samples and execution results, and every model's answers must be checked the same way.
So the ledger sits beside the ``SeriesStore`` (``TwinState.ledger``), is recorded once
by the runtime for whichever model answered, is bounded, and goes into snapshots.

Life of a prediction (all times are event times, never the wall clock):

1. ``record`` keeps, per predicted metric that the store has as a series, the predicted
   times, means and the model's (raw) interval, bounded to ``max_points`` points per
   prediction; its origin is the newest sample of those series; its MASE scale is the
   series' in-sample one-step naive error just before the origin.
2. ``score_due`` (called per ingestion batch or on a timer; O(1) when nothing is due)
   pops predictions whose horizon the telemetry has passed and compares each predicted
   point with the sample nearest to its time: absolute error, MASE, relative error,
   whether the actual fell inside the interval as delivered and as the model gave it
   (raw), and the share of points within 10 % of the actual.
3. A what-if or plan outcome is a conditional prediction: it is scored on its states at
   or after an execution result of each of its actions (same type and target) within
   its horizon. A plan with no actions ("do nothing") is scored when nothing was
   executed on its system. Otherwise it is marked ``not_executed`` and, if it carried
   the baseline ("do nothing") prediction, that baseline is scored as kind
   ``<kind>_baseline`` (how well the model knows the system without the action).
   Hypothetical scenarios (``kind="scenario"``) are recorded, never scored.
4. What was measured feeds back: per (system, kind[, metric]) a ``Skill`` (recent mean
   MASE, relative error, coverage, share within tolerance) for confidences; standardised
   errors into the ``IntervalCalibrator`` for the next intervals; per (system, metric)
   the live forecast error against the model's own backtest error for drift.

Bounds (per system): ``max_pending`` predictions awaiting their horizon (oldest dropped
and counted), ``max_recent`` scored summaries, skill windows of ``skill_window``
predictions; at most ``max_systems`` systems (least recently used dropped). A pending
prediction holds five arrays of at most ``max_points`` values: ~40 bytes a point.
"""

from __future__ import annotations

import heapq
import math
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from twin.core.intervals import IntervalCalibrator, lead_buckets, standardised_errors

KINDS = ("forecast", "what_if", "plan", "scenario")
SCORED_KINDS = ("forecast", "what_if", "plan")
REPORT_KINDS = (*KINDS, "what_if_baseline", "plan_baseline")
CONDITIONAL_KINDS = ("what_if", "plan")
TOLERANCE = 0.10  # "within tolerance": |error| <= 10 % of the actual
CONFIDENCE_PRIOR_WEIGHT = 5.0  # Skill.confidence: measured share weighs n / (n + 5)
SCALE_TAIL = 512  # points before the origin used for the MASE scale and the native step
ARRAY_OVERHEAD = 112  # a numpy array object beyond its data
TRACK_OVERHEAD = 200  # a _Track object and its metric name
STATUSES = ("pending", "scored", "not_executed", "unscorable", "dropped")
# aggregate field -> metric name (families labelled system, model, kind:
# twin/observability/ledger_metrics.py)
METRIC_NAMES = {
    "recorded": "predictions_recorded_total",
    "scored": "predictions_scored_total",
    "not_executed": "predictions_not_executed_total",
    "coverage": "forecast_interval_coverage",
    "coverage_raw": "forecast_interval_coverage_raw",
    "mase": "prediction_mase",
    "rel_error": "whatif_error_ratio",
}


class _Series(Protocol):
    last_t: float
    appended: int

    def __len__(self) -> int: ...
    def tail(self, n: int) -> tuple[np.ndarray, np.ndarray]: ...


class _Store(Protocol):
    def get(self, source: str, name: str) -> Any: ...


class _Action(Protocol):
    t: float
    action_type: str
    target: str
    status: str
    success: bool | None


@dataclass(frozen=True, slots=True)
class Skill:
    """Measured accuracy of one kind of prediction on one system (recent window).

    ``n`` scored predictions; the other figures are ``nan`` while ``n == 0``:
    ``mase`` mean scaled error, ``rel_error`` mean |error| / mean |actual|,
    ``coverage`` share of actuals inside the delivered intervals, ``within_tolerance``
    share of actuals within 10 % of the prediction; ``interval_scale`` is the factor the
    ledger applies to this kind's intervals (1.0 until learned).
    """

    n: int
    mase: float
    rel_error: float
    coverage: float
    interval_scale: float
    within_tolerance: float = math.nan

    def confidence(self, prior: float) -> float:
        """Share of outcomes within tolerance, shrunk towards ``prior`` by n / (n + 5)."""
        if self.n <= 0 or not math.isfinite(self.within_tolerance):
            return min(1.0, max(0.0, prior))
        w = self.n / (self.n + CONFIDENCE_PRIOR_WEIGHT)
        return min(1.0, max(0.0, w * self.within_tolerance + (1.0 - w) * prior))


@dataclass(slots=True)
class TrackInput:
    """One predicted metric as a caller hands it over (arrays aligned on ``t``)."""

    metric: str
    t: np.ndarray
    mean: np.ndarray
    lower: np.ndarray | None = None  # raw interval, as the model gave it
    upper: np.ndarray | None = None
    applied_scale: np.ndarray | None = None  # factor applied to the delivered interval
    baseline: np.ndarray | None = None  # the "do nothing" prediction of a what-if
    backtest_mae: float = math.nan  # the model's own out-of-sample error for this series
    backtest_horizon_sec: float = math.nan


@dataclass(slots=True)
class SeriesInfo:
    last_t: float
    step: float  # native sampling step (median spacing of the recent samples)
    scale: float  # in-sample one-step naive MAE (MASE denominator)
    appended: int


@dataclass(slots=True)
class _Track:
    metric: str
    t: np.ndarray
    mean: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    s: np.ndarray | None  # applied interval scale per point (float32)
    baseline: np.ndarray | None
    step: float
    scale: float
    appended0: int
    backtest_mae: float
    backtest_horizon_sec: float

    @property
    def nbytes(self) -> int:
        arrays = [
            a
            for a in (self.t, self.mean, self.lower, self.upper, self.s, self.baseline)
            if a is not None
        ]
        return TRACK_OVERHEAD + sum(a.nbytes + ARRAY_OVERHEAD for a in arrays)


@dataclass(slots=True)
class Prediction:
    id: str
    system: str
    model: str
    kind: str
    made_at: float
    horizon_end: float
    level: float
    actions: tuple[tuple[str, str], ...]
    tracks: list[_Track]
    plan_id: str = ""
    confidence: float = math.nan
    seq: int = 0
    status: str = "pending"
    note: str = ""
    recorded_unix: float = 0.0  # wall clock, for people reading the report only

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tracks) + 400


@dataclass(slots=True)
class _Agg:
    recorded: int = 0
    scored: int = 0
    unscorable: int = 0
    not_executed: int = 0
    dropped: int = 0
    points: int = 0
    interval_points: int = 0
    inside: int = 0
    inside_raw: int = 0
    mase_sum: float = 0.0
    mase_n: int = 0
    rel_sum: float = 0.0
    rel_n: int = 0
    within: int = 0

    def row(self) -> dict[str, float]:
        return {
            "recorded": self.recorded,
            "scored": self.scored,
            "unscorable": self.unscorable,
            "not_executed": self.not_executed,
            "dropped": self.dropped,
            "points": self.points,
            "coverage": self.inside / self.interval_points if self.interval_points else math.nan,
            "coverage_raw": self.inside_raw / self.interval_points
            if self.interval_points
            else math.nan,
            "mase": self.mase_sum / self.mase_n if self.mase_n else math.nan,
            "rel_error": self.rel_sum / self.rel_n if self.rel_n else math.nan,
            "within_tolerance": self.within / self.points if self.points else math.nan,
        }


@dataclass(slots=True)
class _Drift:
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    reason: str = ""
    detected_at: float = math.nan
    refitted_at: float = -math.inf
    refits: int = 0
    awaiting_refit: bool = False


@dataclass(slots=True)
class _System:
    pending: OrderedDict[str, Prediction] = field(default_factory=OrderedDict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    recent: deque[dict[str, Any]] = field(default_factory=deque)
    recent_sizes: deque[int] = field(default_factory=deque)  # bytes of each summary
    drift: dict[str, _Drift] = field(default_factory=dict)  # metric -> state

    def remember(self, summary: dict[str, Any]) -> None:
        """Keeps a scored (or closed) prediction's summary, and its size for ``nbytes``."""
        self.recent.append(summary)
        self.recent_sizes.append(_sizeof(summary))


def _sizeof(obj: Any) -> int:
    """Bytes held by a summary (dicts, lists, strings and numbers), measured once.

    Keys are the code's literal names (shared, not counted), and so are None and bools."""
    if obj is None or isinstance(obj, bool):
        return 0
    n = sys.getsizeof(obj)
    if isinstance(obj, dict):
        n += sum(_sizeof(v) for v in obj.values())
    elif isinstance(obj, (list, tuple)):
        n += sum(_sizeof(v) for v in obj)
    return n


def _f(x: float, nd: int = 6) -> float | None:
    return round(float(x), nd) if x is not None and math.isfinite(x) else None


def _iso(t: float) -> str | None:
    if not math.isfinite(t):
        return None
    from twin.core.events import iso

    return iso(t)


class PredictionLedger:
    def __init__(
        self,
        max_pending: int = 100,
        max_recent: int = 100,
        max_points: int = 240,
        max_systems: int = 1000,
        skill_window: int = 50,
        drift_margin: float = 2.0,
        drift_min_predictions: int = 5,
        calibrate_intervals: bool = True,
    ) -> None:
        self.max_pending = max(1, max_pending)
        self.max_recent = max(1, max_recent)
        self.max_points = max(8, max_points)
        self.max_systems = max(1, max_systems)
        self.skill_window = max(1, skill_window)
        self.drift_margin = drift_margin
        self.drift_min = max(1, drift_min_predictions)
        self.calibrate = calibrate_intervals
        self.intervals = IntervalCalibrator()
        self._systems: OrderedDict[str, _System] = OrderedDict()
        self._aggs: dict[tuple[str, str, str], _Agg] = {}
        self._skill: dict[tuple[str, ...], deque[tuple[float, float, float, float, int]]] = {}
        self._info_cache: dict[tuple[str, str], tuple[int, SeriesInfo]] = {}
        self._seq = 0
        self.score_seconds = 0.0
        self.score_calls = 0
        self.refits_total = 0
        self.drift_events_total = 0
        self.listeners: list[Any] = []  # callables(event: dict) for outcomes and drift

    # ------------------------------------------------------------------ helpers
    def _system(self, name: str) -> _System:
        s = self._systems.get(name)
        if s is None:
            s = self._systems[name] = _System(
                recent=deque(maxlen=self.max_recent), recent_sizes=deque(maxlen=self.max_recent)
            )
            while len(self._systems) > self.max_systems:
                old, gone = self._systems.popitem(last=False)
                for p in gone.pending.values():
                    self._agg(p).dropped += 1
        else:
            self._systems.move_to_end(name)
        return s

    def _agg(self, p: Prediction, kind: str | None = None) -> _Agg:
        key = (p.system, p.model, kind or p.kind)
        a = self._aggs.get(key)
        if a is None:
            a = self._aggs[key] = _Agg()
        return a

    def series_info(self, store: _Store, system: str, metric: str) -> SeriesInfo | None:
        """Origin, native step and MASE scale of one series (recomputed every 256 new points)."""
        s = store.get(system, metric)
        if s is None or not len(s):
            return None
        key = (system, metric)
        hit = self._info_cache.get(key)
        if hit is not None and hit[0] == s.appended >> 8:
            info = hit[1]
            return SeriesInfo(s.last_t, info.step, info.scale, s.appended)
        t, v = s.tail(min(len(s), SCALE_TAIL))
        d = np.diff(t)
        d = d[d > 0]
        step = float(np.median(d)) if d.shape[0] else 60.0
        dv = np.abs(np.diff(v))
        dv = dv[np.isfinite(dv)]
        scale = float(dv.mean()) if dv.shape[0] else math.nan
        info = SeriesInfo(s.last_t, step, scale if scale > 0 else math.nan, s.appended)
        if len(self._info_cache) > 8 * self.max_systems:
            self._info_cache.clear()
        self._info_cache[key] = (s.appended >> 8, info)
        return info

    # ------------------------------------------------------------------ intervals, skill
    def interval_scales(
        self, system: str, kind: str, metric: str, lead_steps: np.ndarray, level: float
    ) -> tuple[np.ndarray, int]:
        """Per-point factors for a new interval of ``level`` (1 where nothing is learned yet),
        and how specific the evidence was (0 none, 1 kind-wide, 2 system, 3 system+metric)."""
        out = np.ones(lead_steps.shape[0])
        if not self.calibrate or not lead_steps.shape[0]:
            return out, 0
        keys = ((system, kind, metric), (system, kind), (kind,))
        b = lead_buckets(lead_steps)
        best = 0
        for bucket in np.unique(b).tolist():
            s, spec = self.intervals.scale(keys, bucket, level)
            out[b == bucket] = s
            best = max(best, spec)
        return out, best

    def skill(self, system: str, kind: str, metric: str | None = None) -> Skill:
        """Recent measured accuracy of ``kind`` predictions on ``system`` (and ``metric``)."""
        key = (system, kind, metric) if metric else (system, kind)
        rows = self._skill.get(key)
        scale, _ = self.intervals.scale(
            ((system, kind, metric),) if metric else ((system, kind),), 1, 0.9
        )
        if not rows:
            return Skill(0, math.nan, math.nan, math.nan, scale, math.nan)

        def mean(i: int) -> float:
            xs = [r[i] for r in rows if math.isfinite(r[i])]
            return float(np.mean(xs)) if xs else math.nan

        return Skill(len(rows), mean(0), mean(1), mean(2), scale, mean(3))

    # ------------------------------------------------------------------ recording
    def record(
        self,
        store: _Store,
        prediction_id: str,
        system: str,
        model: str,
        kind: str,
        tracks: Sequence[TrackInput],
        level: float = math.nan,
        actions: Iterable[tuple[str, str]] = (),
        plan_id: str = "",
        confidence: float = math.nan,
        note: str = "",
    ) -> Prediction:
        """Records one prediction; returns it (status ``pending`` or ``unscorable``)."""
        if kind not in KINDS:
            raise ValueError(
                f"unknown prediction kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        self._seq += 1
        sysl = self._system(system)
        kept: list[_Track] = []
        infos: list[SeriesInfo] = []
        usable = [tr for tr in tracks if tr.t.shape[0]]
        per_track = max(8, self.max_points // max(1, len(usable))) if usable else self.max_points
        unknown: list[str] = []
        for tr in usable:
            if len(kept) * 8 >= self.max_points:
                break
            info = self.series_info(store, system, tr.metric)
            if info is None:
                unknown.append(tr.metric)
                continue
            n = tr.t.shape[0]
            idx = (
                np.unique(np.linspace(0, n - 1, min(n, per_track)).round().astype(np.int64))
                if n > per_track
                else slice(None)
            )

            def pick(a: np.ndarray | None, dtype: Any = np.float64) -> np.ndarray | None:
                return None if a is None else np.ascontiguousarray(np.asarray(a, dtype=dtype)[idx])  # noqa: B023 - used in this iteration

            kept.append(
                _Track(
                    tr.metric,
                    pick(tr.t),  # type: ignore[arg-type]
                    pick(tr.mean),  # type: ignore[arg-type]
                    pick(tr.lower),
                    pick(tr.upper),
                    pick(tr.applied_scale, np.float32),
                    pick(tr.baseline),
                    info.step,
                    info.scale,
                    info.appended,
                    float(tr.backtest_mae),
                    float(tr.backtest_horizon_sec),
                )
            )
            infos.append(info)
        made_at = max((i.last_t for i in infos), default=math.nan)
        end = max((float(k.t[-1]) for k in kept), default=math.nan)
        p = Prediction(
            prediction_id,
            system,
            model,
            kind,
            made_at,
            end,
            level,
            tuple((a.upper(), tgt or system) for a, tgt in actions),
            kept,
            plan_id,
            confidence,
            self._seq,
            note=note,
            recorded_unix=time.time(),
        )
        agg = self._agg(p)
        agg.recorded += 1
        if kind == "scenario":
            return self._close(
                sysl, p, "unscorable", "hypothetical scenario: reality cannot confirm it", agg
            )
        if not kept:
            why = f"none of the predicted metrics is a series of {system}" + (
                f" ({', '.join(unknown[:5])})" if unknown else ""
            )
            return self._close(sysl, p, "unscorable", why, agg)
        if unknown:
            p.note = (
                p.note + "; " if p.note else ""
            ) + f"not scorable (no such series): {', '.join(unknown[:5])}"
        sysl.pending[prediction_id] = p
        heapq.heappush(sysl.heap, (end, p.seq, prediction_id))
        while len(sysl.pending) > self.max_pending:
            _, old = sysl.pending.popitem(last=False)
            self._agg(old).dropped += 1
        if len(sysl.heap) > 4 * self.max_pending:  # drop heap entries of dropped predictions
            sysl.heap = [h for h in sysl.heap if h[2] in sysl.pending]
            heapq.heapify(sysl.heap)
        return p

    def _close(
        self, sysl: _System, p: Prediction, status: str, note: str, agg: _Agg | None = None
    ) -> Prediction:
        p.status = status
        p.note = note if not p.note else f"{note}; {p.note}"
        a = agg or self._agg(p)
        if status == "unscorable":
            a.unscorable += 1
        elif status == "not_executed":
            a.not_executed += 1
        sysl.remember(self._summary(p, None))
        return p

    # ------------------------------------------------------------------ scoring
    def pending_count(self) -> int:
        return sum(len(s.pending) for s in self._systems.values())

    def score_due(self, store: _Store, actions: Iterable[_Action] = ()) -> int:
        """Scores every prediction whose horizon the telemetry has passed; returns how many.

        Cheap when nothing is due: per system with pending predictions, one look at the
        earliest horizon end and the newest sample of its series.
        """
        t0 = time.perf_counter()
        self.score_calls += 1
        done = 0
        action_list: list[_Action] | None = None
        for name, sysl in list(self._systems.items()):
            heap = sysl.heap
            while heap:
                end, _, pid = heap[0]
                p = sysl.pending.get(pid)
                if p is None:
                    heapq.heappop(heap)
                    continue
                lasts = [
                    s.last_t for tr in p.tracks if (s := store.get(name, tr.metric)) is not None
                ]
                if not lasts:
                    break
                grace = max(60.0, 0.25 * (p.horizon_end - p.made_at))
                if min(lasts) < end and max(lasts) < end + grace:
                    break
                heapq.heappop(heap)
                del sysl.pending[pid]
                if action_list is None:
                    action_list = list(actions)
                self._score(sysl, p, store, action_list)
                done += 1
        self.score_seconds += time.perf_counter() - t0
        return done

    def _execution_time(self, p: Prediction, actions: list[_Action]) -> float | None:
        """When the prediction's plan was in effect (None: it was not carried out)."""
        window = [
            a
            for a in actions
            if p.made_at <= a.t <= p.horizon_end
            and a.status == "success"
            and a.success is not False
        ]
        if not p.actions:
            touched = any(a.target == p.system or (not a.target) for a in window)
            return None if touched else p.made_at
        when = -math.inf
        for typ, target in p.actions:
            ts = [
                a.t
                for a in window
                if a.action_type.upper() == typ and (a.target or p.system) == target
            ]
            if not ts:
                return None
            when = max(when, min(ts))
        return when

    def _score(self, sysl: _System, p: Prediction, store: _Store, actions: list[_Action]) -> None:
        since = -math.inf
        kind = p.kind
        use_baseline = False
        if kind in CONDITIONAL_KINDS:
            when = self._execution_time(p, actions)
            if when is None:
                if any(tr.baseline is not None for tr in p.tracks):
                    use_baseline = True
                    kind = f"{p.kind}_baseline"
                else:
                    self._close(
                        sysl, p, "not_executed", "its actions were not executed within the horizon"
                    )
                    self._emit(p, None)
                    return
            else:
                since = when
                p.note = (p.note + "; " if p.note else "") + f"executed at {_iso(when)}"
        m = self._match(p, store, since, use_baseline)
        if m is None:
            self._close(sysl, p, "unscorable", "no telemetry at the predicted times")
            return
        tracks, tid, pt, actual, mean, lo, hi, sc = m
        k = len(tracks)
        e = actual - mean
        ae = np.abs(e)
        aa = np.abs(actual)
        cnt = np.bincount(tid, minlength=k).astype(float)
        sum_ae = np.bincount(tid, ae, k)
        sum_aa = np.bincount(tid, aa, k)
        within_pt = ae <= TOLERANCE * aa
        within = np.bincount(tid, within_pt, k)
        iv = np.isfinite(lo) & np.isfinite(hi)
        ni_t = np.bincount(tid, iv, k)
        inside_raw_pt = iv & (actual >= lo) & (actual <= hi)
        inside_pt = iv & (actual >= mean - (mean - lo) * sc) & (actual <= mean + (hi - mean) * sc)
        inside = np.bincount(tid, inside_pt, k)
        inside_raw = np.bincount(tid, inside_raw_pt, k)
        if math.isfinite(p.level) and iv.any():
            steps = np.array([tr.step for tr in tracks])[tid[iv]]
            lead = (pt[iv] - p.made_at) / np.maximum(steps, 1e-9)
            z = standardised_errors(actual[iv], mean[iv], lo[iv], hi[iv], p.level)
            self.intervals.observe_tracks(
                p.system, kind, [tr.metric for tr in tracks], tid[iv], lead_buckets(lead), z
            )
        scales = np.array([tr.scale for tr in tracks])
        with np.errstate(divide="ignore", invalid="ignore"):
            mae = sum_ae / cnt
            mase_t = np.where(scales > 0, mae / scales, np.nan)
            rel_t = np.where(sum_aa > 0, sum_ae / sum_aa, np.nan)
        per_metric: dict[str, dict[str, Any]] = {}
        for i, tr in enumerate(tracks):
            n_i = int(cnt[i])
            has_iv = ni_t[i] > 0
            cov = float(inside[i] / ni_t[i]) if has_iv else math.nan
            per_metric[tr.metric] = {
                "points": n_i,
                "mae": _f(float(mae[i])),
                "mase": _f(float(mase_t[i])),
                "rel_error": _f(float(rel_t[i])),
                "coverage": _f(cov) if has_iv else None,
                "coverage_raw": _f(float(inside_raw[i] / ni_t[i])) if has_iv else None,
                "within_tolerance": _f(float(within[i] / n_i)),
            }
            self._skill_add(
                (p.system, kind, tr.metric),
                (float(mase_t[i]), float(rel_t[i]), cov, float(within[i] / n_i), n_i),
            )
            if kind == "forecast" and math.isfinite(tr.backtest_mae) and tr.backtest_mae > 0:
                sel = tid == i
                self._drift_observe(p, tr, pt[sel], e[sel])
        n = int(cnt.sum())
        ni = int(ni_t.sum())
        fin_m = mase_t[np.isfinite(mase_t)]
        fin_r = rel_t[np.isfinite(rel_t)]
        n_in = int(inside.sum())
        n_in_raw = int(inside_raw.sum())
        n_within = int(within.sum())
        out: dict[str, Any] = {
            "points": n,
            "mase": float(fin_m.mean()) if fin_m.shape[0] else math.nan,
            "rel_error": float(fin_r.mean()) if fin_r.shape[0] else math.nan,
            "coverage": n_in / ni if ni else math.nan,
            "coverage_raw": n_in_raw / ni if ni else math.nan,
            "within_tolerance": n_within / n,
            "executed": None if p.kind not in CONDITIONAL_KINDS else not use_baseline,
            "scored_as": kind,
            "per_metric": per_metric,
        }
        a = self._agg(p, kind)
        if use_baseline:
            self._agg(p).not_executed += 1
            p.status = "not_executed"
            p.note = (
                p.note + "; " if p.note else ""
            ) + "not executed: its baseline (no action) was scored"
        else:
            p.status = "scored"
        a.scored += 1
        a.points += n
        a.interval_points += ni
        a.inside += n_in
        a.inside_raw += n_in_raw
        a.within += n_within
        if math.isfinite(out["mase"]):
            a.mase_sum += out["mase"]
            a.mase_n += 1
        if math.isfinite(out["rel_error"]):
            a.rel_sum += out["rel_error"]
            a.rel_n += 1
        self._skill_add(
            (p.system, kind),
            (out["mase"], out["rel_error"], out["coverage"], out["within_tolerance"], n),
        )
        sysl.remember(self._summary(p, out))
        self._emit(p, out)

    def _skill_add(self, key: tuple[str, ...], row: tuple[float, float, float, float, int]) -> None:
        d = self._skill.get(key)
        if d is None:
            if len(self._skill) > 64 * self.max_systems:
                self._skill.clear()
            d = self._skill[key] = deque(maxlen=self.skill_window)
        d.append(row)

    def _match(self, p: Prediction, store: _Store, since: float, use_baseline: bool) -> Any:
        """Each predicted point with the sample nearest its time (within half a step),
        concatenated over the tracks: (tracks, track index, time, actual, mean, lower,
        upper, applied scale); lower/upper are NaN where a track has no interval."""
        tracks: list[_Track] = []
        parts: list[tuple[np.ndarray, ...]] = []
        for tr in p.tracks:
            pred = tr.baseline if use_baseline else tr.mean
            if pred is None:
                continue
            s = store.get(p.system, tr.metric)
            if s is None or not len(s):
                continue
            ts, vs = s.tail(min(len(s), max(2, s.appended - tr.appended0 + 2)))
            sel = tr.t >= since if math.isfinite(since) else slice(None)
            pt = tr.t[sel]
            if not pt.shape[0] or not ts.shape[0]:
                continue
            nt = tr.t.shape[0]
            tol = 0.5 * max(tr.step, float(tr.t[-1] - tr.t[0]) / (nt - 1) if nt > 1 else tr.step)
            last = ts.shape[0] - 1
            i = np.minimum(np.maximum(np.searchsorted(ts, pt), 1), max(1, last))
            r = np.minimum(i, last)
            j = np.where(np.abs(pt - ts[i - 1]) <= np.abs(ts[r] - pt), i - 1, r)
            ok = np.abs(ts[j] - pt) <= tol
            n_ok = int(ok.sum())
            if not n_ok:
                continue
            tracks.append(tr)
            if not use_baseline and tr.lower is not None and tr.upper is not None:
                lo, hi = tr.lower[sel][ok], tr.upper[sel][ok]
                sc = tr.s[sel][ok].astype(np.float64) if tr.s is not None else np.ones(n_ok)
            else:
                lo = hi = np.full(n_ok, np.nan)
                sc = np.ones(n_ok)
            parts.append(
                (
                    np.full(n_ok, len(tracks) - 1, dtype=np.intp),
                    pt[ok],
                    vs[j][ok],
                    pred[sel][ok],
                    lo,
                    hi,
                    sc,
                )
            )
        if not tracks:
            return None
        return (tracks, *(np.concatenate([q[i] for q in parts]) for i in range(7)))

    # ------------------------------------------------------------------ drift
    def _drift_observe(self, p: Prediction, tr: _Track, t: np.ndarray, e: np.ndarray) -> None:
        sysl = self._systems.get(p.system)
        if sysl is None:
            return
        d = sysl.drift.get(tr.metric)
        if d is None:
            d = sysl.drift[tr.metric] = _Drift()
        if p.made_at < d.refitted_at:
            return  # made by the model that was replaced
        h = tr.backtest_horizon_sec if math.isfinite(tr.backtest_horizon_sec) else math.inf
        near = (t - p.made_at) <= h
        if not near.any():
            return
        live = float(np.mean(np.abs(e[near])))
        d.ratios.append(live / tr.backtest_mae)
        if len(d.ratios) < self.drift_min:
            return
        recent = list(d.ratios)[-self.drift_min :]
        med = float(np.median(recent))
        if med > self.drift_margin:
            if not d.reason:
                self.drift_events_total += 1
                d.detected_at = p.horizon_end
                d.awaiting_refit = True
                d.reason = (
                    f"{p.system}/{tr.metric}: live forecast error is {med:.2f}× its backtest error "
                    f"(median of the last {len(recent)} scored forecasts; margin "
                    f"{self.drift_margin:g}×)"
                )
                self._emit_event(
                    {
                        "type": "drift",
                        "system": p.system,
                        "metric": tr.metric,
                        "ratio": round(med, 4),
                        "reason": d.reason,
                        "t": _iso(p.horizon_end),
                    }
                )
        elif d.reason and not d.awaiting_refit:
            d.reason = ""  # recovered after the refit

    def drift_reasons(self) -> list[str]:
        """Current drift findings (health shows them; the system is ``degraded`` meanwhile)."""
        return [d.reason for s in self._systems.values() for d in s.drift.values() if d.reason]

    def systems_to_refit(self) -> list[str]:
        return sorted(
            {
                name
                for name, s in self._systems.items()
                if any(d.awaiting_refit for d in s.drift.values())
            }
        )

    def refitted(self, system: str, at: float, parts: int = 0) -> None:
        """The system's models were refitted at event time ``at``: older forecasts stop counting."""
        sysl = self._systems.get(system)
        if sysl is None:
            return
        self.refits_total += 1
        what = (
            f"{parts} forecaster(s) refitted"
            if parts
            else "refit requested (the model has no refit: nothing changed)"
        )
        for d in sysl.drift.values():
            if d.awaiting_refit:
                d.awaiting_refit = False
                d.refits += 1
                d.reason = (
                    d.reason.split(" — ")[0]
                    + f" — {what} at {_iso(at)}; waiting for new forecasts to be scored"
                )
            if math.isfinite(at):
                d.refitted_at = at
            d.ratios.clear()
        self._emit_event({"type": "refit", "system": system, "parts": parts, "t": _iso(at)})

    # ------------------------------------------------------------------ listeners
    def _emit(self, p: Prediction, out: dict[str, Any] | None) -> None:
        if not self.listeners:
            return
        summary = {k: v for k, v in self._summary(p, out).items() if not k.startswith("_")}
        self._emit_event({"type": "prediction_outcome", **summary})

    def _emit_event(self, event: dict[str, Any]) -> None:
        for fn in list(self.listeners):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a listener must never break scoring
                pass

    # ------------------------------------------------------------------ reporting
    def _summary(self, p: Prediction, out: dict[str, Any] | None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": p.id,
            "system": p.system,
            "model": p.model,
            "kind": p.kind,
            "status": p.status,
            "made_at": _iso(p.made_at),
            "horizon_end": _iso(p.horizon_end),
            "metrics": [t.metric for t in p.tracks],
            "points": int(sum(t.t.shape[0] for t in p.tracks)),
            "interval_level": _f(p.level),
            "confidence": _f(p.confidence),
            "_seq": p.seq,
        }
        if p.plan_id:
            d["plan_id"] = p.plan_id
        if p.actions:
            d["actions"] = [{"action_type": a, "target": t} for a, t in p.actions]
        scales = [float(np.mean(t.s)) for t in p.tracks if t.s is not None and t.s.shape[0]]
        if scales:
            d["interval_scale"] = _f(float(np.mean(scales)), 4)
        if p.note:
            d["note"] = p.note
        if out is not None:
            d["outcome"] = {k: (_f(v) if isinstance(v, float) else v) for k, v in out.items()}
        return d

    def report(
        self, system: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Newest first: pending predictions, then scored (with outcomes)."""
        rows: list[tuple[int, dict[str, Any]]] = []
        for name, sysl in self._systems.items():
            if system is not None and name != system:
                continue
            for p in sysl.pending.values():
                if kind is None or p.kind == kind:
                    rows.append((p.seq, self._summary(p, None)))
            for r in sysl.recent:
                if (
                    kind is None
                    or r["kind"] == kind
                    or (r.get("outcome") or {}).get("scored_as") == kind
                ):
                    rows.append((int(r.get("_seq", 0)), r))
        rows.sort(key=lambda x: x[0], reverse=True)
        return [
            {k: v for k, v in r.items() if not k.startswith("_")} for _, r in rows[: max(0, limit)]
        ]

    def aggregates(self) -> list[dict[str, Any]]:
        """One row per (system, model, kind) with counts and figures since the start."""
        return [
            {"system": s, "model": m, "kind": k, **a.row()}
            for (s, m, k), a in sorted(self._aggs.items())
        ]

    def totals(self) -> dict[str, float]:
        """The flat figures ``get_metrics`` reports."""
        tot = _Agg()
        fc = _Agg()
        wi = _Agg()
        for (_, _, kind), a in self._aggs.items():
            for f in ("recorded", "scored", "unscorable", "not_executed", "dropped", "points"):
                setattr(tot, f, getattr(tot, f) + getattr(a, f))
            if kind == "forecast":
                for f in ("interval_points", "inside", "inside_raw", "mase_sum", "mase_n"):
                    setattr(fc, f, getattr(fc, f) + getattr(a, f))
            if kind in CONDITIONAL_KINDS:
                wi.rel_sum += a.rel_sum
                wi.rel_n += a.rel_n
        fr, wr = fc.row(), wi.row()
        return {
            "predictions_recorded_total": tot.recorded,
            "predictions_scored_total": tot.scored,
            "predictions_pending": self.pending_count(),
            "predictions_unscorable_total": tot.unscorable,
            "predictions_not_executed_total": tot.not_executed,
            "predictions_dropped_total": tot.dropped,
            "forecast_interval_coverage": fr["coverage"],
            "forecast_interval_coverage_raw": fr["coverage_raw"],
            "prediction_mase": fr["mase"],
            "whatif_error_ratio": wr["rel_error"],
            "ledger_score_seconds_total": self.score_seconds,
            "ledger_bytes": self.nbytes,
            "prediction_drift_systems": len({r.split("/")[0] for r in self.drift_reasons()}),
            "prediction_drift_events_total": self.drift_events_total,
            "prediction_refits_total": self.refits_total,
        }

    @property
    def nbytes(self) -> int:
        """Approximate memory held (arrays exactly, bookkeeping estimated)."""
        n = 0
        for s in self._systems.values():
            n += sum(p.nbytes for p in s.pending.values()) + sum(s.recent_sizes)
            n += 64 * len(s.heap)
        # A skill row is a tuple of five numbers (~200 B); an interval error a Python float
        # in a deque (~32 B).
        n += 120 * len(self._aggs) + sum(200 * len(d) + 700 for d in self._skill.values())
        n += sum(
            32 * e for _, e in (self.intervals.evidence(k) for k in list(self.intervals._keys))
        )
        return n

    # ------------------------------------------------------------------ snapshots
    def export(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> bytes | None:
            return None if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes()

        systems = []
        for name, s in self._systems.items():
            systems.append(
                {
                    "name": name,
                    "pending": [
                        {
                            "id": p.id,
                            "seq": p.seq,
                            "model": p.model,
                            "kind": p.kind,
                            "made_at": p.made_at,
                            "horizon_end": p.horizon_end,
                            "level": p.level,
                            "actions": [list(a) for a in p.actions],
                            "plan_id": p.plan_id,
                            "confidence": p.confidence,
                            "note": p.note,
                            "recorded_unix": p.recorded_unix,
                            "tracks": [
                                {
                                    "metric": t.metric,
                                    "t": arr(t.t),
                                    "mean": arr(t.mean),
                                    "lower": arr(t.lower),
                                    "upper": arr(t.upper),
                                    "s": arr(t.s),
                                    "baseline": arr(t.baseline),
                                    "step": t.step,
                                    "scale": t.scale,
                                    "appended0": t.appended0,
                                    "backtest_mae": t.backtest_mae,
                                    "backtest_horizon_sec": t.backtest_horizon_sec,
                                }
                                for t in p.tracks
                            ],
                        }
                        for p in s.pending.values()
                    ],
                    "recent": list(s.recent),
                    "drift": {
                        m: {
                            "ratios": list(d.ratios),
                            "reason": d.reason,
                            "detected_at": d.detected_at,
                            "refitted_at": d.refitted_at,
                            "refits": d.refits,
                            "awaiting_refit": d.awaiting_refit,
                        }
                        for m, d in s.drift.items()
                    },
                }
            )
        return {
            "version": 1,
            "systems": systems,
            "aggregates": [
                [list(k), {f: getattr(a, f) for f in a.__dataclass_fields__}]
                for k, a in self._aggs.items()
            ],
            "skill": [[list(k), [list(r) for r in d]] for k, d in self._skill.items()],
            "intervals": self.intervals.export(),
            "counters": {
                "refits_total": self.refits_total,
                "drift_events_total": self.drift_events_total,
            },
        }

    def load(self, obj: dict[str, Any]) -> None:
        """Replaces the contents with an ``export()``; unknown versions raise ValueError."""
        if int(obj.get("version", 0)) != 1:
            raise ValueError(f"unsupported ledger export version {obj.get('version')!r}")
        self.reset()

        def arr(b: bytes | None, dtype: Any = np.float64) -> np.ndarray | None:
            return None if b is None else np.frombuffer(b, dtype="<f8").astype(dtype)

        for s in obj.get("systems", []):
            sysl = self._system(str(s["name"]))
            for q in s.get("pending", []):
                self._seq = max(self._seq + 1, int(q.get("seq", 0)))
                tracks = [
                    _Track(
                        t["metric"],
                        arr(t["t"]),  # type: ignore[arg-type]
                        arr(t["mean"]),  # type: ignore[arg-type]
                        arr(t.get("lower")),
                        arr(t.get("upper")),
                        arr(t.get("s"), np.float32),
                        arr(t.get("baseline")),
                        float(t["step"]),
                        float(t["scale"]),
                        int(t["appended0"]),
                        float(t.get("backtest_mae", math.nan)),
                        float(t.get("backtest_horizon_sec", math.nan)),
                    )
                    for t in q["tracks"]
                ]
                p = Prediction(
                    q["id"],
                    str(s["name"]),
                    q["model"],
                    q["kind"],
                    float(q["made_at"]),
                    float(q["horizon_end"]),
                    float(q["level"]),
                    tuple((str(a), str(b)) for a, b in q.get("actions", [])),
                    tracks,
                    q.get("plan_id", ""),
                    float(q.get("confidence", math.nan)),
                    int(q.get("seq", self._seq)),
                    note=q.get("note", ""),
                    recorded_unix=float(q.get("recorded_unix", 0.0)),
                )
                sysl.pending[p.id] = p
                heapq.heappush(sysl.heap, (p.horizon_end, p.seq, p.id))
            for r in s.get("recent", []):
                sysl.remember(r)
            self._seq = max([self._seq, *(int(r.get("_seq", 0)) for r in sysl.recent)])
            for m, d in (s.get("drift") or {}).items():
                sysl.drift[m] = _Drift(
                    deque((float(x) for x in d.get("ratios", [])), maxlen=16),
                    str(d.get("reason", "")),
                    float(d.get("detected_at", math.nan)),
                    float(d.get("refitted_at", -math.inf)),
                    int(d.get("refits", 0)),
                    bool(d.get("awaiting_refit", False)),
                )
        for key, fields in obj.get("aggregates", []):
            self._aggs[tuple(key)] = _Agg(**fields)
        for key, rows in obj.get("skill", []):
            d = self._skill[tuple(key)] = deque(maxlen=self.skill_window)
            d.extend(tuple(r) for r in rows)
        self.intervals.load(obj.get("intervals", []))
        c = obj.get("counters", {})
        self.refits_total = int(c.get("refits_total", 0))
        self.drift_events_total = int(c.get("drift_events_total", 0))

    def reset(self) -> None:
        self._systems.clear()
        self._aggs.clear()
        self._skill.clear()
        self._info_cache.clear()
        self.intervals.reset()
        self.refits_total = self.drift_events_total = 0
