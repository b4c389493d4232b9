"""The prediction ledger on a real SeriesStore: recording, scoring by event time,
executed/not-executed what-ifs and plans, bounds, skill, interval calibration out of
sample, drift and snapshot export."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.core.intervals import z_of
from twin.core.ledger import PredictionLedger, TrackInput
from twin.core.state import ActionRecord
from twin.core.store import SeriesStore

T0 = 1_700_000_000.0
STEP = 10.0


def feed(store: SeriesStore, system: str, metric: str, values: np.ndarray, start: float) -> float:
    """Appends values at STEP spacing from ``start``; returns the last time."""
    t = start
    for v in values.tolist():
        store.append(system, metric, t, v)
        t += STEP
    return t - STEP


def forecast_track(
    last_t: float, mean: float, half: float, steps: int = 6, metric: str = "cpu"
) -> TrackInput:
    t = last_t + STEP * np.arange(1, steps + 1)
    m = np.full(steps, mean)
    return TrackInput(metric, t, m, m - half, m + half)


def action(t: float, typ: str, target: str, status: str = "success") -> ActionRecord:
    return ActionRecord(t, "a1", typ, target, status, status == "success", 1.0, "")


def test_forecast_is_scored_only_when_telemetry_passes_its_horizon() -> None:
    store = SeriesStore()
    hist = np.array([10.0, 12.0, 10.0, 12.0, 10.0, 12.0, 10.0, 12.0])  # naive MAE = 2
    last = feed(store, "web", "cpu", hist, T0)
    led = PredictionLedger()
    p = led.record(
        store, "f1", "web", "statistical", "forecast", [forecast_track(last, 11.0, 1.5)], level=0.9
    )
    assert p.status == "pending" and p.made_at == last
    assert led.score_due(store) == 0
    feed(store, "web", "cpu", np.array([11.0, 12.0, 10.0]), last + STEP)  # half the horizon
    assert led.score_due(store) == 0, "the horizon has not passed in event time"
    feed(store, "web", "cpu", np.array([11.0, 13.0, 11.0]), last + 4 * STEP)
    assert led.score_due(store) == 1
    assert led.score_due(store) == 0, "scored once"
    [row] = led.report()
    out = row["outcome"]
    assert row["status"] == "scored"
    # errors: 0, 1, 1, 0, 2, 0 → MAE 4/6; scale 2 → MASE 1/3
    assert out["mase"] == pytest.approx((4 / 6) / 2.0, abs=1e-5)
    assert out["coverage"] == pytest.approx(5 / 6)  # |13 - 11| = 2 > 1.5
    assert out["coverage_raw"] == pytest.approx(5 / 6)
    tot = led.totals()
    assert tot["predictions_recorded_total"] == 1 and tot["predictions_scored_total"] == 1
    assert tot["forecast_interval_coverage"] == pytest.approx(5 / 6)
    assert tot["prediction_mase"] == pytest.approx(1 / 3, abs=1e-5)


def test_a_series_that_stops_reporting_does_not_block_a_prediction_forever() -> None:
    store = SeriesStore()
    last = feed(store, "web", "cpu", np.ones(20), T0)
    feed(store, "web", "mem", np.ones(20), T0)
    led = PredictionLedger()
    led.record(
        store,
        "f",
        "web",
        "m",
        "forecast",
        [forecast_track(last, 1.0, 0.5, 6, "cpu"), forecast_track(last, 1.0, 0.5, 6, "mem")],
        0.9,
    )
    feed(store, "web", "cpu", np.ones(6), last + STEP)  # mem has stopped
    assert led.score_due(store) == 0
    feed(store, "web", "cpu", np.ones(8), last + 7 * STEP)  # past the end plus the grace (60 s)
    assert led.score_due(store) == 1
    [row] = led.report()
    assert row["outcome"]["per_metric"].keys() == {"cpu"}


def test_what_if_is_scored_after_its_action_was_executed() -> None:
    store = SeriesStore()
    last = feed(store, "web", "rt", np.full(30, 100.0), T0)
    led = PredictionLedger()
    t = last + STEP * np.arange(1, 11)
    tr = TrackInput(
        "rt",
        t,
        np.full(10, 50.0),
        np.full(10, 40.0),
        np.full(10, 60.0),
        baseline=np.full(10, 100.0),
    )
    led.record(
        store, "w1", "web", "statistical", "what_if", [tr], 0.9, actions=[("ADD_SERVER", "web")]
    )
    # Executed at the 4th step: before it the old level, after it the predicted one.
    feed(
        store,
        "web",
        "rt",
        np.array([100.0, 100.0, 100.0, 55.0, 52.0, 50.0, 48.0, 50.0, 51.0, 49.0]),
        last + STEP,
    )
    acts = [
        action(last + 3.5 * STEP, "REMOVE_SERVER", "web"),
        action(last + 4 * STEP, "ADD_SERVER", "web"),
    ]
    assert led.score_due(store, acts) == 1
    [row] = led.report()
    out = row["outcome"]
    assert out["executed"] is True and row["status"] == "scored"
    assert out["points"] == 7, "only states at or after the execution"
    assert out["rel_error"] == pytest.approx(
        np.mean(np.abs(np.array([55, 52, 50, 48, 50, 51, 49]) - 50.0))
        / np.mean([55, 52, 50, 48, 50, 51, 49]),
        abs=1e-5,
    )
    assert led.totals()["whatif_error_ratio"] == pytest.approx(out["rel_error"], rel=1e-4)


def test_what_if_not_executed_scores_its_baseline_instead() -> None:
    store = SeriesStore()
    last = feed(store, "web", "rt", np.full(30, 100.0), T0)
    led = PredictionLedger()
    t = last + STEP * np.arange(1, 6)
    with_base = TrackInput("rt", t, np.full(5, 50.0), baseline=np.full(5, 90.0))
    without = TrackInput("rt", t, np.full(5, 50.0))
    led.record(store, "w1", "web", "m", "what_if", [with_base], actions=[("ADD_SERVER", "web")])
    led.record(store, "w2", "web", "m", "what_if", [without], actions=[("ADD_SERVER", "web")])
    feed(store, "web", "rt", np.full(5, 100.0), last + STEP)
    failed = [
        action(last + STEP, "ADD_SERVER", "web", status="failed"),
        action(last + STEP, "ADD_SERVER", "other"),
    ]
    assert led.score_due(store, failed) == 2
    rows = {r["id"]: r for r in led.report()}
    assert rows["w1"]["status"] == "not_executed"
    assert rows["w1"]["outcome"]["scored_as"] == "what_if_baseline"
    assert rows["w1"]["outcome"]["rel_error"] == pytest.approx(0.1)
    assert rows["w2"]["status"] == "not_executed" and "outcome" not in rows["w2"]
    agg = {(r["kind"]): r for r in led.aggregates()}
    assert agg["what_if"]["not_executed"] == 2 and agg["what_if"]["scored"] == 0
    assert agg["what_if_baseline"]["scored"] == 1
    assert math.isnan(led.totals()["whatif_error_ratio"]), "no executed what-if yet"
    assert led.skill("web", "what_if_baseline").n == 1


def test_do_nothing_plan_is_scored_when_nothing_was_executed() -> None:
    store = SeriesStore()
    last = feed(store, "web", "rt", np.full(30, 100.0), T0)
    led = PredictionLedger()
    t = last + STEP * np.arange(1, 6)
    led.record(
        store,
        "c/baseline",
        "web",
        "m",
        "plan",
        [TrackInput("rt", t, np.full(5, 100.0))],
        plan_id="baseline",
    )
    led.record(
        store,
        "c/p1",
        "web",
        "m",
        "plan",
        [TrackInput("rt", t, np.full(5, 50.0))],
        actions=[("ADD_SERVER", "")],
        plan_id="p1",
    )
    feed(store, "web", "rt", np.full(5, 100.0), last + STEP)
    assert led.score_due(store, []) == 2
    rows = {r["plan_id"]: r for r in led.report()}
    assert (
        rows["baseline"]["status"] == "scored" and rows["baseline"]["outcome"]["rel_error"] == 0.0
    )
    assert rows["p1"]["status"] == "not_executed"
    assert rows["p1"]["actions"] == [{"action_type": "ADD_SERVER", "target": "web"}]


def test_scenarios_and_unknown_metrics_are_recorded_but_unscorable() -> None:
    store = SeriesStore()
    last = feed(store, "web", "cpu", np.ones(10), T0)
    led = PredictionLedger()
    a = led.record(store, "s", "web", "m", "scenario", [forecast_track(last, 1.0, 0.1)])
    b = led.record(
        store, "u", "web", "m", "forecast", [forecast_track(last, 1.0, 0.1, metric="nope")]
    )
    assert a.status == b.status == "unscorable"
    assert "hypothetical" in a.note and "nope" in b.note
    tot = led.totals()
    assert tot["predictions_recorded_total"] == 2 and tot["predictions_unscorable_total"] == 2
    assert tot["predictions_pending"] == 0
    with pytest.raises(ValueError):
        led.record(store, "x", "web", "m", "bogus", [])


def test_bounds_per_system_and_per_prediction() -> None:
    store = SeriesStore()
    last = feed(store, "web", "cpu", np.ones(10), T0)
    led = PredictionLedger(max_pending=5, max_recent=3, max_points=40)
    for i in range(12):
        led.record(
            store,
            f"f{i}",
            "web",
            "m",
            "forecast",
            [forecast_track(last, 1.0, 0.1, steps=1000)],
            0.9,
        )
    assert led.pending_count() == 5
    assert led.totals()["predictions_dropped_total"] == 7
    pend = led.report()
    assert [r["id"] for r in pend] == [f"f{i}" for i in range(11, 6, -1)]
    assert all(r["points"] <= 40 for r in pend)
    # ~40 B per point: 5 predictions x 40 points stay far below a kilobyte each.
    assert led.nbytes < 5 * (40 * 40 + 1200)
    feed(store, "web", "cpu", np.ones(1100), last + STEP)
    assert led.score_due(store) == 5
    assert len(led.report()) == 3, "scored summaries are bounded too"
    assert led.totals()["predictions_pending"] == 0


def test_report_filters_and_limit() -> None:
    store = SeriesStore()
    la = feed(store, "a", "cpu", np.ones(10), T0)
    lb = feed(store, "b", "cpu", np.ones(10), T0)
    led = PredictionLedger()
    for i in range(4):
        led.record(store, f"a{i}", "a", "m", "forecast", [forecast_track(la, 1.0, 0.1)], 0.9)
        led.record(
            store, f"b{i}", "b", "m", "what_if", [forecast_track(lb, 1.0, 0.1)], 0.9, [("X", "b")]
        )
    assert [r["id"] for r in led.report(system="a", limit=2)] == ["a3", "a2"]
    assert {r["system"] for r in led.report(kind="what_if")} == {"b"}
    assert len(led.report(limit=100)) == 8


def run_calibration(
    led: PredictionLedger,
    store: SeriesStore,
    rng: np.random.Generator,
    rounds: int,
    true_sd: float,
    model_sd: float,
    level: float = 0.9,
) -> tuple[float, float]:
    """Forecasts of a noisy constant whose model intervals assume ``model_sd``; learned
    scales applied to each new forecast before it is recorded. Returns (raw, delivered)
    coverage of the rounds."""
    z = z_of(level)
    inside_raw = inside = total = 0
    for r in range(rounds):
        s = store.get("web", "cpu")
        last = s.last_t
        h = 12
        t = last + STEP * np.arange(1, h + 1)
        mean = np.zeros(h)
        half = z * model_sd * np.sqrt(np.arange(1, h + 1) / 4 + 0.75)  # grows with the lead
        scales, _ = led.interval_scales("web", "forecast", "cpu", (t - last) / STEP, level)
        led.record(
            store,
            f"r{r}",
            "web",
            "m",
            "forecast",
            [TrackInput("cpu", t, mean, mean - half, mean + half, applied_scale=scales)],
            level,
        )
        y = rng.normal(0.0, true_sd, h) * np.sqrt(np.arange(1, h + 1) / 4 + 0.75)
        feed(store, "web", "cpu", y, last + STEP)
        assert led.score_due(store) == 1
        inside_raw += int(np.sum(np.abs(y) <= half))
        inside += int(np.sum(np.abs(y) <= half * scales))
        total += h
    return inside_raw / total, inside / total


@pytest.mark.parametrize("true_sd, model_sd", [(2.0, 1.0), (0.5, 1.0)])
def test_intervals_recalibrated_out_of_sample_reach_nominal_coverage(
    true_sd: float, model_sd: float
) -> None:
    rng = np.random.default_rng(7)
    store = SeriesStore()
    feed(store, "web", "cpu", rng.normal(0, true_sd, 50), T0)
    led = PredictionLedger()
    run_calibration(led, store, rng, 30, true_sd, model_sd)  # learning period
    raw, delivered = run_calibration(led, store, rng, 150, true_sd, model_sd)  # held out
    if true_sd > model_sd:
        assert raw < 0.70, "the model's intervals are too narrow"
    else:
        assert raw > 0.99, "the model's intervals are too wide"
    assert 0.85 <= delivered <= 0.95
    sk = led.skill("web", "forecast")
    assert sk.n == 50 and sk.interval_scale == pytest.approx(true_sd / model_sd, rel=0.25)
    assert 0.85 <= led.totals()["forecast_interval_coverage"] <= 0.95 or true_sd < model_sd


def test_interval_scales_pool_from_kind_to_system_to_metric() -> None:
    rng = np.random.default_rng(1)
    store = SeriesStore()
    feed(store, "a", "cpu", rng.normal(0, 2, 50), T0)
    led = PredictionLedger()
    lead = np.arange(1.0, 13.0)
    assert led.interval_scales("b", "forecast", "cpu", lead, 0.9)[1] == 0
    # Learn on system a; a brand-new system b borrows the kind-wide figure.
    for r in range(10):
        s = store.get("a", "cpu")
        t = s.last_t + STEP * np.arange(1, 13)
        m = np.zeros(12)
        led.record(
            store,
            f"r{r}",
            "a",
            "m",
            "forecast",
            [TrackInput("cpu", t, m, m - 1.645, m + 1.645)],
            0.9,
        )
        feed(store, "a", "cpu", rng.normal(0, 2, 12), s.last_t + STEP)
        led.score_due(store)
    sa, spec_a = led.interval_scales("a", "forecast", "cpu", lead, 0.9)
    sb, spec_b = led.interval_scales("b", "forecast", "cpu", lead, 0.9)
    assert spec_a == 3 and spec_b == 1
    assert 1.4 < float(np.median(sa)) < 3.0 and 1.4 < float(np.median(sb)) < 3.0
    assert led.interval_scales("a", "what_if", "cpu", lead, 0.9)[1] == 0, "kinds do not mix"
    off = PredictionLedger(calibrate_intervals=False)
    scales, spec = off.interval_scales("a", "forecast", "cpu", lead, 0.9)
    assert spec == 0 and np.all(scales == 1.0)


def test_skill_and_confidence() -> None:
    store = SeriesStore()
    last = feed(store, "web", "rt", np.full(30, 100.0), T0)
    led = PredictionLedger()
    assert led.skill("web", "what_if").n == 0
    assert led.skill("web", "what_if").confidence(0.6) == 0.6
    for i in range(10):
        now = store.get("web", "rt").last_t
        t = now + STEP * np.arange(1, 4)
        good = i % 2 == 0  # half the what-ifs within 10 %, half 50 % off
        led.record(
            store,
            f"w{i}",
            "web",
            "m",
            "what_if",
            [TrackInput("rt", t, np.full(3, 100.0 if good else 150.0))],
            actions=[("ADD_SERVER", "web")],
        )
        feed(store, "web", "rt", np.full(3, 100.0), now + STEP)
        assert led.score_due(store, [action(now + STEP, "ADD_SERVER", "web")]) == 1
    sk = led.skill("web", "what_if")
    assert sk.n == 10
    assert sk.within_tolerance == pytest.approx(0.5)
    assert sk.rel_error == pytest.approx(0.25)
    assert sk.confidence(0.9) == pytest.approx((10 / 15) * 0.5 + (5 / 15) * 0.9)
    assert led.skill("web", "what_if", "rt").n == 10
    assert last < store.get("web", "rt").last_t


def test_drift_is_detected_against_the_backtest_error_and_cleared_after_refit() -> None:
    store = SeriesStore()
    feed(store, "web", "cpu", np.ones(30), T0)
    led = PredictionLedger(drift_margin=2.0, drift_min_predictions=5)
    events: list[dict] = []
    led.listeners.append(events.append)

    def one(i: int, err: float) -> None:
        s = store.get("web", "cpu")
        t = s.last_t + STEP * np.arange(1, 7)
        tr = TrackInput(
            "cpu",
            t,
            np.ones(6),
            np.zeros(6),
            np.full(6, 2.0),
            backtest_mae=1.0,
            backtest_horizon_sec=60.0,
        )
        led.record(store, f"f{i}", "web", "m", "forecast", [tr], 0.9)
        feed(store, "web", "cpu", 1.0 + np.full(6, err), s.last_t + STEP)
        led.score_due(store)

    for i in range(6):
        one(i, 1.0)  # live error = backtest error
    assert led.drift_reasons() == [] and led.systems_to_refit() == []
    for i in range(6, 11):
        one(i, 4.0)  # 4x the backtest error
    [reason] = led.drift_reasons()
    assert "web/cpu" in reason and "4.00×" in reason
    assert led.systems_to_refit() == ["web"]
    assert any(e["type"] == "drift" for e in events)
    assert any(e["type"] == "prediction_outcome" for e in events)
    led.refitted("web", store.get("web", "cpu").last_t, 1)
    assert led.systems_to_refit() == []
    assert "refitted" in led.drift_reasons()[0], "degraded until new forecasts confirm the refit"
    for i in range(11, 17):
        one(i, 1.0)
    assert led.drift_reasons() == []
    assert led.totals()["prediction_refits_total"] == 1
    assert led.totals()["prediction_drift_events_total"] == 1


def test_export_and_load_round_trip_keeps_pending_and_learned_state() -> None:
    import msgspec

    rng = np.random.default_rng(3)
    store = SeriesStore()
    feed(store, "web", "cpu", rng.normal(0, 2, 50), T0)
    led = PredictionLedger()
    run_calibration(led, store, rng, 20, 2.0, 1.0)
    s = store.get("web", "cpu")
    led.record(store, "open", "web", "m", "forecast", [forecast_track(s.last_t, 0.0, 1.0)], 0.9)
    blob = msgspec.msgpack.encode(led.export())
    again = PredictionLedger()
    again.load(msgspec.msgpack.decode(blob))
    t1, t2 = led.totals(), again.totals()
    for d in (t1, t2):
        d.pop("ledger_score_seconds_total")
    assert t2 == pytest.approx(t1, nan_ok=True, rel=0.2)
    assert again.report(limit=5) == led.report(limit=5)
    lead = np.arange(1.0, 7.0)
    assert again.interval_scales("web", "forecast", "cpu", lead, 0.9)[0] == pytest.approx(
        led.interval_scales("web", "forecast", "cpu", lead, 0.9)[0]
    )
    feed(store, "web", "cpu", rng.normal(0, 2, 6), s.last_t + STEP)
    assert again.score_due(store) == 1
    assert (
        again.report(limit=1)[0]["id"] == "open" and again.report(limit=1)[0]["status"] == "scored"
    )
    with pytest.raises(ValueError):
        again.load({"version": 99})


def test_ledger_bytes_tracks_the_memory_the_ledger_really_holds() -> None:
    """``ledger_bytes`` (``nbytes``) within 30 % of tracemalloc's count for a ledger at its
    bounds: scored summaries, skill and interval windows, and pending predictions."""
    import gc
    import tracemalloc

    def filled(store: SeriesStore, last: float, pending: int) -> tuple[int, int]:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        led = PredictionLedger(max_pending=pending, max_recent=50, max_points=240)
        past = last - STEP * 300
        for k in range(60):  # 60 forecasts of 4 metrics scored (50 summaries kept)
            tracks = [forecast_track(past, 1.0, 1.0, 300, f"m{m}") for m in range(4)]
            led.record(store, f"old{k}", "sys", "statistical", "forecast", tracks, 0.9)
            led.score_due(store)
        for k in range(pending + 5):  # then the pending bound, 240 points each
            tracks = [forecast_track(last, 1.0, 1.0, 600, f"m{m}") for m in range(4)]
            led.record(store, f"p{k}", "sys", "statistical", "forecast", tracks, 0.9)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert led.pending_count() == pending
        return used, led.nbytes

    store = SeriesStore()
    rng = np.random.default_rng(3)
    for m in range(4):
        last = feed(store, "sys", f"m{m}", rng.normal(1.0, 1.0, 1000), T0)
    filled(store, last, 2)  # first-time imports and caches are not the ledger's
    for pending in (10, 60):
        used, estimate = filled(store, last, pending)
        assert 0.7 * used <= estimate <= 1.3 * used, (pending, used, estimate)
