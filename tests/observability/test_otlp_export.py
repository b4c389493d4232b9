"""End to end: a real OTLP receiver (the ``rotel`` collector from PyPI) gets the
twin's spans over OTLP gRPC and OTLP HTTP (protobuf); the console exporter prints them.
rotel has no file exporter, so it runs with the blackhole exporter and
``--debug-log traces --debug-log-verbosity detailed``, which prints
every received span on stdout; the test reads that back."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.ingest.embedded import EmbeddedNatsServer
from twin.observability.propagation import inject_headers
from twin.tools.loadgen import batch_message, telemetry

from support import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rotel_binary() -> Path:
    rotel = pytest.importorskip("rotel")
    path = Path(rotel.__file__).parent / "rotel-agent"
    if not path.is_file():
        pytest.skip("the rotel wheel ships no rotel-agent binary for this platform")
    return path


class Rotel:
    def __init__(self, tmp: Path) -> None:
        self.grpc_port = _free_port()
        self.http_port = _free_port()
        self.out = tmp / "rotel.out"
        self._fh = self.out.open("wb")
        self.proc = subprocess.Popen(
            [
                str(_rotel_binary()), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                "--exporter", "blackhole",
                "--debug-log", "traces", "--debug-log-verbosity", "detailed",
                "--pid-file", str(tmp / "rotel.pid"), "--log-file", str(tmp / "rotel.log"),
            ],
            stdout=self._fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rotel exited: {self.text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.grpc_port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"rotel did not listen: {self.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


@pytest.fixture
def rotel(tmp_path: Path) -> Iterator[Rotel]:
    r = Rotel(tmp_path)
    try:
        yield r
    finally:
        r.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_spans_reach_a_real_otlp_collector(
    nats_server: EmbeddedNatsServer, rotel: Rotel, protocol: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from twin.app import TwinApp
    from twin.observability.setup import instrument_app

    from support import twin_config

    port = rotel.grpc_port if protocol == "grpc" else rotel.http_port
    cfg = twin_config(
        nats_server.url,
        world_model={"implementation": "mock"},
        telemetry={"otlp_endpoint": f"127.0.0.1:{port}", "service_name": "twin-e2e"},
    )
    app = TwinApp(cfg)
    shutdown = instrument_app(app, cfg, environ={"OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    try:
        await app.start()
        producer = TracerProvider().get_tracer("producer")
        nc = await nats.connect(nats_server.url)
        gen = telemetry(seed=9, start=1_700_000_000.0)
        try:
            with producer.start_as_current_span("publish") as span:
                producer_trace = f"{span.get_span_context().trace_id:032x}"
                await nc.publish(
                    "polaris.telemetry.events.batch",
                    batch_message([next(gen) for _ in range(20)]),
                    headers=inject_headers(),
                )
            await nc.flush()
            await wait_for(lambda: app.runtime.ingest_stats.events_applied >= 20)
        finally:
            await nc.drain()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            resp = await pb_grpc.DigitalTwinStub(ch).Query(
                pb.QueryRequest(
                    query_id="e2e", query_type="current_state", parameters={"system": "swim"}
                )
            )
        assert resp.success
    finally:
        await app.stop()
        await asyncio.to_thread(shutdown)  # flushes the batch span processor to rotel

    deadline = time.monotonic() + 15
    want = (
        "service.name: Str(twin-e2e)",
        "Name           : process polaris.telemetry.events.batch",
        "Name           : world_model.query",
        "/polaris.digitaltwin.DigitalTwin/Query",
        "polaris.system: Str(swim)",
    )
    while not all(w in rotel.text() for w in want):
        if time.monotonic() > deadline:
            pytest.fail(f"spans missing at the collector; it printed:\n{rotel.text()[-4000:]}")
        await asyncio.sleep(0.1)
    assert producer_trace in rotel.text()  # the batch span's link to the producer's span


def test_console_exporter_prints_spans_and_none_switches_tracing_off() -> None:
    """OTEL_TRACES_EXPORTER=console: spans as JSON on stdout (a separate process)."""
    import os
    import subprocess
    import sys

    from support import ROOT

    code = (
        "from support import twin_config\n"
        "from twin.observability.tracing import configure_tracing\n"
        "from opentelemetry import trace\n"
        "import os\n"
        "p = configure_tracing(twin_config(None), dict(os.environ))\n"
        "print('provider', p is not None)\n"
        "if p is not None:\n"
        "    with trace.get_tracer('t').start_as_current_span('console-span'):\n"
        "        pass\n"
        "    p.shutdown()\n"
    )

    def run(exporter: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(OTEL_TRACES_EXPORTER=exporter, PYTHONPATH=str(ROOT / "tests"))
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
            cwd=str(ROOT / "tests"),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    printed = run("console")
    assert "provider True" in printed and '"name": "console-span"' in printed
    assert "provider False" in run("none")
    assert "provider False" in run("otlp")  # OTLP without an endpoint: nothing to send to


def test_exporter_and_protocol_selection() -> None:
    from twin.observability.tracing import otlp_protocol, traces_exporters

    from support import twin_config

    cfg = twin_config(None, telemetry={"otlp_endpoint": "collector:4317"})
    assert traces_exporters(cfg, {}) == ["otlp"]
    assert traces_exporters(cfg, {"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp", "console"]
    assert traces_exporters(cfg, {"OTEL_TRACES_EXPORTER": "none"}) == []
    assert traces_exporters(cfg, {"OTEL_SDK_DISABLED": "true"}) == []
    assert traces_exporters(twin_config(None), {"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    with pytest.raises(ValueError, match="zipkin"):
        traces_exporters(cfg, {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert otlp_protocol({}) == "grpc"
    assert otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == "http/protobuf"
    assert (
        otlp_protocol(
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            }
        )
        == "http/protobuf"
    )
    with pytest.raises(ValueError):
        otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
