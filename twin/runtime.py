"""The running twin as one object: state, the current world model, counters, and
the management operations. Ingestion and the gRPC service both hold a
``TwinRuntime``; neither knows about the other. Evaluations (``eval nab``,
``eval rca``) build one in process, so they measure exactly the serving code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from twin.core.config import TwinConfig
from twin.core.events import Point
from twin.core.notify import EventBus
from twin.core.state import TwinState
from twin.core.store import Retention
from twin.ingest.stats import IngestStats
from twin.models.base import EventBatch, Health, WorldModel
from twin.models.registry import create_model
from twin.core.rpc_metrics import RpcMetrics

log = logging.getLogger(__name__)


class TwinRuntime:
    def __init__(self, config: TwinConfig, model_name: str | None = None) -> None:
        self.config = config
        self.state = TwinState(
            Retention(config.state.max_points_per_series, config.state.max_age_sec),
            config.state.action_log_size,
        )
        self.state.events = EventBus(config.events.history, config.events.queue_size)
        self.model_name = model_name or config.world_model.implementation
        self.model: WorldModel = create_model(self.model_name, self.state, config.world_model.settings)
        self.ingest_stats = IngestStats()
        self.rpc_metrics = RpcMetrics()
        self.ingest_connected = False
        self.started_at = time.time()
        self._model_lock = asyncio.Lock()
        self.extra_metrics: dict[str, Any] = {}
        # twin.durability.manager.Durability when snapshots or JetStream are on (set by the app):
        # its applied stream sequence, issues and figures show in health and get_metrics.
        self.durability: Any = None
        # twin.supervisor.ModelSupervisor, started by the app (health_check_interval_sec).
        self.supervisor: Any = None

    async def initialize(self) -> None:
        await self.model.initialize()

    async def shutdown(self) -> None:
        await self.model.shutdown()

    def ingest_points(self, points: list[Point]) -> None:
        """In-process ingestion (evaluations, tests): same store + model path as NATS."""
        self.state.apply_points(points)
        self.model.update(EventBatch(points, (), ()))
        self.ingest_stats.events_received += len(points)
        self.ingest_stats.events_applied += len(points)

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
        return dropped

    async def health(self) -> Health:
        h = await self.model.health()
        issues = list(h.issues)
        status = h.status
        if not self.ingest_connected:
            issues.append("ingestion is not connected to NATS")
            if status == "healthy":
                status = "degraded"
        if self.durability is not None:
            extra = self.durability.health_issues()
            issues.extend(extra)
            if extra and status == "healthy":
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
        m.update(self.state.events.metrics())
        for k, v in self.extra_metrics.items():
            m[k] = v() if callable(v) else v
        if self.supervisor is not None:
            m.update(self.supervisor.metrics())
        if self.durability is not None:
            m.update(self.durability.metrics())
            if self.durability.applied_sequence is not None:
                m["applied_sequence"] = self.durability.applied_sequence
        return {k: float(v) for k, v in m.items()}
