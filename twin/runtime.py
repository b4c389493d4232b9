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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from twin.core import workers
from twin.core.config import TwinConfig
from twin.core.events import Point
from twin.core.ledger import PredictionLedger
from twin.core.memory import release_memory
from twin.core.state import TwinState
from twin.core.store import Retention
from twin.ingest.stats import IngestStats
from twin.models.base import WorldModel
from twin.models.capabilities import BacktestReporter, Refittable
from twin.models.domain import EventBatch, Health, SimulationRequest, SimulationResult
from twin.models.predictions import calibrate_and_record
from twin.models.registry import create_model
from twin.core.rpc_metrics import RpcMetrics

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
    def __init__(self, config: TwinConfig, model_name: str | None = None) -> None:
        self.config = config
        self.state = TwinState(
            Retention(config.state.max_points_per_series, config.state.max_age_sec),
            config.state.action_log_size,
            max_series=config.state.max_series,
            max_series_per_system=config.state.max_series_per_system,
            action_log_max_bytes=config.state.action_log_max_bytes,
            limits=config.limits,
            ledger=ledger_from_config(config),
        )
        self.model_name = model_name or config.world_model.implementation
        self.model: WorldModel = create_model(self.model_name, self.state, config.world_model.settings)
        self.ingest_stats = IngestStats()
        self.rpc_metrics = RpcMetrics()
        self.ingest_connected = False
        self.started_at = time.time()
        self._model_lock = asyncio.Lock()
        # Set by the app when snapshots or JetStream are on: its applied stream sequence,
        # issues and figures show in health and get_metrics.
        self.durability: DurabilityView | None = None
        self.workers = workers.pool()
        # twin.supervisor.ModelSupervisor, started by the app (health_check_interval_sec).
        self.supervisor: Any = None
        self._ledger_task: asyncio.Task[None] | None = None

    async def initialize(self) -> None:
        # Worker processes for heavy computation (fits): started in the background, so
        # start-up never waits for them; until they are up, calls wait or use a thread.
        self.workers = workers.configure(self.config.performance.compute_workers)
        self._workers_start = asyncio.get_running_loop().create_task(self.workers.start(), name="compute-workers")
        await self.model.initialize()
        if self._ledger_task is None:
            self._ledger_task = asyncio.get_running_loop().create_task(self._score_loop(), name="prediction-ledger")

    async def shutdown(self) -> None:
        task, self._ledger_task = self._ledger_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.model.shutdown()
        task = getattr(self, "_workers_start", None)
        if task is not None and not task.done():
            task.cancel()
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
            calibrate_and_record(self.state.ledger, self.state.store, request, result, self.model_name, bt)
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
                newest = max((s.last_t for s in self.state.store if s.source == system), default=math.nan)
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

    async def reload(self, implementation: str | None = None, settings: Mapping[str, Any] | None = None) -> str:
        """Reloads the model in place, or swaps in another implementation (store kept)."""
        async with self._model_lock:
            if implementation and implementation != self.model_name:
                new = create_model(implementation, self.state, settings if settings is not None else self.config.world_model.settings)
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

    def metrics_snapshot(self, queue_size: int = 0) -> dict[str, float]:
        """Every figure ``get_metrics`` reports, flat, numeric, with conventional names."""
        s = self.ingest_stats
        m: dict[str, float] = {
            "events_received_total": s.events_received,
            "events_applied_total": s.events_applied,
            "dead_lettered_total": s.dead_lettered,
            "dead_letter_publish_failures_total": s.dead_letter_publish_failures,
            "slow_consumer_drops_total": s.slow_consumer_drops,
            "messages_received_total": s.messages_total,
            "messages_per_second": s.events_per_second(),
            "batches_applied_total": s.batches_applied,
            "executions_applied_total": s.executions_applied,
            "calibrations_applied_total": s.calibrations_applied,
            "queue_size": queue_size,
            "queue_high_water": s.queue_high_water,
            "nats_disconnects_total": s.disconnects,
            "nats_reconnects_total": s.reconnects,
            "ingest_apply_errors_total": s.apply_errors,
            "model_update_seconds_total": s.model_update_seconds,
            "series": len(self.state.store),
            "samples_retained": self.state.store.sample_count,
            "store_bytes": self.state.store.nbytes,
            "series_rejected_total": self.state.store.rejected_series,
            "series_rejected_events_total": self.state.store.rejected_events,
            "action_log_bytes": self.state.actions.nbytes,
            "calibration_log_bytes": self.state.calibrations.nbytes,
            "rpc_errors_total": self.rpc_metrics.errors(),
            "rpc_rejected_busy_total": self.rpc_metrics.rejected_busy,
            "uptime_seconds": time.time() - self.started_at,
            "ingest_connected": 1.0 if self.ingest_connected else 0.0,
        }
        for reason, n in s.dead_letter_reasons.items():
            m[f"dead_lettered_total.{reason}"] = n
        for method, rec in self.rpc_metrics.latency.items():
            key = method.lower()
            m[f"rpc_{key}_requests_total"] = rec.count
            m[f"rpc_{key}_p50_ms"] = rec.quantile(0.5) * 1000
            m[f"rpc_{key}_p99_ms"] = rec.quantile(0.99) * 1000
        for (method, code), n in self.rpc_metrics.outcomes.items():
            m[f"rpc_{method.lower()}_responses_total.{code}"] = n
        for op, rec in self.rpc_metrics.model_time.items():
            m[f"model_{op}_seconds_total"] = rec.total
            m[f"model_{op}_p50_ms"] = rec.quantile(0.5) * 1000
            m[f"model_{op}_p99_ms"] = rec.quantile(0.99) * 1000
        for k, v in self.model.metrics().items():
            m[f"model.{k}"] = v
        m.update(self.state.ledger.totals())
        m.update(self.state.ledger.labelled_metrics())
        m.update(self.workers.metrics())
        if self.supervisor is not None:
            m.update(self.supervisor.metrics())
        if self.durability is not None:
            m.update(self.durability.metrics())
            if self.durability.applied_sequence is not None:
                m["applied_sequence"] = self.durability.applied_sequence
        return {k: float(v) for k, v in m.items()}


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
