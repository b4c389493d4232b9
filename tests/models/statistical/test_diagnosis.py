"""Unit tests of the metric-based root-cause diagnosis (synthetic state, no I/O)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.core.events import ExecutionResult, Point
from twin.core.state import TwinState
from twin.models.base import DiagnosisRequest
from twin.models.statistical.diagnosis import (
    DEFAULT_CONFIG,
    NO_INCIDENT,
    diagnose,
    gather,
    incident_odds,
    metric_family,
    rank_services,
    robust_baseline,
)

T0 = 1_700_000_000.0
STEP = 60.0


def _state(
    fault_service: str | None = "db", n_before: int = 40, n_after: int = 8, seed: int = 3
) -> TwinState:
    rng = np.random.default_rng(seed)
    st = TwinState()
    pts = []
    for svc, cpu in (("web", 30.0), ("app", 50.0), ("db", 40.0), ("cache", 20.0)):
        for i in range(-n_before, n_after):
            t = T0 + i * STEP
            c = cpu + rng.normal(0, 2.0)
            lat = 20.0 + rng.normal(0, 1.0)
            if svc == fault_service and i >= 0:
                c += 45.0
                lat += 30.0
            pts.append(Point(svc, "cpu.utilization", t, c, "percent", None))
            pts.append(Point(svc, "response.time", t, lat, "ms", None))
            pts.append(Point(svc, "memory.usage", t, 512.0, "MB", None))  # constant
        pts.append(Point("_sli", "latency", T0, 1.0, "s", None))
    st.apply_points(pts)
    return st


def test_robust_baseline_floors() -> None:
    med, sc = robust_baseline(np.full(30, 512.0))
    assert med == 512.0 and sc == pytest.approx(5.12)  # relative floor on a constant series
    med, sc = robust_baseline(np.array([0, 0, 0, 1, 0, 0, 1, 0, 0, 0], dtype=float))
    assert sc >= 1.0  # quantisation step
    med, sc = robust_baseline(np.array([math.nan, 1.0, 2.0]))
    assert math.isfinite(sc)


def test_metric_families() -> None:
    assert metric_family("client_latency_p90") == "client_latency"
    assert metric_family("latency.p99") == "latency"
    assert metric_family("cpu_mcores") == "cpu"
    assert metric_family("mem_pct") == "memory"
    assert metric_family("success_rate") == "errors"
    assert metric_family("arrival.rate") == "demand"
    assert metric_family("request.rate") == "load"


def test_faulty_service_ranked_first_with_valid_probabilities() -> None:
    res = diagnose(_state("db"), DiagnosisRequest("d1", "slow", T0 + 5.0, {}), None)
    assert res.success
    assert res.hypotheses[0].hypothesis.startswith("db ")
    assert [h.rank for h in res.hypotheses] == list(range(1, len(res.hypotheses) + 1))
    probs = [h.probability for h in res.hypotheses]
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-9
    assert probs == sorted(probs, reverse=True)
    assert res.metadata["ranking"].split(",")[0] == "db"
    assert "_sli" not in res.metadata["ranking"]
    assert res.causal_chain.startswith("db")
    assert res.confidence == pytest.approx(probs[0])
    assert any("db/" in e for e in res.hypotheses[0].evidence)


def test_pure_and_deterministic() -> None:
    st = _state("app")
    a = diagnose(st, DiagnosisRequest("a", "", T0, {}), None)
    b = diagnose(st, DiagnosisRequest("b", "", T0, {}), None)
    assert [h.hypothesis for h in a.hypotheses] == [h.hypothesis for h in b.hypotheses]
    assert [h.probability for h in a.hypotheses] == [h.probability for h in b.hypotheses]


def test_recent_action_is_evidence() -> None:
    st = _state(None)  # no metric fault at all
    st.apply_execution(
        ExecutionResult("x1", "DEPLOY", "failed", False, target="cache", finished_at=T0 - 60.0), T0
    )
    res = diagnose(st, DiagnosisRequest("d", "", T0, {}), None)
    assert res.hypotheses[0].hypothesis.startswith("cache ")
    assert any("DEPLOY" in e for e in res.hypotheses[0].evidence)


def test_detector_scores_are_used_and_may_be_empty() -> None:
    st = _state(None)

    def scores(source: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        if source == "web" and metric == "cpu.utilization":
            return np.array([T0 + 60.0]), np.array([1.0])
        return np.array([]), np.array([])

    res = diagnose(st, DiagnosisRequest("d", "", T0, {}), scores)
    assert (
        res.success
        and len([h for h in res.hypotheses if not h.hypothesis.startswith(NO_INCIDENT)]) == 4
    )


def test_no_timestamp_uses_newest_time_and_empty_store_fails() -> None:
    res = diagnose(_state("web", n_after=6), DiagnosisRequest("d", "", None, {}), None)
    assert res.success and res.hypotheses[0].hypothesis.startswith("web ")
    empty = diagnose(TwinState(), DiagnosisRequest("d", "", T0, {}), None)
    assert not empty.success and empty.explanation


def test_context_window_and_system_hints() -> None:
    res = diagnose(
        _state("db"),
        DiagnosisRequest(
            "d",
            "",
            T0,
            {"window_minutes": "10", "system": "nope", "metric": "response_time", "service": "web"},
        ),
        None,
    )
    assert res.success and res.hypotheses[0].hypothesis.startswith("db ")
    assert res.causal_chain.endswith("web/response.time")


def test_long_series_and_fine_sampling() -> None:
    """10 s sampling, a long history (only the window is read) and a bursty, quantised series."""
    rng = np.random.default_rng(5)
    st = TwinState()
    pts = []
    n_before, n_after, step = 3000, 36, 10.0
    for svc in ("a", "b", "c"):
        for i in range(-n_before, n_after):
            t = T0 + i * step
            lat = 10.0 + rng.normal(0, 0.5)
            if rng.random() < 0.02:
                lat *= 3.0  # bursts everywhere
            if svc == "c" and i >= 0:
                lat += 6.0
            pts.append(Point(svc, "latency", t, round(lat, 1), "ms", None))
            pts.append(
                Point(svc, "queue.length", t, float(rng.random() < 0.05), "", None)
            )  # mostly 0, sparse 1s
    st.apply_points(pts)
    res = diagnose(st, DiagnosisRequest("d", "", T0, {}), None)
    assert res.hypotheses[0].hypothesis.startswith("c ")


def test_monotonic_counters_are_scored_as_rates() -> None:
    st = _state("app")
    pts = []
    for svc, rate in (("web", 50.0), ("app", 50.0), ("db", 30.0), ("cache", 80.0)):
        total = 0.0
        for i in range(-40, 8):
            total += rate * STEP
            pts.append(Point(svc, "requests.total", T0 + i * STEP, total, "", None))
    st.apply_points(pts)
    res = diagnose(st, DiagnosisRequest("d", "", T0, {}), None)
    assert res.hypotheses[0].hypothesis.startswith("app ")
    ranked, _ = rank_services(gather(st, T0))
    web = next(s for s in ranked if s.service == "web")
    assert (
        web.families.get("load", 0.0) < 0.3
    )  # a steady rate is no anomaly; the raw counter would score


def _quiet_system(
    rng: np.random.Generator, n_before: int = 50, n_after: int = 6
) -> tuple[list[Point], dict[str, np.ndarray]]:
    """Four services with noisy cpu/latency; ``pay`` serves every call of ``checkout``
    (their request rates move together), ``web`` and ``cat`` follow the front traffic."""
    n = n_before + n_after
    front = 10.0 + np.cumsum(rng.normal(0, 0.5, n))
    orders = 1.0 + np.abs(np.cumsum(rng.normal(0, 0.2, n)))
    rates = {
        "web": front,
        "cat": front * 2.0 + rng.normal(0, 0.3, n),
        "checkout": orders,
        "pay": orders + rng.normal(0, 0.02, n),
    }
    pts = []
    for svc, r in rates.items():
        for i in range(n):
            t = T0 + (i - n_before) * STEP
            pts.append(Point(svc, "workload", t, float(r[i]), "ops", None))
            pts.append(Point(svc, "cpu.utilization", t, 30.0 + rng.normal(0, 2.0), "percent", None))
            pts.append(Point(svc, "latency.p90", t, 0.02 + rng.normal(0, 0.002), "s", None))
    return pts, rates


def test_callers_wait_points_at_a_silent_callee_by_request_rate_co_movement() -> None:
    """A delay on ``pay``'s network shows only as ``checkout`` waiting longer on its calls;
    ``pay`` is found as the service whose request rate co-moves with ``checkout``'s."""
    rng = np.random.default_rng(11)
    pts, _ = _quiet_system(rng)
    for i in range(-50, 6):
        wait = 0.01 + rng.normal(0, 0.001) + (0.2 if i >= 0 else 0.0)
        pts.append(Point("checkout", "client.latency.p90", T0 + i * STEP, wait, "s", None))
        pts.append(
            Point(
                "web", "client.latency.p90", T0 + i * STEP, 0.01 + rng.normal(0, 0.001), "s", None
            )
        )
    st = TwinState()
    st.apply_points(pts)
    ranked, _ = rank_services(gather(st, T0))
    order = [s.service for s in ranked]
    assert set(order[:2]) == {"checkout", "pay"}
    assert order.index("pay") < order.index("cat") and order.index("pay") < order.index("web")
    pay = next(s for s in ranked if s.service == "pay")
    assert pay.contributions.get("callee of waiting checkout", 0.0) > 0  # the reason is reported
    res = diagnose(st, DiagnosisRequest("d", "", T0, {}), None)
    assert any(
        "callee of waiting checkout" in h.reasoning
        for h in res.hypotheses
        if h.hypothesis.startswith("pay ")
    )


def test_unexplained_symptom_errors_point_at_the_entry_tier() -> None:
    """The user-facing SLI loses requests, no service reports errors: the service whose
    latency tracks the SLI's latency (the entry tier) is ranked first."""
    rng = np.random.default_rng(12)
    pts, _ = _quiet_system(rng)
    lat = {p.t: p.value for p in pts if p.source == "web" and p.name == "latency.p90"}
    for t, v in lat.items():
        pts.append(Point("_sli", "latency.p90", t, v, "s", None))
        pts.append(Point("_sli", "success.rate", t, 100.0 if t < T0 else 60.0, "percent", None))
    st = TwinState()
    st.apply_points(pts)
    ranked, _ = rank_services(gather(st, T0))
    assert ranked[0].service == "web"
    assert "entry tier of _sli errors" in ranked[0].contributions


@pytest.mark.parametrize("seed", range(4))
def test_no_incident_both_answers(seed: int) -> None:
    """Healthy data: "no incident" is the answer, with its probability; the same system with a
    fault: the faulty service is the answer and "no incident" is unlikely."""
    healthy = diagnose(_state(None, seed=seed), DiagnosisRequest("h", "", T0, {}), None)
    assert healthy.success and healthy.metadata["answer"] == "no_incident"
    first = healthy.hypotheses[0]
    assert first.hypothesis.startswith(NO_INCIDENT) and first.rank == 1
    p_none = float(healthy.metadata["no_incident_probability"])
    assert first.probability == pytest.approx(p_none, abs=1e-6) and p_none > 0.5
    assert healthy.confidence == pytest.approx(p_none, abs=1e-6)
    assert "No incident" in healthy.explanation
    assert sum(h.probability for h in healthy.hypotheses) <= 1.0 + 1e-9

    faulty = diagnose(_state("db", seed=seed), DiagnosisRequest("f", "", T0, {}), None)
    assert faulty.metadata["answer"] == "incident" and faulty.hypotheses[0].hypothesis.startswith(
        "db "
    )
    none = [h for h in faulty.hypotheses if h.hypothesis.startswith(NO_INCIDENT)]
    assert len(none) == 1 and none[0].probability < 0.05
    assert float(faulty.metadata["incident_probability"]) > 0.9
    assert sum(h.probability for h in faulty.hypotheses) == pytest.approx(0.95, abs=1e-4)
    assert [h.rank for h in faulty.hypotheses] == list(range(1, len(faulty.hypotheses) + 1))


def test_no_incident_answer_needs_history() -> None:
    """Without earlier times to compare with, Diagnose does not claim either way."""
    res = diagnose(_state(None, n_before=8), DiagnosisRequest("h", "", T0, {}), None)
    assert res.success and "no_incident_probability" not in res.metadata
    assert not any(h.hypothesis.startswith(NO_INCIDENT) for h in res.hypotheses)


def test_incident_odds_compare_with_earlier_times() -> None:
    st = _state("db", seed=1)
    cfg = DEFAULT_CONFIG
    inp = gather(st, T0, cfg, None, "", history_sec=cfg.placebos * cfg.horizon_sec)
    ranked, _ = rank_services(inp, cfg)
    odds = incident_odds(inp, ranked[0].score, cfg)
    assert odds is not None and len(odds.placebo_tops) == cfg.placebos
    assert odds.top > max(odds.placebo_tops) and odds.probability > 0.9
    low = incident_odds(inp, odds.null_median, cfg)  # a top score like the earlier ones
    assert low is not None and low.probability < 0.2


def test_ranking_input_is_plain_data() -> None:
    """The ranking is a pure function of picklable arrays (it can run in a worker process)."""
    import pickle

    st = _state("app", seed=4)
    inp = gather(st, T0)
    again = pickle.loads(pickle.dumps(inp))
    a, _ = rank_services(inp)
    b, _ = rank_services(again)
    assert [(s.service, s.score) for s in a] == [(s.service, s.score) for s in b]
    assert a[0].service == "app"


async def test_model_diagnoses_in_a_compute_worker_process() -> None:
    """The statistical model reads the state on the loop (``prepare``) and runs the ranking
    (``answer``, pure, pickled) through the compute pool: same answer as in-thread."""
    from twin.core import workers
    from twin.core.config import load_config
    from twin.runtime import TwinRuntime

    overrides = {
        "digital_twin": {
            "world_model": {"implementation": "statistical"},
            "performance": {"compute_workers": 1},
        }
    }
    rt = TwinRuntime(load_config(overrides=overrides, environ={}))
    await rt.initialize()
    try:
        st = _state("db", seed=2)
        pts = [p for s in st.store for p in _points_of(s)]
        rt.ingest_points(pts)
        req = DiagnosisRequest("w", "", T0, {})
        pool = workers.pool()
        seen: list[str] = []
        real_run = pool.run

        async def spy(fn, *args):  # type: ignore[no-untyped-def]
            seen.append(getattr(fn, "__qualname__", ""))
            return await real_run(fn, *args)

        pool.run = spy  # type: ignore[method-assign]
        before = pool.process_calls
        res = await rt.model.diagnose(req)
        assert "answer" in seen  # through the compute pool ...
        assert pool.process_calls > before  # ... in a worker process
        local = diagnose(rt.state, req, rt.model.anomaly_scores)
        assert [(h.hypothesis, h.probability) for h in res.hypotheses] == [
            (h.hypothesis, h.probability) for h in local.hypotheses
        ]
        assert res.hypotheses[0].hypothesis.startswith("db ")
    finally:
        await rt.shutdown()


def _points_of(series: object) -> list[Point]:
    t, v = series.arrays()  # type: ignore[attr-defined]
    src, name = series.source, series.name  # type: ignore[attr-defined]
    return [Point(src, name, float(a), float(b), "", None) for a, b in zip(t, v)]
