"""Durable ingestion through a JetStream stream.

``JetStreamIngestor`` keeps the ``Ingestor`` pipeline (decode → dead-letter → bounded
queue → batch apply) and replaces only the subscriptions: it makes sure a stream over
the four input subjects exists, (re)creates this replica's durable pull consumer at the
position the state needs, and fetches in batches. Every queued item carries an ``ack``
that the applier calls only after the state and the world model took the batch, so a
message is acknowledged exactly when it is applied.

Why the consumer is recreated on start instead of resumed: the facts live in memory.
After a crash the consumer's ack floor says what the *dead* process applied, not what
the new one holds; the new process holds what its snapshot holds. So the consumer is
always (re)created at ``snapshot sequence + 1`` (or ``replay_from``, or the start of
the stream) and the stream is the log the state is rebuilt from. Acks still matter while
the process lives: they bound what is in flight (``max_ack_pending``) and anything not
applied within ``ack_wait_sec`` is redelivered.

Idempotence: ``SequenceTracker`` knows the highest stream sequence up to which every
message was applied (the *floor*) and the few applied above it. A message at or below
the floor, or already applied above it, is acknowledged again and skipped; a redelivery
of a message still waiting in the queue is skipped without an ack (the queued original
acknowledges it). The floor moves over sequences applied here, and over gaps (messages
removed by retention or deleted) only when the server's ack floor for the consumer says
so: a hole above the floor may be a delivery lost in a reconnect, which the server
redelivers after ``ack_wait``, and must never be acknowledged unapplied.

One replica = one durable consumer named after the pod (or ``nats.jetstream.durable``):
every replica applies the whole stream and can answer any query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from twin.core.errors import IngestError
from twin.ingest.nats_ingest import Ingestor, Item
from twin.ingest.replay_lag import ReplayLag

log = logging.getLogger(__name__)
SYNC_INTERVAL_SEC = 0.5  # how often a floor held up by a hole asks the server for its ack floor
LAG_POLL_SEC = 2.0  # how often the consumer's backlog is read for the replay lag


def durable_name(configured: str = "", hostname: str | None = None) -> str:
    """The consumer name of this replica: configured, else ``twin-<hostname>``."""
    if configured:
        return configured
    host = hostname or socket.gethostname()
    return "twin-" + (re.sub(r"[^A-Za-z0-9_-]", "_", host)[:200] or "local")


class SequenceTracker:
    """Which stream sequences were applied; O(1) amortised per message.

    The floor is the highest sequence up to which every message the stream holds was
    applied. It moves in two ways only, both safe:

    - contiguously, over sequences this process applied itself;
    - to the consumer's ack floor as the *server* reports it (:meth:`sync`). The server
      counts a sequence there only once it received our ack for it, or the stream no
      longer holds it (retention, deletes), and we ack only after applying. This is how
      the floor steps over gaps.

    It never steps over a sequence merely because a later one arrived: a delivery lost
    in a reconnect looks exactly like a gap, and the server redelivers it after
    ``ack_wait``. (Assuming "first deliveries arrive in order, so a hole is a gap" is
    what once acknowledged lost messages without applying them.)
    """

    def __init__(self, floor: int | None = 0, applied_above: list[int] | None = None) -> None:
        # floor None: not known yet (replay from a time); the bind sets it from the
        # server's ack floor of the new consumer before the first delivery.
        self.floor = floor
        self._inflight: set[int] = set()
        self._done_above: set[int] = set(applied_above or [])
        self.duplicates = 0
        self.redeliveries_in_flight = 0

    def begin(self, seq: int) -> str:
        """``new``, ``applied`` (skip and ack) or ``queued`` (skip, the original acks)."""
        if self.floor is None:
            self.floor = seq - 1
        if seq <= self.floor or seq in self._done_above:
            self.duplicates += 1
            return "applied"
        if seq in self._inflight:
            self.redeliveries_in_flight += 1
            return "queued"
        self._inflight.add(seq)
        return "new"

    def finish(self, seq: int) -> None:
        """``seq`` was applied (and is about to be acknowledged)."""
        if seq not in self._inflight:
            return
        self._inflight.discard(seq)
        self._done_above.add(seq)
        self._advance()

    def sync(self, server_ack_floor: int) -> None:
        """Raise the floor to the consumer's ack floor as the server reports it."""
        if self.floor is None or server_ack_floor > self.floor:
            self.floor = server_ack_floor
            self._done_above = {s for s in self._done_above if s > server_ack_floor}
            self._advance()

    def _advance(self) -> None:
        done = self._done_above
        floor = self.floor or 0
        while floor + 1 in done:
            floor += 1
            done.discard(floor)
        self.floor = floor

    @property
    def has_gap(self) -> bool:
        """Applied sequences wait above a hole: only the server can say what the hole is."""
        return bool(self._done_above)

    @property
    def applied(self) -> int:
        """The applied sequence a snapshot may claim (everything at or below is in the state)."""
        return self.floor or 0

    @property
    def applied_above(self) -> list[int]:
        return sorted(self._done_above)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)


@dataclass
class StartPosition:
    """Where the consumer starts: a sequence, a time, or the first message of the stream."""

    sequence: int | None = None
    time: float | None = None
    applied_above: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.sequence is not None:
            return f"sequence {self.sequence}"
        if self.time is not None:
            return f"time {datetime.fromtimestamp(self.time, UTC).isoformat()}"
        return "the start of the stream"


@dataclass
class ReplayProgress:
    """Progress of the current (re)build from the stream."""

    reason: str = "start"
    start: StartPosition | None = None
    target_sequence: int = 0  # the stream's last sequence when the replay began
    first_sequence: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    gap: int = (
        0  # messages the stream no longer holds (retention) between the wanted start and its first
    )

    def as_dict(self, applied: int, now: float) -> dict[str, Any]:
        start_seq = (
            self.start.sequence
            if self.start and self.start.sequence is not None
            else self.first_sequence
        )
        total = max(0, self.target_sequence - max(start_seq, self.first_sequence) + 1)
        done = max(0, min(applied, self.target_sequence) - max(start_seq, self.first_sequence) + 1)
        caught_up = self.finished_at is not None or applied >= self.target_sequence
        return {
            "state": "done" if caught_up else "running",
            "reason": self.reason,
            "from": self.start.describe() if self.start else "the start of the stream",
            "target_sequence": self.target_sequence,
            "applied_sequence": applied,
            "messages_total": total,
            "messages_done": min(done, total),
            "progress": 1.0 if caught_up or total == 0 else round(min(done, total) / total, 4),
            "elapsed_sec": round(((self.finished_at or now) - self.started_at), 3),
            "gap_messages": self.gap,
        }


class JetStreamIngestor(Ingestor):
    """``Ingestor`` fed by a durable JetStream pull consumer; acks after apply."""

    def __init__(self, *args: Any, durable: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        js = dict(self.cfg.jetstream)
        self.js_cfg = js
        self.stream_name: str = js.get("stream", "POLARIS_TWIN")
        self.durable = durable_name(durable or js.get("durable", ""))
        self.fetch_batch = int(js.get("consumer_batch", 256))
        self.start_position = StartPosition()
        self.tracker = SequenceTracker(0)
        self.progress = ReplayProgress()
        self.apply_lock = asyncio.Lock()
        self.js: Any = None
        self._psub: Any = None
        self._fetcher: asyncio.Task[None] | None = None
        self.ack_failures = 0
        self.fetch_errors = 0
        self.rebinds = 0
        self.last_fetch_error = ""
        self.stream_resets = 0
        self.stream_reset_note = ""
        self.on_caught_up: Callable[[], None] | None = None  # the app gates readiness on it
        self._last_sync = 0.0
        # Replay lag (nats.jetstream.max_lag_sec): readiness turns NOT_SERVING past it.
        self.lag = ReplayLag(float(js.get("max_lag_sec", 0) or 0))
        self.on_lag_change: Callable[[], None] | None = None
        self._last_lag_poll = 0.0

    # ------------------------------------------------------------ positions
    def set_start(self, position: StartPosition) -> None:
        """Where the next ``subscribe`` starts (the app sets it from the snapshot)."""
        self.start_position = position
        if position.sequence is not None:
            self.tracker = SequenceTracker(position.sequence - 1, list(position.applied_above))
        elif position.time is not None:
            self.tracker = SequenceTracker(None)
        else:
            self.tracker = SequenceTracker(0)

    @property
    def applied_sequence(self) -> int:
        return self.tracker.applied

    @property
    def replaying(self) -> bool:
        return self.progress.finished_at is None

    # --------------------------------------------------------- subscription
    @property
    def mode(self) -> str:
        return f"JetStream stream {self.stream_name!r}, durable consumer {self.durable!r}"

    @property
    def consumer_group(self) -> str:
        return self.durable

    async def subscribe(self) -> None:
        assert self.nc is not None
        self.js = self.nc.jetstream()
        await self.ensure_stream()
        await self._bind(self.start_position, "start")
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="jetstream-fetch")
        self._fetcher.add_done_callback(self._fetcher_ended)

    def _fetcher_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("JetStream fetch loop died", exc_info=task.exception())

    async def ensure_stream(self) -> None:
        """Creates the stream over the input subjects, or updates its limits."""
        js = self.js_cfg
        storage = api.StorageType.MEMORY if js.get("storage") == "memory" else api.StorageType.FILE
        config = api.StreamConfig(
            name=self.stream_name,
            subjects=list(self.cfg.subjects),
            retention=api.RetentionPolicy.LIMITS,
            max_age=float(js.get("max_age_sec", 86400)) or None,
            max_bytes=int(js.get("max_bytes", -1)),
            num_replicas=int(js.get("replicas", 1)),
            storage=storage,
            duplicate_window=float(js.get("duplicate_window_sec", 120)) or None,  # type: ignore[arg-type]  # None: server default
            discard=api.DiscardPolicy.OLD,
        )
        try:
            info = await self.js.stream_info(self.stream_name)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
            log.info(
                "created JetStream stream %s over %s",
                self.stream_name,
                ", ".join(self.cfg.subjects),
            )
            return
        cur = info.config
        if (cur.max_age, cur.max_bytes, sorted(cur.subjects or []), cur.duplicate_window) != (
            config.max_age,
            config.max_bytes,
            sorted(config.subjects or []),
            config.duplicate_window,
        ):
            try:
                await self.js.update_stream(config.evolve(storage=cur.storage))
                log.info("updated JetStream stream %s limits", self.stream_name)
            except nats.js.errors.APIError as exc:
                log.warning(
                    "stream %s exists with other settings and cannot be updated: %s",
                    self.stream_name,
                    exc,
                )

    def _max_ack_pending(self) -> int:
        configured = int(self.js_cfg.get("max_ack_pending", 0))
        return configured or 2 * self.cfg.queue_maxsize + self.fetch_batch

    async def _bind(self, position: StartPosition, reason: str) -> None:
        """(Re)creates this replica's durable consumer at ``position`` and binds to it."""
        js = self.js
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(self.stream_name, self.durable)
        info = await js.stream_info(self.stream_name)
        first, last = info.state.first_seq, info.state.last_seq
        kwargs: dict[str, Any] = {}
        gap = 0
        if position.sequence is not None and position.sequence > last + 1:
            # Sequences only grow, even across purges: this is a younger stream (recreated,
            # or a server that lost its store). The state keeps what it had; the new
            # stream is applied from its start.
            self.stream_resets += 1
            self.stream_reset_note = (
                f"stream {self.stream_name} ends at sequence {last} but the state already holds up "
                "to "
                f"{position.sequence - 1}: the stream was recreated; applying it from its start"
            )
            log.error("%s", self.stream_reset_note)
            position = StartPosition()
            self.start_position = position
            self.tracker = SequenceTracker(0)
        if position.sequence is not None:
            kwargs = {
                "deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                "opt_start_seq": max(1, position.sequence),
            }
            if position.sequence < first:
                gap = first - position.sequence
                log.warning(
                    "stream %s no longer holds sequences %d..%d (retention); %d messages cannot "
                    "be replayed",
                    self.stream_name,
                    position.sequence,
                    first - 1,
                    gap,
                )
        elif position.time is not None:
            kwargs = {
                "deliver_policy": api.DeliverPolicy.BY_START_TIME,
                "opt_start_time": datetime.fromtimestamp(position.time, UTC).isoformat(),
            }
        # Only this twin's systems, where the subjects name them (twin.ingest.systems);
        # otherwise the whole stream, filtered after decoding.
        wanted = self.systems.server_side(self.cfg.subjects)
        if wanted != list(self.cfg.subjects):
            kwargs["filter_subjects"] = wanted
        # A replica scaled away stops pulling: the server deletes its consumer after this.
        inactive = float(self.js_cfg.get("inactive_threshold_sec", 0) or 0)
        config = api.ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=float(self.js_cfg.get("ack_wait_sec", 30)),
            max_ack_pending=self._max_ack_pending(),
            max_deliver=-1,
            inactive_threshold=inactive or None,
            **kwargs,
        )
        info = await js.add_consumer(self.stream_name, config)
        # The new consumer's ack floor is where the server starts it (past what retention
        # removed): everything at or below it is either applied or gone.
        self.tracker.sync(info.ack_floor.stream_seq if info.ack_floor else 0)
        self._last_sync = time.monotonic()
        self._psub = await js.pull_subscribe_bind(
            durable=self.durable,
            stream=self.stream_name,
            pending_msgs_limit=max(1024, 4 * self.fetch_batch),
            pending_bytes_limit=max(1024, 4 * self.fetch_batch) * self.cfg.max_payload_bytes // 4,
        )
        self.progress = ReplayProgress(reason, position, last, first, time.time(), None, gap)
        if self.tracker.applied >= last:
            self._caught_up()
        log.info(
            "JetStream consumer %s on stream %s from %s (stream holds %d..%d)",
            self.durable, self.stream_name, position.describe(), first, last,
        )

    async def _fetch_loop(self) -> None:
        backoff = 0.05
        while True:
            psub = self._psub
            if psub is None or self.nc is None or not self.nc.is_connected:
                await asyncio.sleep(0.05)
                continue
            try:
                msgs = await psub.fetch(self.fetch_batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                await self._idle_fetch()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - disconnects, consumer lost, server restarts
                self.fetch_errors += 1
                self.last_fetch_error = f"{exc.__class__.__name__}: {exc}"
                log.debug("JetStream fetch failed: %s", self.last_fetch_error)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                await self._recover_consumer()
                continue
            backoff = 0.05
            for msg in msgs:
                await self._on_js_msg(msg)
            if self.tracker.has_gap and time.monotonic() - self._last_sync >= SYNC_INTERVAL_SEC:
                await self._sync_floor()
            if time.monotonic() - self._last_lag_poll >= LAG_POLL_SEC:
                await self._poll_lag()

    async def _idle_fetch(self) -> None:
        """Nothing to deliver right now: let the server close any gap, then check the replay."""
        if self.tracker.has_gap or self.tracker.floor is None:
            await self._sync_floor()
        p = self.progress
        if p.finished_at is None and self.tracker.applied >= p.target_sequence:
            self._caught_up()
        if p.finished_at is None or time.monotonic() - self._last_lag_poll >= LAG_POLL_SEC:
            await self._poll_lag()

    async def _poll_lag(self) -> None:
        """Reads the consumer's backlog (the server's count, filter-aware): the replay lag,
        and the end of a replay whose target is another twin's message (filtered consumer)."""
        self._last_lag_poll = time.monotonic()
        try:
            info = await self.js.consumer_info(self.stream_name, self.durable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - disconnected or consumer gone; retried later
            log.debug("consumer info for the replay lag failed: %s", exc)
            return
        pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        p = self.progress
        if p.finished_at is None and pending == 0 and self.tracker.in_flight == 0:
            self._caught_up()  # nothing left for this consumer, whatever the stream holds
        if self.lag.poll(pending + self.tracker.in_flight, time.time()):
            if self.lag.lagging:
                log.warning(
                    "%.1fs behind the stream (max_lag_sec %.1f): NOT_SERVING until caught up",
                    self.lag.seconds, self.lag.max_lag_sec,
                )
            else:
                log.info("caught up with the stream again (lag %.1fs)", self.lag.seconds)
            if self.on_lag_change is not None:
                self.on_lag_change()

    async def _sync_floor(self) -> None:
        """Steps the floor over gaps the server vouches for (its ack floor of our consumer)."""
        self._last_sync = time.monotonic()
        try:
            info = await self.js.consumer_info(self.stream_name, self.durable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - disconnected or consumer gone; retried later
            log.debug("consumer info for the ack floor failed: %s", exc)
            return
        if info.ack_floor is not None:
            self.tracker.sync(info.ack_floor.stream_seq)
        p = self.progress
        if p.finished_at is None and self.tracker.applied >= p.target_sequence:
            self._caught_up()

    def _caught_up(self) -> None:
        self.progress.finished_at = time.time()
        log.info(
            "replay (%s) caught up at sequence %d in %.2fs",
            self.progress.reason,
            self.tracker.applied,
            self.progress.finished_at - self.progress.started_at,
        )
        if self.on_caught_up is not None:
            self.on_caught_up()

    async def _recover_consumer(self) -> None:
        """After a server restart without its store the consumer (or stream) may be gone."""
        if self.nc is None or not self.nc.is_connected or self.js is None:
            return
        try:
            await self.js.consumer_info(self.stream_name, self.durable)
            return
        except nats.js.errors.NotFoundError:
            pass
        except Exception:  # noqa: BLE001 - not connected yet; the loop retries
            return
        # From the floor, not from the newest sequence seen: anything above the floor that
        # was not applied (a delivery lost with the connection) must be delivered again.
        log.warning(
            "JetStream consumer %s is gone; recreating it after sequence %d",
            self.durable,
            self.tracker.applied,
        )
        self.rebinds += 1
        try:
            await self.ensure_stream()
            await self._bind(StartPosition(sequence=self.tracker.applied + 1), "consumer lost")
        except Exception as exc:  # noqa: BLE001 - retried on the next fetch error
            log.warning("recreating the consumer failed: %s", exc)

    async def _on_js_msg(self, msg: Msg) -> None:
        try:
            seq = msg.metadata.sequence.stream
        except Exception:  # noqa: BLE001 - not a JetStream message (should not happen)
            return
        verdict = self.tracker.begin(seq)
        if verdict == "applied":
            with contextlib.suppress(Exception):
                await msg.ack()
            return
        if verdict == "queued":
            return
        ack = self._ack_for(msg, seq)
        try:
            await self.handle(msg.subject, msg.data, ack, headers=msg.headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one message, not the consumer
            self.stats.events_received += 1
            log.warning(
                "message at sequence %d could not be handled: %s", seq, exc.__class__.__name__
            )
            await self.dead_letter(
                f"undecodable: {exc.__class__.__name__}: {str(exc)[:200]}", msg.subject, msg.data
            )
            await ack()

    def _ack_for(self, msg: Msg, seq: int) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            self.tracker.finish(seq)
            with contextlib.suppress(Exception):  # stream time of the message, for the lag
                self.lag.applied(msg.metadata.timestamp.timestamp())
            if (
                self.progress.finished_at is None
                and self.tracker.applied >= self.progress.target_sequence
            ):
                self._caught_up()
            try:
                await msg.ack()
            except Exception:  # noqa: BLE001 - the message is applied; a lost ack only means a redelivery we skip
                self.ack_failures += 1

        return ack

    async def apply(self, items: list[Item]) -> None:
        # Under the lock so a snapshot never sees points whose sequences are not yet marked.
        async with self.apply_lock:
            await super().apply(items)

    # ---------------------------------------------------------------- replay
    async def _pause(self) -> None:
        if self._fetcher is not None:
            self._fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetcher
            self._fetcher = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), 10)

    async def replay(self, position: StartPosition, reset: Callable[[], Any]) -> dict[str, Any]:
        """Rebuilds the state from ``position``: pause, drain, reset, rebind, resume."""
        if self.nc is None or self.js is None:
            raise IngestError("JetStream ingestion is not running")
        await self._pause()
        async with self.apply_lock:
            reset()
            self.set_start(position)
        await self._bind(position, "manage replay")
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="jetstream-fetch")
        self._fetcher.add_done_callback(self._fetcher_ended)
        return self.status()

    def status(self) -> dict[str, Any]:
        return self.progress.as_dict(self.tracker.applied, time.time()) | {
            "stream": self.stream_name,
            "consumer": self.durable,
            "in_flight": self.tracker.in_flight,
        }

    def metrics(self) -> dict[str, float]:
        t = self.tracker
        return {
            "jetstream_applied_sequence": t.applied,
            "jetstream_replay_target_sequence": self.progress.target_sequence,
            "jetstream_replaying": 1.0 if self.replaying else 0.0,
            "jetstream_duplicates_skipped_total": t.duplicates,
            "jetstream_redeliveries_in_flight_total": t.redeliveries_in_flight,
            "jetstream_in_flight": t.in_flight,
            "jetstream_ack_failures_total": self.ack_failures,
            "jetstream_fetch_errors_total": self.fetch_errors,
            "jetstream_consumer_rebinds_total": self.rebinds,
            "jetstream_replay_gap_messages": self.progress.gap,
            "jetstream_stream_resets_total": self.stream_resets,
            "jetstream_lag_seconds": self.lag.seconds,
            "jetstream_pending": self.lag.pending,
            "jetstream_lagging": 1.0 if self.lag.lagging else 0.0,
        }

    # ------------------------------------------------------------- lifecycle
    async def stop(self, timeout: float = 10.0) -> None:
        """Stops fetching, applies (and acks) what is queued while connected, then drains."""
        if self._stopping:
            return
        await self._pause()
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
        await super().stop(timeout)
