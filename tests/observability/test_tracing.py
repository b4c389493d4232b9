"""Traces: server span per RPC, world-model spans with filterable attributes, a span
per ingested batch linked to the producers' spans through NATS headers, and trace
context carried on into dead-letter messages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import nats
import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.ingest.embedded import EmbeddedNatsServer
from twin.observability.propagation import inject_headers
from twin.observability.tracing import otlp_endpoint
from twin.tools.loadgen import batch_message, telemetry

from support import ROOT, twin_config, wait_for


def _producer_tracer() -> trace.Tracer:
    """A producer with its own provider (another process in real life)."""
    provider = TracerProvider()
    producer_spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(producer_spans))
    return provider.get_tracer("producer")


async def test_batch_span_links_to_producer_spans_and_rpc_spans_nest(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    spans = InMemorySpanExporter()
    app = await instrumented_twin(nats_server.url, span_exporter=spans)
    producer = _producer_tracer()
    gen = telemetry(seed=3, start=1_700_000_000.0)
    nc = await nats.connect(nats_server.url)
    try:
        with producer.start_as_current_span("publish batch", kind=SpanKind.PRODUCER) as pspan:
            headers = inject_headers()
            assert headers and "traceparent" in headers
            await nc.publish(
                "polaris.telemetry.events.batch",
                batch_message([next(gen) for _ in range(50)]),
                headers=headers,
            )
            producer_ctx = pspan.get_span_context()
        await nc.flush()
        await wait_for(lambda: app.runtime.ingest_stats.events_applied >= 50)
    finally:
        await nc.drain()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        resp = await pb_grpc.DigitalTwinStub(ch).Query(
            pb.QueryRequest(
                query_id="q1",
                query_type="current_state",
                parameters={"system": "swim", "metric": "cpu_usage,dimmer"},
            )
        )
    # cpu_usage belongs to web_cluster, so the model answers "unknown metric": success=false
    assert not resp.success

    finished = spans.get_finished_spans()
    applies = [s for s in finished if s.name == "process polaris.telemetry.events.batch"]
    assert applies, [s.name for s in finished]
    linked = [link.context for s in applies for link in s.links]
    assert any(
        c.trace_id == producer_ctx.trace_id and c.span_id == producer_ctx.span_id for c in linked
    )
    apply = next(s for s in applies if s.links)
    assert apply.kind == SpanKind.CONSUMER
    assert apply.attributes["messaging.operation.type"] == "process"
    assert apply.attributes["messaging.destination.name"] == "polaris.telemetry.events.batch"
    assert apply.attributes["messaging.batch.message_count"] == 1
    assert apply.attributes["messaging.consumer.group.name"] == app.config.nats.queue_group
    assert apply.attributes["polaris.events"] == 50
    assert apply.attributes["polaris.linked_producers"] == 1
    assert apply.attributes["polaris.model_ok"] is True

    server = next(s for s in finished if s.kind == SpanKind.SERVER and s.name.endswith("/Query"))
    model = next(s for s in finished if s.name == "world_model.query")
    assert model.parent is not None and model.parent.span_id == server.context.span_id
    assert model.context.trace_id == server.context.trace_id
    attrs = model.attributes
    assert attrs["polaris.system"] == "swim"
    assert attrs["polaris.metric_count"] == 2
    assert attrs["polaris.model"] == "mock"
    assert attrs["polaris.operation"] == "query"
    assert attrs["polaris.query_type"] == "current_state"
    assert attrs["polaris.success"] is False
    assert "unknown metric" in attrs["polaris.explanation"]


async def test_successful_query_span_says_success(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    spans = InMemorySpanExporter()
    app = await instrumented_twin(nats_server.url, span_exporter=spans)
    app.runtime.ingest_points([])  # nothing yet: still a successful (empty) answer
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        resp = await pb_grpc.DigitalTwinStub(ch).Query(
            pb.QueryRequest(query_id="q2", query_type="current_state")
        )
    assert resp.success
    model = next(s for s in spans.get_finished_spans() if s.name == "world_model.query")
    assert model.attributes["polaris.success"] is True
    assert model.attributes["polaris.metric_count"] == 0


async def test_dead_letter_carries_the_producers_trace(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    spans = InMemorySpanExporter()
    app = await instrumented_twin(nats_server.url, span_exporter=spans)
    producer = _producer_tracer()
    nc = await nats.connect(nats_server.url)
    got: asyncio.Future[nats.aio.msg.Msg] = asyncio.get_running_loop().create_future()

    async def on_error(msg: nats.aio.msg.Msg) -> None:
        if not got.done():
            got.set_result(msg)

    try:
        await nc.subscribe(app.config.nats.error_subject, cb=on_error)
        with producer.start_as_current_span("publish bad event") as pspan:
            await nc.publish(
                "polaris.telemetry.events.stream",
                b'{"name": "9bad", "value": 1}',
                headers=inject_headers(),
            )
            trace_id = pspan.get_span_context().trace_id
        msg = await asyncio.wait_for(got, 10)
    finally:
        await nc.drain()
    record = orjson.loads(msg.data)
    assert record["subject"] == "polaris.telemetry.events.stream"
    assert msg.headers and msg.headers["traceparent"].split("-")[1] == f"{trace_id:032x}"
    dl = next(s for s in spans.get_finished_spans() if s.name == "send polaris.digitaltwin.errors")
    assert dl.kind == SpanKind.PRODUCER
    assert dl.attributes["messaging.operation.type"] == "send"
    assert dl.attributes["messaging.destination.name"] == "polaris.digitaltwin.errors"
    assert dl.context.trace_id == trace_id
    assert dl.attributes["polaris.reason"] == "regex"


async def test_untraced_messages_still_make_unlinked_batch_spans(
    nats_server: EmbeddedNatsServer, instrumented_twin
) -> None:
    spans = InMemorySpanExporter()
    app = await instrumented_twin(nats_server.url, span_exporter=spans)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish(
            "polaris.telemetry.events.stream",
            orjson.dumps({"name": "cpu_usage", "value": 3.0, "source": "web"}),
        )
        await nc.flush()
        await wait_for(lambda: app.runtime.ingest_stats.events_applied >= 1)
    finally:
        await nc.drain()
    apply = next(
        s for s in spans.get_finished_spans() if s.name == "process polaris.telemetry.events.stream"
    )
    assert not apply.links
    assert apply.attributes["polaris.events"] == 1


def test_endpoint_from_env_wins_and_can_be_switched_off() -> None:
    cfg = twin_config(None, telemetry={"otlp_endpoint": "collector:4317"})
    assert otlp_endpoint(cfg, {}) == "collector:4317"
    assert (
        otlp_endpoint(cfg, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4317"})
        == "http://other:4317"
    )
    assert (
        otlp_endpoint(
            cfg,
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4317",
            },
        )
        == "http://t:4317"
    )
    assert otlp_endpoint(cfg, {"OTEL_SDK_DISABLED": "true"}) is None
    assert otlp_endpoint(cfg, {"OTEL_TRACES_EXPORTER": "none"}) is None
    assert otlp_endpoint(twin_config(None), {}) is None


def test_sampling_ratio_from_config_is_parent_based() -> None:
    from twin.observability.tracing import configure_tracing

    cfg = twin_config(None, telemetry={"sampling_ratio": 0.25, "service_name": "twin-under-test"})
    provider = configure_tracing(cfg, {}, span_exporter=InMemorySpanExporter())
    try:
        desc = provider.sampler.get_description()
        assert "ParentBased" in desc and "0.25" in desc
        assert provider.resource.attributes["service.name"] == "twin-under-test"
    finally:
        provider.shutdown()


def test_tracing_off_imports_no_sdk_exporter_or_instrumentation() -> None:
    code = (
        "import sys, asyncio\n"
        "from support import twin_config\n"
        "from twin.app import TwinApp\n"
        "from twin.observability.setup import instrument_app\n"
        "cfg = twin_config(None)\n"
        "app = TwinApp(cfg)\n"
        "stop = instrument_app(app, cfg, environ={})\n"
        "stop()\n"
        "assert app.interceptors == [], app.interceptors\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.exporter', 'opentelemetry.instrumentation')))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = dict(
        os.environ, PYTHONPATH=str(ROOT / "tests")
    )  # not ROOT: operator/ would shadow the stdlib
    for k in [k for k in env if k.startswith("OTEL_")]:
        del env[k]
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT / "tests"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
