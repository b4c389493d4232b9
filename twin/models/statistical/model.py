"""The ``statistical`` world model: streaming anomalies, forecasts, what-if capacity
predictions, calibration and natural-language questions, all without an LLM.

Ingestion path (``update``, amortised O(1) per point): every numeric point goes to its
series' ``StreamingAnomalyDetector``; the score lands in a bounded ring of recent
(t, score) per series and maintains the set of currently anomalous series (flagged at
``score >= anomaly_threshold``, cleared after ``anomaly_hold_points`` points below it).

Background (one asyncio task owned by the model, cancelled in ``shutdown``): every
``fit_interval_sec`` (or sooner when new series appear) the loop advances the cached
forecasters through new points, decides which series need a (re)fit (never fitted;
``refit_every_points`` new points; ``refit_interval_sec`` of event time; drift of the
one-step errors) and fits at most ``max_fits_per_cycle`` of them, each with
``asyncio.to_thread`` on a copy of the data taken on the loop thread. Requests never
fit: a never-fitted series is answered by a fallback and queued first.

Request types:

- ``query``: ``current_state`` / ``historical`` from the store (shared code), plus
  ``include=anomalies`` (and ``include=forecasters``) on ``current_state``, and
  ``natural_language`` (``nl.py``).
- ``simulate``: ``forecast`` (``forecast.py``; parameters ``system``, ``metric`` or
  ``metrics``; states at the metrics' own sampling step, at most
  ``max_forecast_states`` states by striding), ``what_if``/``scenario``
  (``capacity.py``; parameters ``system`` or the actions' ``target``, and for
  scenarios ``load_factor`` (multiplies the arrival-rate forecast) or ``arrival_rate``
  (req/s held over the horizon)).
- ``diagnose``: delegated to ``diagnosis.diagnose`` (imported lazily).
- ``calibrate``: per-metric corrections (``calibration.py``).

Settings (``world_model.settings``; all optional): ``anomaly_threshold``,
``anomaly_ring_size`` (1024), ``anomaly_hold_points`` (10), ``background_fitting``
(true), ``fit_interval_sec`` (1.0), ``max_fits_per_cycle`` (8), ``min_fit_points`` (40),
``max_fit_points`` (4000), ``refit_every_points`` (2000), ``refit_interval_sec`` (21600,
event time), ``drift_threshold`` (2.5), ``selection_horizon_steps`` (60),
``max_forecast_steps`` (20000), ``max_forecast_states`` (1440), ``max_whatif_states``
(360), ``interval_level`` (0.95), ``capacity_window_sec`` (3600, event time),
``cost_per_server_hour`` (0.5), ``cost_currency`` ("USD"), ``calibration_min_weight``
(0.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from twin.core.errors import InvalidRequest
from twin.core.events import iso
from twin.core.notify import ANOMALY_CLEARED, ANOMALY_STARTED
from twin.core.state import CalibrationRecord, TwinState
from twin.models.base import (
    DiagnosisRequest,
    DiagnosisResult,
    EventBatch,
    Health,
    Impact,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
    WorldModel,
)
from twin.models.state_queries import param_float, requested_metrics, requested_system
from twin.models.statistical.anomaly import DEFAULT_THRESHOLD, StreamingAnomalyDetector
from twin.models.statistical.calibration import Calibrator
from twin.models.statistical.forecast import ForecastEngine, ForecastOut, select_and_fit

log = logging.getLogger(__name__)

Key = tuple[str, str]
MAX_FORECAST_METRICS = 64


class _Track:
    """Detector + a bounded ring of recent (t, score) of one series.

    The ring is two numpy arrays (float64 times, float32 scores) that start small and
    double up to ``ring`` entries, so ten thousand quiet series stay cheap.
    """

    __slots__ = ("below", "cap", "det", "last_score", "n", "pos", "s", "t")

    def __init__(self, ring: int) -> None:
        self.det = StreamingAnomalyDetector()
        first = min(32, ring)
        self.t = np.empty(first)
        self.s = np.empty(first, dtype=np.float32)
        self.pos = 0
        self.n = 0
        self.cap = ring
        self.below = 0
        self.last_score = 0.0

    def push(self, t: float, score: float) -> None:
        size = self.t.shape[0]
        if self.n == size and size < self.cap:  # still growing: pos == n == size
            new = min(self.cap, size * 2)
            self.t = np.concatenate((self.t, np.empty(new - size)))
            self.s = np.concatenate((self.s, np.empty(new - size, dtype=np.float32)))
            self.pos = size
            size = new
        self.t[self.pos] = t
        self.s[self.pos] = score
        self.pos = (self.pos + 1) % size
        if self.n < size:
            self.n += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < self.t.shape[0]:
            return self.t[: self.n].copy(), self.s[: self.n].astype(float)
        order = np.r_[self.pos : self.n, 0 : self.pos]
        return self.t[order], self.s[order].astype(float)


class StatisticalWorldModel(WorldModel):
    name = "statistical"
    version = "1.0.0"

    def __init__(self, state: TwinState, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(state, settings)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._generation = 0
        self._configure()

    # ------------------------------------------------------------------ setup

    def _configure(self) -> None:
        s = self.settings
        self.threshold = float(s.get("anomaly_threshold", DEFAULT_THRESHOLD))
        self.ring_size = max(1, int(s.get("anomaly_ring_size", 1024)))
        self.hold = int(s.get("anomaly_hold_points", 10))
        self.background = bool(s.get("background_fitting", True))
        self.fit_interval = float(s.get("fit_interval_sec", 1.0))
        self.fits_per_cycle = int(s.get("max_fits_per_cycle", 8))
        self.max_states = int(s.get("max_forecast_states", 1440))
        self.max_whatif_states = int(s.get("max_whatif_states", 360))
        self.level = float(s.get("interval_level", 0.95))
        self.window_sec = float(s.get("capacity_window_sec", 3600.0))
        self.cost_per_server_hour = float(s.get("cost_per_server_hour", 0.5))
        self.currency = str(s.get("cost_currency", "USD"))
        self.tracks: dict[Key, _Track] = {}
        self.anomalous: dict[Key, list[float]] = {}  # key -> [since, last_t, max_score]
        self.engine = ForecastEngine(dict(s))
        self.calibrator = Calibrator(float(s.get("calibration_min_weight", 0.3)))
        self.points_scored = 0
        self.update_seconds = 0.0
        self.fit_failures = 0
        self.fallback_forecasts = 0
        self.fit_cycles = 0

    async def initialize(self) -> None:
        self._configure()
        self._wake = asyncio.Event()
        if self.background:
            self._task = asyncio.get_running_loop().create_task(self._fit_loop(), name="statistical-fitter")
        self.initialized = True

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.initialized = False

    def reset(self) -> None:
        self._generation += 1
        self.tracks.clear()
        self.anomalous.clear()
        self.engine.reset()
        self.calibrator.reset()

    # ------------------------------------------------------------------ ingestion

    def update(self, batch: EventBatch) -> None:
        t0 = time.perf_counter()
        tracks, anomalous, thr, hold = self.tracks, self.anomalous, self.threshold, self.hold
        events = self.state.events
        new_series = False
        n = 0
        for p in batch.points:
            if p.text is not None:
                continue
            key = (p.source, p.name)
            tr = tracks.get(key)
            if tr is None:
                tr = tracks[key] = _Track(self.ring_size)
                new_series = True
            sc = tr.det.update(p.t, p.value)
            tr.push(p.t, sc)
            tr.last_score = sc
            n += 1
            if sc >= thr:
                tr.below = 0
                a = anomalous.get(key)
                if a is None:
                    anomalous[key] = [p.t, p.t, sc]
                    # Transitions only publish (twin.core.notify): nothing per point.
                    events.publish(ANOMALY_STARTED, p.source, {"metric": p.name, "score": round(sc, 6), "value": p.value, "threshold": thr}, p.t)
                else:
                    a[1] = p.t
                    a[2] = max(a[2], sc)
            elif key in anomalous:
                tr.below += 1
                if tr.below >= hold:
                    since, _, peak = anomalous.pop(key)
                    events.publish(
                        ANOMALY_CLEARED,
                        p.source,
                        {"metric": p.name, "score": round(sc, 6), "value": p.value, "peak_score": round(peak, 6), "since": iso(since), "duration_sec": p.t - since},
                        p.t,
                    )
        self.points_scored += n
        self.update_seconds += time.perf_counter() - t0
        if new_series and self._wake is not None:
            self._wake.set()

    def anomaly_scores(self, system: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Recent (times, scores) of one series (empty arrays if unknown)."""
        tr = self.tracks.get((system, metric))
        if tr is None:
            return np.empty(0), np.empty(0)
        return tr.arrays()

    def current_anomalies(self, system: str | None = None) -> list[dict[str, Any]]:
        out = []
        for (src, name), (since, last, peak) in self.anomalous.items():
            if system is not None and src != system:
                continue
            tr = self.tracks.get((src, name))
            out.append(
                {
                    "system": src,
                    "metric": name,
                    "score": round(peak, 6),
                    "last_score": round(tr.last_score, 6) if tr else None,
                    "since": iso(since),
                    "last_flagged": iso(last),
                }
            )
        out.sort(key=lambda a: (-a["score"], a["system"], a["metric"]))
        return out

    # ------------------------------------------------------------------ background fitting

    async def _fit_loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.fit_interval)
            self._wake.clear()
            try:
                await self.fit_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("statistical model: fit cycle failed")

    async def fit_cycle(self, max_fits: int | None = None) -> int:
        """One background pass: advance cached states, (re)fit what is due. Returns fits done."""
        self.fit_cycles += 1
        store, engine = self.state.store, self.engine
        due: list[tuple[int, Key, str]] = []
        for s in store:
            if not len(s):
                continue
            key = (s.source, s.name)
            engine.catch_up(key, s)
            reason = engine.due(key, s)
            if reason:
                rank = 0 if key in engine.wanted else (1 if reason == "never fitted" else 2)
                due.append((rank, key, reason))
        due.sort(key=lambda d: (d[0], d[1]))
        done = 0
        gen = self._generation
        for _, key, reason in due[: max_fits if max_fits is not None else self.fits_per_cycle]:
            s = store.get(*key)
            if s is None or not len(s):
                continue
            t, v, appended = engine.snapshot(s)  # copies, taken on the loop thread
            entry = engine.entry(key)
            entry.fitting = True
            try:
                fc, report = await asyncio.to_thread(select_and_fit, t, v, engine.selection_horizon)
            except asyncio.CancelledError:
                entry.fitting = False
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, reported by health
                if gen == self._generation:
                    engine.failed(key, exc, appended)
                self.fit_failures += 1
                log.warning("statistical model: fit of %s/%s failed: %s", key[0], key[1], exc)
                continue
            s = store.get(*key)
            if gen != self._generation or s is None:
                continue  # reset while fitting
            engine.install(key, fc, report, appended, float(t[-1]), s)
            log.debug("statistical model: fitted %s/%s (%s): %s", key[0], key[1], reason, report.description)
            done += 1
        return done

    async def fit_all(self, rounds: int = 100) -> int:
        """Fits every due series now (tests, benchmarks); still off the request path."""
        total = 0
        for _ in range(rounds):
            n = await self.fit_cycle(max_fits=10_000)
            total += n
            if n == 0:
                break
        return total

    # ------------------------------------------------------------------ queries

    async def query(self, request: QueryRequest) -> QueryResult:
        if request.query_type == "natural_language":
            from twin.models.statistical import nl

            if not request.content.strip():
                raise InvalidRequest("natural_language queries need query_content", "query_content")
            return nl.answer(self.state.store, request.content, request.parameters, self.current_anomalies, self._forecast_point)
        res = await super().query(request)
        if request.query_type == "historical":
            include = {x.strip().lower() for x in request.parameters.get("include", "").split(",") if x.strip()}
            if "scores" in include and res.success and isinstance(res.result, dict):
                self._add_scores(res, int(param_float(request.parameters, "max_points", 500)))
        if request.query_type == "current_state":
            include = {x.strip().lower() for x in request.parameters.get("include", "").split(",") if x.strip()}
            system = requested_system(request.parameters)
            found = self.current_anomalies(system)
            res.metadata["anomalous_series"] = str(len(found))
            if res.success and isinstance(res.result, dict):
                if "anomalies" in include:
                    res.result["anomalies"] = found
                    res.explanation += f"; {len(found)} series currently anomalous"
                if "forecasters" in include:
                    res.result["forecasters"] = self.forecaster_table(system)
        return res

    def _add_scores(self, res: QueryResult, max_points: int) -> None:
        """``include=scores`` on a historical range: each series gets ``scores``
        ([time, score] of its recent points, from the bounded ring, clipped to the range;
        bucket *maxima* when downsampled, so a spike stays visible) and the threshold."""
        from twin.core.events import parse_time

        res.metadata["anomaly_threshold"] = str(self.threshold)
        for src, metrics in res.result.get("systems", {}).items():
            for name, entry in metrics.items():
                if not isinstance(entry, dict) or not entry.get("points"):
                    continue
                t, sc = self.anomaly_scores(src, name)
                lo = parse_time(entry["points"][0][0]) - 1e-6
                keep = t >= lo
                t, sc = t[keep], sc[keep]
                if max_points > 0 and t.shape[0] > max_points:
                    edges = np.linspace(0, t.shape[0], max_points + 1).astype(np.int64)[:-1]
                    t, sc = t[edges], np.maximum.reduceat(sc, edges)
                entry["scores"] = [[iso(a), round(b, 6)] for a, b in zip(t.tolist(), sc.tolist())]
                entry["threshold"] = self.threshold

    def forecaster_table(self, system: str | None = None) -> list[dict[str, Any]]:
        rows = []
        for (src, name), e in sorted(self.engine.entries.items()):
            if system is not None and src != system:
                continue
            r = e.report
            rows.append(
                {
                    "system": src,
                    "metric": name,
                    "fitted": e.forecaster is not None,
                    "method": r.description if r else None,
                    "season": r.season if r else None,
                    "step_sec": r.step if r else None,
                    "fits": e.fits,
                    "failures": e.failures,
                    "last_error": e.last_error or None,
                    "drift": round(e.drift, 3),
                }
            )
        return rows

    def _forecast_point(self, system: str, metric: str, horizon_sec: float) -> dict[str, Any] | None:
        s = self.state.store.get(system, metric)
        if s is None or not len(s):
            return None
        out = self._corrected(system, metric, self.engine.forecast((system, metric), s, horizon_sec, self.level))
        return {
            "value": float(out.mean[-1]),
            "lower": float(out.lower[-1]),
            "upper": float(out.upper[-1]),
            "timestamp": iso(float(out.times[-1])),
            "method": out.method,
        }

    def _corrected(self, system: str, metric: str, out: ForecastOut) -> ForecastOut:
        c = self.calibrator.corrections.get((system, metric))
        if c is None:
            return out
        if c.additive:
            return ForecastOut(out.times, out.mean + c.bias, out.lower + c.bias, out.upper + c.bias, out.step, out.fitted, out.method + f" + calibration bias {c.bias:.4g}", out.truncated)
        f = c.factor
        return ForecastOut(out.times, out.mean * f, out.lower * f, out.upper * f, out.step, out.fitted, out.method + f" × calibration factor {f:.4g}", out.truncated)

    # ------------------------------------------------------------------ simulations

    def _pick_system(self, request: SimulationRequest) -> tuple[str | None, str]:
        target = next((a.target for a in request.actions if a.target), None) or requested_system(request.parameters)
        sources = self.state.store.sources()
        if target:
            return target, ""
        if not sources:
            return None, ""
        chosen = "swim" if "swim" in sources else sources[0]
        return chosen, f" (no system given; chose {chosen!r} of {', '.join(sources)})"

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        kind = request.simulation_type
        if kind == "forecast":
            return self._simulate_forecast(request)
        if kind in ("what_if", "scenario"):
            return self._simulate_what_if(request)
        return SimulationResult(False, explanation=f"simulation_type {kind!r} is not supported; use forecast, what_if or scenario")

    def _simulate_forecast(self, request: SimulationRequest) -> SimulationResult:
        store = self.state.store
        system, note = self._pick_system(request)
        if system is None:
            return SimulationResult(False, explanation="the twin has received no telemetry yet; nothing to forecast")
        if system not in store.sources():
            return SimulationResult(False, explanation=f"unknown system {system!r}; known: {', '.join(store.sources()) or 'none yet'}")
        known = [n for n in store.metrics_of(system) if len(store.get(system, n) or ())]
        wanted = requested_metrics(request.parameters) or known
        missing = [m for m in wanted if m not in known]
        if missing:
            return SimulationResult(False, explanation=f"unknown metric {missing[0]!r} of {system}; known: {', '.join(known[:40])}")
        if not wanted:
            return SimulationResult(False, explanation=f"{system} has no numeric series to forecast")
        truncated_metrics = len(wanted) > MAX_FORECAST_METRICS
        wanted = wanted[:MAX_FORECAST_METRICS]
        horizon_sec = max(0.0, request.horizon_minutes * 60.0)
        by_time: dict[float, dict[str, float]] = {}
        conf_at: dict[float, float] = {}
        methods: dict[str, str] = {}
        raw_states: dict[float, dict[str, float]] = {}
        first: ForecastOut | None = None
        unfitted: list[str] = []
        truncated = False
        for metric in wanted:
            s = store.get(system, metric)
            assert s is not None
            raw = self.engine.forecast((system, metric), s, horizon_sec, self.level)
            out = self._corrected(system, metric, raw)
            if not out.fitted:
                unfitted.append(metric)
                self.fallback_forecasts += 1
            truncated |= out.truncated
            methods[metric] = out.method
            first = first or out
            n = out.times.shape[0]
            stride = max(1, math.ceil(n / self.max_states))
            idx = np.arange(n - 1, -1, -stride)[::-1]
            _, recent = s.tail(500)
            scale = max(float(np.std(recent)), float(np.mean(np.abs(recent))) * 0.05, 1e-9)
            base = 0.9 if out.fitted else 0.4
            half = (out.upper - out.lower) / 2.0
            for i in idx.tolist():
                t = round(float(out.times[i]), 3)
                m = by_time.setdefault(t, {})
                m[metric] = float(out.mean[i])
                m[f"{metric}.lower"] = float(out.lower[i])
                m[f"{metric}.upper"] = float(out.upper[i])
                raw_states.setdefault(t, {})[metric] = float(raw.mean[i])
                c = base / (1.0 + float(half[i]) / scale)
                conf_at[t] = min(conf_at.get(t, 1.0), c)
        times = sorted(by_time)
        states = [
            PredictedState(t, by_time[t], round(conf_at[t], 6), f"{system} forecast +{(t - store.get(system, wanted[0]).last_t) / 60.0:.1f} min")  # type: ignore[union-attr]
            for t in times
        ]
        self.calibrator.remember(request.simulation_id, system, [(t, raw_states[t]) for t in times[:: max(1, len(times) // 200)]])
        assert first is not None
        confidence = float(np.mean([s.confidence for s in states])) if states else 0.0
        expl = [f"forecast of {len(wanted)} metric(s) of {system}{note} over {request.horizon_minutes} min, {int(self.level * 100)}% prediction intervals as <metric>.lower/.upper"]
        expl.append("; ".join(f"{m}: {methods[m]}" for m in wanted[:10]) + (" ..." if len(wanted) > 10 else ""))
        if unfitted:
            expl.append(f"not fitted yet (fallback with wide intervals; queued for fitting): {', '.join(unfitted[:10])}")
        if truncated:
            expl.append(f"horizon truncated to {self.engine.max_steps} steps of the sampling interval")
        if truncated_metrics:
            expl.append(f"only the first {MAX_FORECAST_METRICS} metrics were forecast")
        meta = {
            "system": system,
            "metrics": ",".join(wanted),
            "interval_level": str(self.level),
            "uncertainty_metric": wanted[0],
            "fitted": str(not unfitted).lower(),
            "fallback_metrics": ",".join(unfitted),
            "step_sec": f"{first.step:g}",
            "states": str(len(states)),
        }
        for m in wanted[:10]:
            meta[f"method.{m}"] = methods[m]
        return SimulationResult(
            True,
            states,
            round(confidence, 6),
            float(first.lower[-1]),
            float(first.upper[-1]),
            "; ".join(expl),
            None,
            meta,
            {"metrics_forecast": float(len(wanted)), "fallback_metrics": float(len(unfitted))},
        )

    def _simulate_what_if(self, request: SimulationRequest) -> SimulationResult:
        from twin.models.statistical import capacity

        store = self.state.store
        system, note = self._pick_system(request)
        if system is None:
            return SimulationResult(False, explanation="the twin has received no telemetry yet; nothing to simulate")
        if system not in store.sources():
            return SimulationResult(False, explanation=f"unknown system {system!r}; known: {', '.join(store.sources()) or 'none yet'}")
        cal = capacity.calibrate_tier(store, system, self.window_sec)
        if cal is None:
            return SimulationResult(
                False,
                explanation=(
                    f"no capacity model for {system}: a what-if needs an arrival rate (arrival.rate/request.rate or "
                    f"basic/optional.throughput) and a server count (active.servers/servers); {system} has: "
                    f"{', '.join(store.metrics_of(system)[:30])}. A forecast simulation still predicts its metrics."
                ),
                metadata={"system": system, "action_effects_modelled": "false"},
            )
        for i, a in enumerate(request.actions):
            if a.action_type.upper() == "SET_DIMMER":
                v = next((a.params[k] for k in ("value", "dimmer", "level") if k in a.params), None)
                try:
                    ok = v is not None and math.isfinite(float(v))
                except ValueError:
                    ok = False
                if not ok:
                    raise InvalidRequest("SET_DIMMER needs a numeric value in [0, 1]", f"actions[{i}].params.value")
            elif a.action_type.upper() in capacity.SERVER_DELTA:
                v = next((a.params[k] for k in ("count", "servers", "delta", "value") if k in a.params), "1")
                try:
                    ok = math.isfinite(float(v)) and float(v) >= 0
                except ValueError:
                    ok = False
                if not ok:
                    raise InvalidRequest(f"{a.action_type} needs a count >= 0", f"actions[{i}].params.count")
        plan = capacity.plan_actions(cal, list(request.actions))
        # Arrival rate over the horizon: the forecaster of the arrival series (cached state).
        horizon_sec = max(60.0, request.horizon_minutes * 60.0)
        lam_series = next((store.get(system, n) for n in ("arrival.rate", "request.rate") if store.get(system, n) is not None and len(store.get(system, n))), None)  # type: ignore[arg-type]
        if lam_series is not None:
            lf = self.engine.forecast((system, lam_series.name), lam_series, horizon_sec, self.level)
            n = lf.times.shape[0]
            stride = max(1, math.ceil(n / self.max_whatif_states))
            idx = np.arange(n - 1, -1, -stride)[::-1]
            times, lam, lam_lo, lam_hi = lf.times[idx], lf.mean[idx], lf.lower[idx], lf.upper[idx]
            lam_method = lf.method
            lam_fitted = lf.fitted
            if not lf.fitted:
                self.fallback_forecasts += 1
        else:
            newest = capacity.tier_newest(store, system)
            times = newest + np.linspace(horizon_sec / 10, horizon_sec, 10)
            lam = lam_lo = lam_hi = np.full(10, cal.arrival_rate)
            lam_method, lam_fitted = "held at the observed throughput (no arrival-rate series)", False
        # Scenario knobs: a load multiplier or an absolute arrival rate over the horizon.
        load_factor = param_float(request.parameters, "load_factor", 1.0)
        if load_factor < 0:
            raise InvalidRequest("must be >= 0", "parameters.load_factor")
        fixed_rate = request.parameters.get("arrival_rate")
        if fixed_rate not in (None, ""):
            rate = param_float(request.parameters, "arrival_rate", 0.0)
            if rate < 0:
                raise InvalidRequest("must be >= 0", "parameters.arrival_rate")
            spread_lo, spread_hi = lam_lo / np.maximum(lam, 1e-12), lam_hi / np.maximum(lam, 1e-12)
            lam = np.full(times.shape[0], rate)
            lam_lo, lam_hi = lam * spread_lo, lam * spread_hi
            lam_method = f"fixed at {rate:g} req/s (parameters.arrival_rate)"
        if load_factor != 1.0:
            lam, lam_lo, lam_hi = lam * load_factor, lam_lo * load_factor, lam_hi * load_factor
            lam_method += f", × load_factor {load_factor:g}"
        lam_lo = np.maximum(lam_lo, 0.0)
        corr = self.calibrator.correct
        t_ref = capacity.tier_newest(store, system)
        states: list[PredictedState] = []
        raw_states: list[tuple[float, dict[str, float]]] = []
        rt_new, rt_base, u_new, u_base = [], [], [], []
        unstable_states = 0
        base_conf = 0.85
        if cal.assumed:
            base_conf *= 0.6
        mismatch = not (0.5 <= cal.rt_factor <= 2.0)
        if mismatch:
            base_conf *= 0.7
        if plan.unknown:
            base_conf *= 0.3
        if not lam_fitted:
            base_conf *= 0.7
        for i in range(times.shape[0]):
            after, stable = capacity.tier_metrics(cal, float(lam[i]), plan.servers, plan.dimmer)
            base, _ = capacity.tier_metrics(cal, float(lam[i]), cal.servers, cal.dimmer)
            lo, _ = capacity.tier_metrics(cal, float(lam_lo[i]), plan.servers, plan.dimmer)
            hi, _ = capacity.tier_metrics(cal, float(lam_hi[i]), plan.servers, plan.dimmer)
            raw = dict(after)
            u_after = after["server.utilization"]
            metrics = {k: corr(system, k, v, u_after) for k, v in after.items()}
            for k in ("average.response.time", "server.utilization"):
                metrics[f"{k}.lower"] = corr(system, k, lo[k], lo["server.utilization"])
                metrics[f"{k}.upper"] = corr(system, k, hi[k], hi["server.utilization"])
                metrics[f"baseline.{k}"] = corr(system, k, base[k], base["server.utilization"])
            rt_new.append(metrics["average.response.time"])
            rt_base.append(metrics["baseline.average.response.time"])
            u_new.append(min(1.0, after["server.utilization"]))
            u_base.append(min(1.0, base["server.utilization"]))
            spread = (metrics["average.response.time.upper"] - metrics["average.response.time.lower"]) / (2 * max(metrics["average.response.time"], 1e-9))
            conf = base_conf / (1.0 + spread) if stable else 0.2 * base_conf
            if not stable:
                unstable_states += 1
            t = float(times[i])
            minutes = (t - t_ref) / 60.0
            desc = f"{system} +{minutes:.0f} min: {plan.servers} servers, dimmer {plan.dimmer:g}" + ("" if stable else " — SATURATED (utilisation >= 1, queue grows without bound)")
            states.append(PredictedState(t, metrics, round(conf, 6), desc))
            raw_states.append((t, raw))
        self.calibrator.remember(request.simulation_id, system, raw_states[:: max(1, len(raw_states) // 200)])
        rt_new_a, rt_base_a = np.array(rt_new), np.array(rt_base)
        finite = (rt_new_a < capacity.UNSTABLE_RT_MS) & (rt_base_a < capacity.UNSTABLE_RT_MS)
        perf = float(np.mean((rt_base_a[finite] - rt_new_a[finite]) / rt_base_a[finite])) if finite.any() else (-1.0 if unstable_states else 0.0)
        headroom = float(np.mean(u_base) - np.mean(u_new))
        hours = horizon_sec / 3600.0
        cost = plan.server_delta * self.cost_per_server_hour * hours
        impact = Impact(
            cost_impact=cost,
            performance_impact=perf,
            reliability_impact=headroom,
            cost_currency=self.currency,
            impact_description=(
                f"cost: {plan.server_delta:+d} servers × {self.cost_per_server_hour:g} {self.currency}/h × {hours:g} h = {cost:+.2f} {self.currency}; "
                f"performance: mean relative response-time change vs. no action = {perf:+.1%} (positive = faster); "
                f"reliability: utilisation headroom change = {headroom:+.3f} (positive = more headroom)"
                + (f"; {unstable_states} of {len(states)} states saturated" if unstable_states else "")
            ),
        )
        expl = [f"what-if on {system}{note} with an M/G/c queue (Erlang C + Allen–Cunneen) calibrated from the last {self.window_sec:g} s of telemetry"]
        expl += plan.notes or ["no modelled actions: baseline only"]
        expl.append(f"calibration: {'; '.join(cal.notes)}")
        if mismatch:
            expl.append(f"the queueing shape matches the observed response times only after a factor {cal.rt_factor:.2f}: relative changes are more reliable than absolute values")
        if cal.assumed:
            expl.append(f"assumed (missing telemetry): {', '.join(cal.assumed)}")
        expl.append(f"arrival rate over the horizon: {lam_method}")
        if plan.unknown:
            expl.append(f"no effect model for {', '.join(plan.unknown)}: these actions are NOT reflected in the prediction (low confidence)")
        if unstable_states:
            expl.append(f"the configuration saturates in {unstable_states} of {len(states)} states")
        confidence = float(np.mean([s.confidence for s in states])) if states else 0.0
        last = states[-1].metrics if states else {}
        custom = {k: float(v) for k, v in cal.as_dict().items() if isinstance(v, (int, float)) and v is not None and math.isfinite(float(v))}
        custom.update(
            {
                "predicted_avg_rt_ms_mean": float(np.mean(rt_new_a[finite])) if finite.any() else capacity.UNSTABLE_RT_MS,
                "baseline_avg_rt_ms_mean": float(np.mean(rt_base_a[finite])) if finite.any() else capacity.UNSTABLE_RT_MS,
                "servers_after": float(plan.servers),
                "dimmer_after": plan.dimmer,
                "saturated_states": float(unstable_states),
            }
        )
        return SimulationResult(
            True,
            states,
            round(confidence, 6),
            float(last.get("average.response.time.lower", 0.0)),
            float(last.get("average.response.time.upper", 0.0)),
            "; ".join(expl),
            impact,
            {
                "system": system,
                "model": "M/G/c (Erlang C, Allen-Cunneen)",
                "unknown_actions": ",".join(plan.unknown),
                "action_effects_modelled": str(not plan.unknown).lower(),
                "arrival_forecast": lam_method,
                "uncertainty_metric": "average.response.time",
                "interval_level": str(self.level),
            },
            custom,
            max(1, len(request.actions)),
        )

    # ------------------------------------------------------------------ diagnosis, calibration

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        try:
            diagnosis = importlib.import_module("twin.models.statistical.diagnosis")
        except ImportError as exc:
            return DiagnosisResult(False, explanation=f"root-cause diagnosis is not available in this build of the statistical model ({exc})", metadata={"model": self.name})
        fn = getattr(diagnosis, "diagnose", None)
        if fn is None:
            return DiagnosisResult(False, explanation="root-cause diagnosis is not available: twin.models.statistical.diagnosis has no diagnose()")
        try:
            return fn(self.state, request, self.anomaly_scores)
        except InvalidRequest:
            raise
        except Exception as exc:
            log.exception("statistical model: diagnosis failed")
            return DiagnosisResult(False, explanation=f"diagnosis failed: {exc.__class__.__name__}: {exc}")

    async def calibrate(self, record: CalibrationRecord) -> dict[str, float]:
        return self.calibrator.observe(record)

    # ------------------------------------------------------------------ health, metrics

    async def health(self) -> Health:
        if not self.initialized:
            return Health("not_initialized", ["model not initialised"], {}, self.name, self.version)
        issues = []
        failing = [(k, e) for k, e in self.engine.entries.items() if e.last_error]
        for (src, name), e in failing[:5]:
            kept = " (keeping the previous model)" if e.forecaster is not None else " (forecasts use the fallback)"
            issues.append(f"forecaster for {src}/{name} failed to fit{kept}: {e.last_error}")
        if len(failing) > 5:
            issues.append(f"... and {len(failing) - 5} more series whose last fit failed")
        if self.background and (self._task is None or self._task.done()):
            issues.append("background fitting task is not running")
        status = "degraded" if issues else "healthy"
        return Health(status, issues, self._perf(), self.name, self.version)

    def _perf(self) -> dict[str, float]:
        e = self.engine
        return {
            "fitted_forecasters": float(e.fitted_count),
            "fits_total": float(sum(x.fits for x in e.entries.values())),
            "refits_total": float(sum(x.refits for x in e.entries.values())),
            "fit_failures_total": float(self.fit_failures),
            "fit_seconds_total": e.fit_seconds_total,
            "detectors": float(len(self.tracks)),
            "anomalous_series": float(len(self.anomalous)),
            "points_scored_total": float(self.points_scored),
            "update_us_per_point": 1e6 * self.update_seconds / self.points_scored if self.points_scored else 0.0,
            "fallback_forecasts_total": float(self.fallback_forecasts),
            "calibration_records_total": float(self.calibrator.records),
            "calibration_pairs_total": float(self.calibrator.pairs),
            "calibrated_metrics": float(len(self.calibrator.corrections)),
        }

    def metrics(self) -> dict[str, float]:
        return self._perf()
