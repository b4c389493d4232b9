"""Ingestion counters, read by ``Manage get_metrics`` and the Prometheus exporter."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field


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
    started_at: float = field(default_factory=time.monotonic)
    _rate_window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def events_per_second(self, horizon: float = 10.0) -> float:
        """Events received per second over roughly the last ``horizon`` seconds."""
        now = time.monotonic()
        self._rate_window.append((now, self.events_received))
        old = next(((t, n) for t, n in self._rate_window if now - t <= horizon), None)
        if old is None or now - old[0] < 1e-3:
            elapsed = max(now - self.started_at, 1e-3)
            return self.events_received / elapsed
        return (self.events_received - old[1]) / (now - old[0])

    @property
    def messages_total(self) -> int:
        return sum(self.messages_received.values())
