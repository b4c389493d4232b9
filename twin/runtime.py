"""The running twin as one object: state, the current world model, counters, and
the management operations. Ingestion and the gRPC service both hold a
``TwinRuntime``; neither knows about the other. Evaluations (``eval nab``,
``eval rca``) build one in process, so they measure exactly the serving code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from twin import __version__
from twin.core import notify, workers
from twin.core.config import TwinConfig
from twin.core.events import Point
from twin.core.ingest_stats import IngestStats
from twin.core.ledger import PredictionLedger
from twin.core.memory import release_memory
from twin.core.metrics import (
    FigureDict,
    Figures,
    flat_view,
    gauge_family,
    new_registry,
    with_flat,
)
from twin.core.notify import EventBus
from twin.core.state import TwinState
from twin.core.store import Retention
from twin.models.base import WorldModel
from twin.models.capabilities import BacktestReporter, Refittable
from twin.models.domain import EventBatch, Health, SimulationRequest, SimulationResult
from twin.models.predictions import calibrate_and_record
from twin.models.registry import create_model
from twin.observability.ledger_metrics import LedgerCollector

log = logging.getLogger(__name__)


class DurabilityView(Protocol):
    """What health, ``get_metrics`` and ``Manage`` need of durability.

    ``twin.durability.Durability`` implements it; the runtime holds one only when
    snapshots or JetStream are on, so neither the runtime nor the service imports
    the durability package.
    """

    @property
    def applied_sequence(self) -> int | None: ...

    @property
    def replay_available(self) -> bool: ...

    def health_issues(self) -> list[str]: ...

    def metrics(self) -> dict[str, float]: ...

    async def replay(
        self, from_sequence: int | None = None, from_time: float | None = None
    ) -> dict[str, Any]: ...

    def replay_status(self) -> dict[str, Any]: ...

    async def snapshot_now(self) -> Path | None: ...


class TwinRuntime:
    def __init__(
        self,
        config: TwinConfig,
        model_name: str | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        # The one source of the twin's metrics (``/metrics`` and ``get_metrics``); every
        # component registers what it measures here.
        self.registry = registry if registry is not None else new_registry()
        self.state = TwinState(
            Retention(config.state.max_points_per_series, config.state.max_age_sec),
            config.state.action_log_size,
            max_series=config.state.max_series,
            max_series_per_system=config.state.max_series_per_system,
            action_log_max_bytes=config.state.action_log_max_bytes,
            limits=config.limits,
            ledger=ledger_from_config(config),
        )
        self.state.events = EventBus(config.events.history, config.events.queue_size)
        self.model_name = model_name or config.world_model.implementation
        self.model: WorldModel = create_model(
            self.model_name, self.state, config.world_model.settings
        )
        self.ingest_stats = IngestStats()
        self.ingest_stats.register(self.registry)
        self.ingest_connected = False
        self.started_at = time.time()
        self._model_lock = asyncio.Lock()
        self._rate = _Rate()
        # Set by the app when snapshots or JetStream are on: its applied stream sequence,
        # issues and figures show in health and get_metrics.
        self.durability: DurabilityView | None = None
        self.workers = workers.pool()
        # twin.supervisor.ModelSupervisor, started by the app (health_check_interval_sec).
        self.supervisor: Any = None
        self._ledger_task: asyncio.Task[None] | None = None
        self._register_metrics()

    def _register_metrics(self) -> None:
        store = self.state.store
        f = Figures(self.registry)
        f.gauge("series", "Time series in the store.", lambda: len(store))
        f.gauge(
            "samples_retained",
            "Samples currently retained in the store.",
            lambda: store.sample_count,
        )
        f.gauge("store_bytes", "Bytes of numpy buffers held by the store.", lambda: store.nbytes)
        f.gauge(
            "ingest_connected",
            "1 while ingestion is connected to NATS.",
            lambda: float(self.ingest_connected),
        )
        f.counter(
            "series_rejected",
            "New series refused by the store's series limits.",
            lambda: store.rejected_series,
        )
        f.counter(
            "series_rejected_events", "Events of refused new series.", lambda: store.rejected_events
        )
        f.gauge(
            "action_log_bytes", "Bytes held by the action log.", lambda: self.state.actions.nbytes
        )
        f.gauge(
            "calibration_log_bytes",
            "Bytes held by the calibration log.",
            lambda: self.state.calibrations.nbytes,
        )
        self.state.events.register(self.registry)
        LedgerCollector(self.registry, lambda: self.state.ledger)
        self.state.ledger.listeners.append(self._push_ledger_event)
        self.registry.register(_BuildInfo(self))
        # The current model's own figures, read through ``runtime.model`` so a model
        # swapped by reload_model reports from then on.
        FigureDict(self.registry, lambda: self.model.metrics(), "model_", "model.", "World-model")
        FigureDict(self.registry, lambda: self.workers.metrics(), owner="Compute-worker")
        FigureDict(
            self.registry,
            lambda: self.supervisor.metrics() if self.supervisor is not None else {},
            owner="Model supervisor",
        )

    def _push_ledger_event(self, event: Mapping[str, Any]) -> None:
        """Scored predictions and drift findings are pushed (Watch, SSE, NATS) like anomalies,
        so a planner learns how the twin's predictions fared without polling the report."""
        kind = _LEDGER_EVENT_KINDS.get(str(event.get("type", "")))
        if kind is None:  # refits: visible in health and the drift figures
            return
        data = {k: v for k, v in event.items() if k != "type"}
        self.state.events.publish(kind, str(event.get("system", "")), data)

    async def initialize(self) -> None:
        # Worker processes for heavy computation (fits): started on first use, in a thread,
        # so start-up (start_to_serving_s) never pays for them.
        self.workers = workers.configure(self.config.performance.compute_workers)
        await self.model.initialize()
        if self._ledger_task is None:
            self._ledger_task = asyncio.get_running_loop().create_task(
                self._score_loop(), name="prediction-ledger"
            )

    async def shutdown(self) -> None:
        task, self._ledger_task = self._ledger_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.model.shutdown()
        await asyncio.to_thread(self.workers.close)

    def ingest_points(self, points: list[Point]) -> None:
        """In-process ingestion (evaluations, tests): same store + model path as NATS."""
        _, refused = self.state.apply(points)
        if refused:
            skip = {id(p) for p, _ in refused}
            points = [p for p in points if id(p) not in skip]
            self.ingest_stats.dead_lettered += len(refused)
            self.ingest_stats.dead_letter_reasons["series_limit"] += len(refused)
        self.model.update(EventBatch(points, (), ()))
        self.ingest_stats.events_received += len(points)
        self.ingest_stats.events_applied += len(points)
        self.score_predictions()

    # ------------------------------------------------------------------ predictions
    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        """The model's answer, its intervals recalibrated and the prediction recorded in
        the ledger (once here, whichever model answered)."""
        result = await self.model.simulate(request)
        try:
            bt = self.model.backtest_error if isinstance(self.model, BacktestReporter) else None
            calibrate_and_record(
                self.state.ledger, self.state.store, request, result, self.model_name, bt
            )
        except Exception:  # noqa: BLE001 - the ledger must never cost an answer
            log.exception("prediction ledger: could not record %s", request.simulation_id)
        return result

    def score_predictions(self) -> int:
        """Scores due predictions (by event time) and refits systems whose forecasts drifted."""
        led = self.state.ledger
        n = led.score_due(self.state.store, self.state.actions)
        if self.config.predictions.refit_on_drift:
            for system in led.systems_to_refit():
                parts = self.model.refit_system(system) if isinstance(self.model, Refittable) else 0
                newest = max(
                    (s.last_t for s in self.state.store if s.source == system), default=math.nan
                )
                led.refitted(system, newest, parts)
                log.warning("prediction drift on %s: %d model part(s) refitted", system, parts)
        return n

    async def _score_loop(self) -> None:
        interval = self.config.predictions.score_interval_sec
        while True:
            await asyncio.sleep(interval)
            try:
                self.score_predictions()
            except Exception:  # noqa: BLE001 - keep scoring
                log.exception("prediction ledger: scoring failed")

    async def reload(
        self, implementation: str | None = None, settings: Mapping[str, Any] | None = None
    ) -> str:
        """Reloads the model in place, or swaps in another implementation (store kept)."""
        async with self._model_lock:
            if implementation and implementation != self.model_name:
                new = create_model(
                    implementation,
                    self.state,
                    settings if settings is not None else self.config.world_model.settings,
                )
                await new.initialize()
                old, self.model, self.model_name = self.model, new, implementation
                await old.shutdown()
                return f"switched world model to {implementation}"
            await self.model.reload(settings)
            return f"reloaded world model {self.model_name}"

    def reset(self) -> dict[str, int]:
        dropped = self.state.reset()
        self.model.reset()
        release_memory()  # without it RSS stays at its high-water mark
        return dropped

    async def health(self) -> Health:
        h = await self.model.health()
        issues = list(h.issues)
        status = h.status
        if not self.ingest_connected:
            issues.append("ingestion is not connected to NATS")
            if status == "healthy":
                status = "degraded"
        caps = self.state.store.cap_issues()
        if caps:
            issues.extend(caps)
            if status == "healthy":
                status = "degraded"
        if self.durability is not None:
            extra = self.durability.health_issues()
            issues.extend(extra)
            if extra and status == "healthy":
                status = "degraded"
        drift = self.state.ledger.drift_reasons()
        if drift:
            issues.extend(f"prediction drift: {r}" for r in drift)
            if status == "healthy":
                status = "degraded"
        perf = dict(h.performance_metrics)
        perf.update(
            {
                "uptime_sec": time.time() - self.started_at,
                "events_applied_total": float(self.ingest_stats.events_applied),
                "dead_lettered_total": float(self.ingest_stats.dead_lettered),
                "series": float(len(self.state.store)),
            }
        )
        if self.durability is not None and self.durability.applied_sequence is not None:
            perf["applied_sequence"] = float(self.durability.applied_sequence)
        return Health(status, issues, perf, h.model_type or self.model_name, h.model_version)

    def metrics_snapshot(self, queue_size: int | None = None) -> dict[str, float]:
        """``get_metrics``: the registry's flat view plus two figures for people reading it.

        ``uptime_seconds`` and ``messages_per_second`` (over roughly the last 10 s of
        calls) are derived here, not exported: Prometheus has
        ``process_start_time_seconds`` and ``rate()``.
        """
        m = flat_view(self.registry)
        if queue_size is not None:
            m["queue_size"] = float(queue_size)
        m["uptime_seconds"] = time.time() - self.started_at
        m["messages_per_second"] = self._rate.per_second(m.get("events_received_total", 0.0))
        return m


class _BuildInfo:
    """``polaris_twin_build_info{version,model} 1`` (the model label follows reloads)."""

    def __init__(self, runtime: TwinRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        fam = gauge_family(
            "build_info", "The twin's version and current world model.", ["version", "model"]
        )
        fam.add_metric([__version__, self.runtime.model_name], 1.0)
        yield with_flat(fam, {})  # not a figure: Prometheus-only

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _Rate:
    """Per-second rate of a counter between reads, over roughly the last ``horizon`` s."""

    def __init__(self, horizon: float = 10.0) -> None:
        self.horizon = horizon
        self.started = time.monotonic()
        self.window: deque[tuple[float, float]] = deque(maxlen=64)

    def per_second(self, count: float) -> float:
        now = time.monotonic()
        self.window.append((now, count))
        old = next(((t, n) for t, n in self.window if now - t <= self.horizon), None)
        if old is None or now - old[0] < 1e-3:
            return count / max(now - self.started, 1e-3)
        return (count - old[1]) / (now - old[0])


_LEDGER_EVENT_KINDS = {
    "prediction_outcome": notify.PREDICTION_OUTCOME,
    "drift": notify.DRIFT,
}


def ledger_from_config(config: TwinConfig) -> PredictionLedger:
    p = config.predictions
    return PredictionLedger(
        max_pending=p.max_pending_per_system,
        max_recent=p.max_recent_per_system,
        max_points=p.max_points_per_prediction,
        max_systems=p.max_systems,
        skill_window=p.skill_window,
        drift_margin=p.drift_margin,
        drift_min_predictions=p.drift_min_predictions,
        calibrate_intervals=p.calibrate_intervals,
    )
