"""The event stream's one mapping for every transport: ``WatchRequest`` validation,
``TwinEvent`` ⇄ proto, and the watcher limits shared by the ``Watch`` RPC and SSE.

A transport (gRPC here, SSE in ``twin.gateway``) builds a ``pb.WatchRequest``, calls
``open_watch`` (validation → limits → subscription) and sends what the subscription
yields; the errors are ``InvalidRequest`` (→ INVALID_ARGUMENT / 400) and
``TooManyWatchers`` (→ RESOURCE_EXHAUSTED / 429), and a dropped watcher is ended with
``WatcherDropped`` (→ RESOURCE_EXHAUSTED on gRPC, an ``event: dropped`` on SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from google.protobuf import struct_pb2

from twin._proto import digital_twin_pb2 as pb
from twin.core.config import EventsConfig
from twin.core.errors import InvalidRequest, TwinError
from twin.core.events import iso
from twin.core.notify import DIAGNOSIS, KINDS, EventBus, Subscription, TwinEvent, WatcherDropped
from twin.models.base import DiagnosisRequest, DiagnosisResult

log = logging.getLogger(__name__)

MAX_FILTER_ENTRIES = 256
WRITE_TIMEOUT_SEC = 10.0


class TooManyWatchers(TwinError):
    pass


@dataclass(frozen=True)
class WatchSpec:
    systems: tuple[str, ...]
    kinds: tuple[str, ...]
    since: int | None


def parse_watch(req: pb.WatchRequest) -> WatchSpec:
    """Validates a WatchRequest (the same rules for gRPC and SSE)."""
    if len(req.systems) > MAX_FILTER_ENTRIES:
        raise InvalidRequest(f"at most {MAX_FILTER_ENTRIES} systems", "systems")
    kinds = tuple(k.strip() for k in req.kinds if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InvalidRequest(
            f"unknown kind {unknown[0]!r}; expected some of {', '.join(KINDS)}", "kinds"
        )
    systems = tuple(s.strip() for s in req.systems if s.strip())
    since = 0 if req.from_start else (int(req.since_sequence) if req.since_sequence else None)
    return WatchSpec(systems, kinds, since)


def to_proto(ev: TwinEvent) -> pb.TwinEvent:
    data = struct_pb2.Struct()
    data.update(dict(ev.data))
    return pb.TwinEvent(
        sequence=ev.sequence,
        kind=ev.kind,
        system=ev.system,
        timestamp=iso(ev.t),
        emitted_at=iso(ev.emitted),
        data=data,
    )


class Watchers:
    """Counts open watchers per transport and enforces the limits."""

    def __init__(self, bus: EventBus, cfg: EventsConfig, grpc_limit: int) -> None:
        self.bus = bus
        self.cfg = cfg
        self.grpc_limit = max(1, grpc_limit)
        self.open: dict[str, int] = {"grpc": 0, "sse": 0}

    @contextlib.contextmanager
    def watch(self, spec: WatchSpec, transport: str) -> Iterator[Subscription]:
        total = sum(self.open.values())
        if total >= self.cfg.max_watchers:
            raise TooManyWatchers(f"{total} watchers are open (events.max_watchers); retry later")
        if transport == "grpc" and self.open["grpc"] >= self.grpc_limit:
            raise TooManyWatchers(
                f"{self.open['grpc']} gRPC Watch streams are open, the limit (half of "
                "grpc.max_workers, "
                "so unary RPCs keep their slots); use SSE at /v1/watch or retry later"
            )
        sub = self.bus.subscribe(
            spec.systems, spec.kinds, spec.since, self.cfg.queue_size, name=transport
        )
        self.open[transport] += 1
        try:
            yield sub
        finally:
            self.open[transport] -= 1
            sub.close("watcher closed")


async def serve_grpc(
    watchers: Watchers, request: pb.WatchRequest, context: grpc.aio.ServicerContext
) -> None:
    """The Watch RPC body: writes events until the client goes away, the watcher is
    dropped (RESOURCE_EXHAUSTED with the reason) or the twin shuts down (UNAVAILABLE)."""
    dropped: WatcherDropped | None = None
    try:
        spec = parse_watch(request)
        with watchers.watch(spec, "grpc") as sub:
            await context.send_initial_metadata(
                (("polaris-last-sequence", str(watchers.bus.last_sequence)),)
            )
            try:
                while True:
                    ev = await sub.get()
                    try:
                        await asyncio.wait_for(context.write(to_proto(ev)), WRITE_TIMEOUT_SEC)
                    except TimeoutError:
                        sub.close(
                            "slow watcher dropped: an event could not be sent within "
                            f"{WRITE_TIMEOUT_SEC:.0f}s"
                        )
                        watchers.bus.watchers_dropped_total += 1
            except WatcherDropped as exc:
                dropped = exc
    except InvalidRequest as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except TooManyWatchers as exc:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if dropped is not None:
        code = (
            grpc.StatusCode.UNAVAILABLE if dropped.shutdown else grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        await context.abort(code, dropped.reason)


def publish_diagnosis(bus: EventBus, req: DiagnosisRequest, res: DiagnosisResult) -> None:
    """A ``diagnosis`` event for a successful Diagnose (any transport): the top three
    hypotheses, enough for a watcher to decide whether to ask for the whole answer."""
    if not res.success:
        return
    system = req.context.get("system") or req.context.get("source") or ""
    top = [
        {
            "hypothesis": h.hypothesis,
            "probability": round(float(h.probability), 4),
            "rank": h.rank or i + 1,
        }
        for i, h in enumerate(res.hypotheses[:3])
    ]
    bus.publish(
        DIAGNOSIS,
        system,
        {
            "diagnosis_id": req.diagnosis_id,
            "anomaly_description": req.anomaly_description[:500],
            "confidence": round(float(res.confidence), 4),
            "hypotheses": top,
            "causal_chain": res.causal_chain[:1000],
        },
    )
