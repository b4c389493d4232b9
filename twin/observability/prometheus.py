"""Prometheus exposition of everything ``Manage get_metrics`` reports.

One custom collector turns ``TwinRuntime.metrics_snapshot()`` into metric families
at scrape time, so the two views can never disagree and the hot path pays nothing.
Naming: prefix ``polaris_twin_``; counters end in ``_total``; ``.suffix`` keys of the
snapshot become labels (``rpc_query_responses_total.OK`` →
``polaris_twin_rpc_responses_total{method="query",code="OK"}``); RPC and model-call
latencies are real histograms in seconds (``RpcMetrics`` keeps bucket counts) and
the snapshot's reservoir p50/p99 become ``..._recent_latency_seconds{quantile=...}``.

Thread-safety: ``prometheus_client``'s HTTP server collects on its own thread but
the store may only be read on the event-loop thread, so the collector hands the
snapshot over to the loop and waits for it (bounded).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from twin.core.errors import PortInUse
from twin.core.rpc_metrics import BUCKETS, LatencyRecorder

PREFIX = "polaris_twin_"
_RPC = re.compile(r"^rpc_(?P<m>[a-z0-9_]+?)_(?P<what>requests_total|p50_ms|p99_ms)$")
_RPC_CODE = re.compile(r"^rpc_(?P<m>[a-z0-9_]+?)_responses_total\.(?P<code>.+)$")
_MODEL = re.compile(r"^model_(?P<op>[a-z0-9_]+?)_(?P<what>seconds_total|p50_ms|p99_ms)$")
_BAD = re.compile(r"[^a-zA-Z0-9_]")

HELP = {
    "events_received_total": "Telemetry/execution/calibration events received from NATS (before validation).",
    "events_applied_total": "Events applied to the state and handed to the world model.",
    "dead_lettered_total": "Events sent to the dead-letter subject.",
    "dead_letter_publish_failures_total": "Dead-letter records that could not be published.",
    "slow_consumer_drops_total": "NATS slow-consumer errors (messages dropped by the client).",
    "messages_received_total": "NATS messages received.",
    "messages_per_second": "Events received per second over the last ~10 s.",
    "batches_applied_total": "Batches applied by the ingestion applier.",
    "queue_size": "Decoded messages waiting to be applied.",
    "queue_high_water": "Largest ingestion queue size seen.",
    "model_update_seconds_total": "Time spent in WorldModel.update on the ingestion path.",
    "series": "Time series in the store.",
    "samples_retained": "Samples currently retained in the store.",
    "store_bytes": "Bytes of numpy buffers held by the store.",
    "uptime_seconds": "Seconds since the twin started.",
    "ingest_connected": "1 while ingestion is connected to NATS.",
}


def _name(key: str) -> str:
    return PREFIX + _BAD.sub("_", key)


def _family(key: str, doc: str, labels: list[str]) -> Metric:
    if key.endswith("_total"):
        return CounterMetricFamily(_name(key[: -len("_total")]), doc, labels=labels)
    return GaugeMetricFamily(_name(key), doc, labels=labels)


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


def families(runtime: Any, snapshot: dict[str, float]) -> list[Metric]:
    """Metric families for one snapshot (plus the runtime's latency histograms)."""
    out: dict[str, Metric] = {}
    recent_rpc = GaugeMetricFamily(
        PREFIX + "rpc_recent_latency_seconds",
        "Quantiles of the last 4096 RPC latencies per method.",
        labels=["method", "quantile"],
    )
    recent_model = GaugeMetricFamily(
        PREFIX + "model_call_recent_latency_seconds",
        "Quantiles of the last 4096 world-model call durations per operation.",
        labels=["operation", "quantile"],
    )

    def add(key: str, labels: dict[str, str], value: float, doc: str | None = None) -> None:
        fam = out.get(key)
        if fam is None:
            fam = out[key] = _family(key, doc or HELP.get(key, key.replace("_", " ")), list(labels))
        fam.add_metric(list(labels.values()), value)

    from twin.core.ledger import METRIC_NAMES

    labelled = set(METRIC_NAMES.values())
    for key, value in snapshot.items():
        if "{" in key or key in labelled:
            continue  # the prediction ledger's figures: labelled families built from their source below
        if m := _RPC.match(key):
            if m["what"] != "requests_total":
                recent_rpc.add_metric(
                    [m["m"], "0.5" if m["what"] == "p50_ms" else "0.99"], value / 1000.0
                )
            continue  # requests_total is the histogram's _count
        if m := _RPC_CODE.match(key):
            add(
                "rpc_responses_total",
                {"method": m["m"], "code": m["code"]},
                value,
                "RPC responses by method and status code.",
            )
            continue
        # model_{op}_... keys come in threes from RpcMetrics; a lone *_seconds_total
        # (model_update_seconds_total: ingestion's time in update()) is a plain counter.
        if (m := _MODEL.match(key)) and f"model_{m['op']}_p50_ms" in snapshot:
            if m["what"] != "seconds_total":
                recent_model.add_metric(
                    [m["op"], "0.5" if m["what"] == "p50_ms" else "0.99"], value / 1000.0
                )
            continue  # seconds_total is the histogram's _sum
        if key.startswith("model."):
            add(
                "model_" + key[len("model.") :],
                {},
                value,
                f"World-model figure {key[len('model.') :]}.",
            )
            continue
        base, dot, label = key.partition(".")
        if base == "dead_lettered_total" and dot:
            add(
                "dead_lettered_by_reason_total",
                {"reason": label},
                value,
                "Events sent to the dead-letter subject, by reason class.",
            )
            continue
        add(key.replace(".", "_"), {}, value)

    result = list(out.values())
    rpc = getattr(runtime, "rpc_metrics", None)
    if rpc is not None:
        result.append(
            _histogram(
                "rpc_duration_seconds",
                "RPC latency as seen by the servicer.",
                "method",
                rpc.latency,
            )
        )
        result.append(
            _histogram(
                "model_call_duration_seconds",
                "World-model call duration.",
                "operation",
                rpc.model_time,
            )
        )
    result += [recent_rpc, recent_model]
    state = getattr(runtime, "state", None)
    if state is not None and hasattr(state, "ledger"):
        result += ledger_families(state.ledger.aggregates())
    return result


def ledger_families(rows: list[dict[str, Any]]) -> list[Metric]:
    """The prediction ledger's aggregates, labelled by system, model and kind."""
    from twin.core.ledger import METRIC_NAMES

    docs = {
        "recorded": "Predictions (forecasts, what-ifs, plan outcomes) recorded by the ledger.",
        "scored": "Predictions scored against the telemetry that followed.",
        "not_executed": "What-ifs and plans whose actions were not executed within their horizon.",
        "coverage": "Share of actuals inside the prediction intervals as delivered (recalibrated).",
        "coverage_raw": "Share of actuals inside the prediction intervals as the model gave them.",
        "mase": "Mean absolute scaled error of scored predictions (scale: in-sample one-step naive error).",
        "rel_error": "Mean |error| / mean |actual| of scored predictions (what-ifs: after their action).",
    }
    out: list[Metric] = []
    labels = ["system", "model", "kind"]
    for field_, name in METRIC_NAMES.items():
        fam = _family(name, docs[field_], labels)
        for r in rows:
            v = r.get(field_)
            if isinstance(v, (int, float)) and v == v:
                fam.add_metric([str(r["system"]), str(r["model"]), str(r["kind"])], float(v))
        out.append(fam)
    return out


class TwinCollector(Collector):
    """Collects ``runtime.metrics_snapshot(queue_size())`` on the event loop at scrape time."""

    def __init__(
        self,
        runtime: Any,
        queue_size: Callable[[], int] = lambda: 0,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.runtime = runtime
        self.queue_size = queue_size
        self.loop = loop
        self.timeout = timeout

    def _snapshot(self) -> dict[str, float]:
        return self.runtime.metrics_snapshot(self.queue_size())

    def _families(self) -> list[Metric]:
        return families(self.runtime, self._snapshot())

    def collect(self) -> Iterator[Metric]:
        loop = self.loop
        if loop is None or not loop.is_running() or _on_loop_thread(loop):
            yield from self._families()
            return

        async def on_loop() -> list[Metric]:
            return self._families()

        fut = asyncio.run_coroutine_threadsafe(on_loop(), loop)
        yield from fut.result(self.timeout)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the model and traffic; no fixed description


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class MetricsServer:
    """``/metrics`` over HTTP on ``port`` (prometheus_client's threaded server)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self.registry = registry
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            raise PortInUse(
                "telemetry.metrics_port", f"{self.host}:{self.port}", "--metrics-port"
            ) from exc
        self.port = self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
