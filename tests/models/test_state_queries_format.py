"""Vectorised time formatting of historical answers equals the scalar ``iso`` it replaced."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.core.events import iso
from twin.core.state import TwinState
from twin.core.store import Retention
from twin.models.state_queries import YIELD_EVERY_POINTS, historical, iso_many


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 253_402_300_799_000), min_size=0, max_size=50))
def test_iso_many_equals_iso_for_millisecond_times(millis: list[int]) -> None:
    t = np.array(millis, dtype=np.float64) / 1000.0
    assert iso_many(t) == [iso(float(x)) for x in t]


def test_iso_many_on_whole_seconds_and_microseconds() -> None:
    t = np.array([0.0, 1_700_000_000.0, 1_700_000_000.25, 1_700_000_000.000001])
    assert iso_many(t) == [iso(float(x)) for x in t]
    assert iso_many(t)[1] == "2023-11-14T22:13:20Z"


async def test_a_long_series_answers_in_slices_with_the_same_points() -> None:
    """``historical`` builds a long series' points slice by slice (yielding to the loop in
    between); the answer equals formatting the whole window at once."""
    state = TwinState(Retention(10_000, 0))
    t0 = 1_700_000_000.0
    times = t0 + np.arange(YIELD_EVERY_POINTS * 2 + 345) * 0.25
    for i, x in enumerate(times):
        state.store.append("sys", "load", float(x), float(i % 97), "u")
    res = await historical(
        state, {"system": "sys", "metric": "load", "start": iso(t0), "max_points": "50000"}, None
    )
    got = res.result["systems"]["sys"]["load"]
    assert got["samples"] == len(times) and not got["downsampled"]
    assert got["points"] == [(iso(float(x)), float(i % 97)) for i, x in enumerate(times)]
