"""``current_state`` and ``historical`` answered from the series store.

Shared by every world model, so "what is X now / at 10:00" gives the same facts
whichever model is loaded. Malformed parameters raise ``InvalidRequest`` (→
INVALID_ARGUMENT); a well-formed question about something the twin does not know
is answered in-band with ``success=False`` and an explanation.

Parameters (all strings, as the proto map carries them):

- ``system`` (alias ``source``): restrict to one system; ``metric``/``metrics``: one
  name or a comma list (``cpu_usage`` and ``cpu.usage`` both match).
- historical: ``at`` (ISO-8601 or epoch seconds; defaults to the request's
  ``timestamp``) for the value at a time, or ``start``/``end`` (or
  ``window_minutes`` back from the newest sample) for a range; ``max_points``
  (default 500) downsamples a range by bucket means.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from twin.core.errors import InvalidRequest
from twin.core.events import iso, normalise_name, parse_time
from twin.core.limits import DEFAULT_LIMITS, EventLimits
from twin.core.state import TwinState
from twin.core.store import Series, downsample
from twin.models.domain import QueryRequest, QueryResult

MAX_SERIES_IN_ANSWER = 2000


def param_time(
    params: dict[str, str], key: str, limits: EventLimits = DEFAULT_LIMITS
) -> float | None:
    """A time parameter, checked against the window event times are held to."""
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    try:
        t = parse_time(raw)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(
            f"not an ISO-8601 time or epoch seconds: {raw!r}", f"parameters.{key}"
        ) from exc
    return limits.check_request_time(t, f"parameters.{key}")


def param_float(params: dict[str, str], key: str, default: float) -> float:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise InvalidRequest(f"not a number: {raw!r}", f"parameters.{key}") from exc
    if not math.isfinite(value):
        raise InvalidRequest(f"not a finite number: {raw!r}", f"parameters.{key}")
    return value


def requested_metrics(params: dict[str, str], limits: EventLimits = DEFAULT_LIMITS) -> list[str]:
    """The distinct metric names asked for, in order; at most ``limits.max_query_metrics``."""
    raw = params.get("metrics") or params.get("metric") or ""
    names = list(dict.fromkeys(normalise_name(m.strip()) for m in raw.split(",") if m.strip()))
    if len(names) > limits.max_query_metrics:
        field = "parameters.metrics" if params.get("metrics") else "parameters.metric"
        raise InvalidRequest(
            f"{len(names)} metrics; at most {limits.max_query_metrics} (limits.max_query_metrics)",
            field,
        )
    return names


def requested_system(params: dict[str, str]) -> str | None:
    return params.get("system") or params.get("source") or None


def _unknown(kind: str, name: str, known: list[str]) -> QueryResult:
    shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
    return QueryResult(False, None, 0.0, f"unknown {kind} {name!r}; known: {shown or 'none yet'}")


def current_state(state: TwinState, params: dict[str, str]) -> QueryResult:
    store = state.store
    system = requested_system(params)
    metrics = requested_metrics(params, getattr(state, "limits", DEFAULT_LIMITS))
    if system is not None and system not in store.sources():
        return _unknown("system", system, store.sources())
    latest = store.latest(system)
    if metrics:
        missing = [m for m in metrics if not any(m in ms for ms in latest.values())]
        if missing:
            known = sorted({m for ms in latest.values() for m in ms})
            return _unknown("metric", missing[0], known)
        latest = {src: {m: v for m, v in ms.items() if m in metrics} for src, ms in latest.items()}
        latest = {src: ms for src, ms in latest.items() if ms}
    count = sum(len(ms) for ms in latest.values())
    if count > MAX_SERIES_IN_ANSWER:
        return QueryResult(
            False, None, 0.0, f"{count} series match; narrow the query with 'system' or 'metric'"
        )
    systems = {
        src: {
            m: {
                "value": e["value"],
                "timestamp": iso(e["timestamp"]) if math.isfinite(e["timestamp"]) else None,  # type: ignore[arg-type]
                "unit": e["unit"],
            }
            for m, e in ms.items()
        }
        for src, ms in latest.items()
    }
    newest = max((e["timestamp"] for ms in latest.values() for e in ms.values()), default=math.nan)  # type: ignore[type-var]
    result: dict[str, Any] = {"systems": systems, "series": count}
    if math.isfinite(newest):  # type: ignore[arg-type]
        result["as_of"] = iso(newest)
    explanation = (
        f"latest values of {count} series" if count else "the twin has received no telemetry yet"
    )
    return QueryResult(True, result, 1.0 if count else 0.0, explanation, {"series": str(count)})


def _series_for(
    state: TwinState, params: dict[str, str], limits: EventLimits
) -> tuple[list[Series], QueryResult | None]:
    system = requested_system(params)
    metrics = requested_metrics(params, limits)
    if not metrics:
        raise InvalidRequest("historical queries need parameters.metric", "parameters.metric")
    store = state.store
    if system is not None and system not in store.sources():
        return [], _unknown("system", system, store.sources())
    wanted = set(metrics)
    by_name: dict[str, list[Series]] = {m: [] for m in metrics}
    for s in store:  # one pass over the store, whatever the number of names
        if s.name in wanted and (system is None or s.source == system):
            by_name[s.name].append(s)
    for m, matches in by_name.items():
        if not matches:
            known = sorted({s.name for s in store if system is None or s.source == system})
            return [], _unknown("metric", m, known)
    return [s for matches in by_name.values() for s in matches], None


def _check_budget(scanned: int, returned: int, limits: EventLimits) -> None:
    if scanned > limits.max_scanned_samples:
        raise InvalidRequest(
            f"would read {scanned} samples; at most {limits.max_scanned_samples} "
            "(limits.max_scanned_samples): "
            "narrow it with system, metric, start/end or window_minutes",
            "parameters",
        )
    if returned > limits.max_points_returned:
        raise InvalidRequest(
            f"would return {returned} points; at most {limits.max_points_returned} "
            "(limits.max_points_returned): "
            "lower max_points or name fewer series",
            "parameters.max_points",
        )


def _span(s: Series, start: float | None, end: float | None, window: float) -> tuple[float, float]:
    hi = end if end is not None else s.last_t
    lo = start if start is not None else (hi - window * 60.0 if window else -math.inf)
    return lo, hi


def iso_many(times: np.ndarray) -> list[str]:
    """``iso`` for an array of epoch seconds, vectorised (a 50,000-point answer would
    otherwise spend most of its time formatting dates one by one).

    The text is assembled as code points in a fixed-width numpy unicode array: the
    date part from the few distinct days, the time of day from integer digits. A
    whole second ends in ``Z`` at column 19; numpy drops the NUL padding after it.
    """
    n = times.shape[0]
    if n == 0:
        return []
    # datetime.fromtimestamp's own rounding: whole seconds, then the fraction to the
    # nearest microsecond (half to even), so both give the same text.
    sec_f = np.floor(times)
    us = np.round((times - sec_f) * 1e6).astype(np.int64)
    sec = sec_f.astype(np.int64) + (us >= 1_000_000)
    us = np.where(us >= 1_000_000, 0, us)
    day, tod = np.divmod(sec, 86_400)
    days, inverse = np.unique(day, return_inverse=True)
    dates = [(_EPOCH + timedelta(days=int(d))).strftime("%Y-%m-%dT") for d in days.tolist()]
    prefix = np.array([[ord(c) for c in text] for text in dates], dtype=np.uint32)
    out = np.empty((n, 27), dtype=np.uint32)
    out[:, :11] = prefix[inverse]
    hh, rest = np.divmod(tod, 3600)
    mm, ss = np.divmod(rest, 60)
    out[:, 11:13] = _DIGITS2[hh]
    out[:, 14:16] = _DIGITS2[mm]
    out[:, 17:19] = _DIGITS2[ss]
    out[:, 13] = out[:, 16] = ord(":")
    out[:, 19] = ord(".")
    hi, lo = np.divmod(us, 1000)
    out[:, 20:23] = _DIGITS3[hi]
    out[:, 23:26] = _DIGITS3[lo]
    out[:, 26] = ord("Z")
    whole = us == 0
    if whole.any():
        out[whole, 19] = ord("Z")
        out[whole, 20:] = 0
    return out.view("<U27").ravel().tolist()


_EPOCH = datetime(1970, 1, 1)
# Code points of "00".."99" and "000".."999", indexed by the number they spell.
_DIGITS2 = np.array([[ord(c) for c in f"{i:02d}"] for i in range(100)], dtype=np.uint32)
_DIGITS3 = np.array([[ord(c) for c in f"{i:03d}"] for i in range(1000)], dtype=np.uint32)


# A long answer lets other RPCs (health!) run every this many points (about 1 ms of work):
# 5 000 left health p99 at 78-93 ms under bench/hostile_query.py --quick, 1 000 at 22-64 ms.
YIELD_EVERY_POINTS = 1_000


async def historical(
    state: TwinState, params: dict[str, str], request_time: float | None
) -> QueryResult:
    limits = getattr(state, "limits", DEFAULT_LIMITS)
    at = param_time(params, "at", limits)
    start = param_time(params, "start", limits)
    end = param_time(params, "end", limits)
    window = param_float(params, "window_minutes", 0.0)
    max_points = int(param_float(params, "max_points", 500))
    if max_points < 1:
        raise InvalidRequest("must be >= 1", "parameters.max_points")
    if window < 0:
        raise InvalidRequest("must be >= 0", "parameters.window_minutes")
    if start is not None and end is not None and end < start:
        raise InvalidRequest("end is before start", "parameters.end")
    series, failure = _series_for(state, params, limits)
    if failure is not None:
        return failure
    if at is None and start is None and end is None and not window:
        at = request_time
    spans = [_span(s, start, end, window) for s in series]
    if at is not None:
        _check_budget(0, len(series), limits)  # a value per series, binary-searched
    else:
        counts = [s.count_between(lo, hi) for s, (lo, hi) in zip(series, spans)]
        _check_budget(sum(counts), sum(min(max_points, n) for n in counts), limits)
    if at is not None:
        values: dict[str, dict[str, Any]] = {}
        for s in series:
            hit = s.value_at(at)
            values.setdefault(s.source, {})[s.name] = (
                {"value": hit[1], "timestamp": iso(hit[0]), "unit": s.unit} if hit else None
            )
        found = sum(1 for ms in values.values() for v in ms.values() if v is not None)
        if not found:
            return QueryResult(
                False, {"systems": values, "at": iso(at)}, 0.0, f"no samples at or before {iso(at)}"
            )
        return QueryResult(
            True,
            {"systems": values, "at": iso(at)},
            1.0,
            f"values at {iso(at)}",
            {"series": str(len(series))},
        )
    ranges: dict[str, dict[str, Any]] = {}
    total = 0
    since_yield = 0
    for s, (lo, hi) in zip(series, spans):
        t, v = s.window(lo, hi)
        n = int(t.shape[0])
        t, v = downsample(t, v, max_points)
        total += n
        points: list[tuple[str, float]] = []  # pairs; JSON arrays
        for i in range(0, int(t.shape[0]), YIELD_EVERY_POINTS):
            part = slice(i, i + YIELD_EVERY_POINTS)
            points.extend(zip(iso_many(t[part]), v[part].tolist()))
            since_yield += len(t[part])
            if since_yield >= YIELD_EVERY_POINTS:
                since_yield = 0
                await asyncio.sleep(0)
        ranges.setdefault(s.source, {})[s.name] = {
            "unit": s.unit,
            "samples": n,
            "points": points,
            "downsampled": bool(t.shape[0] < n),
        }
    return QueryResult(
        True,
        {"systems": ranges},
        1.0 if total else 0.0,
        f"{total} samples in range",
        {"series": str(len(series))},
    )


def series_stats(
    state: TwinState, system: str | None = None, metric: str | None = None
) -> dict[str, Any]:
    """Exact per-series figures (retained count, sum, first/last time, ever appended) for audits.

    ``Manage series_stats`` answers with it: a fault test audits what a twin holds
    through its public API, so this counts every retained sample, never a downsample.
    """
    want = normalise_name(metric) if metric else None
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    samples = 0
    total = 0.0
    for s in state.store:
        if (system and s.source != system) or (want and s.name != want):
            continue
        t, v = s.arrays()
        ssum = float(v.sum()) if v.shape[0] else 0.0
        n = int(v.shape[0])
        out.setdefault(s.source, {})[s.name] = {
            "count": n,
            "sum": ssum,
            "first_t": float(t[0]) if n else None,
            "last_t": float(t[-1]) if n else None,
            "appended": s.appended,
        }
        samples += n
        total += ssum
    return {
        "series": [f"{src}/{m}" for src, ms in out.items() for m in ms],
        "by_series": out,
        "samples": samples,
        "sum": total,
    }


async def answer(state: TwinState, request: QueryRequest) -> QueryResult:
    """Answers the store-backed query types; other types are the model's business."""
    if request.query_type == "current_state":
        return current_state(state, request.parameters)
    if request.query_type == "historical":
        return await historical(state, request.parameters, request.timestamp)
    return QueryResult(
        False, None, 0.0, f"query type {request.query_type!r} is not supported by this model"
    )
