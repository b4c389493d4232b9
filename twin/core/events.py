"""Events of the POLARIS wire contract and their decoders.

The hot path (``decode_stream`` / ``decode_batch``) turns a NATS payload straight
into compact ``Point`` tuples with msgspec's typed C decoder: no intermediate
dicts, no per-event pydantic objects. A batch is first decoded as a whole; only
if that fails is it decoded event by event, so one bad event costs its own
dead-letter record and never its good neighbours. Rich ``KnowledgeEvent`` objects
exist for the API surface and tools, not for ingestion.

Fast path (measured, see bench/): the typed decoders validate the name pattern
with a Python-level regex call and build a ``datetime`` per event, and ``_point``
then converts it; together that was ~2/3 of the decode cost. Telemetry repeats
the same few names and, within a batch, the same timestamps, so the hot decoders
read ``name`` and ``timestamp`` as plain strings and look them up in bounded
caches that only ever hold *valid* entries (a miss validates exactly like the
typed decoder: same regex, same RFC 3339 parser). Anything unusual — a bad
name, an unparsable timestamp, a non-finite number, an envelope — falls back to
the typed path, so results and error reasons are exactly those of the typed
decoders.

Accepted shapes (everything else is a ``DecodeError`` with a reason):

- telemetry event: ``{name, value, unit?, timestamp?, source?, tags?, metadata?}``;
  ``name`` matches ``^[a-zA-Z_][a-zA-Z0-9_.]*$`` and is normalised (lower case,
  ``_`` → ``.``); ``value`` is a finite number, a bool (1.0/0.0) or a string (kept as
  the series' latest text value); ``timestamp`` is ISO-8601/RFC 3339 (naive = UTC) or
  epoch seconds; absent → receive time.
- a ``KnowledgeEvent`` wrapping one: ``{event_id, timestamp, source, event_type:
  "telemetry", data: {telemetry event}, metadata}``.
- batch: ``{batch_id?, batch_timestamp?, count?, events: [telemetry event, ...]}`` or a
  bare JSON list of events.
- execution result: ``{action_id, action_type?, status?, success?, message?, started_at?,
  finished_at?, duration_sec?, output?, error?, retry_count?, metadata?, target?}``.
- calibration: ``{calibration_id?, timestamp?, prediction_id, actual_outcome,
  predicted_outcome, accuracy_metrics?}``.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple, TypeVar

import msgspec

from twin.core.errors import DecodeError

NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_.]*$"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, max_length=256)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = datetime | float | None

_EPOCH = datetime(1970, 1, 1)
_UTC = timezone.utc


class TelemetryEvent(msgspec.Struct, omit_defaults=True):
    name: Name
    value: bool | float | str
    unit: str = "unknown"
    timestamp: Timestamp = None
    source: Source = "unknown"
    tags: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None


class TelemetryBatch(msgspec.Struct):
    events: list[TelemetryEvent]
    batch_id: str | None = None
    batch_timestamp: Timestamp = None
    count: int | None = None


class _HotEvent(msgspec.Struct):
    """``TelemetryEvent`` with ``name``/``timestamp`` left as text for the cached checks."""

    name: str
    value: bool | float | str
    unit: str = "unknown"
    timestamp: str | float | None = None
    source: Source = "unknown"
    tags: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None


class _HotBatch(msgspec.Struct):
    events: list[_HotEvent]
    batch_id: str | None = None
    batch_timestamp: Timestamp = None
    count: int | None = None


class _RawBatch(msgspec.Struct):
    events: list[msgspec.Raw]
    batch_id: str | None = None


class _Wrapped(msgspec.Struct):
    data: msgspec.Raw
    event_type: str = "telemetry"
    source: str | None = None
    timestamp: Timestamp = None
    event_id: str | None = None


class ExecutionResult(msgspec.Struct, omit_defaults=True):
    action_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    action_type: str = "CUSTOM"
    status: str = "success"
    success: bool | None = None
    message: str = ""
    started_at: Timestamp = None
    finished_at: Timestamp = None
    duration_sec: float | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    retry_count: int = 0
    metadata: dict[str, Any] | None = None
    target: str | None = None


EXECUTION_STATUSES = frozenset({"pending", "executing", "success", "failed", "cancelled", "timeout"})


class CalibrationEvent(msgspec.Struct, omit_defaults=True):
    prediction_id: str
    actual_outcome: dict[str, Any]
    predicted_outcome: dict[str, Any]
    calibration_id: str | None = None
    timestamp: Timestamp = None
    accuracy_metrics: dict[str, Any] | None = None


class KnowledgeEvent(msgspec.Struct, omit_defaults=True):
    """The original's envelope, for the API surface and tools."""

    event_id: str
    timestamp: str
    source: str
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = {}


class Point(NamedTuple):
    """One decoded telemetry sample, the unit of the ingestion hot path."""

    source: str
    name: str
    t: float
    value: float
    unit: str
    text: str | None


_stream_decoder = msgspec.json.Decoder(TelemetryEvent)
_batch_decoder = msgspec.json.Decoder(TelemetryBatch)
_list_decoder = msgspec.json.Decoder(list[TelemetryEvent])
_raw_batch_decoder = msgspec.json.Decoder(_RawBatch)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_wrapped_decoder = msgspec.json.Decoder(_Wrapped)
_execution_decoder = msgspec.json.Decoder(ExecutionResult)
_calibration_decoder = msgspec.json.Decoder(CalibrationEvent)

_hot_stream_decoder = msgspec.json.Decoder(_HotEvent)
_hot_batch_decoder = msgspec.json.Decoder(_HotBatch)
_hot_list_decoder = msgspec.json.Decoder(list[_HotEvent])

_name_cache: dict[str, str] = {}
_valid_names: dict[str, str] = {}  # raw name → normalised, only names that pass NAME_PATTERN
_ts_epochs: dict[str, float] = {}  # timestamp text → epoch seconds, only parsable ones
_NAME_RE = re.compile(NAME_PATTERN)
_CACHE_MAX = 100_000
_TS_CACHE_MAX = 4096
_new_tuple = tuple.__new__
_NAN = math.nan


def normalise_name(name: str) -> str:
    """The original's metric-name normal form: lower case, ``_`` → ``.`` (cached)."""
    n = _name_cache.get(name)
    if n is None:
        n = name.lower().replace("_", ".")
        if len(_name_cache) < 100_000:
            _name_cache[name] = n
    return n


def to_epoch(ts: Timestamp, default: float) -> float:
    """Event time in epoch seconds; naive datetimes are UTC; ``None`` → ``default``."""
    if ts is None:
        return default
    if isinstance(ts, float):
        if not math.isfinite(ts):
            raise DecodeError("timestamp is not a finite number")
        return ts
    if ts.tzinfo is None:
        return (ts - _EPOCH).total_seconds()
    return ts.timestamp()


def _point(ev: TelemetryEvent, now: float) -> Point:
    v = ev.value
    if v.__class__ is float:
        if not math.isfinite(v):  # type: ignore[arg-type]
            raise DecodeError(f"value of {ev.name!r} is not finite")
        return Point(ev.source, normalise_name(ev.name), to_epoch(ev.timestamp, now), v, ev.unit, None)  # type: ignore[arg-type]
    if v.__class__ is bool:
        return Point(ev.source, normalise_name(ev.name), to_epoch(ev.timestamp, now), 1.0 if v else 0.0, ev.unit, None)
    return Point(ev.source, normalise_name(ev.name), to_epoch(ev.timestamp, now), math.nan, ev.unit, v)  # type: ignore[arg-type]


def _valid_name(name: str) -> str | None:
    """Normalised ``name`` if the typed decoder would accept it, else None (cached)."""
    if len(name) > 256 or _NAME_RE.search(name) is None:
        return None
    n = normalise_name(name)
    if len(_valid_names) < _CACHE_MAX:
        _valid_names[name] = n
    return n


def _ts_epoch(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp, parsed as the typed decoder would (cached)."""
    try:
        t = to_epoch(msgspec.convert(text, datetime), 0.0)
    except msgspec.ValidationError:
        return None
    if len(_ts_epochs) >= _TS_CACHE_MAX:
        _ts_epochs.clear()  # timestamps move on; a cheap bound beats an LRU here
    _ts_epochs[text] = t
    return t


def _hot_points(events: list[_HotEvent], now: float) -> list[Point] | None:
    """Points of fully valid events, or None if any event needs the typed path."""
    names = _valid_names
    times = _ts_epochs
    new = _new_tuple
    P = Point
    out: list[Point] = []
    append = out.append
    for ev in events:
        name = names.get(ev.name)
        if name is None:
            name = _valid_name(ev.name)
            if name is None:
                return None
        ts = ev.timestamp
        if ts is None:
            t = now
        elif ts.__class__ is str:
            t = times.get(ts)  # type: ignore[arg-type]
            if t is None:
                t = _ts_epoch(ts)  # type: ignore[arg-type]
                if t is None:
                    return None
        else:
            t = ts  # type: ignore[assignment]
            if t - t != 0.0:  # inf or nan
                return None
        v = ev.value
        c = v.__class__
        if c is float:
            if v - v != 0.0:  # type: ignore[operator]
                return None
            append(new(P, (ev.source, name, t, v, ev.unit, None)))
        elif c is bool:
            append(new(P, (ev.source, name, t, 1.0 if v else 0.0, ev.unit, None)))
        else:
            append(new(P, (ev.source, name, t, _NAN, ev.unit, v)))
    return out


def _reason(exc: Exception) -> str:
    return str(exc) or exc.__class__.__name__


_F = TypeVar("_F", bound=Callable[..., Any])


def _bounded_nesting(fn: _F) -> _F:
    """msgspec raises RecursionError (not a DecodeError) on absurdly deep JSON: make it one."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RecursionError as exc:
            raise DecodeError("invalid JSON: nested too deeply") from exc

    return wrapper  # type: ignore[return-value]


@_bounded_nesting
def decode_event(raw: bytes, now: float) -> Point:
    """One telemetry event (bare, or wrapped in a KnowledgeEvent)."""
    try:
        ev = _hot_stream_decoder.decode(raw)
    except msgspec.MsgspecError:
        return _decode_event_typed(raw, now)
    # _hot_points for one event, inlined: this is once per stream message.
    name = _valid_names.get(ev.name) or _valid_name(ev.name)
    ts = ev.timestamp
    if ts is None:
        t: float | None = now
    elif ts.__class__ is str:
        t = _ts_epochs.get(ts) or _ts_epoch(ts)  # type: ignore[arg-type]
    else:
        t = ts if ts - ts == 0.0 else None  # type: ignore[assignment,operator]
    v = ev.value
    c = v.__class__
    if name is None or t is None or (c is float and v - v != 0.0):  # type: ignore[operator]
        return _decode_event_typed(raw, now)
    if c is float:
        return _new_tuple(Point, (ev.source, name, t, v, ev.unit, None))
    if c is bool:
        return _new_tuple(Point, (ev.source, name, t, 1.0 if v else 0.0, ev.unit, None))
    return _new_tuple(Point, (ev.source, name, t, _NAN, ev.unit, v))


def _decode_event_typed(raw: bytes, now: float) -> Point:
    try:
        return _point(_stream_decoder.decode(raw), now)
    except msgspec.ValidationError as exc:
        first = exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON: {_reason(exc)}") from exc
    # Maybe the original's KnowledgeEvent envelope.
    try:
        wrapped = _wrapped_decoder.decode(raw)
    except msgspec.MsgspecError:
        raise DecodeError(f"invalid telemetry event: {_reason(first)}") from first
    if wrapped.event_type != "telemetry":
        raise DecodeError(f"unsupported event_type {wrapped.event_type!r} on a telemetry subject")
    try:
        ev = _stream_decoder.decode(wrapped.data)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"invalid telemetry event in data: {_reason(exc)}") from exc
    if ev.timestamp is None and wrapped.timestamp is not None:
        ev.timestamp = wrapped.timestamp
    if ev.source == "unknown" and wrapped.source:
        ev.source = wrapped.source
    return _point(ev, now)


def decode_stream(payload: bytes, now: float) -> Point:
    return decode_event(payload, now)


@_bounded_nesting
def decode_batch(payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
    """All good points of a batch plus one error per bad event (never all-or-nothing)."""
    try:
        if payload[:1] == b"[" or payload.lstrip()[:1] == b"[":
            hot = _hot_list_decoder.decode(payload)
        else:
            hot = _hot_batch_decoder.decode(payload).events
        pts = _hot_points(hot, now)
    except msgspec.MsgspecError:
        pts = None
    if pts is not None:
        return pts, []
    return _decode_batch_typed(payload, now)


def _decode_batch_typed(payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
    try:
        if payload[:1] == b"[" or payload.lstrip()[:1] == b"[":
            events = _list_decoder.decode(payload)
        else:
            events = _batch_decoder.decode(payload).events
    except msgspec.DecodeError as exc:
        if isinstance(exc, msgspec.ValidationError):
            return _decode_batch_slowly(payload, now)
        raise DecodeError(f"invalid JSON: {_reason(exc)}") from exc
    points: list[Point] = []
    errors: list[DecodeError] = []
    append = points.append
    for i, ev in enumerate(events):
        try:
            append(_point(ev, now))
        except DecodeError as err:
            err.index = i
            err.raw = msgspec.json.encode(ev)
            errors.append(err)
    return points, errors


def _decode_batch_slowly(payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
    try:
        if payload.lstrip()[:1] == b"[":
            raws = _raw_list_decoder.decode(payload)
        else:
            raws = _raw_batch_decoder.decode(payload).events
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"invalid batch: {_reason(exc)}") from exc
    points: list[Point] = []
    errors: list[DecodeError] = []
    for i, raw in enumerate(raws):
        try:
            points.append(decode_event(bytes(raw), now))
        except DecodeError as err:
            err.index = i
            err.raw = bytes(raw)
            errors.append(err)
    return points, errors


@_bounded_nesting
def decode_execution(payload: bytes) -> ExecutionResult:
    try:
        res = _execution_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"invalid execution result: {_reason(exc)}") from exc
    if res.status not in EXECUTION_STATUSES:
        raise DecodeError(f"invalid execution result: unknown status {res.status!r}")
    if res.duration_sec is not None and not math.isfinite(res.duration_sec):
        raise DecodeError("invalid execution result: duration_sec is not finite")
    return res


@_bounded_nesting
def decode_calibration(payload: bytes) -> CalibrationEvent:
    try:
        return _calibration_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"invalid calibration event: {_reason(exc)}") from exc


def new_id() -> str:
    return str(uuid.uuid4())


@functools.lru_cache(maxsize=8192)
def iso(t: float) -> str:
    """Epoch seconds → ISO-8601 UTC with a ``Z``.

    Cached: answers format the same latest-sample times again and again (every
    current_state query formats each series' time), and formatting is ~3 us.
    """
    return datetime.fromtimestamp(t, _UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO-8601 (naive = UTC) or epoch seconds → epoch seconds; ``ValueError`` otherwise."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt.timestamp() if dt.tzinfo else (dt - _EPOCH).total_seconds()
