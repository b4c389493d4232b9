"""Property (issue 17, defect 1): nothing the edge accepts can make a later valid query
fail. Any events the decoders accept, applied to a real runtime (statistical and mock
models), followed by any query a client may send: the answer is a response or
INVALID_ARGUMENT, never an internal error, and it serialises to the wire."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from fuzz.fuzz_strategies import NAMES, TIMESTAMPS, near_valid_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin._proto import digital_twin_pb2 as pb
from twin.core.errors import DecodeError, InvalidRequest
from twin.core.events import decode_batch
from twin.runtime import TwinRuntime
from twin.service import mapping

from support import twin_config

EXTREME_TIMES = st.sampled_from(
    [
        "9999-12-31T00:00:00Z",
        1.7e12,
        1e18,
        -1e11,
        1e300,
        -1e300,
        253402300800.0,
        "0001-01-01T00:00:00Z",
        0.0,
        1_392_807_000.0,
        None,
    ]
)


@st.composite
def accepted_events(draw: Any) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        ev = draw(near_valid_event())
        if draw(st.booleans()):  # mostly valid events with hostile times and sizes
            ev = {
                "name": draw(st.sampled_from(["cpu", "mem", "arrival_rate", "Server_Utilization"])),
                "value": draw(
                    st.one_of(
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=20),
                        st.booleans(),
                    )
                ),
            }
            ev["source"] = draw(st.sampled_from(["swim", "web", "x" * 256]))
            t = draw(st.one_of(EXTREME_TIMES, TIMESTAMPS))
            if t is not None:
                ev["timestamp"] = t
        out.append(ev)
    return out


PARAM_VALUES = st.one_of(
    st.sampled_from(
        ["", "swim", "web", "cpu", "mem,cpu", "arrival_rate", "anomalies", "anomalies,forecasters"]
    ),
    NAMES,
    TIMESTAMPS.map(str),
    EXTREME_TIMES.map(str),
    st.floats().map(str),
)
QUERIES = st.builds(
    pb.QueryRequest,
    query_type=st.sampled_from(["current_state", "historical", "natural_language"]),
    query_content=st.sampled_from(
        [
            "what is the cpu of swim",
            "is anything anomalous?",
            "cpu at 9999-12-31T00:00:00",
            "value of cpu 10 minutes ago",
            "will cpu exceed 5 in 10 minutes",
            "mem yesterday",
            "x",
        ]
    ),
    parameters=st.dictionaries(
        st.sampled_from(
            [
                "system",
                "metric",
                "metrics",
                "at",
                "start",
                "end",
                "window_minutes",
                "max_points",
                "include",
            ]
        ),
        PARAM_VALUES,
        max_size=5,
    ),
    timestamp=st.one_of(
        st.just(""),
        TIMESTAMPS.map(lambda t: "" if t is None else str(t)),
        EXTREME_TIMES.map(lambda t: "" if t is None else str(t)),
    ),
)
SIMULATIONS = st.builds(
    pb.SimulationRequest,
    simulation_type=st.just("forecast"),
    horizon_minutes=st.integers(0, 120),
    parameters=st.dictionaries(
        st.sampled_from(["system", "metric"]),
        st.sampled_from(["swim", "web", "cpu", "mem"]),
        max_size=2,
    ),
    timestamp=st.one_of(st.just(""), EXTREME_TIMES.map(lambda t: "" if t is None else str(t))),
)


async def _run(
    model: str,
    events: list[dict[str, Any]],
    queries: list[pb.QueryRequest],
    sims: list[pb.SimulationRequest],
) -> None:
    cfg = twin_config(
        None, world_model={"implementation": model, "settings": {"background_fitting": False}}
    )
    rt = TwinRuntime(cfg)
    await rt.initialize()
    try:
        points, _ = decode_batch(
            json.dumps({"events": events}).encode(), time.time(), rt.state.limits
        )
        rt.ingest_points(points)
        fit_all = getattr(rt.model, "fit_all", None)
        if fit_all is not None:
            await fit_all(rounds=2)
        for q in queries:
            try:
                req = mapping.to_query(q, rt.state.limits)
                res = await rt.model.query(req)
            except InvalidRequest:
                continue
            mapping.from_query(req.query_id, res).SerializeToString()
        for s in sims:
            try:
                sreq = mapping.to_simulation(s, rt.state.limits)
                sres = await rt.model.simulate(sreq)
            except InvalidRequest:
                continue
            mapping.from_simulation(sreq.simulation_id, sres, 0.0).SerializeToString()
        await rt.health()
        rt.metrics_snapshot()
    finally:
        await rt.shutdown()


@pytest.mark.parametrize("model", ["statistical", "mock"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    events=accepted_events(),
    queries=st.lists(QUERIES, min_size=1, max_size=6),
    sims=st.lists(SIMULATIONS, max_size=2),
)
def test_any_accepted_event_then_any_valid_query_never_errors_internally(
    model: str,
    events: list[dict[str, Any]],
    queries: list[pb.QueryRequest],
    sims: list[pb.SimulationRequest],
) -> None:
    try:
        asyncio.run(_run(model, events, queries, sims))
    except DecodeError:  # the whole message refused: nothing accepted, nothing to check
        pass
