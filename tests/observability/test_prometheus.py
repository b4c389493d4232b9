"""``/metrics``: every ``get_metrics`` figure scraped over HTTP from a live twin,
with conventional names, units and latency histograms."""

from __future__ import annotations

import asyncio
import math
import socket
import urllib.request

import grpc
import nats
import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.ingest.embedded import EmbeddedNatsServer
from twin.observability.prometheus import families
from twin.tools.loadgen import batch_message, telemetry


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
    registry = CollectorRegistry(auto_describe=False)
    app = await instrumented_twin(
        nats_server.url, registry=registry, telemetry={"metrics_port": port}
    )
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

    m = await asyncio.to_thread(_scrape, port)  # the HTTP server hands the read to the event loop

    def one(name: str, **labels: str) -> float:
        return m[name][tuple(sorted(labels.items()))]

    assert one("polaris_twin_events_applied_total") == 100
    assert one("polaris_twin_events_received_total") == 102
    assert one("polaris_twin_messages_received_total") == 3
    assert one("polaris_twin_dead_lettered_total") == 2
    assert one("polaris_twin_dead_lettered_by_reason_total", reason="invalid_json") == 1
    assert sum(m["polaris_twin_dead_lettered_by_reason_total"].values()) == 2
    assert one("polaris_twin_series") == len(app.runtime.state.store)
    assert one("polaris_twin_samples_retained") == app.runtime.state.store.sample_count
    assert one("polaris_twin_store_bytes") > 0
    assert one("polaris_twin_ingest_connected") == 1
    assert one("polaris_twin_queue_size") == 0
    assert one("polaris_twin_uptime_seconds") > 0
    assert one("polaris_twin_model_update_seconds_total") >= 0
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


def test_every_snapshot_key_is_exposed() -> None:
    """Checked offline against a hand-made snapshot with every kind of key."""
    from twin.core.rpc_metrics import RpcMetrics

    rpc = RpcMetrics()
    rpc.observe_rpc("Simulate", 0.02, "OK")
    rpc.observe_model("simulate", 0.01)

    class Rt:
        rpc_metrics = rpc

    snap = {
        "events_applied_total": 5.0,
        "queue_size": 1.0,
        "dead_lettered_total": 2.0,
        "dead_lettered_total.oversize": 2.0,
        "rpc_simulate_requests_total": 1.0,
        "rpc_simulate_p50_ms": 20.0,
        "rpc_simulate_p99_ms": 20.0,
        "rpc_simulate_responses_total.OK": 1.0,
        "model_simulate_seconds_total": 0.01,
        "model_simulate_p50_ms": 10.0,
        "model_simulate_p99_ms": 10.0,
        "model.forecasters": 3.0,
        "model_update_seconds_total": 1.5,
        "snapshots_written_total": 4.0,
    }
    registry = CollectorRegistry(auto_describe=False)

    class C:
        def collect(self):
            return families(Rt(), snap)

    registry.register(C())  # type: ignore[arg-type]
    g = registry.get_sample_value
    assert g("polaris_twin_events_applied_total") == 5
    assert g("polaris_twin_queue_size") == 1
    assert g("polaris_twin_dead_lettered_total") == 2
    assert g("polaris_twin_dead_lettered_by_reason_total", {"reason": "oversize"}) == 2
    assert g("polaris_twin_rpc_duration_seconds_count", {"method": "simulate"}) == 1
    assert g("polaris_twin_rpc_duration_seconds_bucket", {"method": "simulate", "le": "0.025"}) == 1
    assert g("polaris_twin_rpc_duration_seconds_bucket", {"method": "simulate", "le": "0.01"}) == 0
    assert (
        g("polaris_twin_rpc_recent_latency_seconds", {"method": "simulate", "quantile": "0.5"})
        == 0.02
    )
    assert g("polaris_twin_rpc_responses_total", {"method": "simulate", "code": "OK"}) == 1
    assert g("polaris_twin_model_call_duration_seconds_sum", {"operation": "simulate"}) == 0.01
    assert (
        g(
            "polaris_twin_model_call_recent_latency_seconds",
            {"operation": "simulate", "quantile": "0.99"},
        )
        == 0.01
    )
    assert g("polaris_twin_model_forecasters") == 3
    assert (
        g("polaris_twin_model_update_seconds_total") == 1.5
    )  # ingestion's update() time, not a model call
    assert g("polaris_twin_snapshots_written_total") == 4  # runtime.extra_metrics keys pass through


async def test_metrics_port_zero_starts_no_server(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    app = await instrumented_twin(nats_server.url)
    assert getattr(app, "metrics_server", None) is None


def test_prediction_ledger_figures_are_labelled_by_system_model_and_kind() -> None:
    import numpy as np

    from twin.core.events import Point
    from twin.core.ledger import TrackInput
    from twin.core.rpc_metrics import RpcMetrics
    from twin.core.state import TwinState

    state = TwinState()
    state.apply_points([Point("web", "cpu", 100.0 + 10 * i, 50.0, "pct", None) for i in range(50)])
    t = state.store.get("web", "cpu").last_t + 10.0 * np.arange(1, 4)
    m = np.full(3, 50.0)
    state.ledger.record(state.store, "f", "web", "statistical", "forecast", [TrackInput("cpu", t, m, m - 1, m + 1)], 0.9)
    state.ledger.record(state.store, "w", "web", "statistical", "what_if", [TrackInput("cpu", t, m)], actions=[("ADD_SERVER", "web")])
    state.apply_points([Point("web", "cpu", float(x), 50.5, "pct", None) for x in t])
    assert state.ledger.score_due(state.store, state.actions) == 2

    class Rt:
        rpc_metrics = RpcMetrics()

    Rt.state = state  # type: ignore[attr-defined]
    snap = {**state.ledger.totals(), **state.ledger.labelled_metrics()}
    assert snap['predictions_scored_total{kind="forecast",model="statistical",system="web"}'] == 1
    registry = CollectorRegistry(auto_describe=False)

    class C:
        def collect(self):
            return families(Rt(), snap)

    registry.register(C())  # type: ignore[arg-type]
    g = registry.get_sample_value
    lab = {"system": "web", "model": "statistical", "kind": "forecast"}
    assert g("polaris_twin_predictions_recorded_total", lab) == 1
    assert g("polaris_twin_predictions_scored_total", lab) == 1
    assert g("polaris_twin_prediction_interval_coverage", lab) == 1.0
    assert g("polaris_twin_predictions_not_executed_total", {**lab, "kind": "what_if"}) == 1
    assert g("polaris_twin_forecast_interval_coverage") == 1.0
    assert g("polaris_twin_predictions_recorded_total") is None, "no unlabelled twin of a labelled family"
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    assert text.count("# TYPE polaris_twin_predictions_scored_total counter") == 1
