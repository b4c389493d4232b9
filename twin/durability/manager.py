"""The twin's durability, in one owner: restore on start, periodic snapshots, replay.

``Durability`` is built by the app and lives as long as it. On start it loads the
newest valid snapshot (skipping and reporting corrupt or unreadable ones), restores the
state from it, tells the JetStream ingestor to start right after the snapshot's
sequence, and lets the model rebuild its derived state from the restored samples. While
running it owns one task that writes a snapshot every ``snapshot_every_events`` applied
events or ``snapshot_interval_sec`` seconds (whichever comes first, only when something
changed); on stop it writes a last one after ingestion drained.

What it reports: issues (a rejected snapshot, a failed write, a replay gap) go into
``health`` until the next successful snapshot; figures go into ``get_metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

from twin.core.config import TwinConfig
from twin.core.events import Point, parse_time
from twin.core.metrics import FigureDict
from twin.durability.snapshot import Snapshot, SnapshotStore, capture, encode, restore
from twin.ingest.jetstream import JetStreamIngestor, StartPosition
from twin.models.domain import EventBatch

log = logging.getLogger(__name__)
_MODEL_CHUNK = 20_000
RETRY_FIRST_SEC = 1.0  # a failed snapshot is retried after 1, 2, 4, ... seconds
RETRY_MAX_SEC = 300.0


class Durability:
    def __init__(self, config: TwinConfig, runtime: Any, ingestor: Any) -> None:
        self.config = config
        self.runtime = runtime
        self.ingestor = ingestor
        st = config.state
        self.store = SnapshotStore(st.snapshot_dir, st.snapshot_keep) if st.snapshot_dir else None
        self.every_events = int(st.snapshot_every_events)
        self.interval = float(st.snapshot_interval_sec)
        self.issues: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._last_events = 0
        self._last_time = time.monotonic()
        self._last_sequence = -1
        self._failures_in_a_row = 0
        self._retry_at = 0.0
        self.snapshots_written = 0
        self.snapshot_failures = 0
        self.snapshots_rejected = 0
        self.last_snapshot_sequence = 0.0
        self.last_snapshot_unix = 0.0
        self.last_snapshot_seconds = 0.0
        self.last_snapshot_bytes = 0
        self.restored_samples = 0
        self.restored_sequence = 0
        self.restore_seconds = 0.0
        self._restored = False
        self.gate_readiness = bool(config.nats.jetstream.get("ready_after_replay", True))
        self.caught_up_once = self.jetstream is None
        FigureDict(runtime.registry, self._figures, owner="Durability")

    def _figures(self) -> dict[str, float]:
        m = self.metrics()
        if self.applied_sequence is not None:
            m["applied_sequence"] = float(self.applied_sequence)
        return m

    @property
    def jetstream(self) -> JetStreamIngestor | None:
        return self.ingestor if isinstance(self.ingestor, JetStreamIngestor) else None

    # ----------------------------------------------------------------- start
    async def restore(self) -> None:
        """Before ingestion starts: newest valid snapshot → state; choose the replay start."""
        t0 = time.perf_counter()
        snap: Snapshot | None = None
        if self.store is not None:
            snap, errors = await asyncio.to_thread(self.store.load_latest)
            for err in errors:
                self.snapshots_rejected += 1
                log.error("snapshot rejected: %s", err)
            if errors:
                worst = errors[0]
                self.issues["snapshot"] = (
                    f"snapshot {worst.path.name} rejected ({worst.reason}); "
                    + (
                        "restored older "
                        f"{snap and 'snapshot at sequence ' + str(snap.applied_sequence)} and "
                        "replayed the rest"
                        if snap is not None
                        else "rebuilt the state by replaying the stream"
                    )
                )
        js = self.jetstream
        if snap is not None:
            self.restored_samples = restore(self.runtime.state, snap)
            self.restored_sequence = snap.applied_sequence
            self._last_sequence = snap.applied_sequence
            await self._rebuild_model()
            log.info(
                "restored snapshot at sequence %d: %d series, %d samples, %d actions",
                snap.applied_sequence, len(snap.series), self.restored_samples, len(snap.actions),
            )
        if js is not None:
            if snap is not None and snap.stream and snap.stream != js.stream_name:
                self.issues["snapshot_stream"] = (
                    f"snapshot was taken from stream {snap.stream!r} but ingestion uses "
                    f"{js.stream_name!r}; "
                    "its sequence is applied to the new stream as is"
                )
                log.warning("%s", self.issues["snapshot_stream"])
            if snap is not None and (snap.applied_sequence > 0 or snap.applied_above):
                js.set_start(
                    StartPosition(
                        sequence=snap.applied_sequence + 1, applied_above=tuple(snap.applied_above)
                    )
                )
            elif js.js_cfg.get("replay_from"):
                js.set_start(StartPosition(time=parse_time(str(js.js_cfg["replay_from"]))))
            else:
                js.set_start(StartPosition())
            log.info("JetStream replay will start from %s", js.start_position.describe())
        self.restore_seconds = time.perf_counter() - t0
        self._restored = True
        self._last_events = self.runtime.ingest_stats.events_applied

    async def _rebuild_model(self) -> None:
        """The model keeps derived state: reset it and let it see the restored samples."""
        model = self.runtime.model
        model.reset()
        batch: list[Point] = []
        for s in list(self.runtime.state.store):
            t, v = s.arrays()
            for a, b in zip(t.tolist(), v.tolist()):
                batch.append(Point(s.source, s.name, a, b, s.unit, None))
                if len(batch) >= _MODEL_CHUNK:
                    model.update(EventBatch(batch, (), ()))
                    batch = []
                    await asyncio.sleep(0)
        if batch:
            model.update(EventBatch(batch, (), ()))

    def start(self) -> None:
        if self.store is None or (self.every_events <= 0 and self.interval <= 0):
            return
        self._task = asyncio.create_task(self._loop(), name="snapshotter")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("snapshot task died", exc_info=task.exception())

    async def _loop(self) -> None:
        tick = 0.2 if self.every_events > 0 else min(1.0, max(0.05, self.interval / 4))
        while True:
            await asyncio.sleep(tick)
            if self._failures_in_a_row:
                due = time.monotonic() >= self._retry_at  # retry with backoff, changed or not
            else:
                applied = self.runtime.ingest_stats.events_applied
                changed = applied != self._last_events or self._sequence() != self._last_sequence
                due_events = (
                    self.every_events > 0 and applied - self._last_events >= self.every_events
                )
                due_time = self.interval > 0 and time.monotonic() - self._last_time >= self.interval
                due = changed and (due_events or due_time)
            if due:
                await self.snapshot_now()

    # -------------------------------------------------------------- snapshot
    def _sequence(self) -> int:
        js = self.jetstream
        return js.applied_sequence if js is not None else 0

    async def snapshot_now(self) -> Path | None:
        """Writes one snapshot now (copy on the loop, encode + write in a thread)."""
        if self.store is None:
            return None
        async with self._write_lock:
            js = self.jetstream
            t0 = time.perf_counter()
            lock = js.apply_lock if js is not None else contextlib.nullcontext()
            try:
                async with lock:
                    seq = js.applied_sequence if js is not None else 0
                    above = js.tracker.applied_above if js is not None else []
                    snap = capture(
                        self.runtime.state, seq, above, js.stream_name if js is not None else ""
                    )
                    events = self.runtime.ingest_stats.events_applied
                data = await asyncio.to_thread(encode, snap)
                path = await asyncio.to_thread(self.store.write, data, seq)
            except Exception as exc:  # noqa: BLE001 - reported in health and retried; the twin keeps serving
                self._failed(exc)
                return None
            self._failures_in_a_row = 0
            self.snapshots_written += 1
            self._last_events = events
            self._last_time = time.monotonic()
            self._last_sequence = seq
            self.last_snapshot_sequence = float(seq)
            self.last_snapshot_unix = time.time()
            self.last_snapshot_seconds = time.perf_counter() - t0
            self.last_snapshot_bytes = len(data)
            self.issues.pop("snapshot_write", None)
            self.issues.pop("snapshot", None)
            log.info(
                "snapshot %s: sequence %d, %d samples, %.1f KiB in %.3fs",
                path.name,
                seq,
                snap.samples,
                len(data) / 1024,
                self.last_snapshot_seconds,
            )
            return path

    def _failed(self, exc: BaseException) -> None:
        self.snapshot_failures += 1
        self._failures_in_a_row += 1
        delay = min(RETRY_MAX_SEC, RETRY_FIRST_SEC * 2 ** (self._failures_in_a_row - 1))
        self._retry_at = time.monotonic() + delay
        self._last_time = time.monotonic()
        detail = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        self.issues["snapshot_write"] = (
            f"snapshot failed {self._failures_in_a_row} time(s) in a row ({detail}); retrying in "
            f"{delay:.1f}s"
        )
        log.error(
            "snapshot to %s failed (%s); retrying in %.1fs",
            self.store.dir if self.store else "-",
            detail,
            delay,
        )

    async def stop(self) -> None:
        """Cancels the periodic task and writes a final snapshot (after ingestion drained)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.store is not None and self._restored:
            await self.snapshot_now()

    # ---------------------------------------------------------------- replay
    async def replay(
        self, from_sequence: int | None = None, from_time: float | None = None
    ) -> dict[str, Any]:
        js = self.jetstream
        if js is None:
            raise ValueError("replay needs JetStream ingestion (nats.jetstream.enabled: true)")
        position = (
            StartPosition(sequence=from_sequence)
            if from_sequence is not None
            else StartPosition(time=from_time)
        )
        status = await js.replay(position, self.runtime.reset)
        log.info("replay requested from %s", position.describe())
        return status

    def replay_status(self) -> dict[str, Any]:
        js = self.jetstream
        if js is None:
            return {"state": "unavailable", "reason": "JetStream ingestion is off"}
        return js.status()

    # ------------------------------------------------------------- reporting
    def ready(self) -> bool:
        """Readiness gate: false until the replay at start caught up (when configured)."""
        js = self.jetstream
        if js is not None and not self.caught_up_once and not js.replaying:
            self.caught_up_once = True
        if js is not None and js.lag.lagging:  # nats.jetstream.max_lag_sec
            return False
        return self.caught_up_once or not self.gate_readiness

    @property
    def replay_available(self) -> bool:
        """Replay needs the stream: JetStream ingestion, not only snapshots."""
        return self.jetstream is not None

    @property
    def applied_sequence(self) -> int | None:
        js = self.jetstream
        return js.applied_sequence if js is not None else None

    def health_issues(self) -> list[str]:
        out = list(self.issues.values())
        js = self.jetstream
        if js is not None:
            if js.replaying:
                st = js.status()
                out.append(
                    f"replaying the stream: {st['messages_done']}/{st['messages_total']} messages "
                    f"(to sequence {st['target_sequence']})"
                )
            if js.lag.lagging:
                out.append(
                    f"{js.lag.seconds:.1f}s behind the stream "
                    f"(max_lag_sec {js.lag.max_lag_sec:g}): NOT_SERVING until caught up"
                )
            if js.stream_reset_note:
                out.append(js.stream_reset_note)
            if js.progress.gap:
                out.append(
                    f"{js.progress.gap} messages were no longer in the stream when replaying "
                    "(retention)"
                )
        return out

    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {
            "snapshots_written_total": self.snapshots_written,
            "snapshot_failures_total": self.snapshot_failures,
            "snapshot_failures_in_a_row": self._failures_in_a_row,
            "snapshots_rejected_total": self.snapshots_rejected,
            "snapshot_last_sequence": self.last_snapshot_sequence,
            "snapshot_last_unix": self.last_snapshot_unix,
            "snapshot_last_seconds": self.last_snapshot_seconds,
            "snapshot_last_bytes": self.last_snapshot_bytes,
            "snapshot_restored_samples": self.restored_samples,
            "snapshot_restored_sequence": self.restored_sequence,
            "restore_seconds": self.restore_seconds,
        }
        js = self.jetstream
        if js is not None:
            m.update(js.metrics())
        return {k: float(v) if math.isfinite(float(v)) else 0.0 for k, v in m.items()}

