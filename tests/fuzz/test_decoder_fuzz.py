"""Property: every decoder either returns a well-formed result or raises ``DecodeError``
with a reason, for any bytes (random, deep JSON, huge numbers, NaN/inf, wrong types,
unicode, oversized). Nothing else ever escapes."""

from __future__ import annotations

import math
import re

import pytest
from fuzz.fuzz_strategies import (
    BATCH_PAYLOADS,
    CALIBRATION_PAYLOADS,
    EXECUTION_PAYLOADS,
    STREAM_PAYLOADS,
    deep,
)
from hypothesis import HealthCheck, given, settings

from twin.core.events import (
    EXECUTION_STATUSES,
    DecodeError,
    Point,
    decode_batch,
    decode_calibration,
    decode_execution,
    decode_stream,
)

NOW = 1_700_000_000.0
NORMALISED = re.compile(r"^[a-z_.][a-z0-9_.]*$")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check_point(p: Point) -> None:
    assert isinstance(p, Point)
    assert NORMALISED.match(p.name) and len(p.name) <= 256
    assert isinstance(p.source, str) and 1 <= len(p.source) <= 256
    assert isinstance(p.t, float) and math.isfinite(p.t)
    assert (p.text is None and math.isfinite(p.value)) or (
        isinstance(p.text, str) and math.isnan(p.value)
    )


def _rejected(err: DecodeError) -> None:
    assert isinstance(err.reason, str) and err.reason.strip()


@FUZZ
@given(STREAM_PAYLOADS)
def test_decode_stream_returns_a_clean_point_or_a_reason(payload: bytes) -> None:
    try:
        _check_point(decode_stream(payload, NOW))
    except DecodeError as err:
        _rejected(err)


@FUZZ
@given(BATCH_PAYLOADS)
def test_decode_batch_never_loses_an_event_silently(payload: bytes) -> None:
    try:
        points, errors = decode_batch(payload, NOW)
    except DecodeError as err:
        _rejected(err)
        return
    for p in points:
        _check_point(p)
    for e in errors:
        _rejected(e)
        assert e.index is not None and e.raw is not None
    assert len({e.index for e in errors}) == len(errors)


@FUZZ
@given(EXECUTION_PAYLOADS)
def test_decode_execution_returns_a_valid_result_or_a_reason(payload: bytes) -> None:
    try:
        res = decode_execution(payload)
    except DecodeError as err:
        _rejected(err)
        return
    assert res.action_id and res.status in EXECUTION_STATUSES
    assert res.duration_sec is None or math.isfinite(res.duration_sec)


@FUZZ
@given(CALIBRATION_PAYLOADS)
def test_decode_calibration_returns_a_valid_event_or_a_reason(payload: bytes) -> None:
    try:
        cal = decode_calibration(payload)
    except DecodeError as err:
        _rejected(err)
        return
    assert isinstance(cal.prediction_id, str) and isinstance(cal.actual_outcome, dict)


DEEP = (
    b'{"name": "x", "value": 1, "action_id": "a", "prediction_id": "p", "actual_outcome": {}, '
    b'"predicted_outcome": {}, "metadata": {"m": '
    + deep(5000)
    + b"}}"
)
DECODERS = {
    "stream": lambda p: decode_stream(p, NOW),
    "execution": decode_execution,
    "calibration": decode_calibration,
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_extremely_deep_json_is_a_decode_error_not_a_recursion_error(name: str) -> None:
    """Found by this fuzzing: nesting deeper than msgspec's limit (about 1 000 levels, a
    2 KB payload) made every decoder raise RecursionError, which the core-NATS path lost
    without a dead-letter record. The decoders now turn it into a DecodeError."""
    with pytest.raises(DecodeError) as info:
        DECODERS[name](DEEP)
    _rejected(info.value)


def test_extremely_deep_event_in_a_batch_is_its_own_dead_letter() -> None:
    """Issue 17 defect 9: the deep event alone is rejected (it used to take the whole
    batch with it); a good neighbour on either side is kept."""
    good = b'{"name": "ok", "value": 1}'
    points, errors = decode_batch(b'{"events": [' + good + b", " + DEEP + b", " + good + b"]}", NOW)
    assert [p.name for p in points] == ["ok", "ok"]
    assert [e.index for e in errors] == [1]
    assert "nested too deeply" in errors[0].reason and errors[0].raw == DEEP


def test_oversized_event_name_and_source_are_rejected_with_a_reason() -> None:
    import orjson

    for ev in (
        {"name": "a" * 10_000, "value": 1},
        {"name": "cpu", "value": 1, "source": "s" * 10_000},
        {"name": "cpu", "value": "x" * 1_000_000},
    ):
        try:
            _check_point(decode_stream(orjson.dumps(ev), NOW))
        except DecodeError as err:
            _rejected(err)
