"""Hypothesis strategies for hostile payloads (import as ``fuzz.fuzz_strategies``):
random bytes, deep JSON, huge numbers, NaN/inf, wrong types, unicode names, oversized
strings, and near-valid events with one field broken."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

MAX_DEPTH = 900
NASTY_FLOATS = st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, 2.0**53 + 1, 1e16])
NUMBER_TOKENS = st.sampled_from(
    [
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"1e400",
        b"-1e400",
        b"1" + b"0" * 400,
        b"1e-400",
        b"0x10",
        b"01",
        b"-",
        b"1.",
        b".5",
    ]
)
NAMES = st.one_of(
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_.]{0,20}", fullmatch=True),
    st.text(min_size=0, max_size=40),  # unicode, empty, spaces, RTL, emoji...
    st.sampled_from(
        ["", "9lives", "cpu usage", "ünïcødé", "a" * 300, "\u202e", "名前", "a\x00b", "."]
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    NASTY_FLOATS,
    st.text(max_size=30),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
TIMESTAMPS = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-13-45T99:99:99",
            "9999-12-31T23:59:59+14:00",
            "0001-01-01T00:00:00-14:00",
            "yesterday",
            "",
            "1e10",
        ]
    ),
    st.text(max_size=30),
)


@st.composite
def near_valid_event(draw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"name": draw(NAMES), "value": draw(st.one_of(SCALARS, JSON))}
    if draw(st.booleans()):
        ev["timestamp"] = draw(TIMESTAMPS)
    if draw(st.booleans()):
        ev["source"] = draw(st.one_of(st.text(max_size=20), SCALARS))
    if draw(st.booleans()):
        ev["unit"] = draw(st.one_of(st.text(max_size=10), SCALARS))
    if draw(st.booleans()):
        ev["tags"] = draw(
            st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), JSON)
        )
    if draw(st.booleans()):
        ev["metadata"] = draw(JSON)
    if draw(st.integers(0, 5)) == 0:
        ev = {
            "event_id": "x",
            "event_type": draw(st.sampled_from(["telemetry", "anomaly", ""])),
            "data": ev,
            "source": draw(st.text(max_size=8)),
        }
    return ev


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS) if _safe(obj) else b"null"


def _safe(obj: Any) -> bool:
    try:
        orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


@st.composite
def with_number_token(draw: Any) -> bytes:
    """A near-valid event whose value or timestamp is a number token JSON libraries disagree on."""
    field = draw(st.sampled_from(["value", "timestamp"]))
    tok = draw(NUMBER_TOKENS)
    return (
        b'{"name": "cpu", "'
        + field.encode()
        + b'": '
        + tok
        + (b', "value": 1}' if field == "timestamp" else b"}")
    )


def deep(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


STREAM_PAYLOADS = st.one_of(
    st.binary(max_size=200),
    near_valid_event().map(_dump),
    JSON.map(_dump),
    with_number_token(),
    # Nesting stays under msgspec's depth limit (~1000) here; deeper input is covered by
    # test_extremely_deep_json_is_a_decode_error_not_a_recursion_error.
    st.integers(1, MAX_DEPTH).map(lambda d: deep(d)),
    st.integers(1, MAX_DEPTH).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.integers(1, MAX_DEPTH).map(
        lambda d: b'{"name": "x", "value": 1, "metadata": {"m": ' + deep(d) + b"}}"
    ),
)


@st.composite
def batch_payload(draw: Any) -> bytes:
    events = draw(st.lists(st.one_of(near_valid_event(), JSON), max_size=8))
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return _dump(events)
    if shape == 1:
        return _dump(
            {
                "batch_id": draw(st.one_of(st.text(max_size=8), SCALARS)),
                "count": draw(SCALARS),
                "events": events,
            }
        )
    if shape == 2:
        return _dump({"events": draw(JSON)})
    return draw(st.binary(max_size=100))


BATCH_PAYLOADS = st.one_of(
    batch_payload(),
    st.binary(max_size=100),
    st.integers(1, MAX_DEPTH).map(lambda d: b'{"events": ' + deep(d) + b"}"),
)


@st.composite
def execution_payload(draw: Any) -> bytes:
    ev: dict[str, Any] = {"action_id": draw(st.one_of(st.text(max_size=20), SCALARS))}
    for key, strat in (
        (
            "action_type",
            st.one_of(st.sampled_from(["ADD_SERVER", "SET_DIMMER", "custom"]), SCALARS),
        ),
        ("status", st.one_of(st.sampled_from(["success", "failed", "pending", "weird"]), SCALARS)),
        ("success", SCALARS),
        ("duration_sec", st.one_of(SCALARS, NASTY_FLOATS)),
        ("started_at", TIMESTAMPS),
        ("finished_at", TIMESTAMPS),
        ("output", JSON),
        ("retry_count", SCALARS),
        ("metadata", JSON),
        ("target", SCALARS),
    ):
        if draw(st.booleans()):
            ev[key] = draw(strat)
    return _dump(ev)


@st.composite
def calibration_payload(draw: Any) -> bytes:
    ev: dict[str, Any] = {}
    for key, strat in (
        ("prediction_id", st.one_of(st.text(max_size=10), SCALARS)),
        ("actual_outcome", JSON),
        ("predicted_outcome", JSON),
        ("calibration_id", SCALARS),
        ("timestamp", TIMESTAMPS),
        ("accuracy_metrics", JSON),
    ):
        if draw(st.integers(0, 3)):
            ev[key] = draw(strat)
    return _dump(ev)


EXECUTION_PAYLOADS = st.one_of(execution_payload(), st.binary(max_size=100), JSON.map(_dump))
CALIBRATION_PAYLOADS = st.one_of(calibration_payload(), st.binary(max_size=100), JSON.map(_dump))
