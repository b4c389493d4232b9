from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.core.store import CHUNK, Retention, Series, SeriesStore, downsample


def test_append_and_read_back_in_order() -> None:
    store = SeriesStore()
    for i in range(10_000):
        store.append("web", "cpu", float(i), float(i) * 2)
    t, v = store.get("web", "cpu").arrays()
    assert t.shape == (10_000,)
    assert np.array_equal(v, t * 2)
    assert store.sample_count == 10_000


def test_count_retention_keeps_the_newest_points() -> None:
    s = Series("a", "x", Retention(max_points=1000))
    for i in range(5000):
        s.append(float(i), float(i))
    t, _ = s.arrays()
    assert len(s) == 1000
    assert t[0] == 4000 and t[-1] == 4999
    assert s.appended == 5000


def test_age_retention_uses_event_time_not_wall_clock() -> None:
    s = Series("a", "x", Retention(max_points=10**6, max_age_sec=100))
    for i in range(1000):
        s.append(1_000_000.0 + i, 1.0)
    t, _ = s.arrays()
    assert t[0] >= 1_000_999 - 100
    assert t[-1] == 1_000_999


def test_out_of_order_points_are_kept_and_sorted_on_read() -> None:
    s = Series("a", "x", Retention())
    for t in [1.0, 3.0, 2.0, 5.0, 4.0]:
        s.append(t, t * 10)
    t, v = s.arrays()
    assert t.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert v.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert s.last_t == 5.0 and s.last_v == 50.0


def test_value_at_returns_newest_sample_at_or_before() -> None:
    s = Series("a", "x", Retention())
    for i in range(10):
        s.append(i * 10.0, float(i))
    assert s.value_at(35.0) == (30.0, 3.0)
    assert s.value_at(30.0) == (30.0, 3.0)
    assert s.value_at(-1.0) is None


def test_tail_matches_arrays_across_chunks() -> None:
    s = Series("a", "x", Retention(max_points=3 * CHUNK))
    n = 5 * CHUNK + 17
    for i in range(n):
        s.append(float(i), float(i))
    t_all, _ = s.arrays()
    t_tail, v_tail = s.tail(CHUNK + 5)
    assert np.array_equal(t_tail, t_all[-(CHUNK + 5) :])
    assert np.array_equal(v_tail, t_tail)


def test_memory_stays_near_16_bytes_per_sample() -> None:
    s = Series("a", "x", Retention(max_points=1_000_000))
    for i in range(200_000):
        s.append(float(i), 1.0)
    assert s.nbytes / len(s) < 17.0


def test_small_series_do_not_reserve_a_full_chunk() -> None:
    store = SeriesStore()
    for k in range(100):
        store.append("s", f"m{k}", 1.0, 1.0)
    assert store.nbytes <= 100 * 2 * 8 * 64


def test_downsample_preserves_mean_and_limits_points() -> None:
    t = np.arange(1000, dtype=float)
    v = np.sin(t / 50)
    dt, dv = downsample(t, v, 100)
    assert dt.shape == (100,)
    assert dv.mean() == pytest.approx(v.mean(), abs=1e-9)
    same_t, _ = downsample(t, v, 5000)
    assert same_t is t


def test_reset_forgets_everything() -> None:
    store = SeriesStore()
    store.append("a", "b", 1.0, 2.0)
    assert store.reset() == 1
    assert len(store) == 0 and store.get("a", "b") is None


def test_chunks_follow_max_points_so_memory_follows_the_setting() -> None:
    """Issue 17 defect 3: with 4 096-sample chunks ``max_points: 300`` cost 64 KB per series."""
    for max_points in (1, 3, 300, 5_000, 100_000):
        s = Series("a", "x", Retention(max_points=max_points))
        for i in range(3 * max_points + 10):
            s.append(float(i), float(i))
        assert len(s) == max_points
        # retained x 16 B, plus at most about two chunks of slack (and the first chunk's 64)
        assert s.nbytes <= 16 * max_points * 1.3 + 16 * 2 * 64, (max_points, s.nbytes)
        assert s.arrays()[0][0] == 2 * max_points + 10


def test_series_cap_total_and_per_source() -> None:
    store = SeriesStore(max_series=3, max_per_source=2)
    assert isinstance(store.admit("a", "x"), Series) and isinstance(store.admit("a", "y"), Series)
    assert "max_series_per_system 2 reached for a" in str(store.admit("a", "z"))
    assert isinstance(store.admit("b", "x"), Series)
    assert "state.max_series 3 reached" in str(store.admit("c", "x"))
    assert isinstance(store.admit("a", "x"), Series)  # existing series are never refused
    assert (len(store), store.rejected_series, store.rejected_events) == (3, 2, 2)
    assert len(store.cap_issues()) == 2
    store.reset()
    assert store.cap_issues() == [] and isinstance(store.admit("c", "x"), Series)
    assert store.rejected_series == 2  # a counter


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(0, 1000, allow_nan=False), min_size=0, max_size=400),
    st.integers(1, 300),
    st.floats(-10, 1010, allow_nan=False),
    st.floats(-10, 1010, allow_nan=False),
)
def test_chunked_reads_equal_reads_of_the_whole_series(
    times: list[float], max_points: int, a: float, b: float
) -> None:
    """window / value_at / count_between read only the chunks they need (issue 17, defect 4);
    they must answer exactly what the sorted copy of every sample answers."""
    s = Series("s", "m", Retention(max_points))
    for i, t in enumerate(times):
        s.append(t, float(i))
    t_all, v_all = s.arrays()
    lo, hi = min(a, b), max(a, b)
    wt, wv = s.window(lo, hi)
    keep = (t_all >= lo) & (t_all <= hi)
    assert np.array_equal(wt, t_all[keep]) and np.array_equal(wv, v_all[keep])
    assert s.count_between(lo, hi) == int(keep.sum())
    before = np.nonzero(t_all <= a)[0]
    expect = (float(t_all[before[-1]]), float(v_all[before[-1]])) if before.size else None
    assert s.value_at(a) == expect
