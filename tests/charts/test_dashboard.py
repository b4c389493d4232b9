"""The Grafana dashboard (charts/.../dashboards/polaris-twin.json): well-formed, and every query
names a metric that a live twin and a live operator really export.

The twin is a real ``polaris-twin`` process (statistical model, JetStream on a real
nats-server, its own ``systems``) fed good telemetry and bad messages and asked over gRPC,
so that the labelled families (dead letters by reason, skipped events, RPC histograms) and
the JetStream figures exist; its ``/metrics`` is scraped over HTTP. The operator's metrics
come from its own registry served by prometheus_client's HTTP server, as in the pod. A
destructive Manage call without the admin token is refused, so the denials family exists.

The prediction ledger's labelled figures (per system, model and kind: they exist once
predictions were recorded) are checked as a group: either none is exported yet, or every
name the dashboard uses is. Its overall figures (drift, refits) are always exported.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.ingest.embedded import EmbeddedNatsServer
from twin.tools.loadgen import batch_message, telemetry

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "polaris-twin-operator" / "dashboards" / "polaris-twin.json"
METRIC = re.compile(r"\b(polaris_(?:twin|operator)_[a-z0-9_]+)")
VARIABLE = re.compile(r"\$(?:\{)?([a-z_]+)")
LEDGER = {
    "polaris_twin_predictions_recorded_total",
    "polaris_twin_predictions_scored_total",
    "polaris_twin_forecast_interval_coverage",
    "polaris_twin_prediction_mase",
    "polaris_twin_whatif_error_ratio",
}
BUILTIN = {"__rate_interval", "__interval", "__range"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dash["panels"]
        for target in panel.get("targets") or []
    ]


def test_dashboard_is_well_formed():
    dash = load()
    assert dash["uid"] == "polaris-twin" and dash["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "digitaltwin"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and panel.get("description"), panel["title"]
    for title, expr in queries(dash):
        used = set(VARIABLE.findall(expr)) - BUILTIN
        assert used <= variables, f"{title}: undefined variables {used - variables}"


def test_dashboard_shows_what_operators_need():
    titles = {p["title"] for p in load()["panels"]}
    for wanted in (
        "Replay lag",
        "Skipped: other systems",
        "Forecast interval coverage",
        "Ingest rate",
        "Ingestion queue",
        "Dead letters by reason",
        "RPC latency (p50, p99)",
        "Anomalous series",
        "Reconciles",
        "Prediction drift and refits",
        "Destructive operations refused",
    ):
        assert wanted in titles
    exprs = " ".join(e for _, e in queries(load()))
    assert "sum by (reason) (rate(polaris_twin_dead_lettered_total" in exprs


# ----------------------------------------------------------------------- live metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.fixture
async def live_twin(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """A real twin process on a real nats-server: (grpc port, metrics port)."""
    server = EmbeddedNatsServer(jetstream=True)
    await server.start()
    grpc_port, metrics_port = _free_port(), _free_port()
    config = tmp_path / "twin.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "digital_twin": {
                    "systems": ["swim", "web-*"],
                    "nats": {
                        "url": server.url,
                        "queue_group": "",
                        "jetstream": {"enabled": True, "durable": "dash-0", "max_lag_sec": 60},
                    },
                    "grpc": {"host": "127.0.0.1", "port": grpc_port},
                    "world_model": {"implementation": "statistical"},
                    "telemetry": {"metrics_port": metrics_port},
                    "debugging": {"log_level": "WARNING"},
                }
            }
        )
    )
    log = (tmp_path / "twin.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from twin.cli import main; sys.exit(main())",
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # An admin token: a call without it is refused and counted (manage_denied_total).
        env={**os.environ, "POLARIS_TWIN_ADMIN_TOKEN": "dashboard-test-token"},
    )
    try:
        yield grpc_port, metrics_port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        await server.stop()


async def _serving(port: int, timeout: float = 60) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the twin never became SERVING")
            await asyncio.sleep(0.2)


async def test_every_query_names_a_metric_that_is_really_exported(live_twin, tmp_path):
    from polaris_operator.metrics import OperatorMetrics, serve

    grpc_port, metrics_port = live_twin
    await _serving(grpc_port)
    config = yaml.safe_load((tmp_path / "twin.yaml").read_text())
    nc = await nats.connect(config["digital_twin"]["nats"]["url"])
    try:
        gen = telemetry(seed=3, start=1_700_000_000.0)
        for _ in range(5):
            await nc.publish(
                "polaris.telemetry.events.batch", batch_message([next(gen) for _ in range(50)])
            )
        await nc.publish("polaris.telemetry.events.stream", b"not json")
        await nc.flush()
    finally:
        await nc.drain()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        stub = pb_grpc.DigitalTwinStub(ch)
        for _ in range(3):
            await stub.Query(pb.QueryRequest(query_type="current_state"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Manage(pb.ManagementRequest(operation="reset_state"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    exported: set[str] = set()
    for _ in range(100):  # the dead letter and the batches land asynchronously
        exported = _scrape(metrics_port)
        if "polaris_twin_dead_lettered_total" in exported:
            break
        await asyncio.sleep(0.1)

    operator_port = _free_port()
    operator_metrics = OperatorMetrics()
    serve(operator_port, operator_metrics, addr="127.0.0.1")
    operator_metrics.duration.observe(0.01)
    operator_metrics.drift_repairs.labels(resource="Deployment").inc()
    operator_metrics.pod_problems.labels(reason="CrashLoopBackOff").set(1)
    exported |= _scrape(operator_port)

    named = {(title, m) for title, expr in queries(load()) for m in METRIC.findall(expr)}
    assert {m for _, m in named} >= LEDGER
    ledger_landed = bool(LEDGER & exported)
    # The ledger's figures under other names would leave the panels empty: catch a rename.
    stems = (
        "predictions_recorded",
        "predictions_scored",
        "interval_coverage",
        "prediction_mase",
        "whatif_error",
    )
    elsewhere = {m for m in exported if any(s in m for s in stems)} - LEDGER
    elsewhere -= {"polaris_twin_forecast_interval_coverage_raw"}
    assert not elsewhere, f"the ledger exports {sorted(elsewhere)}: update the dashboard"
    missing = sorted(
        {
            f"{m} ({title})"
            for title, m in named
            if m not in exported and (ledger_landed or m not in LEDGER)
        }
    )
    assert not missing, f"dashboard queries name metrics nobody exports: {missing}"
    assert len({m for _, m in named} - LEDGER) >= 20
