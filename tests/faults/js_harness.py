"""Shared by the durability, fault and fuzz tests (import as ``faults.js_harness``).

- ``make_events``: deterministic telemetry whose per-series count and sum are exact in
  float64 (integer values), so "applied exactly once" is an equality, not a tolerance.
- ``JsPublisher``: publishes through JetStream with a ``Nats-Msg-Id`` per message and
  retries until the stream acknowledged it, so "published" means "stored once".
- gRPC helpers that audit a twin only through its public API (``Manage series_stats``,
  ``get_metrics``, ``Query``): no back doors into the process.
- ``TwinProcess``: a real ``polaris-twin`` subprocess from a config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import grpc
import orjson
import yaml

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc

STREAM = "polaris.telemetry.events.stream"
BATCH = "polaris.telemetry.events.batch"
EXECUTION = "polaris.execution.results"
CALIBRATE = "polaris.digitaltwin.calibrate"
ERRORS = "polaris.digitaltwin.errors"
T0 = 1_700_000_000.0

Expected = dict[tuple[str, str], tuple[int, float]]


def make_events(
    n: int, series: int = 10, start: int = 0, name: str = "load"
) -> list[dict[str, Any]]:
    """Event i: source ``sys{i % series}``, integer value, unique event time."""
    return [
        {
            "name": name,
            "value": float(i % 997),
            "unit": "u",
            "source": f"sys{i % series}",
            "timestamp": T0 + i * 0.001,
        }
        for i in range(start, start + n)
    ]


def expected_of(events: Iterable[dict[str, Any]]) -> Expected:
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for ev in events:
        a = acc[(ev["source"], ev["name"].lower().replace("_", "."))]
        a[0] += 1
        a[1] += ev["value"]
    return {k: (int(v[0]), float(v[1])) for k, v in acc.items()}


def batch_payload(events: list[dict[str, Any]], batch_id: str = "") -> bytes:
    return orjson.dumps({"batch_id": batch_id, "count": len(events), "events": events})


def batches(events: list[dict[str, Any]], size: int = 100) -> list[tuple[str, bytes, str]]:
    """(subject, payload, msg id) per batch message."""
    out = []
    for i in range(0, len(events), size):
        chunk = events[i : i + size]
        mid = f"b-{chunk[0]['source']}-{chunk[0]['timestamp']:.3f}-{len(chunk)}"
        out.append((BATCH, batch_payload(chunk, mid), mid))
    return out


class JsPublisher:
    """Publishes with PubAck + ``Nats-Msg-Id`` and retries through outages."""

    def __init__(self, nc: Any, timeout: float = 2.0) -> None:
        self.js = nc.jetstream(timeout=timeout)
        self.acked = 0
        self.duplicates = 0
        self.retries = 0

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, give_up_after: float = 60.0
    ) -> None:
        deadline = time.monotonic() + give_up_after
        while True:
            try:
                ack = await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
                if ack.duplicate:
                    self.duplicates += 1
                self.acked += 1
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(0.1)

    async def publish_all(
        self, messages: list[tuple[str, bytes, str]], pause_every: int = 0, pause: float = 0.0
    ) -> None:
        for i, (subject, payload, mid) in enumerate(messages):
            await self.publish(subject, payload, mid)
            if pause_every and i % pause_every == pause_every - 1:
                await asyncio.sleep(pause)


async def create_stream(nc: Any, name: str = "POLARIS_TWIN") -> None:
    """The stream a twin would create, for tests that publish before any twin runs."""
    await nc.jetstream().add_stream(name=name, subjects=[STREAM, BATCH, EXECUTION, CALIBRATE])


# ------------------------------------------------------------------ gRPC audits
async def manage(
    channel: grpc.aio.Channel, op: str, timeout: float = 10.0, **params: str
) -> pb.ManagementResponse:
    stub = pb_grpc.DigitalTwinStub(channel)
    return await stub.Manage(pb.ManagementRequest(operation=op, parameters=params), timeout=timeout)


async def metrics(channel: grpc.aio.Channel) -> dict[str, float]:
    resp = await manage(channel, "get_metrics")
    return {k: float(v) for k, v in resp.metrics.items()}


async def applied_by_series(channel: grpc.aio.Channel) -> Expected:
    resp = await manage(channel, "series_stats")
    assert resp.success, resp.result
    data = orjson.loads(resp.result)
    return {
        (src, m): (int(v["count"]), float(v["sum"]))
        for src, ms in data["by_series"].items()
        for m, v in ms.items()
    }


def total(stats: Expected) -> int:
    return sum(c for c, _ in stats.values())


async def wait_applied(channel: grpc.aio.Channel, n: int, timeout: float = 60.0) -> float:
    """Polls ``series_stats`` until ``n`` samples are held; returns the seconds it took."""
    t0 = time.monotonic()
    last = -1
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(grpc.aio.AioRpcError):
            last = total(await applied_by_series(channel))
            if last >= n:
                return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {last} of {n} samples applied within {timeout}s")


# ------------------------------------------------------------ a real twin process
_PORT = re.compile(r"gRPC listening on \S+:(\d+)")


def twin_executable() -> list[str]:
    exe = Path(sys.executable).parent / "polaris-twin"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "twin.cli"]


class TwinProcess:
    """``polaris-twin --config FILE`` as a child process; the gRPC port is read from its log."""

    def __init__(
        self, workdir: Path, digital_twin: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "twin.yaml"
        self.config_path.write_text(yaml.safe_dump({"digital_twin": digital_twin}))
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.runs = 0
        self.log_path = workdir / "twin-0.log"

    async def start(self, timeout: float = 30.0) -> int:
        self.runs += 1
        self.log_path = self.workdir / f"twin-{self.runs}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*twin_executable(), "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )  # noqa: ASYNC220 - Popen returns at once
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = _PORT.search(self.log_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"twin exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            await asyncio.sleep(0.05)
        raise AssertionError(f"twin did not report its gRPC port:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    async def terminate(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        return self.proc.returncode


async def wait_ready(channel: grpc.aio.Channel, timeout: float = 30.0) -> None:
    """Until the twin answers Manage health_check (it may still be replaying)."""
    end = time.monotonic() + timeout
    while True:
        try:
            await manage(channel, "health_check", timeout=2.0)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)


class NatsProcess:
    """nats-server with extra flags (auth, TLS) on a random port; ``async with``."""

    def __init__(self, *extra: str, jetstream: bool = True, store_dir: str | None = None) -> None:
        self.extra = list(extra)
        self.jetstream = jetstream
        self.store_dir = store_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        from twin.ingest.embedded import find_nats_server

        args = [find_nats_server(), "-a", "127.0.0.1", "-p", "-1", *self.extra]
        if self.jetstream:
            import tempfile

            args += ["-js", "-sd", self.store_dir or tempfile.mkdtemp(prefix="polaris-nats-test-")]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self.proc.stderr is not None
        seen = b""
        async with asyncio.timeout(15):
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    raise AssertionError(
                        f"nats-server exited: {seen.decode(errors='replace')[-2000:]}"
                    )
                seen += line
                m = re.search(rb"Listening for client connections on \S*?:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                if b"Server is ready" in line and self.port:
                    break
        self._drain = asyncio.create_task(self._drain_stderr())
        return self

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while await self.proc.stderr.readline():
            pass

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)


def report_fault(
    fault: str,
    published: int,
    applied: int,
    duplicates: int,
    recovery_s: float | None,
    note: str = "",
) -> None:
    """One machine-readable line per fault scenario; ``bench/faults_table.py`` collects them."""
    row = {
        "fault": fault,
        "published": published,
        "applied": applied,
        "duplicates": duplicates,
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "note": note,
    }
    print("\nFAULT-ROW " + orjson.dumps(row).decode())


def duplicates_of(applied: Expected, expected: Expected) -> int:
    """Events applied more often than published, summed over series."""
    return sum(max(0, applied.get(k, (0, 0.0))[0] - n) for k, (n, _) in expected.items()) + sum(
        c for k, (c, _) in applied.items() if k not in expected
    )
