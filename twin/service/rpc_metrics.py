"""Per-RPC and per-model-call latency and outcome metrics, owned by the servicer.

Latencies go into bounded reservoirs (the last ``RESERVOIR`` samples) for the recent
p50/p99 that ``get_metrics`` documents, and into fixed buckets for Prometheus
histograms; the hot path pays an append and a bucket increment. ``RpcMetrics`` is a
collector of the twin's registry: it yields the histograms, the response counter and
the recent quantiles, each with its documented ``get_metrics`` keys (``flat``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from twin.core.metrics import PREFIX, counter_family, gauge_family, with_flat

__all__ = ["BUCKETS", "RESERVOIR", "LatencyRecorder", "RpcMetrics"]

RESERVOIR = 4096
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
QUANTILES = ((0.5, "p50"), (0.99, "p99"))


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


def _histogram(
    name: str, doc: str, label: str, recs: dict[str, LatencyRecorder]
) -> HistogramMetricFamily:
    h = HistogramMetricFamily(PREFIX + name, doc, labels=[label])
    for key, rec in sorted(recs.items()):
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(BUCKETS, rec.buckets):
            cumulative += n
            buckets.append((repr(float(bound)), float(cumulative)))
        buckets.append(("+Inf", float(rec.count)))
        h.add_metric([key.lower()], buckets, sum_value=rec.total)
    return h


@dataclass(eq=False)  # a collector must stay hashable (the registry keys on it)
class RpcMetrics(Collector):
    latency: dict[str, LatencyRecorder] = field(default_factory=dict)  # by RPC method
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code)
    model_time: dict[str, LatencyRecorder] = field(default_factory=dict)  # by model operation
    rejected_busy: int = 0
    rejected_by: Counter[str] = field(default_factory=Counter)  # limit setting → refusals
    auth_denied: Counter[tuple[str, str]] = field(default_factory=Counter)  # (operation, code)

    def reject(self, limit: str) -> None:
        """One RPC refused as busy by ``limit`` (the setting's name)."""
        self.rejected_busy += 1
        self.rejected_by[limit] += 1

    def register(self, registry: CollectorRegistry) -> RpcMetrics:
        registry.register(self)
        return self

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

    # ------------------------------------------------------------ Collector
    def collect(self) -> Iterator[Metric]:
        rpc = _histogram(
            "rpc_duration_seconds", "RPC latency as seen by the servicer.", "method", self.latency
        )
        yield with_flat(
            rpc,
            {f"rpc_{m.lower()}_requests_total": float(r.count) for m, r in self.latency.items()},
        )
        model = _histogram(
            "model_call_duration_seconds",
            "World-model call duration.",
            "operation",
            self.model_time,
        )
        yield with_flat(
            model, {f"model_{op}_seconds_total": r.total for op, r in self.model_time.items()}
        )
        responses = counter_family(
            "rpc_responses", "RPC responses by method and status code.", ["method", "code"]
        )
        for (method, code), n in sorted(self.outcomes.items()):
            responses.add_metric([method.lower(), code], float(n))
        flat = {
            f"rpc_{m.lower()}_responses_total.{c}": float(n) for (m, c), n in self.outcomes.items()
        }
        flat["rpc_errors_total"] = float(self.errors())
        yield with_flat(responses, flat)
        busy = counter_family(
            "rpc_rejected_busy",
            "Requests refused as busy (RESOURCE_EXHAUSTED), by limit.",
            ["limit"],
        )
        for limit, n in sorted(self.rejected_by.items()):
            busy.add_metric([limit], float(n))
        flat = {f"rpc_rejected_busy_total.{k}": float(n) for k, n in self.rejected_by.items()}
        flat["rpc_rejected_busy_total"] = float(self.rejected_busy)
        yield with_flat(busy, flat)
        denied = counter_family(
            "manage_denied",
            "Protected Manage operations refused, by operation and code.",
            ["operation", "code"],
        )
        for (op, code), n in sorted(self.auth_denied.items()):
            denied.add_metric([op, code], float(n))
        flat = {
            f"manage_denied_total.{op}.{c}": float(n) for (op, c), n in self.auth_denied.items()
        }
        flat["manage_denied_total"] = float(sum(self.auth_denied.values()))
        yield with_flat(denied, flat)
        yield self._recent(
            "rpc_recent_latency_seconds",
            "Quantiles of the last 4096 RPC latencies per method.",
            "method",
            "rpc_{}_{}_ms",
            self.latency,
        )
        yield self._recent(
            "model_call_recent_latency_seconds",
            "Quantiles of the last 4096 world-model call durations per operation.",
            "operation",
            "model_{}_{}_ms",
            self.model_time,
        )

    @staticmethod
    def _recent(
        name: str, doc: str, label: str, flat_key: str, recs: dict[str, LatencyRecorder]
    ) -> Metric:
        fam = gauge_family(name, doc, [label, "quantile"])
        flat: dict[str, float] = {}
        for key, rec in sorted(recs.items()):
            for q, tag in QUANTILES:
                value = rec.quantile(q)
                fam.add_metric([key.lower(), str(q)], value)
                flat[flat_key.format(key.lower(), tag)] = value * 1000.0
        return with_flat(fam, flat)

    def describe(self) -> Iterator[Metric]:
        return iter(())
