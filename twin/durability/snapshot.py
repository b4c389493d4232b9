"""Snapshots of the twin's facts (series store, action and calibration logs) plus the
JetStream position they include, so a restart replays only what came after.

File layout (one file per snapshot, ``snapshot-<applied sequence, 20 digits>.pts``)::

    {"magic": "polaris-twin-snapshot", "format_version": 3, "sha256": "<hex of body>",
     "body_bytes": N, "encoding": "msgpack", "applied_sequence": S, "created_at": T}\\n
    <body: N bytes>

Why this shape: the header is one JSON line a human (or ``head -1``) can read, and it
says how to check the body before anything is decoded; the body is msgpack with each
series' times and values as raw little-endian float64 bytes, so a million samples cost
16 MB and no per-sample Python objects. Writes are atomic (temp file in the same
directory, fsync, ``os.replace``, fsync of the directory), so a crash leaves either the
old snapshot or the new one, never half of one. The newest ``keep`` snapshots stay;
loading walks from the newest to the oldest and skips (and reports) every file that
fails its checks, so one corrupt file costs a longer replay, never a wrong state.

Format versions: 3 is written: version 2 plus the prediction ledger (``ledger``: pending
predictions, recent outcomes, aggregates, skill and interval-calibration windows, drift
state; ``PredictionLedger.export``). 2 (no ledger) is read with an empty ledger. 1 (a JSON
body with ``[[t, v], ...]`` sample lists and no ``applied_above``) is read and migrated.
Anything else is rejected with a message that says which versions this build reads. A
ledger that does not load (an export version this build does not know) is skipped with a
warning: the facts are restored, the ledger starts empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np
import orjson

from twin.core.errors import TwinError
from twin.core.state import ActionRecord, CalibrationRecord, TwinState

log = logging.getLogger(__name__)

MAGIC = "polaris-twin-snapshot"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_NAME = re.compile(r"^snapshot-(\d{20})\.pts$")
_MAX_HEADER = 4096


class SnapshotError(TwinError):
    """A snapshot file that cannot be used; ``reason`` says why (shown in health)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path.name}: {reason}")


@dataclass(slots=True)
class SeriesData:
    source: str
    name: str
    unit: str
    t: np.ndarray
    v: np.ndarray
    last_text: str | None = None
    appended: int = 0


@dataclass(slots=True)
class Snapshot:
    """What a snapshot holds, decoded (independent of the file format version)."""

    applied_sequence: int
    applied_above: list[int] = field(default_factory=list)
    stream: str = ""
    created_at: float = 0.0
    series: list[SeriesData] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    calibrations: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    ledger: dict[str, Any] | None = None  # PredictionLedger.export() (version 3)

    @property
    def samples(self) -> int:
        return sum(int(s.t.shape[0]) for s in self.series)


# ------------------------------------------------------------------- capture
def capture(
    state: TwinState,
    applied_sequence: int,
    applied_above: list[int] | None = None,
    stream: str = "",
) -> Snapshot:
    """Copies the state (on the event-loop thread: the store is not thread-safe)."""
    series = [SeriesData(**cast(dict[str, Any], d)) for d in state.store.export_series()]
    return Snapshot(
        applied_sequence=applied_sequence,
        applied_above=sorted(applied_above or []),
        stream=stream,
        created_at=time.time(),
        series=series,
        actions=[asdict(a) for a in state.actions],
        calibrations=[asdict(c) for c in state.calibrations],
        counters={"points_applied": state.points_applied, "text_values": state.text_values},
        ledger=state.ledger.export(),
    )


def restore(state: TwinState, snap: Snapshot) -> int:
    """Replaces the state's contents with the snapshot's; returns samples restored."""
    state.reset()
    for s in snap.series:
        state.store.import_series(s.source, s.name, s.unit, s.t, s.v, s.last_text, s.appended)
    for a in snap.actions:
        state.actions.append(ActionRecord(**a))
    for c in snap.calibrations:
        state.calibrations.append(CalibrationRecord(**c))
    state.points_applied = int(snap.counters.get("points_applied", snap.samples))
    state.text_values = int(snap.counters.get("text_values", 0))
    if snap.ledger is not None:
        try:
            state.ledger.load(snap.ledger)
        except (ValueError, KeyError, TypeError) as exc:
            state.ledger.reset()
            log.warning("snapshot: prediction ledger not restored (%s); the facts are", exc)
    return snap.samples


# -------------------------------------------------------------- (de)serialise
def encode(snap: Snapshot, version: int = FORMAT_VERSION) -> bytes:
    """Header line + msgpack body (format version 3; ``version=2`` writes the old layout)."""
    if version not in (2, 3):
        raise ValueError(f"encode writes format versions 2 and 3, not {version}")
    body_obj: dict[str, Any] = {
        "applied_sequence": snap.applied_sequence,
        "applied_above": snap.applied_above,
        "stream": snap.stream,
        "created_at": snap.created_at,
        "series": [
            {
                "source": s.source,
                "name": s.name,
                "unit": s.unit,
                "t": np.ascontiguousarray(s.t, dtype="<f8").tobytes(),
                "v": np.ascontiguousarray(s.v, dtype="<f8").tobytes(),
                "last_text": s.last_text,
                "appended": s.appended,
            }
            for s in snap.series
        ],
        "actions": snap.actions,
        "calibrations": snap.calibrations,
        "counters": snap.counters,
    }
    if version >= 3:
        body_obj["ledger"] = snap.ledger
    body = msgspec.msgpack.encode(body_obj)
    header = {
        "magic": MAGIC,
        "format_version": version,
        "encoding": "msgpack",
        "sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
        "applied_sequence": snap.applied_sequence,
        "created_at": snap.created_at,
        "series": len(snap.series),
        "samples": snap.samples,
    }
    return orjson.dumps(header) + b"\n" + body


def decode(data: bytes, path: Path = Path("<memory>")) -> Snapshot:
    """Checks magic, version, length and checksum, then decodes (migrating old versions)."""
    nl = data.find(b"\n", 0, _MAX_HEADER)
    if nl < 0:
        raise SnapshotError(path, "no header line (not a snapshot, or truncated)")
    try:
        header = orjson.loads(data[:nl])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(path, f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise SnapshotError(path, "bad magic: not a POLARIS twin snapshot")
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        raise SnapshotError(
            path,
            f"unsupported snapshot format version {version!r}; this twin reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} and writes {FORMAT_VERSION}",
        )
    body = data[nl + 1 :]
    if len(body) != header.get("body_bytes"):
        raise SnapshotError(
            path, f"truncated: body has {len(body)} bytes, header says {header.get('body_bytes')}"
        )
    digest = hashlib.sha256(body).hexdigest()
    if digest != header.get("sha256"):
        raise SnapshotError(path, "checksum mismatch (sha256 of the body differs from the header)")
    try:
        if version == 1:
            return _migrate_v1(orjson.loads(body))
        return _decode_v2(msgspec.msgpack.decode(body), version)
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(path, f"body does not decode: {exc.__class__.__name__}: {exc}") from exc


def _decode_v2(obj: dict[str, Any], version: int = 2) -> Snapshot:
    """Versions 2 and 3 (3 adds ``ledger``)."""
    series = []
    for s in obj["series"]:
        t = np.frombuffer(s["t"], dtype="<f8").astype(np.float64)
        v = np.frombuffer(s["v"], dtype="<f8").astype(np.float64)
        if t.shape != v.shape:
            raise ValueError(
                f"series {s['source']}/{s['name']}: {t.shape[0]} times but {v.shape[0]} values"
            )
        series.append(
            SeriesData(
                s["source"],
                s["name"],
                s["unit"],
                t,
                v,
                s.get("last_text"),
                int(s.get("appended", t.shape[0])),
            )
        )
    return Snapshot(
        applied_sequence=int(obj["applied_sequence"]),
        applied_above=[int(x) for x in obj.get("applied_above", [])],
        stream=obj.get("stream", ""),
        created_at=float(obj.get("created_at", 0.0)),
        series=series,
        actions=list(obj.get("actions", [])),
        calibrations=list(obj.get("calibrations", [])),
        counters=dict(obj.get("counters", {})),
        format_version=version,
        ledger=obj.get("ledger") if version >= 3 else None,
    )


def _migrate_v1(obj: dict[str, Any]) -> Snapshot:
    """Version 1: JSON body, ``samples: [[t, v], ...]`` per series, no ``applied_above``."""
    series = []
    for s in obj["series"]:
        arr = np.asarray(s.get("samples") or [], dtype=np.float64).reshape(-1, 2)
        series.append(
            SeriesData(
                s["source"],
                s["name"],
                s.get("unit", "unknown"),
                arr[:, 0].copy(),
                arr[:, 1].copy(),
                s.get("last_text"),
                int(s.get("appended", arr.shape[0])),
            )
        )
    return Snapshot(
        applied_sequence=int(obj["applied_sequence"]),
        applied_above=[],
        stream=obj.get("stream", ""),
        created_at=float(obj.get("created_at", 0.0)),
        series=series,
        actions=list(obj.get("actions", [])),
        calibrations=list(obj.get("calibrations", [])),
        counters={},
        format_version=1,
    )


def encode_v1(snap: Snapshot) -> bytes:
    """Writes the old version-1 layout (kept so the migration path stays tested)."""
    body = orjson.dumps(
        {
            "applied_sequence": snap.applied_sequence,
            "stream": snap.stream,
            "created_at": snap.created_at,
            "series": [
                {
                    "source": s.source,
                    "name": s.name,
                    "unit": s.unit,
                    "samples": [[a, b] for a, b in zip(s.t.tolist(), s.v.tolist())],
                    "last_text": s.last_text,
                }
                for s in snap.series
            ],
            "actions": snap.actions,
            "calibrations": snap.calibrations,
        }
    )
    header = {
        "magic": MAGIC,
        "format_version": 1,
        "encoding": "json",
        "sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
        "applied_sequence": snap.applied_sequence,
    }
    return orjson.dumps(header) + b"\n" + body


# ------------------------------------------------------------------ the files
def file_name(applied_sequence: int) -> str:
    return f"snapshot-{applied_sequence:020d}.pts"


class SnapshotStore:
    """A directory of snapshots (a PersistentVolume in Kubernetes)."""

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, keep)

    def files(self) -> list[Path]:
        """Snapshot files, newest (highest sequence, then newest mtime) first."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.iterdir() if _NAME.match(p.name)]
        return sorted(
            found,
            key=lambda p: (int(_NAME.match(p.name).group(1)), p.stat().st_mtime),  # type: ignore[union-attr]
            reverse=True,
        )

    def write(self, data: bytes, applied_sequence: int) -> Path:
        """Writes one encoded snapshot atomically, prunes old ones (blocking: run in a thread)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / file_name(applied_sequence)
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.prune()
        return final

    def prune(self) -> None:
        for old in self.files()[self.keep :]:
            with contextlib.suppress(OSError):
                old.unlink()
        for tmp in self.dir.glob(".snapshot-*.tmp"):
            # Leftovers of a crash mid-write; never a valid snapshot.
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > 60:
                    tmp.unlink()

    def load_latest(self) -> tuple[Snapshot | None, list[SnapshotError]]:
        """The newest snapshot that passes every check, plus the errors of the ones skipped."""
        errors: list[SnapshotError] = []
        for path in self.files():
            try:
                data = path.read_bytes()
                snap = decode(data, path)
            except SnapshotError as err:
                errors.append(err)
                continue
            except OSError as exc:
                errors.append(SnapshotError(path, f"unreadable: {exc}"))
                continue
            if snap.format_version != FORMAT_VERSION:
                log.warning(
                    "snapshot %s is format version %d; migrated to %d on load",
                    path.name,
                    snap.format_version,
                    FORMAT_VERSION,
                )
            return snap, errors
        return None, errors
