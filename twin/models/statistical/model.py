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
- ``simulate``: ``forecast`` (``forecast_simulation.py``; parameters ``system``,
  ``metric`` or ``metrics``); ``what_if``/``scenario`` and ``compare`` (ranked plans)
  through ``twin.models.plans.engine.PlanEngine`` (metric roles, the queueing model,
  effects learned from the execution log, load scenarios, SLOs and utility).
- ``diagnose``: delegated to ``diagnosis.diagnose`` (imported lazily).
- ``calibrate``: per-metric corrections (``calibration.py``).

Settings (``world_model.settings``; all optional): see ``settings.StatisticalSettings``,
where each key's type and default live.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from twin.core import workers
from twin.core.errors import InvalidRequest
from twin.core.events import iso
from twin.core.notify import ANOMALY_CLEARED, ANOMALY_STARTED
from twin.core.state import CalibrationRecord, TwinState
from twin.models.base import WorldModel
from twin.models.domain import (
    DiagnosisRequest,
    DiagnosisResult,
    EventBatch,
    Health,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)
from twin.models.settings import parse_settings
from twin.models.state_queries import param_float, requested_system
from twin.models.statistical.anomaly import StreamingAnomalyDetector
from twin.models.statistical.calibration import Calibrator
from twin.models.statistical.forecast import ForecastEngine
from twin.models.statistical.forecast_simulation import simulate_forecast
from twin.models.statistical.selection import select_and_fit
from twin.models.statistical.settings import StatisticalSettings
from twin.models.statistical.simulation import SimulationContext, calibrated

log = logging.getLogger(__name__)
CATCH_UP_SLICE_SEC = 0.002  # longest stretch of forecaster catch-up between two yields

Key = tuple[str, str]


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

    def push_many(self, t: Any, scores: Any) -> None:
        """``push`` for each (t, score); array copies for long runs (the columnar path)."""
        k = len(t)
        if k < 32 or self.t.shape[0] < self.cap:
            push = self.push
            for a, b in zip(t, scores):
                push(a, b)
            return
        t = np.asarray(t, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        size = self.cap
        if k >= size:  # only the newest ``size`` survive, in order
            t, scores, k = t[-size:], scores[-size:], size
        end = self.pos + k
        if end <= size:
            self.t[self.pos : end] = t
            self.s[self.pos : end] = scores
        else:
            first = size - self.pos
            self.t[self.pos :], self.s[self.pos :] = t[:first], scores[:first]
            self.t[: k - first], self.s[: k - first] = t[first:], scores[first:]
        self.pos = end % size
        self.n = size

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < self.t.shape[0]:
            return self.t[: self.n].copy(), self.s[: self.n].astype(float)
        order = np.r_[self.pos : self.n, 0 : self.pos]
        return self.t[order], self.s[order].astype(float)


class StatisticalWorldModel(WorldModel):
    name = "statistical"
    version = "1.0.0"

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], environ: Mapping[str, str]
    ) -> list[str]:
        from twin.models.plans.roles import validate_systems_setting
        from twin.models.settings import settings_problems

        return settings_problems(StatisticalSettings, settings) + validate_systems_setting(settings)

    def __init__(self, state: TwinState, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(state, settings)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._generation = 0
        self._configure()

    # ------------------------------------------------------------------ setup

    def _configure(self) -> None:
        cfg = self.config = parse_settings(StatisticalSettings, self.settings)
        self.threshold = cfg.anomaly_threshold
        self.ring_size = max(1, cfg.anomaly_ring_size)
        self.hold = cfg.anomaly_hold_points
        self.background = cfg.background_fitting
        self.fit_interval = cfg.fit_interval_sec
        self.fits_per_cycle = cfg.max_fits_per_cycle
        self.level = cfg.interval_level
        self.tracks: dict[Key, _Track] = {}
        self.anomalous: dict[Key, list[float]] = {}  # key -> [since, last_t, max_score]
        self.engine = ForecastEngine(cfg)
        self.calibrator = Calibrator(cfg.calibration_min_weight)
        self.sim = SimulationContext(self.state, self.engine, self.calibrator, cfg)
        self.plans = self._plan_engine()
        self.points_scored = 0
        self.update_seconds = 0.0
        self.fit_failures = 0
        self.fit_cycles = 0

    def _plan_engine(self) -> Any:
        from twin.models.plans.engine import PlanEngine

        sim = self.sim

        def forecast(system: str, metric: str, horizon_sec: float, level: float) -> Any:
            s = self.state.store.get(system, metric)
            if s is None or not len(s):
                return None
            out = self.engine.forecast((system, metric), s, horizon_sec, level)
            if not out.fitted:
                sim.fallback_forecasts += 1
            return out

        settings = dict(self.settings)
        settings.setdefault("cost_per_server_hour", self.config.cost_per_server_hour)
        return PlanEngine(self.state, settings, forecast, self.calibrator, self.level)

    @property
    def fallback_forecasts(self) -> int:
        """Simulations answered by an unfitted series' fallback forecast."""
        return self.sim.fallback_forecasts

    async def initialize(self) -> None:
        self._configure()
        self._wake = asyncio.Event()
        if self.background:
            self._task = asyncio.get_running_loop().create_task(
                self._fit_loop(), name="statistical-fitter"
            )
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
        self.plans.reset()

    # ------------------------------------------------------------------ ingestion

    def update(self, batch: EventBatch) -> None:
        groups = getattr(batch.points, "groups", None)  # twin.core.columns.SeriesColumns
        if groups is None:
            self._update_points(batch)
            return
        self._update_columns(groups())
        if batch.actions:  # executions applied with a batch message: learned as on the other path
            self.plans.update(batch)

    def _update_columns(self, groups: Any) -> None:
        """Each series' points of the batch scored in one call (``score_batch``)."""
        t0 = time.perf_counter()
        tracks, anomalous, thr = self.tracks, self.anomalous, self.threshold
        new_series = False
        n = 0
        for key, _unit, t, v in groups:
            tr = tracks.get(key)
            if tr is None:
                tr = tracks[key] = _Track(self.ring_size)
                new_series = True
            det = tr.det
            k = len(t)
            batch_score = getattr(det, "score_batch", None)  # the compiled kernel: one call
            if batch_score is not None and k >= 8:
                sc = batch_score(
                    np.array(t, dtype=np.float64), np.array(v, dtype=np.float64)
                ).tolist()
            else:
                upd = det.update
                sc = [upd(a, b) for a, b in zip(t, v)]
            tr.push_many(t, sc)
            n += k
            if key in anomalous or max(sc) >= thr:
                self._flag(key, tr, t, v, sc)  # sequential semantics, only where it matters
            else:
                tr.last_score = sc[-1]
        self.points_scored += n
        self.update_seconds += time.perf_counter() - t0
        if new_series and self._wake is not None:
            self._wake.set()

    def _flag(
        self, key: Key, tr: _Track, t: list[float], v: list[float], sc: list[float]
    ) -> None:
        """Point-by-point flagging of one series' batch, with the same transitions (and
        the same published events) as ``_update_points``."""
        anomalous, thr, hold = self.anomalous, self.threshold, self.hold
        events = self.state.events
        for ti, vi, si in zip(t, v, sc):
            tr.last_score = si
            if si >= thr:
                tr.below = 0
                a = anomalous.get(key)
                if a is None:
                    anomalous[key] = [ti, ti, si]
                    events.publish(
                        ANOMALY_STARTED,
                        key[0],
                        {"metric": key[1], "score": round(si, 6), "value": vi, "threshold": thr},
                        ti,
                    )
                else:
                    a[1] = ti
                    a[2] = max(a[2], si)
            elif key in anomalous:
                tr.below += 1
                if tr.below >= hold:
                    since, _, peak = anomalous.pop(key)
                    events.publish(
                        ANOMALY_CLEARED,
                        key[0],
                        {
                            "metric": key[1],
                            "score": round(si, 6),
                            "value": vi,
                            "peak_score": round(peak, 6),
                            "since": iso(since),
                            "duration_sec": ti - since,
                        },
                        ti,
                    )

    def _update_points(self, batch: EventBatch) -> None:
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
                    events.publish(
                        ANOMALY_STARTED,
                        p.source,
                        {
                            "metric": p.name,
                            "score": round(sc, 6),
                            "value": p.value,
                            "threshold": thr,
                        },
                        p.t,
                    )
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
                        {
                            "metric": p.name,
                            "score": round(sc, 6),
                            "value": p.value,
                            "peak_score": round(peak, 6),
                            "since": iso(since),
                            "duration_sec": p.t - since,
                        },
                        p.t,
                    )
        if batch.actions:
            self.plans.update(
                batch
            )  # execution results: learned effects, once their telemetry arrives
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
        out: list[dict[str, Any]] = []
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
        self.plans.background()
        store, engine = self.state.store, self.engine
        due: list[tuple[int, Key, str]] = []
        gen = self._generation
        # Catching every series up runs on the loop (thousands of points per series and
        # cycle at line rate): yield every CATCH_UP_SLICE_SEC so queries never wait for all.
        sliced = time.perf_counter()
        for s in list(store):  # a copy: series may appear while this yields
            if not len(s):
                continue
            key = (s.source, s.name)
            engine.catch_up(key, s)
            reason = engine.due(key, s)
            if reason:
                rank = 0 if key in engine.wanted else (1 if reason == "never fitted" else 2)
                due.append((rank, key, reason))
            if time.perf_counter() - sliced >= CATCH_UP_SLICE_SEC:
                await asyncio.sleep(0)
                if gen != self._generation:
                    return 0  # reset meanwhile: nothing here is current any more
                sliced = time.perf_counter()
        due.sort(key=lambda d: (d[0], d[1]))
        done = 0
        for _, key, reason in due[: max_fits if max_fits is not None else self.fits_per_cycle]:
            series = store.get(*key)
            if series is None or not len(series):
                continue
            t, v, appended = engine.snapshot(series)  # copies, taken on the loop thread
            entry = engine.entry(key)
            entry.fitting = True
            try:
                fc, report = await workers.run(select_and_fit, t, v, engine.selection_horizon)
            except asyncio.CancelledError:
                entry.fitting = False
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, reported by health
                if gen == self._generation:
                    engine.failed(key, exc, appended)
                self.fit_failures += 1
                log.warning("statistical model: fit of %s/%s failed: %s", key[0], key[1], exc)
                continue
            series = store.get(*key)
            if gen != self._generation or series is None:
                continue  # reset while fitting
            engine.install(key, fc, report, appended, float(t[-1]), series)
            log.debug(
                "statistical model: fitted %s/%s (%s): %s",
                key[0],
                key[1],
                reason,
                report.description,
            )
            done += 1
        return done

    def backtest_error(self, system: str, metric: str) -> tuple[float, float] | None:
        """The fitted forecaster's holdout error (``capabilities.BacktestReporter``)."""
        return self.engine.backtest_error((system, metric))

    def refit_system(self, system: str) -> int:
        """Refits the system's forecasters on the next cycle (``capabilities.Refittable``)."""
        n = self.engine.request_refit(system)
        if n and self._wake is not None:
            self._wake.set()
        return n

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
            return nl.answer(
                self.state.store,
                request.content,
                request.parameters,
                self.current_anomalies,
                self._forecast_point,
            )
        res = await super().query(request)
        if request.query_type == "historical":
            include = {
                x.strip().lower()
                for x in request.parameters.get("include", "").split(",")
                if x.strip()
            }
            if "scores" in include and res.success and isinstance(res.result, dict):
                self._add_scores(res, int(param_float(request.parameters, "max_points", 500)))
        if request.query_type == "current_state":
            include = {
                x.strip().lower()
                for x in request.parameters.get("include", "").split(",")
                if x.strip()
            }
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

    def _forecast_point(
        self, system: str, metric: str, horizon_sec: float
    ) -> dict[str, Any] | None:
        s = self.state.store.get(system, metric)
        if s is None or not len(s):
            return None
        out = calibrated(
            self.calibrator,
            system,
            metric,
            self.engine.forecast((system, metric), s, horizon_sec, self.level),
        )
        return {
            "value": float(out.mean[-1]),
            "lower": float(out.lower[-1]),
            "upper": float(out.upper[-1]),
            "timestamp": iso(float(out.times[-1])),
            "method": out.method,
        }

    # ------------------------------------------------------------------ simulations

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        kind = request.simulation_type
        if kind == "forecast":
            return simulate_forecast(self.sim, request)
        if kind in ("what_if", "scenario", "compare"):
            self.plans.background()  # effects of executions whose telemetry has arrived
            if kind == "compare":
                result, outcomes = self.plans.compare(request, request.plans)
                result.plan_outcomes = outcomes
                return result
            return self.plans.what_if(request)
        return SimulationResult(
            False,
            explanation=(
                f"simulation_type {kind!r} is not supported; use forecast, what_if, scenario "
                "or compare"
            ),
        )

    # ------------------------------------------------------------------ diagnosis, calibration

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        try:
            diagnosis = importlib.import_module("twin.models.statistical.diagnosis")
        except ImportError as exc:
            return DiagnosisResult(
                False,
                explanation="root-cause diagnosis is not available in this build of the "
                f"statistical model ({exc})",
                metadata={"model": self.name},
            )
        fn = getattr(diagnosis, "diagnose", None)
        if fn is None:
            return DiagnosisResult(
                False,
                explanation="root-cause diagnosis is not available: "
                "twin.models.statistical.diagnosis has no diagnose()",
            )
        try:
            prepare, answer = (
                getattr(diagnosis, "prepare", None),
                getattr(diagnosis, "answer", None),
            )
            if prepare is None or answer is None:
                return fn(self.state, request, self.anomaly_scores)
            # The state is read here, on the loop; the ranking (pure, picklable) runs off it.
            prepared = prepare(self.state, request, self.anomaly_scores)
            if isinstance(prepared, DiagnosisResult):
                return prepared
            return await workers.run(answer, prepared)
        except InvalidRequest:
            raise
        except Exception as exc:
            log.exception("statistical model: diagnosis failed")
            return DiagnosisResult(
                False, explanation=f"diagnosis failed: {exc.__class__.__name__}: {exc}"
            )

    async def calibrate(self, record: CalibrationRecord) -> dict[str, float]:
        return self.calibrator.observe(record)

    # ------------------------------------------------------------------ health, metrics

    async def health(self) -> Health:
        if not self.initialized:
            return Health("not_initialized", ["model not initialised"], {}, self.name, self.version)
        issues = []
        failing = [(k, e) for k, e in self.engine.entries.items() if e.last_error]
        for (src, name), e in failing[:5]:
            kept = (
                " (keeping the previous model)"
                if e.forecaster is not None
                else " (forecasts use the fallback)"
            )
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
            "update_seconds_per_point": self.update_seconds / self.points_scored
            if self.points_scored
            else 0.0,
            "fallback_forecasts_total": float(self.fallback_forecasts),
            "calibration_records_total": float(self.calibrator.records),
            "calibration_pairs_total": float(self.calibrator.pairs),
            "calibrated_metrics": float(len(self.calibrator.corrections)),
            **self.plans.metrics(),
        }

    def metrics(self) -> dict[str, float]:
        return self._perf()
