"""The exemplar simulators: wire formats, actions during a run, common random numbers."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from twin.core.events import decode_batch, decode_execution
from twin.core.state import TwinState
from twin.models.statistical.capacity import mgc
from twin.tools.exemplars import Act, K8sService, SwimTier, SwitchInference, constant


def test_swim_matches_the_queueing_formula_and_publishes_swim_names() -> None:
    seg = SwimTier(1, servers=4, dimmer=0.5, s_basic=0.05, s_opt=0.09).run(3600, constant(45.0))
    r = seg.requests
    assert (r.finish - r.arrival)[5000:].mean() == pytest.approx(
        mgc(45, 4, 0.5, 0.05, 0.09).r_avg, rel=0.06
    )
    assert float(np.mean(seg.truth["utilization"])) == pytest.approx(45 * 0.07 / 4, rel=0.03)
    names = {e["name"] for e in seg.telemetry}
    assert {
        "dimmer",
        "active_servers",
        "arrival_rate",
        "basic_response_time",
        "server_utilization",
        "utilization_server_4",
    } <= names
    points, errors = decode_batch(
        orjson.dumps({"events": seg.telemetry[:100]}), 0.0
    )  # the real decoder
    assert len(points) == 100 and not errors


def test_actions_apply_during_the_run_and_produce_execution_results() -> None:
    ex = SwimTier(2, servers=3, dimmer=1.0)
    seg = ex.run(
        600,
        constant(30.0),
        [
            (60, Act("ADD_SERVER", {"count": "2"})),
            (300, Act("SET_DIMMER", {"value": "0.2"})),
            (400, Act("TELEPORT")),
        ],
    )
    assert list(seg.truth["units"][:6]) == [3.0] * 6 and seg.truth["units"][7] == 5.0
    assert ex.config == {"servers": 5, "dimmer": 0.2, "cache": 0.0}
    ok, ok2, bad = (decode_execution(orjson.dumps(e)) for e in seg.executions)
    assert ok.success and ok.action_type == "ADD_SERVER" and ok.metadata["params"] == {"count": "2"}
    assert not bad.success and bad.status == "failed"
    st = TwinState()
    rec = st.apply_execution(ok, 0.0)
    assert rec.params == {"count": "2"} and rec.target == "swim"


def test_switch_levels_trade_latency_for_accuracy_and_k8s_counts_errors() -> None:
    sw = SwitchInference(3, workers=4, level=1)
    fast = sw.run(600, constant(10.0))
    slow = sw.run(600, constant(10.0), [(0, Act("SWITCH_MODEL", {"level": "4"}))])
    assert np.nanmean(slow.truth["latency_ms"][6:]) > 3 * np.nanmean(fast.truth["latency_ms"])
    assert slow.truth["quality"][-1] > fast.truth["quality"][-1]
    k8 = K8sService(4, replicas=2, service=0.1, error_prob=0.01)
    seg = k8.run(1200, constant(25.0))  # overloaded: client time-outs become errors
    assert seg.truth["error_rate"][-1] > 0.5
    names = {e["name"] for e in seg.telemetry}
    assert {
        "http_requests_per_second",
        "kube_deployment_status_replicas_ready",
        "k8s.pod.cpu.utilization",
        "http.server.request.duration.p95",
        "http_server_error_ratio",
    } <= names


def test_fork_gives_common_random_numbers() -> None:
    ex = K8sService(5, replicas=3)
    ex.run(300, constant(30.0))
    a, b = ex.fork(), ex.fork()
    sa = a.run(300, constant(30.0))
    sb = b.run(300, constant(30.0), [(0, Act("SCALE_UP", {"count": "1"}))])
    assert np.array_equal(sa.requests.arrival, sb.requests.arrival)
    assert np.nanmean(sb.truth["latency_ms"]) < np.nanmean(sa.truth["latency_ms"])
