"""The twin's in-process event bus: producers publish facts worth pushing (an anomaly
started, health changed, a diagnosis finished, ...); watchers (the ``Watch`` RPC, the
SSE stream at ``/v1/watch``, the NATS publisher of ``polaris.digitaltwin.events.<kind>``)
subscribe with filters.

Why one bus: every transport shows the same events with the same sequence numbers,
and a producer calls one function without knowing who listens.

Cost model: ``publish`` with no subscriber costs one dataclass and one append to a
bounded history ring; producers publish on *transitions* only (never per point).

Bounds: the history keeps the last ``history`` events (replayed to a watcher that asks
``since`` a sequence, e.g. an SSE client reconnecting with ``Last-Event-ID``); each
subscriber has a bounded queue. A watcher that falls ``queue_size`` events behind is
*dropped* with a reason (it reconnects and replays from the history); a sink (the NATS
publisher) instead loses the newest events and counts them. Nothing grows without bound.

Threads: ``publish`` may be called from any thread; off the loop thread it hands the
event to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twin.core.errors import TwinError

ANOMALY_STARTED = "anomaly_started"
ANOMALY_CLEARED = "anomaly_cleared"
HEALTH_CHANGED = "health_changed"
DRIFT = "drift"
DIAGNOSIS = "diagnosis"
PREDICTION_OUTCOME = "prediction_outcome"
KINDS = (ANOMALY_STARTED, ANOMALY_CLEARED, HEALTH_CHANGED, DRIFT, DIAGNOSIS, PREDICTION_OUTCOME)

DEFAULT_HISTORY = 1000
DEFAULT_QUEUE = 256


class WatcherDropped(TwinError):
    """A watcher fell too far behind (or the bus closed); ``reason`` says which."""

    def __init__(self, reason: str, shutdown: bool = False) -> None:
        self.reason = reason
        self.shutdown = shutdown  # the twin is stopping (gRPC UNAVAILABLE), not a slow watcher
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class TwinEvent:
    """One pushed event. ``t`` is event time (the telemetry's time for anomalies, wall
    clock otherwise); ``emitted`` is the wall-clock publish time."""

    sequence: int
    kind: str
    system: str
    t: float
    emitted: float
    data: Mapping[str, Any] = field(default_factory=dict)


def matches(ev: TwinEvent, systems: frozenset[str], kinds: frozenset[str]) -> bool:
    """Filter rule shared by every transport: empty filter = all; twin-wide events
    (``system == ""``, e.g. health) pass any system filter."""
    if kinds and ev.kind not in kinds:
        return False
    return not systems or not ev.system or ev.system in systems


class Subscription:
    """A bounded queue of matching events. ``overflow="drop_watcher"`` closes the
    subscription when full; ``overflow="count"`` discards the new event and counts it."""

    def __init__(
        self,
        bus: EventBus,
        systems: Iterable[str] = (),
        kinds: Iterable[str] = (),
        queue_size: int = DEFAULT_QUEUE,
        overflow: str = "drop_watcher",
        name: str = "watcher",
    ) -> None:
        self.bus = bus
        self.systems = frozenset(s for s in systems if s)
        self.kinds = frozenset(k for k in kinds if k)
        self.queue_size = max(1, queue_size)
        self.overflow = overflow
        self.name = name
        self._queue: deque[TwinEvent] = deque()
        self._ready = asyncio.Event()
        self.dropped: str | None = None
        self.shutdown = False
        self.discarded = 0
        self.delivered = 0

    def offer(self, ev: TwinEvent) -> None:
        if self.dropped is not None or not matches(ev, self.systems, self.kinds):
            return
        if len(self._queue) >= self.queue_size:
            if self.overflow == "count":
                self.discarded += 1
                self.bus.discarded_total += 1
                return
            self.close(
                f"slow watcher dropped: {self.queue_size} events waiting to be sent "
                f"(the limit); reconnect with since_sequence={self._queue[0].sequence - 1} "
                "to replay what is still retained"
            )
            self.bus.watchers_dropped_total += 1
            return
        self._queue.append(ev)
        self._ready.set()

    def close(self, reason: str = "closed", shutdown: bool = False) -> None:
        if self.dropped is None:
            self.dropped = reason
            self.shutdown = shutdown
            self._queue.clear()
            self.bus._remove(self)
        self._ready.set()

    async def get(self) -> TwinEvent:
        """Next event; raises ``WatcherDropped`` once the subscription is closed."""
        while True:
            if self.dropped is not None:
                raise WatcherDropped(self.dropped, self.shutdown)
            if self._queue:
                self.delivered += 1
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()

    def get_nowait(self) -> TwinEvent | None:
        if self.dropped is None and self._queue:
            self.delivered += 1
            return self._queue.popleft()
        return None

    def pending(self) -> int:
        return len(self._queue)

    async def __aiter__(self) -> AsyncIterator[TwinEvent]:
        while True:
            yield await self.get()


class EventBus:
    """Publish/subscribe with a bounded history and bounded per-subscriber queues."""

    def __init__(self, history: int = DEFAULT_HISTORY, queue_size: int = DEFAULT_QUEUE) -> None:
        self.history: deque[TwinEvent] = deque(maxlen=max(1, history))
        self.queue_size = queue_size
        self._seq = itertools.count(1)
        self.last_sequence = 0
        self._subs: list[Subscription] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self.published_total: dict[str, int] = {}
        self.watchers_dropped_total = 0
        self.discarded_total = 0

    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Remembers the loop subscribers wait on (publishes from other threads go there)."""
        self._loop = loop or asyncio.get_running_loop()
        self._thread = threading.get_ident()

    # ----------------------------------------------------------------- producers
    def publish(
        self, kind: str, system: str, data: Mapping[str, Any], t: float | None = None
    ) -> None:
        """Records and fans out one event. Never blocks, never raises on slow watchers."""
        if self._thread is not None and threading.get_ident() != self._thread:
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self.publish, kind, system, data, t)
            except RuntimeError:  # loop closed: the twin is shutting down
                pass
            return
        now = time.time()
        seq = next(self._seq)
        ev = TwinEvent(seq, kind, system or "", now if t is None else float(t), now, _clean(data))
        self.last_sequence = seq
        self.history.append(ev)
        self.published_total[kind] = self.published_total.get(kind, 0) + 1
        for sub in tuple(self._subs):
            sub.offer(ev)

    # ----------------------------------------------------------------- consumers
    def subscribe(
        self,
        systems: Iterable[str] = (),
        kinds: Iterable[str] = (),
        since: int | None = None,
        queue_size: int | None = None,
        overflow: str = "drop_watcher",
        name: str = "watcher",
    ) -> Subscription:
        """A new subscription; with ``since`` it first gets retained events after that
        sequence (as many as fit its queue: the oldest beyond that are skipped)."""
        if self._loop is None:
            self.bind()
        sub = Subscription(self, systems, kinds, queue_size or self.queue_size, overflow, name)
        if since is not None:
            backlog = [
                e for e in self.history if e.sequence > since and matches(e, sub.systems, sub.kinds)
            ]
            for ev in backlog[-sub.queue_size :]:
                sub._queue.append(ev)
            if sub._queue:
                sub._ready.set()
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self, reason: str = "the twin is shutting down") -> None:
        """Ends every watcher (sinks such as the NATS publisher stop on their own)."""
        for sub in tuple(self._subs):
            if sub.overflow == "drop_watcher":
                sub.close(reason, shutdown=True)

    def register(self, registry: Any) -> EventBus:
        """Figures on the twin's metrics registry (read at scrape time)."""
        from twin.core.metrics import Figures

        f = Figures(registry)
        f.counter(
            "events_published",
            "Pushed events published, by kind.",
            lambda: dict(self.published_total),
            ["kind"],
        )
        f.gauge(
            "events_watchers",
            "Open Watch and SSE streams.",
            lambda: sum(1 for s in self._subs if s.overflow == "drop_watcher"),
        )
        f.counter(
            "events_watchers_dropped",
            "Watchers dropped for falling behind.",
            lambda: self.watchers_dropped_total,
        )
        f.counter(
            "events_discarded",
            "Events a sink (NATS publisher) could not queue.",
            lambda: self.discarded_total,
        )
        f.gauge(
            "events_last_sequence",
            "Sequence number of the newest event.",
            lambda: self.last_sequence,
        )
        return self


def _clean(value: Any) -> Any:
    """JSON- and Struct-safe copy: non-finite numbers become null, tuples lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    return str(value)


def event_dict(ev: TwinEvent) -> dict[str, Any]:
    """The event as JSON: exactly the proto ``TwinEvent``'s canonical JSON mapping
    (``uint64`` as a string, field names as in the proto); a test keeps them equal."""
    from twin.core.events import iso

    return {
        "sequence": str(ev.sequence),
        "kind": ev.kind,
        "system": ev.system,
        "timestamp": iso(ev.t),
        "emitted_at": iso(ev.emitted),
        "data": dict(ev.data),
    }
