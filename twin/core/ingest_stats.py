"""Ingestion counters: plain ints on the hot path, metric families at scrape time.

They live in core because two layers that must not know each other share them: the
ingestor (which bumps them) and the runtime (health, in-process ingestion).

The applier and the subscription callbacks bump attributes (no lock, no call);
``register`` declares, once, what each figure is called and means in the twin's
metrics registry, and the registry reads them when ``/metrics`` or ``get_metrics``
asks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from twin.core.metrics import Figures


@dataclass
class IngestStats:
    messages_received: Counter[str] = field(default_factory=Counter)  # by subject
    events_received: int = 0
    events_applied: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    dead_letter_publish_failures: int = 0
    # Records of systems this twin does not answer for (digital_twin.systems), by kind:
    # telemetry (points), execution, calibration. Not errors: never dead-lettered.
    skipped: Counter[str] = field(default_factory=Counter)
    slow_consumer_drops: int = 0
    batches_applied: int = 0
    executions_applied: int = 0
    calibrations_applied: int = 0
    queue_high_water: int = 0
    disconnects: int = 0
    reconnects: int = 0
    apply_errors: int = 0
    model_update_seconds: float = 0.0

    @property
    def messages_total(self) -> int:
        return sum(self.messages_received.values())

    def register(self, registry: CollectorRegistry) -> Figures:
        """Declares the ingestion metrics in ``registry`` (read from these counters)."""
        f = Figures(registry)
        f.counter(
            "events_received",
            "Telemetry/execution/calibration events received from NATS (before validation).",
            lambda: self.events_received,
        )
        f.counter(
            "events_applied",
            "Events applied to the state and handed to the world model.",
            lambda: self.events_applied,
        )
        f.counter(
            "dead_lettered",
            "Events sent to the dead-letter subject, by reason class.",
            lambda: dict(self.dead_letter_reasons),
            ["reason"],
        )
        f.counter(
            "events_skipped",
            "Records of systems this twin does not answer for (digital_twin.systems), by kind.",
            lambda: {k: self.skipped[k] for k in ("telemetry", "execution", "calibration")},
            ["kind"],
        )
        f.counter(
            "dead_letter_publish_failures",
            "Dead-letter records that could not be published.",
            lambda: self.dead_letter_publish_failures,
        )
        f.counter(
            "slow_consumer_drops",
            "NATS slow-consumer errors (messages dropped by the client).",
            lambda: self.slow_consumer_drops,
        )
        f.counter(
            "messages_received",
            "NATS messages received, by subject.",
            lambda: dict(self.messages_received),
            ["subject"],
        )
        f.counter(
            "batches_applied",
            "Batches applied by the ingestion applier.",
            lambda: self.batches_applied,
        )
        f.counter(
            "executions_applied",
            "Execution results applied to the action log.",
            lambda: self.executions_applied,
        )
        f.counter(
            "calibrations_applied", "Calibration events applied.", lambda: self.calibrations_applied
        )
        f.gauge(
            "queue_high_water", "Largest ingestion queue size seen.", lambda: self.queue_high_water
        )
        f.counter("nats_disconnects", "Disconnections from NATS.", lambda: self.disconnects)
        f.counter("nats_reconnects", "Reconnections to NATS.", lambda: self.reconnects)
        f.counter(
            "ingest_apply_errors",
            "Batches (or records) the state or the model failed to take.",
            lambda: self.apply_errors,
        )
        f.counter(
            "model_update_seconds",
            "Time spent in WorldModel.update on the ingestion path.",
            lambda: self.model_update_seconds,
        )
        return f
