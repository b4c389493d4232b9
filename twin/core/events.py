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

Limits (``twin.core.limits.EventLimits``, the ``limits`` config section) are checked
here, once: lengths as msgspec constraints of per-limits Struct types (free on the hot
path), event times against a window relative to the receive time, and the size and
nesting depth of execution results and calibrations. A batch that is not JSON as a
whole (a ``NaN`` literal, one absurdly deep event) is split into its events by a
small scanner, so only the bad ones are dead-lettered.

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
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec

from twin.core.columns import ColumnsBuilder, SeriesColumns
from twin.core.errors import DecodeError as DecodeError  # re-exported for the decoders' callers
from twin.core.limits import DEFAULT_LIMITS, MAX_REPRESENTABLE, EventLimits, payload_depth_exceeds
from twin.core.point import Point as Point  # re-exported: the usual import of Point

NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_.]*$"
Timestamp = datetime | float | None

_EPOCH = datetime(1970, 1, 1)
_UTC = UTC


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


EXECUTION_STATUSES = frozenset(
    {"pending", "executing", "success", "failed", "cancelled", "timeout"}
)


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


def _telemetry_types(limits: EventLimits) -> tuple[type, type, type, type]:
    """(event, batch, hot event, hot batch) Struct types enforcing ``limits``' lengths.

    The length limits are msgspec constraints, so the C decoder checks them at no
    cost on the hot path and rejects with its usual message ("Expected `str` of
    length <= 64 - at `$.events[3].unit`").
    """
    def s(**meta: Any) -> Any:
        return Annotated[str, msgspec.Meta(**meta)]

    name = s(pattern=NAME_PATTERN, max_length=limits.max_name_length)
    source = s(min_length=1, max_length=limits.max_source_length)
    unit = s(max_length=limits.max_unit_length)
    value = bool | float | s(max_length=limits.max_text_length)
    tag = s(max_length=limits.max_tag_length)
    tags = Annotated[dict[tag, tag], msgspec.Meta(max_length=limits.max_tags)] | None  # type: ignore[valid-type]
    rest = [
        ("unit", unit, "unknown"),
        ("timestamp", Timestamp, None),
        ("source", source, "unknown"),
        ("tags", tags, None),
        ("metadata", dict[str, Any] | None, None),
    ]
    event = msgspec.defstruct(
        "TelemetryEvent", [("name", name), ("value", value), *rest], omit_defaults=True
    )
    # ``name``/``timestamp`` as plain text: checked against bounded caches of valid ones.
    hot_rest = [("timestamp", str | float | None, None) if f[0] == "timestamp" else f for f in rest]
    hot = msgspec.defstruct("_HotEvent", [("name", str), ("value", value), *hot_rest])
    batch_fields = [
        ("batch_id", str | None, None),
        ("batch_timestamp", Timestamp, None),
        ("count", int | None, None),
    ]
    batch = msgspec.defstruct("TelemetryBatch", [("events", list[event]), *batch_fields])  # type: ignore[valid-type]
    hot_batch = msgspec.defstruct("_HotBatch", [("events", list[hot]), *batch_fields])  # type: ignore[valid-type]
    return event, batch, hot, hot_batch


_raw_batch_decoder = msgspec.json.Decoder(_RawBatch)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_wrapped_decoder = msgspec.json.Decoder(_Wrapped)
_execution_decoder = msgspec.json.Decoder(ExecutionResult)
_calibration_decoder = msgspec.json.Decoder(CalibrationEvent)

_name_cache: dict[str, str] = {}
_ts_epochs: dict[str, float] = {}  # timestamp text → epoch seconds, only parsable ones
_NAME_RE = re.compile(NAME_PATTERN)
_CACHE_MAX = 100_000
_TS_CACHE_MAX = 4096
_new_tuple = tuple.__new__
_NAN = math.nan
_wall = time.time


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


# Strings (with escapes) and the structural characters: enough to find where the
# elements of a batch's ``events`` array start and end without parsing them.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{},:]', re.S)
_CLOSER = {ord("["): ord("]"), ord("{"): ord("}")}


def split_events(payload: bytes) -> list[bytes] | None:
    """The raw elements of a batch's events array (object or bare list), or None.

    For batches that do not parse as a whole (a ``NaN`` literal, as Python's
    ``json.dumps`` writes it; one absurdly deep event): each element can then be
    decoded, and rejected, on its own. Everything outside the array must still be
    valid JSON (checked on a copy with the array emptied), else None: the message
    is dead-lettered whole, as before. Iterative: no depth limit of its own.
    """
    body = payload.lstrip()
    first = body[:1]
    if first not in (b"[", b"{"):
        return None
    bare = first == b"["
    stack: list[int] = []
    key = b""
    value_next = False  # just after a ':' at depth 1: the next token starts a value
    open_at = depth = -1  # the events array: index after its '[', and its depth
    elems: list[bytes] = []
    start = 0
    for m in _TOKENS.finditer(body):
        tok = m.group()
        c = tok[0]
        if c in _CLOSER:  # '[' or '{'
            events_here = open_at < 0 and c == 0x5B and (
                (bare and not stack) or (value_next and len(stack) == 1 and key == b'"events"')
            )
            stack.append(_CLOSER[c])
            if events_here:
                open_at = start = m.end()
                depth = len(stack)
        elif c == 0x5D or c == 0x7D:  # ']' or '}'
            if not stack or stack[-1] != c:
                return None
            if len(stack) == depth:
                part = body[start : m.start()].strip()
                if part or elems:
                    elems.append(part)
                try:  # the rest of the message must be valid JSON of the right shape
                    (_raw_list_decoder if bare else _raw_batch_decoder).decode(
                        body[:open_at] + body[m.start() :]
                    )
                except (msgspec.MsgspecError, RecursionError):
                    return None
                return elems
            stack.pop()
        elif c == 0x2C:  # ','
            if len(stack) == depth:
                elems.append(body[start : m.start()].strip())
                start = m.end()
        elif c == 0x22 and len(stack) == 1:  # a string in the top object: maybe a key
            key = tok
        value_next = c == 0x3A and len(stack) == 1
    return None


class EventDecoder:
    """All decoders for one set of ``EventLimits``; built once (``decoder_for``).

    Accepted shapes and reasons are those of the module docstring; on top of them
    the limits' lengths (msgspec constraints), the event-time window (relative to
    the receive time ``now``) and, for execution results and calibrations, payload
    size and nesting depth.
    """

    def __init__(self, limits: EventLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        event, batch, hot, hot_batch = _telemetry_types(limits)
        self.TelemetryEvent = event
        self._stream: msgspec.json.Decoder[Any] = msgspec.json.Decoder(event)
        self._batch: msgspec.json.Decoder[Any] = msgspec.json.Decoder(batch)
        self._list = msgspec.json.Decoder(list[event])  # type: ignore[valid-type]
        self._hot_stream: msgspec.json.Decoder[Any] = msgspec.json.Decoder(hot)
        self._hot_batch: msgspec.json.Decoder[Any] = msgspec.json.Decoder(hot_batch)
        self._hot_list = msgspec.json.Decoder(list[hot])  # type: ignore[valid-type]
        self._valid_names: dict[str, str] = {}  # raw → normalised, only names within limits
        self._lo = limits.min_event_time
        self._ahead = limits.max_event_time_ahead_sec

    def _hi(self, now: float) -> float:
        # The receive time is the wall clock; ``now`` (the time given to events without
        # one) may be a simulated clock in replays and tests, so the later of the two.
        wall = _wall()
        hi = (now if now > wall else wall) + self._ahead
        return hi if hi < MAX_REPRESENTABLE else MAX_REPRESENTABLE

    # ------------------------------------------------------------ telemetry
    def _valid_name(self, name: str) -> str | None:
        """Normalised ``name`` if the typed decoder would accept it, else None (cached)."""
        if len(name) > self.limits.max_name_length or _NAME_RE.search(name) is None:
            return None
        n = normalise_name(name)
        if len(self._valid_names) < _CACHE_MAX:
            self._valid_names[name] = n
        return n

    def _point(self, ev: Any, now: float) -> Point:
        t = to_epoch(ev.timestamp, now)
        if not self._lo <= t <= self._hi(now):
            raise DecodeError(self.limits.time_reason(t, max(now, _wall())))
        v = ev.value
        if v.__class__ is float:
            if not math.isfinite(v):
                raise DecodeError(f"value of {ev.name!r} is not finite")
            return Point(ev.source, normalise_name(ev.name), t, v, ev.unit, None)
        if v.__class__ is bool:
            return Point(ev.source, normalise_name(ev.name), t, 1.0 if v else 0.0, ev.unit, None)
        return Point(ev.source, normalise_name(ev.name), t, math.nan, ev.unit, v)

    def _hot_points(self, events: list[Any], now: float) -> list[Point] | None:
        """Points of fully valid events, or None if any event needs the typed path."""
        names = self._valid_names
        times = _ts_epochs
        new = _new_tuple
        P = Point
        lo, hi = self._lo, self._hi(now)
        out: list[Point] = []
        append = out.append
        t: float | None
        for ev in events:
            name = names.get(ev.name)
            if name is None:
                name = self._valid_name(ev.name)
                if name is None:
                    return None
            ts = ev.timestamp
            if ts is None:
                t = now
            elif ts.__class__ is str:
                t = times.get(ts)
                if t is None:
                    t = _ts_epoch(ts)
                    if t is None:
                        return None
            else:
                t = ts
            if not lo <= t <= hi:  # also false for nan
                return None
            v = ev.value
            c = v.__class__
            if c is float:
                if v - v != 0.0:  # inf or nan
                    return None
                append(new(P, (ev.source, name, t, v, ev.unit, None)))
            elif c is bool:
                append(new(P, (ev.source, name, t, 1.0 if v else 0.0, ev.unit, None)))
            else:
                append(new(P, (ev.source, name, t, _NAN, ev.unit, v)))
        return out

    def _hot_columns(self, events: list[Any], now: float) -> Any:
        """``_hot_points`` straight into per-series columns, or None (typed path)."""
        names = self._valid_names
        times = _ts_epochs
        lo, hi = self._lo, self._hi(now)
        index: dict[tuple[str, str], int] = {}
        units: list[str] = []
        ts: list[list[float]] = []
        vs: list[list[float]] = []
        texts: list[tuple[int, float, str]] = []
        for ev in events:
            name = names.get(ev.name)
            if name is None:
                name = self._valid_name(ev.name)
                if name is None:
                    return None
            t = ev.timestamp
            if t is None:
                t = now
            elif t.__class__ is str:
                tt = times.get(t)
                if tt is None:
                    tt = _ts_epoch(t)
                    if tt is None:
                        return None
                t = tt
            if not lo <= t <= hi:  # also false for nan
                return None
            key = (ev.source, name)
            g = index.get(key)
            if g is None:
                g = index[key] = len(units)
                units.append(ev.unit)
                ts.append([])
                vs.append([])
            v = ev.value
            c = v.__class__
            if c is float:
                if v - v != 0.0:  # inf or nan
                    return None
                ts[g].append(t)
                vs[g].append(v)
            elif c is bool:
                ts[g].append(t)
                vs[g].append(1.0 if v else 0.0)
            else:
                texts.append((g, t, v))

        return SeriesColumns(list(index), units, ts, vs, texts)

    @_bounded_nesting
    def batch_columns(self, payload: bytes, now: float) -> tuple[Any, list[DecodeError]]:
        """``batch`` in columnar form: the same events, errors and reasons, grouped per series."""
        try:
            if payload[:1] == b"[" or payload.lstrip()[:1] == b"[":
                hot = self._hot_list.decode(payload)
            else:
                hot = self._hot_batch.decode(payload).events
            cols = self._hot_columns(hot, now)
        except (msgspec.MsgspecError, RecursionError):
            cols = None
        if cols is not None:
            return cols, []

        points, errors = self._batch_typed(payload, now)
        b = ColumnsBuilder()
        b.add_points(points)
        return b.build(), errors

    @_bounded_nesting
    def stream(self, raw: bytes, now: float) -> Point:
        """One telemetry event (bare, or wrapped in a KnowledgeEvent)."""
        try:
            ev = self._hot_stream.decode(raw)
        except msgspec.MsgspecError:
            return self._stream_typed(raw, now)
        # _hot_points for one event, inlined: this is once per stream message.
        name = self._valid_names.get(ev.name) or self._valid_name(ev.name)
        ts = ev.timestamp
        if ts is None:
            t: float | None = now
        elif ts.__class__ is str:
            t = _ts_epochs.get(ts) or _ts_epoch(ts)
        else:
            t = ts
        v = ev.value
        c = v.__class__
        if (
            name is None
            or t is None
            or not self._lo <= t <= self._hi(now)
            or (c is float and v - v != 0.0)
        ):
            return self._stream_typed(raw, now)
        if c is float:
            return _new_tuple(Point, (ev.source, name, t, v, ev.unit, None))
        if c is bool:
            return _new_tuple(Point, (ev.source, name, t, 1.0 if v else 0.0, ev.unit, None))
        return _new_tuple(Point, (ev.source, name, t, _NAN, ev.unit, v))

    def _stream_typed(self, raw: bytes, now: float) -> Point:
        try:
            return self._point(self._stream.decode(raw), now)
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
            raise DecodeError(
                f"unsupported event_type {wrapped.event_type!r} on a telemetry subject"
            )
        try:
            ev = self._stream.decode(wrapped.data)
        except msgspec.MsgspecError as exc:
            raise DecodeError(f"invalid telemetry event in data: {_reason(exc)}") from exc
        if ev.timestamp is None and wrapped.timestamp is not None:
            ev.timestamp = wrapped.timestamp
        if ev.source == "unknown" and wrapped.source:
            ev.source = wrapped.source
        return self._point(ev, now)

    @_bounded_nesting
    def batch(self, payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
        """All good points of a batch plus one error per bad event (never all-or-nothing)."""
        try:
            if payload[:1] == b"[" or payload.lstrip()[:1] == b"[":
                hot = self._hot_list.decode(payload)
            else:
                hot = self._hot_batch.decode(payload).events
            pts = self._hot_points(hot, now)
        except (msgspec.MsgspecError, RecursionError):
            pts = None
        if pts is not None:
            return pts, []
        return self._batch_typed(payload, now)

    def _batch_typed(self, payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
        try:
            if payload[:1] == b"[" or payload.lstrip()[:1] == b"[":
                events = self._list.decode(payload)
            else:
                events = self._batch.decode(payload).events
        except msgspec.DecodeError as exc:
            if isinstance(exc, msgspec.ValidationError):
                return self._batch_slowly(payload, now)
            return self._batch_split(payload, now, f"invalid JSON: {_reason(exc)}")
        except RecursionError:
            return self._batch_split(payload, now, "invalid JSON: nested too deeply")
        points: list[Point] = []
        errors: list[DecodeError] = []
        append = points.append
        for i, ev in enumerate(events):
            try:
                append(self._point(ev, now))
            except DecodeError as err:
                err.index = i
                err.raw = msgspec.json.encode(ev)
                errors.append(err)
        return points, errors

    def _batch_slowly(self, payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
        try:
            if payload.lstrip()[:1] == b"[":
                raws = _raw_list_decoder.decode(payload)
            else:
                raws = _raw_batch_decoder.decode(payload).events
        except msgspec.MsgspecError as exc:
            raise DecodeError(f"invalid batch: {_reason(exc)}") from exc
        return self._each(raws, now)

    def _batch_split(
        self, payload: bytes, now: float, reason: str
    ) -> tuple[list[Point], list[DecodeError]]:
        """A batch that is not JSON as a whole: its events one by one, if they can be found."""
        parts = split_events(payload)
        if parts is None:
            raise DecodeError(reason)
        return self._each(parts, now)

    def _each(self, raws: list[Any], now: float) -> tuple[list[Point], list[DecodeError]]:
        points: list[Point] = []
        errors: list[DecodeError] = []
        for i, raw in enumerate(raws):
            try:
                points.append(self.stream(bytes(raw), now))
            except DecodeError as err:
                err.index = i
                err.raw = bytes(raw)
                errors.append(err)
        return points, errors

    # ------------------------------------------------- executions, calibrations
    def _check_payload(self, kind: str, payload: bytes) -> None:
        cap = self.limits.max_action_payload_bytes
        if len(payload) > cap:
            raise DecodeError(
                f"oversize: {kind} of {len(payload)} bytes > limits.max_action_payload_bytes {cap}"
            )

    def _check_depth(self, kind: str, **parts: Any) -> None:
        cap = self.limits.max_payload_depth
        for name, obj in parts.items():
            # the message itself is depth 1, so its fields' contents start at 2
            if obj is not None and payload_depth_exceeds(obj, cap, start=2):
                raise DecodeError(
                    f"invalid {kind}: {name} nested deeper than limits.max_payload_depth {cap}"
                )

    def _check_text(self, kind: str, **parts: str | None) -> None:
        cap = self.limits.max_text_length
        for name, text in parts.items():
            if text is not None and len(text) > cap:
                raise DecodeError(
                    f"invalid {kind}: {name} longer than limits.max_text_length {cap}"
                )

    def _check_time(self, kind: str, now: float | None, **times: Timestamp) -> None:
        now = time.time() if now is None else now
        for name, ts in times.items():
            if ts is None:
                continue
            t = to_epoch(ts, now)
            if not self._lo <= t <= self._hi(now):
                raise DecodeError(
                    f"invalid {kind}: {name}: {self.limits.time_reason(t, max(now, _wall()))}"
                )

    @_bounded_nesting
    def execution(self, payload: bytes, now: float | None = None) -> ExecutionResult:
        self._check_payload("execution result", payload)
        try:
            res = _execution_decoder.decode(payload)
        except msgspec.MsgspecError as exc:
            raise DecodeError(f"invalid execution result: {_reason(exc)}") from exc
        if res.status not in EXECUTION_STATUSES:
            raise DecodeError(f"invalid execution result: unknown status {res.status!r}")
        if res.duration_sec is not None and not math.isfinite(res.duration_sec):
            raise DecodeError("invalid execution result: duration_sec is not finite")
        self._check_text(
            "execution result",
            message=res.message,
            error=res.error,
            action_type=res.action_type,
            target=res.target,
        )
        self._check_depth("execution result", output=res.output, metadata=res.metadata)
        self._check_time(
            "execution result", now, started_at=res.started_at, finished_at=res.finished_at
        )
        return res

    @_bounded_nesting
    def calibration(self, payload: bytes, now: float | None = None) -> CalibrationEvent:
        self._check_payload("calibration event", payload)
        try:
            cal = _calibration_decoder.decode(payload)
        except msgspec.MsgspecError as exc:
            raise DecodeError(f"invalid calibration event: {_reason(exc)}") from exc
        self._check_text(
            "calibration event", prediction_id=cal.prediction_id, calibration_id=cal.calibration_id
        )
        self._check_depth(
            "calibration event",
            predicted_outcome=cal.predicted_outcome,
            actual_outcome=cal.actual_outcome,
            accuracy_metrics=cal.accuracy_metrics,
        )
        self._check_time("calibration event", now, timestamp=cal.timestamp)
        return cal


decoder_for = functools.lru_cache(maxsize=16)(EventDecoder)
_default = decoder_for(DEFAULT_LIMITS)
TelemetryEvent = _default.TelemetryEvent


def decode_event(raw: bytes, now: float, limits: EventLimits = DEFAULT_LIMITS) -> Point:
    """One telemetry event (bare, or wrapped in a KnowledgeEvent)."""
    return (_default if limits is DEFAULT_LIMITS else decoder_for(limits)).stream(raw, now)


def decode_stream(payload: bytes, now: float, limits: EventLimits = DEFAULT_LIMITS) -> Point:
    return (_default if limits is DEFAULT_LIMITS else decoder_for(limits)).stream(payload, now)


def decode_batch(
    payload: bytes, now: float, limits: EventLimits = DEFAULT_LIMITS
) -> tuple[list[Point], list[DecodeError]]:
    """All good points of a batch plus one error per bad event (never all-or-nothing)."""
    return (_default if limits is DEFAULT_LIMITS else decoder_for(limits)).batch(payload, now)


def decode_execution(
    payload: bytes, now: float | None = None, limits: EventLimits = DEFAULT_LIMITS
) -> ExecutionResult:
    return (_default if limits is DEFAULT_LIMITS else decoder_for(limits)).execution(payload, now)


def decode_calibration(
    payload: bytes, now: float | None = None, limits: EventLimits = DEFAULT_LIMITS
) -> CalibrationEvent:
    return (_default if limits is DEFAULT_LIMITS else decoder_for(limits)).calibration(payload, now)


def new_id() -> str:
    return str(uuid.uuid4())


@functools.lru_cache(maxsize=8192)
def iso(t: float) -> str:
    """Epoch seconds → ISO-8601 UTC with a ``Z``.

    Cached: answers format the same latest-sample times again and again (every
    current_state query formats each series' time), and formatting is ~3 us.
    """
    try:
        return datetime.fromtimestamp(t, _UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        # Outside datetime's range: never stored (the edge refuses such times), but an
        # answer must not fail on one (an old snapshot, a computed time).
        return repr(float(t))


def parse_time(text: str) -> float:
    """ISO-8601 (naive = UTC) or epoch seconds → epoch seconds; ``ValueError`` otherwise."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt.timestamp() if dt.tzinfo else (dt - _EPOCH).total_seconds()


def _decode_event_typed(raw: bytes, now: float) -> Point:
    """The typed (reference) path of ``decode_stream``, for the tests that pin the fast one."""
    return _default._stream_typed(raw, now)


def _decode_batch_typed(payload: bytes, now: float) -> tuple[list[Point], list[DecodeError]]:
    """The typed (reference) path of ``decode_batch``."""
    return _default._batch_typed(payload, now)

