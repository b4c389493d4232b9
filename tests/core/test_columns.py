"""The columnar hot path gives exactly what the point path gives (issue 12 item 3):
the same events per series, the same errors with the same reasons and indexes, the
same store contents after a vectorised append, the same refusals at the series cap."""

from __future__ import annotations

import math

import numpy as np
from fuzz.fuzz_strategies import BATCH_PAYLOADS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.core.columns import ColumnsBuilder, SeriesColumns
from twin.core.errors import DecodeError
from twin.core.events import Point, decode_batch, decoder_for
from twin.core.limits import DEFAULT_LIMITS
from twin.core.state import TwinState
from twin.core.store import Retention, Series

NOW = 1_700_000_000.0
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _by_series(points: list[Point]) -> dict[tuple[str, str], list[tuple[float, float, str | None]]]:
    out: dict[tuple[str, str], list[tuple[float, float, str | None]]] = {}
    for p in points:
        out.setdefault((p.source, p.name), []).append((p.t, p.value, p.text))
    return out


@FUZZ
@given(BATCH_PAYLOADS)
def test_batch_columns_equal_decode_batch_per_series(payload: bytes) -> None:
    dec = decoder_for(DEFAULT_LIMITS)
    try:
        points, errors = decode_batch(payload, NOW)
    except DecodeError as err:
        try:
            dec.batch_columns(payload, NOW)
        except DecodeError as err2:
            assert err2.reason == err.reason
            return
        raise AssertionError("columns accepted a batch the point path refused") from None
    cols, errors2 = dec.batch_columns(payload, NOW)
    assert [(e.index, e.reason, e.raw) for e in errors2] == [
        (e.index, e.reason, e.raw) for e in errors
    ]
    assert len(cols) == len(points)
    want = _by_series(points)
    got = _by_series(list(cols))
    assert want.keys() == got.keys()
    for key in want:
        nums_w = [(t, v) for t, v, x in want[key] if x is None]
        nums_g = [(t, v) for t, v, x in got[key] if x is None]
        assert nums_w == nums_g
        assert [(t, x) for t, _, x in want[key] if x is not None] == [
            (t, x) for t, _, x in got[key] if x is not None
        ]
    for _key, _unit, t, v in cols.groups():
        assert len(t) == len(v) and all(isinstance(x, float) for x in t + v)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), max_size=300),
    st.integers(1, 200),
    st.sampled_from([0.0, 50.0, 1e5]),
    st.integers(1, 40),
)
def test_vectorised_extend_equals_appends(
    samples: list[tuple[float, float]], max_points: int, max_age: float, cut: int
) -> None:
    ret = Retention(max_points=max_points, max_age_sec=max_age)
    a, b = Series("s", "m", ret), Series("s", "m", ret)
    for t, v in samples:
        a.append(t, v)
    for i in range(0, len(samples), cut):  # in slices, as batches arrive
        part = samples[i : i + cut]
        b.extend(
            np.array([t for t, _ in part], dtype=np.float64),
            np.array([v for _, v in part], dtype=np.float64),
        )
    assert (len(a), a.appended, a.version) == (len(b), b.appended, b.version)
    assert _same(a.last_t, b.last_t) and _same(a.last_v, b.last_v)
    ta, va = a.arrays()
    tb, vb = b.arrays()
    assert np.array_equal(ta, tb) and np.array_equal(va, vb)


def test_apply_columns_equals_apply_and_refuses_the_same_series() -> None:
    pts = [Point(f"s{i % 3}", f"m{i % 5}", float(i), float(i) * 2, "u", None) for i in range(60)]
    pts += [
        Point("s0", "m0", 61.0, math.nan, "u", "text"),
        Point("s9", "new", 1.0, math.nan, "u", "t9"),
    ]
    a = TwinState(max_series=12, max_series_per_system=4)
    b = TwinState(max_series=12, max_series_per_system=4)
    n_a, refused_a = a.apply(pts)
    builder = ColumnsBuilder()
    builder.add_points(pts)
    cols = builder.build()
    n_b, refused_b = b.apply_columns(cols)
    assert n_a == n_b
    assert {(p.source, p.name) for p, _ in refused_a} == {cols.keys[g] for g in refused_b}
    assert a.store.rejected_events == b.store.rejected_events
    assert a.store.keys() == b.store.keys() or sorted(a.store.keys()) == sorted(b.store.keys())
    for key in a.store.keys():  # noqa: SIM118 - iterating the store yields Series, not keys
        sa, sb = a.store.get(*key), b.store.get(*key)
        assert sa is not None and sb is not None and sa.last_text == sb.last_text
        assert all(np.array_equal(x, y) for x, y in zip(sa.arrays(), sb.arrays()))
    kept = cols.without(set(refused_b))
    assert len(kept) == n_b and all(k not in {cols.keys[g] for g in refused_b} for k in kept.keys)


def test_series_columns_is_a_sequence_of_points() -> None:
    cols = SeriesColumns([("a", "x")], ["u"], [[1.0, 2.0]], [[3.0, 4.0]], [(0, 5.0, "hi")])
    assert len(cols) == 3 and bool(cols) and not SeriesColumns.empty()
    assert cols[0] == Point("a", "x", 1.0, 3.0, "u", None)
    assert cols[2].text == "hi" and math.isnan(cols[2].value)
    assert [k for k, *_ in cols.groups()] == [("a", "x")]
