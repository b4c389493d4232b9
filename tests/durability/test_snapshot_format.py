"""Snapshot files: round trip, atomic writes, pruning, and every way a file can be bad."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from twin.core.events import Point
from twin.core.state import TwinState
from twin.core.store import Retention
from twin.durability.snapshot import (
    FORMAT_VERSION,
    SnapshotError,
    SnapshotStore,
    capture,
    decode,
    encode,
    encode_v1,
    restore,
)


def _state() -> TwinState:
    st = TwinState(Retention(1000, 0))
    pts = [Point(f"sys{i % 3}", "cpu", 100.0 + i, float(i), "pct", None) for i in range(300)]
    pts.append(Point("sys0", "mode", 500.0, math.nan, "", "degraded"))
    pts.append(Point("sys1", "cpu", 50.0, -1.0, "pct", None))  # out of order
    st.apply_points(pts)
    from twin.core.events import CalibrationEvent, ExecutionResult

    st.apply_execution(
        ExecutionResult(
            action_id="a1",
            action_type="ADD_SERVER",
            status="success",
            finished_at=123.0,
            output={"target": "swim", "n": [1, 2]},
        ),
        0.0,
    )
    st.apply_calibration(
        CalibrationEvent(
            prediction_id="p1",
            actual_outcome={"x": 1.5},
            predicted_outcome={"x": 1.0},
            timestamp=124.0,
        ),
        0.0,
    )
    return st


def _same(a: TwinState, b: TwinState) -> None:
    assert sorted(a.store.keys()) == sorted(b.store.keys())
    for key in a.store.keys():  # noqa: SIM118 - SeriesStore.keys() is a method, not a dict view
        sa, sb = a.store.get(*key), b.store.get(*key)
        ta, va = sa.arrays()
        tb, vb = sb.arrays()
        assert np.array_equal(ta, tb) and np.array_equal(va, vb)
        assert (sa.unit, sa.last_text, sa.last_t) == (sb.unit, sb.last_text, sb.last_t)
    assert [x.action_id for x in a.actions] == [x.action_id for x in b.actions]
    assert a.actions[0].output == b.actions[0].output
    assert [x.actual for x in a.calibrations] == [x.actual for x in b.calibrations]


def test_snapshot_round_trip_restores_series_text_values_actions_and_calibrations() -> None:
    st = _state()
    data = encode(capture(st, 42, [44, 45], "S"))
    header = orjson.loads(data.split(b"\n", 1)[0])
    assert (
        header["format_version"] == FORMAT_VERSION
        and header["applied_sequence"] == 42
        and len(header["sha256"]) == 64
    )
    snap = decode(data)
    assert (snap.applied_sequence, snap.applied_above, snap.stream) == (42, [44, 45], "S")
    fresh = TwinState(Retention(1000, 0))
    assert restore(fresh, snap) == 301
    _same(st, fresh)
    # The restored series keeps working as a normal series.
    fresh.apply_points([Point("sys0", "cpu", 1e6, 7.0, "pct", None)])
    assert fresh.store.get("sys0", "cpu").last_v == 7.0


def test_restore_applies_the_current_retention() -> None:
    snap = decode(encode(capture(_state(), 1)))
    small = TwinState(Retention(10, 0))
    restore(small, snap)
    assert all(len(s) <= 10 for s in small.store)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum mismatch"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: b"garbage" * 3, "no header line"),
        (lambda d: b'{"magic": "something-else"}\n' + d.split(b"\n", 1)[1], "bad magic"),
        (lambda d: b"{not json\n" + d.split(b"\n", 1)[1], "header is not JSON"),
    ],
)
def test_damaged_snapshot_is_rejected_with_its_reason(damage, reason) -> None:
    data = encode(capture(_state(), 7))
    with pytest.raises(SnapshotError) as err:
        decode(damage(data))
    assert reason in err.value.reason


def test_snapshot_of_a_newer_format_version_is_rejected_clearly() -> None:
    data = encode(capture(_state(), 7))
    head, body = data.split(b"\n", 1)
    h = orjson.loads(head)
    h["format_version"] = 99
    with pytest.raises(SnapshotError) as err:
        decode(orjson.dumps(h) + b"\n" + body)
    assert "unsupported snapshot format version 99" in err.value.reason
    assert "reads versions 1, 2" in err.value.reason


def test_snapshot_of_format_version_1_is_migrated() -> None:
    st = _state()
    snap = decode(encode_v1(capture(st, 9)))
    assert snap.format_version == 1 and snap.applied_sequence == 9 and snap.applied_above == []
    fresh = TwinState(Retention(1000, 0))
    restore(fresh, snap)
    _same(st, fresh)


def test_store_writes_atomically_keeps_the_newest_and_skips_corrupt_ones(tmp_path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    st = _state()
    for seq in (5, 10, 15):
        store.write(encode(capture(st, seq)), seq)
    names = [p.name for p in store.files()]
    assert names == ["snapshot-00000000000000000015.pts", "snapshot-00000000000000000010.pts"]
    assert not list(tmp_path.glob(".snapshot-*"))  # no temp files left behind
    newest = store.files()[0]
    newest.write_bytes(newest.read_bytes()[:-10])  # a torn write that bypassed os.replace
    snap, errors = store.load_latest()
    assert snap is not None and snap.applied_sequence == 10
    assert len(errors) == 1 and errors[0].path == newest and "truncated" in errors[0].reason


def test_empty_or_missing_directory_has_no_snapshot(tmp_path) -> None:
    assert SnapshotStore(tmp_path / "nope").load_latest() == (None, [])


def _with_ledger() -> TwinState:
    """A state whose ledger holds a pending forecast, a scored one and learned scales."""
    from twin.core.ledger import TrackInput

    st = TwinState(Retention(10_000, 0))
    rng = np.random.default_rng(4)
    st.apply_points(
        [
            Point("web", "cpu", 1000.0 + 10 * i, float(v), "pct", None)
            for i, v in enumerate(rng.normal(50, 2, 200))
        ]
    )
    for k in range(6):
        last = st.store.get("web", "cpu").last_t
        t = last + 10.0 * np.arange(1, 7)
        m = np.full(6, 50.0)
        st.ledger.record(
            st.store,
            f"f{k}",
            "web",
            "statistical",
            "forecast",
            [TrackInput("cpu", t, m, m - 1.0, m + 1.0)],
            0.9,
        )
        if k < 5:
            st.apply_points(
                [
                    Point("web", "cpu", float(x), float(v), "pct", None)
                    for x, v in zip(t, rng.normal(50, 2, 6))
                ]
            )
            st.ledger.score_due(st.store, st.actions)
    return st


def test_version_3_snapshots_carry_the_prediction_ledger() -> None:
    st = _with_ledger()
    data = encode(capture(st, 7))
    assert orjson.loads(data.split(b"\n", 1)[0])["format_version"] == FORMAT_VERSION == 3
    fresh = TwinState(Retention(10_000, 0))
    restore(fresh, decode(data))
    assert fresh.ledger.report(limit=10) == st.ledger.report(limit=10)
    assert fresh.ledger.totals()["predictions_scored_total"] == 5
    assert fresh.ledger.totals()["predictions_pending"] == 1
    lead = np.arange(1.0, 7.0)
    assert np.allclose(
        fresh.ledger.interval_scales("web", "forecast", "cpu", lead, 0.9)[0],
        st.ledger.interval_scales("web", "forecast", "cpu", lead, 0.9)[0],
    )
    # The restored pending forecast is scored when its telemetry arrives.
    last = fresh.store.get("web", "cpu").last_t
    fresh.apply_points(
        [Point("web", "cpu", last + 10.0 * i, 50.0, "pct", None) for i in range(1, 8)]
    )
    assert fresh.ledger.score_due(fresh.store, fresh.actions) == 1


def test_version_2_snapshots_still_load_with_an_empty_ledger() -> None:
    st = _with_ledger()
    data = encode(capture(st, 7), version=2)
    assert orjson.loads(data.split(b"\n", 1)[0])["format_version"] == 2
    snap = decode(data)
    assert snap.format_version == 2 and snap.ledger is None
    fresh = TwinState(Retention(10_000, 0))
    assert restore(fresh, snap) == st.store.sample_count
    assert fresh.ledger.totals()["predictions_recorded_total"] == 0


def test_a_ledger_of_an_unknown_export_version_is_skipped_not_fatal() -> None:
    st = _with_ledger()
    snap = capture(st, 7)
    assert snap.ledger is not None
    snap.ledger["version"] = 99
    fresh = TwinState(Retention(10_000, 0))
    assert restore(fresh, decode(encode(snap))) == st.store.sample_count
    assert fresh.ledger.totals()["predictions_recorded_total"] == 0
