"""The vectorised queue: closed forms, the fluid backlog, quantiles against the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.models.plans.queue import erlang_c, evaluate, response_quantile
from twin.tools.exemplars import K8sService, constant


def test_erlang_c_closed_forms() -> None:
    assert erlang_c(1, np.array([0.7]))[0] == pytest.approx(0.7)
    assert erlang_c(2, np.array([1.0]))[0] == pytest.approx(1 / 3)
    assert list(erlang_c(3, np.array([3.0, 0.0]))) == [1.0, 0.0]
    assert 0.0 < erlang_c(500, np.array([450.0]))[0] < 0.1  # large c stays finite


def test_mm1_mean_and_quantile() -> None:
    st = evaluate(np.array([7.0]), np.array([1.0]), 1, 0.1)
    assert st.response[0] == pytest.approx(0.1 / 0.3)
    # M/M/1 response time is exponential with rate mu - lambda: p95 = -ln(0.05) / 3
    assert response_quantile(0.95, st)[0] == pytest.approx(-math.log(0.05) / 3.0, rel=0.02)


def test_overload_builds_a_backlog_that_drains() -> None:
    lam = np.r_[np.full(10, 30.0), np.full(10, 70.0), np.full(20, 30.0)]
    st = evaluate(lam, np.full(40, 60.0), 4, 0.07)
    assert not st.saturated[:10].any() and st.saturated[10:20].all()
    assert st.backlog[19] == pytest.approx(
        (70 - 4 / 0.07) * 600, rel=1e-6
    )  # fluid: (λ - c/E[S]) · time
    assert np.all(np.diff(st.response[10:20]) > 0)  # latency grows while overloaded
    assert st.response[25] < st.response[19] and not st.saturated[-1]  # ... and drains after
    assert np.all(np.isfinite(st.response))


@pytest.mark.parametrize("replicas,service,cs2,rate", [(2, 0.1, 1.0, 16.0), (4, 0.1, 0.3, 30.0)])
def test_mean_and_p95_match_the_simulator(
    replicas: int, service: float, cs2: float, rate: float
) -> None:
    seg = K8sService(3, replicas=replicas, service=service, cs2=cs2, error_prob=0.0).run(
        20_000, constant(rate)
    )
    rt = (seg.requests.finish - seg.requests.arrival)[2000:]
    st = evaluate(np.array([rate]), np.ones(1), replicas, service, cs2)
    assert st.response[0] == pytest.approx(rt.mean(), rel=0.06)
    assert response_quantile(0.95, st)[0] == pytest.approx(np.quantile(rt, 0.95), rel=0.08)
