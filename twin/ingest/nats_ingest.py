"""NATS ingestion engine.

Flow per message: size check → decode (msgspec, in the subscription callback) →
bad events to the dead-letter subject → good ones into a bounded ``asyncio.Queue``.
One applier task drains the queue in batches (``batch_size`` events or
``batch_timeout_sec`` after the first, whichever comes first), applies them to the
``TwinState`` and hands the batch to the world model. Stream messages without an ack
or a trace link join the stream item at the tail of the queue while it waits (up to
``batch_size`` events per item): one queue operation per batch instead of per event,
with the same batches, order and counts.

Backpressure: when the queue is full, ``put`` blocks the subscription callback, so
messages wait in nats-py's per-subscription pending buffer, which is bounded too
(``queue_maxsize`` × ``PENDING_FACTOR`` messages); past that core NATS drops
them as a slow consumer, which is counted (JetStream mode redelivers instead).
An item may carry ``ack`` (JetStream): it is called only after the batch holding
it was applied.

Tracing (when a tracer provider is installed), after OpenTelemetry's messaging
conventions: the W3C context producers put in message headers is extracted per
message and kept on the queued item; each applied batch is one CONSUMER span
``process <subject>`` (``process`` when the batch mixes subjects) *linked* to the
producers' spans (a batch mixes many producers, so links, not parenthood); a
dead-letter publish is a PRODUCER span ``send <error subject>``, child of the
offending message's producer, whose context travels on in the error message's
headers. With tracing off none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from twin.core.columns import ColumnsBuilder, SeriesColumns
from twin.core.config import NatsConfig
from twin.core.errors import IngestError
from twin.core.events import (
    CalibrationEvent,
    DecodeError,
    ExecutionResult,
    Point,
    decoder_for,
)
from twin.core.ingest_stats import IngestStats
from twin.core.metrics import Figures
from twin.core.redact import redact_text
from twin.core.state import TwinState
from twin.ingest.dead_letter import build_record, reason_class
from twin.ingest.systems import SystemFilter, calibration_system, execution_system, subject_matches
from twin.models.base import WorldModel
from twin.models.domain import EventBatch
from twin.observability.propagation import inject_headers, remote_span_context, tracing_active

try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - otel is an optional extra; tracing_active() is then False
    trace = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
PENDING_FACTOR = 8
YIELD_EVERY_SEC = 0.002  # longest stretch of decoding between two yields to the event loop
APPLY_BUDGET_SEC = 0.005  # a batch grown from the backlog holds about this much work
_monotonic = time.monotonic
MAX_LINKS = 128  # the SDK's default span link limit


@dataclass(slots=True)
class Item:
    """One decoded message waiting to be applied."""

    points: list[Point] | SeriesColumns = field(default_factory=list)  # a batch: columns
    execution: ExecutionResult | None = None
    calibration: CalibrationEvent | None = None
    ack: Callable[[], Awaitable[None]] | None = None
    link: Any = None  # the producer's SpanContext (tracing on and headers present)
    subject: str = ""  # where it came from (dead letters raised at apply time, span names)
    # A stream message without ack or trace link: later ones join it while it waits in
    # the queue (up to batch_size points) instead of each being queued on its own.
    open: bool = False

    @property
    def size(self) -> int:
        return len(self.points) + (self.execution is not None) + (self.calibration is not None)


def redact_url(url: str) -> str:
    """Drops credentials from a NATS URL (or a comma-separated list) before it is shown."""
    return redact_text(url)


def connect_options(
    cfg: NatsConfig, environ: dict[str, str] | os._Environ[str] = os.environ
) -> dict[str, Any]:
    """nats-py connect() options from config and the credential environment variables."""
    opts: dict[str, Any] = {
        # nats-py reads max_reconnect_attempts=0 as "retry forever" (it only gives up when
        # the count is > 0); we mean "never retry": smallest finite count, no reconnects.
        "max_reconnect_attempts": cfg.max_reconnect_attempts or 1,
        "reconnect_time_wait": cfg.reconnect_wait_sec,
        "allow_reconnect": cfg.max_reconnect_attempts != 0,
        "name": "polaris-digital-twin",
    }
    if environ.get("NATS_USER"):
        opts["user"] = environ["NATS_USER"]
        opts["password"] = environ.get("NATS_PASSWORD", "")
    if environ.get("NATS_TOKEN"):
        opts["token"] = environ["NATS_TOKEN"]
    if cfg.creds_file:
        opts["user_credentials"] = cfg.creds_file
    if cfg.tls_ca_file or cfg.tls_cert_file:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.tls_ca_file)
        if cfg.tls_cert_file:
            ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        opts["tls"] = ctx
    return opts


def _point_json(p: Point) -> bytes:
    """A refused point as JSON for its dead-letter record (its original bytes are gone)."""
    return orjson.dumps(
        {
            "source": p.source,
            "name": p.name,
            "timestamp": p.t,
            "unit": p.unit,
            "value": p.text if p.text is not None else p.value,
        }
    )


async def confirm_interest(nc: NatsClient, timeout: float = 10.0) -> None:
    """Returns once the server has processed every command this client sent before it.

    ``nc.flush()`` does not promise that: nats-py 2.16 writes its PING straight to the
    socket while earlier SUBs may still wait in the client's pending buffer, so the PONG
    can come back before the server knows the subscriptions, and a message published in
    that window is dropped for lack of interest (health said SERVING, the first batch
    was lost). A message to a fresh inbox travels through the same buffer, in order,
    after the SUBs: when it comes back, they are in place.
    """
    inbox = nc.new_inbox()
    echoed = asyncio.get_running_loop().create_future()

    async def on_echo(_msg: Msg) -> None:
        if not echoed.done():
            echoed.set_result(None)

    sub = await nc.subscribe(inbox, cb=on_echo)
    try:
        await nc.publish(inbox, b"")
        await asyncio.wait_for(echoed, timeout)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class Ingestor:
    """Owns the NATS connection, the subscriptions, the queue and the applier task."""

    def __init__(
        self,
        cfg: NatsConfig,
        state: TwinState,
        model: Callable[[], WorldModel],
        stats: IngestStats | None = None,
        *,
        twin_id: str = "",
        on_status: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        systems: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        # digital_twin.systems: records of other systems are skipped and counted.
        self.systems = SystemFilter(systems)
        self._subject_of: dict[str, str] = {s: s for s in cfg.subjects}
        self.state = state
        self._model = model
        self.stats = stats or IngestStats()
        self.twin_id = twin_id
        self._on_status = on_status
        self._clock = clock
        self.nc: NatsClient | None = None
        # Every limit is checked here, once, by the decoders (twin.core.limits).
        self.decoder = decoder_for(state.limits)
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=cfg.queue_maxsize)
        self._applier: asyncio.Task[None] | None = None
        self.connected = False
        self.closed_unexpectedly = asyncio.Event()
        self._stopping = False
        self._last_yield = 0.0
        self._cost_per_event = 1e-5  # seconds to apply one event, moving average
        if registry is not None:
            Figures(registry).gauge(
                "queue_size", "Decoded messages waiting to be applied.", self.queue.qsize
            )

    # ----------------------------------------------------------------- lifecycle
    async def start(self, url: str) -> None:
        """Connects (retrying per config), subscribes, starts the applier."""
        self._applier = asyncio.create_task(self._apply_loop(), name="ingest-applier")
        self._applier.add_done_callback(self._task_ended)
        # nats-py itself retries the first connect too: max_reconnect_attempts times,
        # reconnect_wait_sec apart, forever with -1 (health stays NOT_SERVING meanwhile).
        try:
            self.nc = await nats.connect(
                url.split(","),
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                **connect_options(self.cfg),
            )
        except Exception as exc:  # noqa: BLE001 - nats raises many types here
            log.error("cannot connect to NATS at %s: %s", redact_url(url), exc)
            raise IngestError(
                f"cannot connect to NATS at {redact_url(url)}: {redact_text(str(exc))}"
            ) from exc
        await self.subscribe()
        self._set_connected(True)
        log.info("ingesting from %s (%s)", redact_url(url), self.mode)

    @property
    def mode(self) -> str:
        """How this ingestor consumes, for logs."""
        return f"core NATS, queue group {self.cfg.queue_group!r}"

    @property
    def consumer_group(self) -> str:
        """The group this replica consumes in (``messaging.consumer.group.name``)."""
        return self.cfg.queue_group

    async def subscribe(self) -> None:
        """Core-NATS subscriptions (JetStream mode replaces this)."""
        assert self.nc is not None
        c = self.cfg
        limit = max(1024, c.queue_maxsize * PENDING_FACTOR)
        handlers = {
            c.telemetry_stream_subject: self._on_stream,
            c.telemetry_batch_subject: self._on_batch,
            c.execution_subject: self._on_execution,
            c.calibrate_subject: self._on_calibration,
        }
        for configured, cb in handlers.items():
            # Narrowed to this twin's systems where the subject names them (a trailing *).
            for subject in self.systems.subjects_for(configured):
                await self.nc.subscribe(
                    subject,
                    queue=c.queue_group,
                    cb=cb,
                    pending_msgs_limit=limit,
                    pending_bytes_limit=limit * c.max_payload_bytes // 8,
                )
        await confirm_interest(self.nc)

    def configured_subject(self, subject: str) -> str:
        """The configured input subject a concrete one belongs to (wildcards resolved)."""
        known = self._subject_of.get(subject)
        if known is None:
            known = next((s for s in self.cfg.subjects if subject_matches(s, subject)), subject)
            if len(self._subject_of) < 4096:
                self._subject_of[subject] = known
        return known

    def _skip(self, kind: str, n: int = 1) -> None:
        self.stats.skipped[kind] += n

    async def stop(self, timeout: float = 10.0) -> None:
        """Drain: stop receiving, let pending messages through the callbacks, apply the
        queue, then close. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        nc = self.nc
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)
        if self._applier is not None:
            self._applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._applier
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()
        self._set_connected(False)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("ingest applier died", exc_info=task.exception())

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        if self._on_status is not None:
            self._on_status(value)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.stats.slow_consumer_drops += 1
            return
        log.warning("NATS error: %s", exc)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            self.stats.disconnects += 1
            log.warning("NATS disconnected; reconnecting")
            self._set_connected(False)

    async def _on_reconnected(self) -> None:
        self.stats.reconnects += 1
        log.info("NATS reconnected")
        self._set_connected(True)

    async def _on_closed(self) -> None:
        if not self._stopping:
            log.error("NATS connection closed (reconnect attempts exhausted)")
            self._set_connected(False)
            self.closed_unexpectedly.set()

    # ------------------------------------------------------------- dead letters
    async def dead_letter(
        self,
        reason: str,
        subject: str,
        payload: bytes,
        index: int | None = None,
        batch_id: str | None = None,
        *,
        parent: Any = None,
    ) -> None:
        """Counts and publishes one dead-letter record; ``parent`` is the producer's SpanContext."""
        self.stats.dead_lettered += 1
        self.stats.dead_letter_reasons[reason_class(reason)] += 1
        record = build_record(
            reason, subject, payload, index=index, batch_id=batch_id, twin=self.twin_id
        )
        log.debug("dead-letter from %s: %s", subject, reason)
        if self.nc is None:
            return
        if tracing_active():
            await self._traced_dead_letter(reason, subject, record, parent)
            return
        await self._publish_dead_letter(record, None)

    async def _traced_dead_letter(
        self, reason: str, subject: str, record: bytes, parent: Any
    ) -> None:
        assert trace is not None
        ctx = (
            trace.set_span_in_context(trace.NonRecordingSpan(parent))
            if parent is not None
            else None
        )
        dest = self.cfg.error_subject
        attrs = {
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": dest,
            "polaris.source_subject": subject,
            "polaris.reason": reason_class(reason),
        }
        with trace.get_tracer(__name__).start_as_current_span(
            f"send {dest}", context=ctx, kind=trace.SpanKind.PRODUCER, attributes=attrs
        ):
            await self._publish_dead_letter(record, inject_headers())

    async def _publish_dead_letter(self, record: bytes, headers: dict[str, str] | None) -> None:
        assert self.nc is not None
        try:
            await self.nc.publish(self.cfg.error_subject, record, headers=headers)
        except Exception as exc:  # noqa: BLE001 - a failed DLQ publish is counted, never fatal
            self.stats.dead_letter_publish_failures += 1
            log.warning("dead-letter publish failed: %s", exc)

    # ---------------------------------------------------------------- handlers
    async def _put(self, item: Item) -> None:
        q = self.queue
        if item.open:
            waiting = q._queue  # type: ignore[attr-defined]
            if waiting:
                last = waiting[-1]
                if last.open and len(last.points) < self.cfg.batch_size:
                    cast(list[Point], last.points).extend(item.points)
                    await self._maybe_yield()
                    return
        try:
            q.put_nowait(item)  # the common path: no coroutine frame, one fullness check
        except asyncio.QueueFull:
            await q.put(item)  # backpressure: this callback waits, NATS buffers behind it
        size = q.qsize()
        if size > self.stats.queue_high_water:
            self.stats.queue_high_water = size
        await self._maybe_yield()

    async def _maybe_yield(self) -> None:
        # nats-py hands a subscription's pending messages to its callback without
        # yielding, so a backlog would be decoded in one go (until the queue is full:
        # ~100 ms) while RPCs wait; a yield every couple of milliseconds bounds that.
        now = _monotonic()
        if now - self._last_yield >= YIELD_EVERY_SEC:
            self._last_yield = now
            await asyncio.sleep(0)

    async def handle(
        self,
        subject: str,
        data: bytes,
        ack: Callable[[], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Decodes one message from ``subject`` and queues it (the JetStream path calls this too).

        ``headers`` are the message's NATS headers; only the W3C trace context in
        them is used, and only while tracing is on.
        """
        c = self.cfg
        stats = self.stats
        subject = self._subject_of.get(subject) or self.configured_subject(subject)
        stats.messages_received[subject] += 1
        link = remote_span_context(headers) if headers and tracing_active() else None
        if len(data) > c.max_payload_bytes:
            stats.events_received += 1
            await self.dead_letter(
                f"oversize: {len(data)} bytes > max_payload_bytes {c.max_payload_bytes}",
                subject,
                data,
                parent=link,
            )
            if ack:
                await ack()
            return
        now = self._clock()
        if subject == c.telemetry_batch_subject:
            try:
                points, errors = self.decoder.batch_columns(
                    data, now
                )  # columnar: no Point per event
            except DecodeError as err:
                stats.events_received += 1
                await self.dead_letter(err.reason, subject, data, parent=link)
                if ack:
                    await ack()
                return
            stats.events_received += len(points) + len(errors)
            for bad in errors:
                await self.dead_letter(
                    bad.reason, subject, bad.raw or b"", index=bad.index, parent=link
                )
            if points and self.systems.active:
                points = self._own_systems(points)
            if points:
                await self._put(Item(points=points, ack=ack, link=link, subject=subject))
            elif ack:
                await ack()
            return
        stats.events_received += 1
        try:
            if subject == c.telemetry_stream_subject:
                item = Item(
                    [self.decoder.stream(data, now)],
                    None,
                    None,
                    ack,
                    link,
                    subject,
                    ack is None and link is None,
                )  # positional: hot path
            elif subject == c.execution_subject:
                item = Item(
                    execution=self.decoder.execution(data, now), ack=ack, link=link, subject=subject
                )
            elif subject == c.calibrate_subject:
                item = Item(
                    calibration=self.decoder.calibration(data, now),
                    ack=ack,
                    link=link,
                    subject=subject,
                )
            else:
                raise DecodeError(f"no decoder for subject {subject!r}")
        except DecodeError as err:
            await self.dead_letter(err.reason, subject, data, parent=link)
            if ack:
                await ack()
            return
        if self.systems.active and not self._is_own(item):
            if ack:
                await ack()
            return
        await self._put(item)

    def _own_systems(self, cols: SeriesColumns) -> SeriesColumns:
        """The batch without the series of other systems (counted as skipped)."""
        accepts = self.systems.accepts
        refused = {i for i, (source, _) in enumerate(cols.keys) if not accepts(source)}
        if not refused:
            return cols
        n = sum(len(cols.ts[i]) for i in refused)
        n += sum(1 for g, _, _ in cols.texts if g in refused)
        self._skip("telemetry", n)
        return cols.without(refused)

    def _is_own(self, item: Item) -> bool:
        """Whether a stream event, execution result or calibration is about our systems."""
        accepts = self.systems.accepts
        if item.points:
            if accepts(item.points[0].source):
                return True
            self._skip("telemetry", len(item.points))
            return False
        if item.execution is not None:
            ex = item.execution
            if accepts(execution_system(ex.metadata, ex.target, ex.output)):
                return True
            self._skip("execution")
            return False
        if item.calibration is not None:
            cal = item.calibration
            if accepts(calibration_system(cal.predicted_outcome, cal.actual_outcome)):
                return True
            self._skip("calibration")
            return False
        return True

    async def _on_stream(self, msg: Msg) -> None:
        await self.handle(self.cfg.telemetry_stream_subject, msg.data, headers=msg.headers)

    async def _on_batch(self, msg: Msg) -> None:
        await self.handle(self.cfg.telemetry_batch_subject, msg.data, headers=msg.headers)

    async def _on_execution(self, msg: Msg) -> None:
        await self.handle(self.cfg.execution_subject, msg.data, headers=msg.headers)

    async def _on_calibration(self, msg: Msg) -> None:
        await self.handle(self.cfg.calibrate_subject, msg.data, headers=msg.headers)

    # ----------------------------------------------------------------- applier
    async def _apply_loop(self) -> None:
        q = self.queue
        loop = asyncio.get_running_loop()
        batch_size = self.cfg.batch_size
        timeout = self.cfg.batch_timeout_sec
        while True:
            item = await q.get()
            items = [item]
            n = item.size
            # A class test, not isinstance: SeriesColumns is a Sequence ABC, and an ABC
            # check of a list costs a Python-level __instancecheck__ per stream message.
            columnar = item.points.__class__ is SeriesColumns
            deadline = loop.time() + timeout
            parts = 0  # pieces of a grown stream item: not queue items themselves
            waiting = q._queue  # type: ignore[attr-defined]
            while n < batch_size:
                try:
                    item = q.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        # wait_for, not asyncio.timeout: on 3.11 a timeout that fires as
                        # get() completes leaves a stray cancel that kills this task.
                        item = await asyncio.wait_for(q.get(), remaining)
                    except TimeoutError:
                        break
                if item.open and n + len(item.points) > batch_size:
                    # Exactly batch_size events: the rest of a grown stream item goes back
                    # to the head of the queue (still one queue item, done when applied).
                    k = batch_size - n
                    pts = cast(list[Point], item.points)
                    item.points = pts[k:]
                    waiting.appendleft(item)
                    item = Item(pts[:k], subject=item.subject)
                    parts += 1
                items.append(item)
                n += item.size
                if item.points.__class__ is SeriesColumns:
                    columnar = True
            # Under a backlog, also take what is already queued (never waiting for it):
            # a bigger batch amortises the per-series work of the columnar path. Bounded
            # by nats.max_batch_events and by ~APPLY_BUDGET_SEC of work at the measured
            # cost per event, so RPCs still wait at most about one such batch.
            # Batch messages only: stream messages keep exactly the batch_size semantics.
            if batch_size > 1 and columnar:
                cap = min(self.cfg.max_batch_events, int(APPLY_BUDGET_SEC / self._cost_per_event))
                while n < cap and waiting and waiting[0].points.__class__ is SeriesColumns:
                    item = q.get_nowait()
                    items.append(item)
                    n += item.size
            t0 = time.perf_counter()
            try:
                await self.apply(items)
            finally:
                for _ in range(len(items) - parts):
                    q.task_done()
            per_event = (time.perf_counter() - t0) / max(1, n)
            self._cost_per_event += 0.2 * (max(per_event, 1e-7) - self._cost_per_event)
            # Queue.get() returns without yielding while items wait, so a backlog
            # would starve RPCs and NATS reads for as long as it lasts; one yield
            # per applied batch bounds their wait to one batch.
            await asyncio.sleep(0)

    async def apply(self, items: list[Item]) -> None:
        """Applies a batch to the state, then the model; acks after both succeeded."""
        if tracing_active():
            await self._traced_apply(items)
        else:
            await self._apply(items)

    async def _dead_letter_refused(
        self, items: list[Item], cols: SeriesColumns, refused: dict[int, str]
    ) -> None:
        """One record per event of a refused series, under the subject it came from."""
        origin: dict[tuple[str, str], str] = {}
        for it in items:
            pts = it.points
            keys = pts.keys if isinstance(pts, SeriesColumns) else [(p.source, p.name) for p in pts]
            for key in keys:
                origin.setdefault(key, it.subject)
        for g, reason in refused.items():
            key, unit = cols.keys[g], cols.units[g]
            subject = origin.get(key, "")
            for t, v in zip(cols.ts[g], cols.vs[g]):
                await self.dead_letter(
                    reason, subject, _point_json(Point(key[0], key[1], t, v, unit, None))
                )
            for gi, t, text in cols.texts:
                if gi == g:
                    await self.dead_letter(
                        reason,
                        subject,
                        _point_json(Point(key[0], key[1], t, float("nan"), unit, text)),
                    )

    async def _traced_apply(self, items: list[Item]) -> None:
        assert trace is not None
        links = [trace.Link(it.link) for it in items if it.link is not None][:MAX_LINKS]
        subjects = {it.subject for it in items}
        attrs: dict[str, Any] = {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.batch.message_count": len(items),
            "messaging.consumer.group.name": self.consumer_group,
            "polaris.messages": len(items),
            "polaris.events": sum(len(it.points) for it in items),
            "polaris.executions": sum(it.execution is not None for it in items),
            "polaris.calibrations": sum(it.calibration is not None for it in items),
            "polaris.linked_producers": len(links),
        }
        name = "process"
        if len(subjects) == 1 and "" not in subjects:
            (subject,) = subjects
            name = f"process {subject}"
            attrs["messaging.destination.name"] = subject
        tracer = trace.get_tracer(__name__)
        with tracer.start_as_current_span(
            name, kind=trace.SpanKind.CONSUMER, links=links, attributes=attrs
        ) as span:
            errors = self.stats.apply_errors
            await self._apply(items)
            if span.is_recording():
                span.set_attribute("polaris.model_ok", self.stats.apply_errors == errors)

    async def _apply(self, items: list[Item]) -> None:
        state = self.state
        now = self._clock()
        actions = []
        calibrations = []
        with_points = [it for it in items if it.points]
        columnar = any(it.points.__class__ is SeriesColumns for it in with_points)
        cols: SeriesColumns | None
        if not columnar:  # stream messages only: a few points, the plain path is cheaper
            cols = None
            points: Sequence[Point] = [p for it in with_points for p in it.points]
        elif len(with_points) == 1:
            cols = cast(SeriesColumns, with_points[0].points)  # one batch message: already grouped
        else:
            builder = ColumnsBuilder()
            for it in with_points:
                if isinstance(it.points, SeriesColumns):
                    builder.add_columns(it.points)
                else:
                    builder.add_points(it.points)
            cols = builder.build()
        for it in items:
            try:
                if it.execution is not None:
                    actions.append(state.apply_execution(it.execution, now))
                if it.calibration is not None:
                    calibrations.append(state.apply_calibration(it.calibration, now))
            except Exception:  # noqa: BLE001 - one odd record must never stop the applier
                self.stats.apply_errors += 1
                log.exception("could not apply an execution/calibration record")
        if cols is None:
            _, refused_points = state.apply(points)
            if refused_points:  # new series over a cap: dead-lettered, and kept from the model
                skip = {id(p) for p, _ in refused_points}
                points = [p for p in points if id(p) not in skip]
                for p, reason in refused_points:
                    await self.dead_letter(
                        reason, self.cfg.telemetry_stream_subject, _point_json(p)
                    )
        else:
            _, refused = state.apply_columns(cols)
            if refused:
                await self._dead_letter_refused(items, cols, refused)
                cols = cols.without(set(refused))
            points = cols
        model = self._model()
        t0 = time.perf_counter()
        try:
            model.update(EventBatch(points, actions, calibrations))
            for rec in calibrations:
                await model.calibrate(rec)
        except Exception:  # noqa: BLE001 - the facts are stored; a model bug must not stop ingestion
            self.stats.apply_errors += 1
            log.exception("world model failed to take a batch")
        self.stats.model_update_seconds += time.perf_counter() - t0
        stats = self.stats
        stats.events_applied += len(points) + len(actions) + len(calibrations)
        stats.executions_applied += len(actions)
        stats.calibrations_applied += len(calibrations)
        stats.batches_applied += 1
        for it in items:
            if it.ack is not None:
                await it.ack()
