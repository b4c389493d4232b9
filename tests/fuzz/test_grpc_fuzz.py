"""Random proto field values through a real gRPC server (a JetStream twin with some
data): every request is answered OK (possibly ``success=false`` in-band) or
INVALID_ARGUMENT with a message; never UNKNOWN/INTERNAL, never a hang; the twin stays
healthy and keeps its data (no request other than reset_state/replay removes any)."""

from __future__ import annotations

import collections

import grpc
import nats
from faults.js_harness import JsPublisher, batches, make_events, manage, wait_applied
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.service.servicer import MANAGE_OPERATIONS

TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "nan",
            "inf",
            "-inf",
            "-1",
            "0",
            "1e400",
            "99999999999999999999999",
            "2024-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "sys1",
            "load",
            "mock",
            "🙂",
            "\x00",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(str),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "system",
            "source",
            "metric",
            "metrics",
            "at",
            "start",
            "end",
            "window_minutes",
            "max_points",
            "step_minutes",
            "settings",
            "implementation",
            "from_sequence",
            "from_time",
        ]
    ),
    st.text(max_size=10),
)
PARAMS = st.dictionaries(KEYS, TEXT, max_size=5)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
FLOATS = st.one_of(st.floats(), st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e308]))

QUERY = st.builds(
    pb.QueryRequest,
    query_id=TEXT,
    query_type=st.one_of(
        st.sampled_from(["current_state", "historical", "natural_language"]), TEXT
    ),
    query_content=st.one_of(TEXT, st.just("q" * 20_000)),
    parameters=PARAMS,
    timestamp=TEXT,
)
ACTION = st.builds(
    pb.ControlAction,
    action_id=TEXT,
    action_type=st.one_of(
        st.sampled_from(["ADD_SERVER", "REMOVE_SERVER", "SET_DIMMER", " "]), TEXT
    ),
    target=TEXT,
    params=PARAMS,
    priority=st.one_of(st.sampled_from(["low", "high", "CRITICAL"]), TEXT),
    timeout=FLOATS,
)
SIMULATE = st.builds(
    pb.SimulationRequest,
    simulation_id=TEXT,
    simulation_type=st.one_of(st.sampled_from(["forecast", "what_if", "scenario"]), TEXT),
    actions=st.lists(ACTION, max_size=4),
    horizon_minutes=st.one_of(st.integers(0, 120), INT32),
    parameters=PARAMS,
    timestamp=TEXT,
)
DIAGNOSE = st.builds(
    pb.DiagnosisRequest,
    diagnosis_id=TEXT,
    anomaly_description=st.one_of(TEXT, st.just("d" * 20_000)),
    timestamp=TEXT,
    context=PARAMS,
)
MANAGE = st.builds(
    pb.ManagementRequest,
    request_id=TEXT,
    operation=st.one_of(
        st.sampled_from([op for op in MANAGE_OPERATIONS if op != "reset_state"]), TEXT
    ),
    parameters=PARAMS,
    timestamp=TEXT,
)
REQUESTS = st.one_of(
    QUERY.map(lambda r: ("Query", r)),
    SIMULATE.map(lambda r: ("Simulate", r)),
    DIAGNOSE.map(lambda r: ("Diagnose", r)),
    MANAGE.map(lambda r: ("Manage", r)),
)


def well_formed() -> list[tuple[str, object]]:
    """Requests a client would send: each must be answered OK, whatever hypothesis draws."""
    return [
        ("Query", pb.QueryRequest(query_id="q1", query_type="current_state")),
        (
            "Query",
            pb.QueryRequest(
                query_id="q2", query_type="current_state", parameters={"system": "sys1"}
            ),
        ),
        (
            "Query",
            pb.QueryRequest(
                query_id="q3",
                query_type="historical",
                parameters={"system": "sys1", "metric": "load", "window_minutes": "60"},
            ),
        ),
        (
            "Simulate",
            pb.SimulationRequest(
                simulation_id="s1", simulation_type="forecast", horizon_minutes=10
            ),
        ),
        (
            "Simulate",
            pb.SimulationRequest(
                simulation_id="s2",
                simulation_type="what_if",
                horizon_minutes=10,
                actions=[pb.ControlAction(action_id="a", action_type="ADD_SERVER", target="sys1")],
            ),
        ),
        ("Diagnose", pb.DiagnosisRequest(diagnosis_id="d1", anomaly_description="slow")),
        *[
            ("Manage", pb.ManagementRequest(request_id=op, operation=op))
            for op in ("health_check", "get_metrics", "list_models", "get_config")
            if op in MANAGE_OPERATIONS
        ],
    ]


def corpus(n: int) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(REQUESTS)
    def collect(req: tuple[str, object]) -> None:
        out.append(req)

    collect()
    return out


async def test_random_requests_get_ok_or_invalid_argument_never_an_internal_error(
    nats_server, make_twin, channel_for
) -> None:
    app = await make_twin(
        nats_server.url, nats={"jetstream": {"enabled": True, "durable": "grpcfuzz"}}
    )
    ch = channel_for(app)
    nc = await nats.connect(nats_server.url)
    try:
        await JsPublisher(nc).publish_all(batches(make_events(1000)))
    finally:
        await nc.close()
    await wait_applied(ch, 1000)
    stub = pb_grpc.DigitalTwinStub(ch)
    codes: collections.Counter[str] = collections.Counter()
    bad: list[str] = []
    for method, req in well_formed():
        await getattr(stub, method)(req, timeout=15)  # raises on anything but OK
    for method, req in corpus(300):
        try:
            await getattr(stub, method)(req, timeout=15)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as err:
            codes[err.code().name] += 1
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT or not err.details():
                bad.append(f"{method} {err.code().name} {err.details()!r} for {str(req)[:300]!r}")
    print(f"\ngRPC fuzz: {sum(codes.values())} requests: {dict(codes)}")
    assert not bad, bad[:5]
    # The corpus reached both sides (the OK count depends on hypothesis' draws; the
    # well-formed requests above hold OK for certain).
    assert codes["OK"] > 20 and codes["INVALID_ARGUMENT"] > 20
    assert (await manage(ch, "health_check")).success
    # Random replays may have run; once they finish the twin holds the whole stream again.
    await manage(ch, "replay", from_sequence="1")
    await wait_applied(ch, 1000)
