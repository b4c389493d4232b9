"""Per-RPC and per-model-operation latency and outcome counters.

Latencies go into bounded reservoirs (the last ``RESERVOIR`` samples) so p50/p99
cost O(reservoir) at read time and nothing on the hot path but an append.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

RESERVOIR = 4096
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class LatencyRecorder:
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=RESERVOIR))
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def observe(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.count += 1
        self.total += seconds
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def quantile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        return float(np.quantile(np.fromiter(self.samples, dtype=np.float64), q))


@dataclass
class RpcMetrics:
    latency: dict[str, LatencyRecorder] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code)
    model_time: dict[str, LatencyRecorder] = field(default_factory=dict)
    rejected_busy: int = 0
    rejected_by: Counter[str] = field(default_factory=Counter)  # limit setting → refusals
    auth_denied: Counter[tuple[str, str]] = field(default_factory=Counter)  # (operation, code)

    def reject(self, limit: str) -> None:
        """One RPC refused as busy by ``limit`` (the setting's name)."""
        self.rejected_busy += 1
        self.rejected_by[limit] += 1

    def observe_rpc(self, method: str, seconds: float, code: str) -> None:
        rec = self.latency.get(method)
        if rec is None:
            rec = self.latency[method] = LatencyRecorder()
        rec.observe(seconds)
        self.outcomes[(method, code)] += 1

    def observe_model(self, op: str, seconds: float) -> None:
        rec = self.model_time.get(op)
        if rec is None:
            rec = self.model_time[op] = LatencyRecorder()
        rec.observe(seconds)

    def errors(self) -> int:
        return sum(n for (_, code), n in self.outcomes.items() if code not in ("OK", "ok"))
