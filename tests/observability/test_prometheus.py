"""``/metrics`` and ``get_metrics``: one registry rendered twice. Scraped over HTTP
from a live twin with conventional names, units, histograms and the standard
process/python collectors; ``get_metrics`` is the same samples under the flat names."""

from __future__ import annotations

import asyncio
import math
import socket
import urllib.request

import grpc
import nats
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

import twin
from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.core.metrics import Figures, flat_view, new_registry
from twin.ingest.embedded import EmbeddedNatsServer
from twin.tools.loadgen import batch_message, telemetry

from support import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_scrape_reports_ingestion_dead_letters_and_rpc_histograms(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    port = free_port()
    app = await instrumented_twin(nats_server.url, telemetry={"metrics_port": port})
    gen = telemetry(seed=5, start=1_700_000_000.0)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish(
            "polaris.telemetry.events.batch", batch_message([next(gen) for _ in range(100)])
        )
        await nc.publish("polaris.telemetry.events.stream", b"not json")
        await nc.publish(
            "polaris.telemetry.events.stream",
            orjson.dumps({"name": "x", "value": 1, "timestamp": "yesterday"}),
        )
        await nc.flush()
        await wait_for(
            lambda: (
                app.runtime.ingest_stats.events_applied >= 100
                and app.runtime.ingest_stats.dead_lettered >= 2
            )
        )
    finally:
        await nc.drain()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        stub = pb_grpc.DigitalTwinStub(ch)
        for _ in range(3):
            await stub.Query(
                pb.QueryRequest(
                    query_id="q", query_type="current_state", parameters={"system": "swim"}
                )
            )
        await stub.Manage(pb.ManagementRequest(operation="health_check"))
        flat = await stub.Manage(pb.ManagementRequest(operation="get_metrics"))

    m = await asyncio.to_thread(_scrape, port)  # the HTTP server hands the read to the event loop

    def one(name: str, **labels: str) -> float:
        return m[name][tuple(sorted(labels.items()))]

    assert one("polaris_twin_events_applied_total") == 100
    assert one("polaris_twin_events_received_total") == 102
    assert sum(m["polaris_twin_messages_received_total"].values()) == 3
    assert (
        one("polaris_twin_messages_received_total", subject="polaris.telemetry.events.stream") == 2
    )
    # one dead-letter counter, labelled by reason
    assert one("polaris_twin_dead_lettered_total", reason="invalid_json") == 1
    assert sum(m["polaris_twin_dead_lettered_total"].values()) == 2
    assert "polaris_twin_dead_lettered_by_reason_total" not in m
    assert one("polaris_twin_series") == len(app.runtime.state.store)
    assert one("polaris_twin_samples_retained") == app.runtime.state.store.sample_count
    assert one("polaris_twin_store_bytes") > 0
    assert one("polaris_twin_ingest_connected") == 1
    assert one("polaris_twin_queue_size") == 0
    assert one("polaris_twin_model_update_seconds_total") >= 0
    assert one("polaris_twin_build_info", version=twin.__version__, model="mock") == 1
    # standard collectors; no precomputed rates or uptime
    assert one("process_start_time_seconds") > 0 and "python_info" in m
    assert not [n for n in m if "per_second" in n or "uptime" in n]
    # RPC latency: a histogram in seconds, per method, consistent with its count
    assert one("polaris_twin_rpc_duration_seconds_count", method="query") == 3
    assert one("polaris_twin_rpc_duration_seconds_bucket", method="query", le="+Inf") == 3
    assert 0 < one("polaris_twin_rpc_duration_seconds_sum", method="query") < 10
    assert one("polaris_twin_rpc_responses_total", method="query", code="OK") == 3
    assert one("polaris_twin_model_call_duration_seconds_count", operation="query") == 3
    p99 = one("polaris_twin_rpc_recent_latency_seconds", method="query", quantile="0.99")
    assert 0 < p99 < 10 and math.isfinite(p99)
    buckets = sorted(
        (float(dict(k)["le"]), v)
        for k, v in m["polaris_twin_rpc_duration_seconds_bucket"].items()
        if dict(k)["method"] == "query"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative

    # get_metrics renders the same registry under the documented flat names
    g = {k: float(v) for k, v in flat.metrics.items()}
    assert g["events_applied_total"] == 100 and g["events_received_total"] == 102
    assert g["dead_lettered_total"] == 2 and g["dead_lettered_total.invalid_json"] == 1
    assert g["rpc_query_requests_total"] == 3 and g["rpc_query_responses_total.OK"] == 3
    assert g["rpc_query_p99_ms"] > 0 and g["model_query_seconds_total"] > 0
    assert g["uptime_seconds"] > 0 and "messages_per_second" in g  # get_metrics-only figures
    assert not [k for k in g if k.startswith(("process_", "python_", "build_info"))]


def test_a_component_adds_a_metric_in_one_place() -> None:
    """A prometheus_client metric on the registry, or a figure read at scrape time,
    appears under /metrics' name and get_metrics' flat name with no other edit."""
    registry = new_registry()
    plans = Counter("polaris_twin_plans_compared", "Plans ranked.", ["system"], registry=registry)
    plans.labels("swim").inc(3)
    plans.labels("web").inc()
    Histogram("polaris_twin_plan_seconds", "Plan time.", registry=registry).observe(0.2)
    kept = {"n": 7}
    f = Figures(registry)
    f.gauge("ledger_open_predictions", "Predictions waiting for reality.", lambda: kept["n"])
    f.counter("dead_lettered", "Dead letters.", dict, ["reason"])

    flat = flat_view(registry)
    assert flat["plans_compared_total"] == 4
    assert flat["plans_compared_total.swim"] == 3 and flat["plans_compared_total.web"] == 1
    assert flat["ledger_open_predictions"] == 7
    assert flat["dead_lettered_total"] == 0  # a labelled counter's sum exists before any sample
    assert not [k for k in flat if k.startswith("plan_seconds")]  # histograms: Prometheus only
    kept["n"] = 9
    assert flat_view(registry)["ledger_open_predictions"] == 9  # read at scrape time
    g = registry.get_sample_value
    assert g("polaris_twin_plans_compared_total", {"system": "swim"}) == 3
    assert g("polaris_twin_ledger_open_predictions") == 9


async def test_metrics_port_zero_starts_no_server(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    app = await instrumented_twin(nats_server.url)
    assert app.metrics_server is None


def test_prediction_ledger_figures_are_labelled_by_system_model_and_kind() -> None:
    import numpy as np

    from twin.core.events import Point
    from twin.core.ledger import TrackInput
    from twin.core.metrics import flat_view
    from twin.core.state import TwinState
    from twin.observability.ledger_metrics import LedgerCollector

    state = TwinState()
    state.apply_points([Point("web", "cpu", 100.0 + 10 * i, 50.0, "pct", None) for i in range(50)])
    registry = CollectorRegistry(auto_describe=False)
    LedgerCollector(registry, lambda: state.ledger)
    before = flat_view(registry)
    assert before["predictions_recorded_total"] == 0
    assert "forecast_interval_coverage" not in before, "no coverage before anything was scored"
    t = state.store.get("web", "cpu").last_t + 10.0 * np.arange(1, 4)
    m = np.full(3, 50.0)
    state.ledger.record(
        state.store,
        "f",
        "web",
        "statistical",
        "forecast",
        [TrackInput("cpu", t, m, m - 1, m + 1)],
        0.9,
    )
    state.ledger.record(
        state.store,
        "w",
        "web",
        "statistical",
        "what_if",
        [TrackInput("cpu", t, m)],
        actions=[("ADD_SERVER", "web")],
    )
    state.apply_points([Point("web", "cpu", float(x), 50.5, "pct", None) for x in t])
    assert state.ledger.score_due(state.store, state.actions) == 2
    g = registry.get_sample_value
    lab = {"system": "web", "model": "statistical", "kind": "forecast"}
    assert g("polaris_twin_predictions_recorded_total", lab) == 1
    assert g("polaris_twin_predictions_scored_total", lab) == 1
    assert g("polaris_twin_forecast_interval_coverage", lab) == 1.0
    assert g("polaris_twin_predictions_not_executed_total", {**lab, "kind": "what_if"}) == 1
    assert g("polaris_twin_forecast_interval_coverage") is None, "labelled only"
    assert g("polaris_twin_whatif_error_ratio", lab) is None, "forecasts have MASE, not this"
    assert g("polaris_twin_predictions_recorded_total") is None, (
        "no unlabelled twin of a labelled family"
    )
    flat = flat_view(registry)
    assert flat["predictions_recorded_total"] == 2  # the sum over the labelled samples
    assert flat["predictions_scored_total.web.statistical.forecast"] == 1
    assert flat["forecast_interval_coverage"] == 1.0  # the overall figure (forecasts, pooled)
    assert flat["forecast_interval_coverage.web.statistical.forecast"] == 1.0
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    assert text.count("# TYPE polaris_twin_predictions_scored_total counter") == 1
