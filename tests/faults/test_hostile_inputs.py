"""The hostile-input suite of issue 17: one test per defect, each against a real twin on a
real nats-server, asserting exact outcomes (defects 0 and 12 have their own files:
tests/faults/test_jetstream_lost_delivery.py and tests/ingest/test_subscription_confirmed.py).
"""

from __future__ import annotations

import logging
import time

import grpc
import orjson
import pytest
from faults.js_harness import manage, metrics

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.models.base import Health
from twin.models.mock import MockWorldModel
from twin.models.registry import register_model

from support import wait_for

PASSWORD = "S3cr3tPass"


async def test_defect8_get_config_and_logs_redact_every_url_of_a_list(
    nats_server, make_twin, channel_for, caplog
) -> None:
    host_port = nats_server.url.removeprefix("nats://")
    url = f"nats://twin:{PASSWORD}@{host_port},nats://twinuser:{PASSWORD}x@127.0.0.1:1"
    caplog.set_level(logging.INFO)
    app = await make_twin(url)
    resp = await manage(channel_for(app), "get_config")
    assert resp.success
    assert PASSWORD not in resp.result and "twin:" not in resp.result
    assert "nats://***@127.0.0.1:1" in resp.result
    shown = "\n".join(logging.Formatter("%(message)s").format(r) for r in caplog.records)
    # The records themselves: every place that logs a URL passes it through the redactor.
    assert PASSWORD not in shown


async def test_defect7_a_failing_snapshot_degrades_health_backs_off_and_recovers(
    nats_server, nc, make_twin, channel_for, tmp_path, monkeypatch
) -> None:
    from twin.durability import manager

    real_encode = manager.encode
    attempts: list[float] = []

    def encode_failing_three_times(snap):  # type: ignore[no-untyped-def]
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise RecursionError("maximum recursion depth exceeded while encoding")
        return real_encode(snap)

    monkeypatch.setattr(manager, "encode", encode_failing_three_times)
    monkeypatch.setattr(manager, "RETRY_FIRST_SEC", 0.2)
    app = await make_twin(
        nats_server.url, state={"snapshot_dir": str(tmp_path), "snapshot_interval_sec": 0.05}
    )
    ch = channel_for(app)
    await nc.publish(
        "polaris.telemetry.events.stream",
        orjson.dumps({"name": "cpu", "value": 1.0, "source": "s"}),
    )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 1)
    await wait_for(lambda: len(attempts) >= 1)
    health = await manage(ch, "health_check")
    assert health.health_status.status == "degraded"
    assert any(
        "snapshot failed 1 time(s) in a row" in issue for issue in health.health_status.issues
    )
    await wait_for(lambda: len(attempts) >= 4, timeout=20)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[1] > 1.5 * gaps[0] and gaps[2] > 1.5 * gaps[1]  # backoff, not a hot loop
    await wait_for(lambda: app.durability is not None and app.durability.snapshots_written >= 1)
    m = await metrics(ch)
    assert m["snapshot_failures_total"] == 3 and m["snapshot_failures_in_a_row"] == 0
    assert (await manage(ch, "health_check")).health_status.status == "healthy"
    assert [p.suffix for p in tmp_path.iterdir()] == [".pts"]


class _BreaksUntilReloaded(MockWorldModel):
    """Healthy until told to break (``broken`` setting), healthy again only after a reload
    whose count reaches ``heals_after`` (0 = never)."""

    name = "breaks_test"
    broken = True
    reloads = 0

    async def health(self) -> Health:
        base = await super().health()
        if type(self).broken:
            return Health(
                "unhealthy", ["lost its client"], base.performance_metrics, self.name, "0"
            )
        return base

    async def reload(self, settings=None) -> None:  # type: ignore[no-untyped-def]
        cls = type(self)
        cls.reloads += 1
        heals_after = int(self.settings.get("heals_after", 1))
        if heals_after and cls.reloads >= heals_after:
            cls.broken = False


def _breaking_model() -> str:
    cls = type("BreaksUntilReloaded", (_BreaksUntilReloaded,), {"broken": True, "reloads": 0})
    register_model(_BreaksUntilReloaded.name, cls)
    return _BreaksUntilReloaded.name


async def test_defect11_health_is_checked_on_its_interval_and_a_failed_model_is_reloaded(
    nats_server, make_twin, channel_for
) -> None:
    name = _breaking_model()
    app = await make_twin(
        nats_server.url,
        model=name,
        world_model={
            "health_check_interval_sec": 0.1,
            "reload_on_failure": True,
            "settings": {"heals_after": 1},
        },
    )
    ch = channel_for(app)
    await wait_for(lambda: app.supervisor.reloads == 1)
    await wait_for(
        lambda: app.supervisor.last is not None and app.supervisor.last.status == "healthy"
    )
    m = await metrics(ch)
    assert m["model_reloads_on_failure_total"] == 1 and m["model_health_checks_total"] >= 2
    assert (await manage(ch, "health_check")).health_status.status == "healthy"


async def test_defect11_without_reload_on_failure_the_model_is_only_watched(
    nats_server, make_twin, channel_for
) -> None:
    name = _breaking_model()
    app = await make_twin(
        nats_server.url,
        model=name,
        world_model={"health_check_interval_sec": 0.05, "reload_on_failure": False},
    )
    await wait_for(lambda: app.supervisor.checks >= 5)
    assert app.supervisor.reloads == 0 and app.supervisor.last is not None
    assert app.supervisor.last.status == "unhealthy"


async def test_defect11_a_model_that_cannot_recover_is_reloaded_with_backoff(
    nats_server, make_twin
) -> None:
    name = _breaking_model()
    app = await make_twin(
        nats_server.url,
        model=name,
        world_model={
            "health_check_interval_sec": 0.02,
            "reload_on_failure": True,
            "settings": {"heals_after": 0},
        },
    )
    await wait_for(lambda: app.supervisor.checks >= 40, timeout=30)
    # Reloads at checks 1, 2, 4, 8, 16, 32 (backoff doubling): far fewer than the checks.
    assert 3 <= app.supervisor.reloads <= 7


async def _query(ch, **params: str):  # type: ignore[no-untyped-def]
    stub = pb_grpc.DigitalTwinStub(ch)
    return await stub.Query(pb.QueryRequest(query_type="historical", parameters=params), timeout=10)


async def _invalid(ch, **params: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _query(ch, **params)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value.details()


async def test_defect4_one_request_cannot_make_the_twin_scan_without_bound(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await make_twin(
        nats_server.url, limits={"max_scanned_samples": 2500, "max_points_returned": 1000}
    )
    events = [
        {"name": f"m{k}", "value": float(i), "source": "s", "timestamp": 1_700_000_000.0 + i}
        for k in range(3)
        for i in range(1000)
    ]
    for i in range(0, len(events), 500):
        await nc.publish(
            "polaris.telemetry.events.batch", orjson.dumps({"events": events[i : i + 500]})
        )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 3000)
    ch = channel_for(app)
    # The issue's attack: one metric named 100,000 times.
    assert "limits.max_parameter_length" in await _invalid(ch, metric=",".join(["m0"] * 100_000))
    # Repeats are one series, not a thousand scans of it.
    one = orjson.loads((await _query(ch, metric=",".join(["m0"] * 1000), max_points="10")).result)
    assert list(one["systems"]["s"]) == ["m0"] and one["systems"]["s"]["m0"]["samples"] == 1000
    assert "limits.max_query_metrics" in await _invalid(
        ch, metric=",".join(f"x{i}" for i in range(101))
    )
    assert "limits.max_scanned_samples" in await _invalid(ch, metric="m0,m1,m2")  # 3000 samples
    assert "limits.max_points_returned" in await _invalid(ch, metric="m0,m1", max_points="1000")
    narrow = await _query(
        ch, metric="m0,m1,m2", start="1700000500", end="1700000599", max_points="50"
    )
    assert narrow.success and orjson.loads(narrow.result)["systems"]["s"]["m2"]["samples"] == 100
    stub = pb_grpc.DigitalTwinStub(ch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Query(
            pb.QueryRequest(
                query_type="current_state", parameters={f"k{i}": "v" for i in range(65)}
            ),
            timeout=10,
        )
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "limits.max_request_parameters" in err.value.details()
    )
    assert (await manage(ch, "health_check")).health_status.status == "healthy"
