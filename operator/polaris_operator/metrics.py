"""The operator's own Prometheus metrics, in a ``prometheus_client`` registry.

One registry per :class:`OperatorMetrics` (tests make their own); the operator process
serves the default instance's registry on ``--metrics-port`` (``/metrics``).

- ``polaris_operator_reconciles_total{trigger}``: reconciliations started, by what
  triggered them (``twin``: the DigitalTwin changed or was resumed; ``child``: one of its
  children or pods changed).
- ``polaris_operator_reconcile_errors_total{reason}``: reconciliations that did not
  converge: ``invalid_spec``, ``forbidden``, ``api`` (transient API failures), ``retry``
  (a child still being deleted, a name still held by a deleted twin).
- ``polaris_operator_drift_repairs_total{resource}``: children put back after someone
  edited or deleted them.
- ``polaris_operator_children_applied_total{resource,action}``: creates, updates,
  replacements and deletions of children.
- ``polaris_operator_reconcile_duration_seconds``: time per reconciliation (histogram).
- ``polaris_operator_pod_problems``: pods of managed twins that need a human
  (ImagePullBackOff, CrashLoopBackOff, Unschedulable, ...), by reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["METRICS", "OperatorMetrics", "serve"]


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "polaris_operator_reconciles",
            "Reconciliations started, by trigger.",
            ["trigger"],
            registry=r,
        )
        self.errors = Counter(
            "polaris_operator_reconcile_errors",
            "Reconciliations that did not converge, by reason.",
            ["reason"],
            registry=r,
        )
        self.drift_repairs = Counter(
            "polaris_operator_drift_repairs",
            "Children put back after an edit or deletion, by resource kind.",
            ["resource"],
            registry=r,
        )
        self.applied = Counter(
            "polaris_operator_children_applied",
            "Writes to children, by resource kind and action.",
            ["resource", "action"],
            registry=r,
        )
        self.duration = Histogram(
            "polaris_operator_reconcile_duration_seconds",
            "Time per reconciliation.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.pod_problems = Gauge(
            "polaris_operator_pod_problems",
            "Pods of managed twins that need a human, by reason (last reconciliation).",
            ["reason"],
            registry=r,
        )
        for reason in ("invalid_spec", "forbidden", "api", "retry"):
            self.errors.labels(reason=reason)
        for trigger in ("twin", "child"):
            self.reconciles.labels(trigger=trigger)


METRICS = OperatorMetrics()


def serve(port: int, metrics: OperatorMetrics = METRICS, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` in a daemon thread (prometheus_client's server)."""
    start_http_server(port, addr=addr, registry=metrics.registry)
