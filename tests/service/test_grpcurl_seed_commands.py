"""The seed README's grpcurl commands against a running twin, with the real grpcurl binary.

grpcurl (Go flag parsing) only reads flags before its positional arguments, so the
seed's `... /Manage -d '{...}'` spelling fails on every grpcurl ("Too many
arguments"); the README gives the working spelling with `-d` first, tested here,
and this test also pins the failure of the original spelling so the README stays honest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from support import wait_for

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def twin_addr(nats_server, nc, make_twin):
    app = await make_twin(nats_server.url)
    await nc.publish(
        "polaris.telemetry.events.stream",
        orjson.dumps({"name": "cpu_usage", "value": 12.5, "source": "web_cluster"}),
    )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 1)
    return f"localhost:{app.grpc_port}"


async def test_grpcurl_lists_services_and_methods(twin_addr) -> None:
    code, out, err = await grpcurl("-plaintext", twin_addr, "list")
    assert code == 0, err
    assert set(out.split()) >= {"polaris.digitaltwin.DigitalTwin", "grpc.health.v1.Health"}
    code, out, err = await grpcurl(
        "-plaintext", twin_addr, "list", "polaris.digitaltwin.DigitalTwin"
    )
    assert code == 0, err
    # the seed's four RPCs, plus Watch (added additively, issue 14)
    assert {
        f"polaris.digitaltwin.DigitalTwin.{m}"
        for m in ("Query", "Simulate", "Diagnose", "Manage", "Watch")
    } == set(out.split())
    code, out, err = await grpcurl(
        "-plaintext", twin_addr, "describe", "polaris.digitaltwin.QueryRequest"
    )
    assert code == 0 and "query_type = 2" in out


async def test_grpcurl_get_metrics_and_query(twin_addr) -> None:
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        '{"operation": "get_metrics"}',
        twin_addr,
        "polaris.digitaltwin.DigitalTwin/Manage",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["success"] is True and doc["metrics"]["events_applied_total"] == "1"
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        '{"query_type": "current_state", "query_content": "system status"}',
        twin_addr,
        "polaris.digitaltwin.DigitalTwin/Query",
    )
    assert code == 0, err
    assert (
        json.loads(json.loads(out)["result"])["systems"]["web_cluster"]["cpu.usage"]["value"]
        == 12.5
    )
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        '{"query_type": "bogus"}',
        twin_addr,
        "polaris.digitaltwin.DigitalTwin/Query",
    )
    assert code != 0 and "InvalidArgument" in err and "unknown query_type" in err


async def test_grpcurl_health_check(twin_addr) -> None:
    code, out, err = await grpcurl("-plaintext", twin_addr, "grpc.health.v1.Health/Check")
    assert code == 0, err
    assert json.loads(out)["status"] == "SERVING"


async def test_seed_spelling_with_flags_after_the_method_is_rejected_by_grpcurl_itself(
    twin_addr,
) -> None:
    code, _, err = await grpcurl(
        "-plaintext",
        twin_addr,
        "polaris.digitaltwin.DigitalTwin/Manage",
        "-d",
        '{"operation": "get_metrics"}',
    )
    assert code != 0 and "Too many arguments" in err
