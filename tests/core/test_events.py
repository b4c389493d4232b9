"""Every accepted payload shape, and the reasons bad ones are rejected with."""

from __future__ import annotations

import math

import orjson
import pytest

from twin.core.events import (
    DecodeError,
    decode_batch,
    decode_calibration,
    decode_execution,
    decode_stream,
    normalise_name,
    parse_time,
)

NOW = 1_700_000_000.0


def ev(**kw: object) -> bytes:
    return orjson.dumps({"name": "cpu_usage", "value": 42.5, **kw})


def test_stream_event_is_normalised_and_timestamped() -> None:
    p = decode_stream(
        ev(source="web_cluster", unit="percent", timestamp="2024-01-01T00:00:00Z", tags={"h": "1"}),
        NOW,
    )
    assert (p.source, p.name, p.value, p.unit) == ("web_cluster", "cpu.usage", 42.5, "percent")
    assert p.t == 1704067200.0


def test_naive_timestamp_is_utc_and_missing_timestamp_is_receive_time() -> None:
    assert decode_stream(ev(timestamp="2024-01-01T00:00:00"), NOW).t == 1704067200.0
    assert decode_stream(ev(timestamp="2024-01-01 00:00:00"), NOW).t == 1704067200.0
    assert decode_stream(ev(), NOW).t == NOW
    assert decode_stream(ev(timestamp=1704067200.5), NOW).t == 1704067200.5


def test_defaults_for_source_and_unit() -> None:
    p = decode_stream(ev(), NOW)
    assert p.source == "unknown" and p.unit == "unknown"


def test_bool_and_string_values() -> None:
    assert decode_stream(ev(value=True), NOW).value == 1.0
    assert decode_stream(ev(value=False), NOW).value == 0.0
    p = decode_stream(ev(value="degraded"), NOW)
    assert p.text == "degraded" and math.isnan(p.value)


def test_knowledge_event_envelope_is_unwrapped() -> None:
    raw = orjson.dumps(
        {
            "event_id": "e1",
            "timestamp": "2024-01-01T00:00:00Z",
            "source": "swim",
            "event_type": "telemetry",
            "data": {"name": "arrival_rate", "value": 12},
            "metadata": {},
        }
    )
    p = decode_stream(raw, NOW)
    assert (p.source, p.name, p.value, p.t) == ("swim", "arrival.rate", 12.0, 1704067200.0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (orjson.dumps({"name": "9cpu", "value": 1}), "regex"),
        (orjson.dumps({"name": "cpu", "value": None}), "Expected"),
        (orjson.dumps({"name": "cpu", "value": [1]}), "Expected"),
        (orjson.dumps({"value": 1}), "name"),
        (b'{"name": "cpu", "value": 1e400}', "out of range"),
        (orjson.dumps({"name": "cpu", "value": 1, "timestamp": "yesterday"}), "datetime"),
        (orjson.dumps({"name": "cpu", "value": 1, "tags": {"a": 1}}), "Expected `str`"),
        (
            orjson.dumps({"event_type": "anomaly", "data": {"name": "x", "value": 1}}),
            "unsupported event_type",
        ),
    ],
)
def test_bad_stream_events_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_stream(payload, NOW)
    assert reason.lower() in info.value.reason.lower()


def test_batch_object_and_bare_list() -> None:
    events = [{"name": "a", "value": 1}, {"name": "b", "value": 2, "source": "s"}]
    for payload in (
        orjson.dumps(
            {
                "batch_id": "b1",
                "batch_timestamp": "2024-01-01T00:00:00Z",
                "count": 2,
                "events": events,
            }
        ),
        orjson.dumps(events),
    ):
        points, errors = decode_batch(payload, NOW)
        assert [p.name for p in points] == ["a", "b"] and errors == []


def test_one_bad_event_in_a_batch_does_not_lose_its_neighbours() -> None:
    events = [
        {"name": "a", "value": 1},
        {"name": "9bad", "value": 2},
        {"name": "c", "value": "x"},
        {"name": "d", "value": None},
        {"name": "e", "value": 5},
    ]
    points, errors = decode_batch(orjson.dumps({"events": events}), NOW)
    assert [p.name for p in points] == ["a", "c", "e"]
    assert [e.index for e in errors] == [1, 3]
    assert all(e.raw for e in errors)
    assert orjson.loads(errors[0].raw)["name"] == "9bad"


def test_batch_that_is_not_json_or_has_no_events_is_one_error() -> None:
    with pytest.raises(DecodeError, match="invalid JSON"):
        decode_batch(b"\xff\xfe", NOW)
    with pytest.raises(DecodeError, match="invalid batch"):
        decode_batch(orjson.dumps({"batch_id": "x"}), NOW)


def test_execution_result_shape() -> None:
    raw = orjson.dumps(
        {
            "action_id": "a1",
            "action_type": "ADD_SERVER",
            "status": "success",
            "success": True,
            "message": "ok",
            "started_at": "2024-01-01T00:00:00Z",
            "finished_at": "2024-01-01T00:00:02Z",
            "duration_sec": 2.0,
            "output": {"servers": 4},
            "error": None,
            "retry_count": 0,
            "metadata": {"target": "swim"},
        }
    )
    res = decode_execution(raw)
    assert res.action_type == "ADD_SERVER" and res.success is True and res.duration_sec == 2.0
    with pytest.raises(DecodeError, match="unknown status"):
        decode_execution(orjson.dumps({"action_id": "a", "status": "exploded"}))
    with pytest.raises(DecodeError, match="action_id"):
        decode_execution(orjson.dumps({"status": "success"}))


def test_calibration_shape() -> None:
    cal = decode_calibration(
        orjson.dumps(
            {
                "calibration_id": "c",
                "timestamp": "2024-01-01T00:00:00Z",
                "prediction_id": "p",
                "actual_outcome": {"value": 2},
                "predicted_outcome": {"value": 1},
                "accuracy_metrics": {"mae": 1},
            }
        )
    )
    assert cal.prediction_id == "p" and cal.actual_outcome == {"value": 2}
    with pytest.raises(DecodeError, match="calibration"):
        decode_calibration(orjson.dumps({"prediction_id": "p"}))


def test_name_normalisation_and_time_parsing() -> None:
    assert normalise_name("Basic_Response_Time") == "basic.response.time"
    assert parse_time("2024-01-01T00:00:00Z") == 1704067200.0
    assert parse_time("1704067200") == 1704067200.0
    with pytest.raises(ValueError):
        parse_time("noon")
