"""The experiments behind ``bench/plans.py`` (and, on smaller runs, the tests): the twin's
plans and predictions against the exemplar simulators.

- ``whatif_errors``: the twin is fed the telemetry of a system; it predicts the mean
  latency after an action; the simulator then applies that action and runs on. The
  error is ``(predicted - simulated) / simulated`` at target utilisations after the
  action.
- ``plan_choice``: random situations (hidden service times, configuration, load level,
  load scenario, SLO and utility weights all drawn at random), each with 5 random
  candidate plans. The twin ranks them (plus "do nothing") in one compare call; the
  simulator runs every option from the same state with the same random numbers and
  scores it with the same utility definition, measured: per-minute mean (or p95)
  latency against the SLO, offered requests, errors, quality and units.
- ``forecast_coverage``: the share of later telemetry inside the twin's 90 % forecast
  intervals (the statistical model's ``forecast`` simulation, out of sample).
- ``learned_effect_errors``: an action with no structural model (a cache, a smaller
  input image, a connection pool) executed repeatedly at random load levels; the
  error of the learned effect after 1, 3, 5 and 10 executions.

Every experiment takes a seed; nothing is tuned to one. The twin is a real in-process
``TwinRuntime`` with the ``statistical`` model, fed through the same apply/update path
as NATS ingestion.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from twin.tools.exemplars.feed import feed
from twin.tools.exemplars.systems import (
    Act,
    Exemplar,
    K8sService,
    Segment,
    SwimTier,
    SwitchInference,
    constant,
)

DEBUG = False
SYSTEM_NAMES = ("swim", "switch", "checkout")
HISTORY_SEC = 2400.0
BASE_SETTINGS: dict[str, Any] = {"background_fitting": False, "capacity_window_sec": 1800.0}
K8S_SETTINGS = {"systems": {"checkout": {"request_timeout_ms": 2000}}}


# ----------------------------------------------------------------------------- the twin


class TwinUnderTest:
    """An in-process twin (statistical model) and the calls the experiments make."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    @classmethod
    async def start(cls, **settings: Any) -> TwinUnderTest:
        from twin.core.config import load_config
        from twin.runtime import TwinRuntime

        merged = dict(BASE_SETTINGS)
        merged.update(settings)
        cfg = load_config(
            overrides={
                "digital_twin": {
                    "world_model": {"implementation": "statistical", "settings": merged},
                    "performance": {"compute_workers": 0},  # one twin per situation: no pool
                }
            },
            environ={},
        )
        rt = TwinRuntime(cfg)
        await rt.initialize()
        return cls(rt)

    async def stop(self) -> None:
        await self.rt.shutdown()

    @property
    def model(self) -> Any:
        return self.rt.model

    @property
    def plans(self) -> Any:
        """The statistical model's plan engine (roles, effects, settings)."""
        return self.rt.model.plans

    def feed(self, seg: Segment) -> None:
        feed(self.rt, seg)

    async def fit(self, system: str, metrics: Sequence[str] | None = None) -> int:
        """Fits the forecasters of ``metrics`` (default: the load series) now."""
        import asyncio

        from twin.models.statistical.forecast import select_and_fit

        store, engine = self.rt.state.store, self.model.engine
        if metrics is None:
            roles = self.plans.roles.roles(store, system)
            metrics = [m for m in (roles.metric("load"), roles.metric("throughput")) if m][:1]
        n = 0
        for name in metrics:
            s = store.get(system, name)
            if s is None or len(s) < 20:
                continue
            t, v, appended = engine.snapshot(s)
            fc, report = await asyncio.to_thread(select_and_fit, t, v, engine.selection_horizon)
            engine.install((system, name), fc, report, appended, float(t[-1]), s)
            n += 1
        return n

    def learn(self) -> int:
        return int(self.plans.background())

    async def simulate(
        self,
        kind: str,
        system: str,
        actions: Sequence[Act],
        horizon_min: int,
        params: dict[str, str] | None = None,
        plans: Sequence[tuple[str, Sequence[Act]]] = (),
    ) -> Any:
        from twin.models.domain import Action, SimulationRequest
        from twin.models.plans.types import CandidatePlan

        p = dict(params or {})
        p.setdefault("system", system)
        req = SimulationRequest(
            "x",
            kind,
            [Action(a.action_type, system, dict(a.params)) for a in actions],
            horizon_min,
            p,
        )
        cands = [
            CandidatePlan(pid, [Action(a.action_type, system, dict(a.params)) for a in acts])
            for pid, acts in plans
        ]
        req.plans = cands
        return await self.model.simulate(req)


# ----------------------------------------------------------------------------- utilities


def stationary(rate: float) -> Callable[[np.ndarray], np.ndarray]:
    return constant(rate)


def wavy(
    rate: float, amplitude: float, period: float, phase: float
) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: rate * (1.0 + amplitude * np.sin(2 * math.pi * np.asarray(t) / period + phase))


def es_of(ex: Exemplar, cfg: dict[str, float] | None = None) -> float:
    m = ex.mix(cfg or ex.config)
    return m.p_optional * m.mean_optional + (1 - m.p_optional) * m.mean_basic


def mean_latency(seg: Segment, after: float) -> float:
    r = seg.requests
    sel = r.arrival >= after
    return float(np.mean((r.finish - r.arrival)[sel]))


# ----------------------------------------------------------------------------- what-if error


@dataclass(slots=True)
class WhatIfCase:
    system: str
    action: str
    utilization: float  # target utilisation after the action
    predicted_ms: float
    simulated_ms: float
    tail_predicted_ms: float = math.nan
    tail_simulated_ms: float = math.nan

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.simulated_ms) / self.simulated_ms

    @property
    def tail_error(self) -> float:
        return (self.tail_predicted_ms - self.tail_simulated_ms) / self.tail_simulated_ms


Setup = tuple[Exemplar, list[tuple[float, Act]], Act, dict[str, float], dict[str, float]]


def _stable(text: str) -> int:
    return zlib.crc32(text.encode())


def _whatif_setups(system: str, rng: random.Random, seed: int) -> list[Setup]:
    """(exemplar at its pre-history configuration, history actions, the action, config at
    "now", config after the action)."""
    out: list[Setup] = []
    if system == "swim":
        sb = rng.uniform(0.03, 0.08)
        so = sb * rng.uniform(1.4, 2.2)
        for i, (c0, d0, act, c1, d1) in enumerate(
            (
                (3, 0.5, Act("ADD_SERVER", {"count": "1"}), 4, 0.5),
                (5, 0.5, Act("REMOVE_SERVER", {"count": "1"}), 4, 0.5),
                (4, 0.2, Act("SET_DIMMER", {"value": "0.8"}), 4, 0.8),
            )
        ):
            out.append(
                (
                    SwimTier(seed + i, c0, d0, sb, so),
                    [],
                    act,
                    {"servers": c0, "dimmer": d0, "cache": 0.0},
                    {"servers": c1, "dimmer": d1, "cache": 0.0},
                )
            )
    elif system == "switch":
        speed = rng.uniform(0.7, 1.5)
        a, b = rng.sample(range(1, 6), 2)
        w = rng.randint(3, 6)
        # The history visits the target level first (SWITCH switches models all the time).
        hist = [(HISTORY_SEC / 2, Act("SWITCH_MODEL", {"level": str(a)}))]
        now = {"workers": w, "level": a, "size": 640.0}
        out.append(
            (
                SwitchInference(seed, w, b, speed),
                hist,
                Act("SWITCH_MODEL", {"level": str(b)}),
                now,
                {"workers": w, "level": b, "size": 640.0},
            )
        )
        out.append(
            (
                SwitchInference(seed + 1, w, a, speed),
                [],
                Act("SCALE_UP", {"count": "1"}),
                now,
                {"workers": w + 1, "level": a, "size": 640.0},
            )
        )
    else:
        svc = rng.uniform(0.03, 0.15)
        cs2 = rng.uniform(0.3, 1.0)
        r = rng.randint(3, 8)
        out.append(
            (
                K8sService(seed, r, svc, cs2),
                [],
                Act("SCALE_DEPLOYMENT", {"replicas": str(r + 2)}),
                {"replicas": r, "pool": 10.0},
                {"replicas": r + 2, "pool": 10.0},
            )
        )
        out.append(
            (
                K8sService(seed + 1, r + 2, svc, cs2),
                [],
                Act("SCALE_DOWN", {"count": "1"}),
                {"replicas": r + 2, "pool": 10.0},
                {"replicas": r + 1, "pool": 10.0},
            )
        )
    return out


async def whatif_errors(
    system: str,
    seed: int,
    utils: Sequence[float] = (0.3, 0.5, 0.7, 0.8, 0.9),
    requests: int = 150_000,
) -> list[WhatIfCase]:
    rng = random.Random(seed * 7919 + _stable(system))
    cases: list[WhatIfCase] = []
    for proto, hist, act, now_cfg, after in _whatif_setups(system, rng, seed):
        for u in utils:
            ex = proto.fork()
            lam = u * ex.units(after) / es_of(ex, after)
            if any(lam * es_of(ex, c) / ex.units(c) >= 0.97 for c in (ex.config, now_cfg)):
                continue  # the system would (nearly) saturate before the action
            history = ex.run(HISTORY_SEC, stationary(lam), hist)
            twin = await TwinUnderTest.start(**(K8S_SETTINGS if system == "checkout" else {}))
            try:
                twin.feed(history)
                await twin.fit(ex.source)
                res = await twin.simulate("what_if", ex.source, [act], 30)
                if not res.success:
                    raise RuntimeError(res.explanation)
                pred = res.custom_metrics["predicted_avg_rt_ms_mean"]
                tail_name = twin.plans.roles.roles(twin.rt.state.store, ex.source).metric(
                    "latency_tail"
                )
                tail_pred = math.nan
                if tail_name:
                    scale = (
                        twin.plans.roles.roles(twin.rt.state.store, ex.source)
                        .get("latency_tail")
                        .scale
                    )
                    tail_pred = (
                        float(np.mean([s.metrics[tail_name] for s in res.future_states])) * scale
                    )
            finally:
                await twin.stop()
            t_now = ex.t
            duration = max(1800.0, requests / lam)
            truth = ex.run(duration, stationary(lam), [(0.0, act)])
            sim = 1000.0 * mean_latency(truth, t_now + 60.0)
            # The p95 the system publishes: per 10 s bin, averaged after the settle minute.
            tail_sim = float(np.nanmean(truth.truth["p95_ms"][6:])) if tail_name else math.nan
            cases.append(WhatIfCase(ex.source, act.describe(), u, pred, sim, tail_pred, tail_sim))
    return cases


# ----------------------------------------------------------------------------- plan choice


@dataclass(slots=True)
class Situation:
    system: str
    ex: Exemplar  # at "now", after its history
    history: Segment
    rate: float  # load at now (req/s)
    truth_rate: Callable[[np.ndarray], np.ndarray]  # over the horizon (absolute times)
    params: dict[str, str]  # the compare request's parameters (scenario, SLO, utility)
    candidates: list[list[Act]]
    horizon_min: int = 30
    settings: dict[str, Any] = field(default_factory=dict)


def _scenario(rng: random.Random) -> dict[str, str]:
    r = rng.random()
    if r < 0.5:
        return {}
    if r < 0.75:
        return {
            "scenario": "traffic_spike",
            "spike_factor": f"{rng.uniform(1.3, 2.0):.2f}",
            "spike_start_minutes": f"{rng.uniform(3, 15):.1f}",
            "spike_minutes": f"{rng.uniform(5, 15):.1f}",
        }
    if r < 0.85:
        return {"scenario": "traffic_drop", "load_factor": f"{rng.uniform(0.4, 0.8):.2f}"}
    return {"scenario": "diurnal_peak", "load_factor": f"{rng.uniform(1.2, 1.6):.2f}"}


def make_situation(system: str, seed: int) -> Situation:
    """A random situation: hidden parameters, history with executed actions, load, scenario,
    SLO, utility weights and 5 distinct candidate plans."""
    from twin.models.plans.scenarios import profile

    rng = random.Random(seed)
    params: dict[str, str] = {}
    settings: dict[str, Any] = {}
    hist_actions: list[tuple[float, Act]] = []
    ex: Exemplar
    if system == "swim":
        sb = rng.uniform(0.03, 0.08)
        so = sb * rng.uniform(1.4, 2.2)
        c = rng.randint(2, 7)
        d = rng.choice([0.2, 0.4, 0.6, 0.8, 1.0])
        ex = SwimTier(seed, c, d, sb, so)
        rho = rng.uniform(0.3, 0.95)
        rate = rho * c / (d * so + (1 - d) * sb)
        safe = [
            v for v in (0.0, 0.3, 0.5, 0.7, 1.0) if rate * (v * so + (1 - v) * sb) / c < 0.95
        ] or [0.0]
        hist_actions = [
            (HISTORY_SEC * 0.4, Act("SET_DIMMER", {"value": f"{rng.choice(safe):g}"})),
            (HISTORY_SEC * 0.7, Act("SET_DIMMER", {"value": f"{d:g}"})),
        ]
        es_now = d * so + (1 - d) * sb
        params["slo.latency_ms"] = f"{1000 * es_now * rng.uniform(3.0, 10.0):.0f}"
        pool: list[list[Act]] = []
        for k in (1, 2, 3):
            pool.append([Act("ADD_SERVER", {"count": str(k)})])
        for k in (1, 2):
            if c - k >= 1:
                pool.append([Act("REMOVE_SERVER", {"count": str(k)})])
        for v in (0.0, 0.25, 0.5, 0.75, 1.0):
            if abs(v - d) > 1e-9:
                pool.append([Act("SET_DIMMER", {"value": f"{v:g}"})])
                pool.append(
                    [Act("ADD_SERVER", {"count": "1"}), Act("SET_DIMMER", {"value": f"{v:g}"})]
                )
                if c > 1:
                    pool.append(
                        [
                            Act("REMOVE_SERVER", {"count": "1"}),
                            Act("SET_DIMMER", {"value": f"{v:g}"}),
                        ]
                    )
    elif system == "switch":
        speed = rng.uniform(0.7, 1.5)
        w = rng.randint(2, 7)
        level = rng.randint(1, 5)
        ex = SwitchInference(seed, w, level, speed)
        others = [lv for lv in range(1, 6) if lv != level]
        for _ in range(50):  # a load at which the history can visit >= 2 other models unsaturated
            rho = rng.uniform(0.3, 0.95)
            rate = rho * w / es_of(ex)
            safe = [
                lv
                for lv in others
                if rate * es_of(ex, {"workers": w, "level": lv, "size": 640.0}) / w < 0.95
            ]
            if len(safe) >= 2:
                break
        visited = rng.sample(safe, min(3, len(safe)))
        hist_actions = [
            (HISTORY_SEC * f, Act("SWITCH_MODEL", {"level": str(lv)}))
            for f, lv in zip((0.25, 0.45, 0.65), visited)
        ]
        # (the history never saturates: a planner's twin sees a system it has kept healthy)
        hist_actions.append((HISTORY_SEC * 0.85, Act("SWITCH_MODEL", {"level": str(level)})))
        params["slo.latency_ms"] = f"{rng.uniform(250, 1500):.0f}"
        params["utility.quality_weight"] = f"{rng.uniform(2.0, 6.0):.2f}"
        pool = [[Act("SWITCH_MODEL", {"level": str(lv)})] for lv in visited]
        for k in (1, 2):
            if w + k <= 8:
                pool.append([Act("SCALE_UP", {"count": str(k)})])
                pool += [
                    [Act("SCALE_UP", {"count": str(k)}), Act("SWITCH_MODEL", {"level": str(lv)})]
                    for lv in visited
                ]
            if w - k >= 1:
                pool.append([Act("SCALE_DOWN", {"count": str(k)})])
                pool += [
                    [Act("SCALE_DOWN", {"count": str(k)}), Act("SWITCH_MODEL", {"level": str(lv)})]
                    for lv in visited
                ]
    else:
        svc = rng.uniform(0.03, 0.15)
        r = rng.randint(2, 12)
        ex = K8sService(seed, r, svc, rng.uniform(0.3, 1.0), rng.uniform(0.001, 0.01))
        rho = rng.uniform(0.3, 0.95)
        rate = rho * r / svc
        r_hist = max(
            1,
            r + rng.choice([n for n in (-2, -1, 1, 2) if rate * svc / max(1, r + n) < 0.95] or [1]),
        )
        hist_actions = [
            (HISTORY_SEC * 0.3, Act("SCALE_DEPLOYMENT", {"replicas": str(r_hist)})),
            (HISTORY_SEC * 0.6, Act("SCALE_DEPLOYMENT", {"replicas": str(r)})),
        ]
        params["slo.latency_ms"] = f"{1000 * svc * rng.uniform(3.0, 8.0):.0f}"
        if rng.random() < 0.5:
            params["slo.error_rate"] = "0.02"
        settings = K8S_SETTINGS
        pool = [
            [Act("SCALE_DEPLOYMENT", {"replicas": str(n)})]
            for n in range(max(1, r - 4), min(20, r + 6) + 1)
            if n != r
        ]
        pool += (
            [[Act("SCALE_UP", {"count": "1"})], [Act("SCALE_DOWN", {"count": "1"})]]
            if r > 1
            else []
        )
    es_now = es_of(ex)
    # A unit costs 5-30 % of the value it produces when fully busy.
    params["utility.cost_per_unit_hour"] = f"{rng.uniform(0.05, 0.3) * 3600.0 * 1e-4 / es_now:.4g}"
    amp, period, phase = rng.uniform(0.0, 0.12), rng.uniform(600, 2400), rng.uniform(0, 2 * math.pi)
    # The history ends in the configuration of "now" (actions above restore it).
    history = ex.run(HISTORY_SEC, wavy(rate, amp, period, phase), hist_actions)
    scen = _scenario(rng)
    params.update(scen)
    horizon = 30
    t_now = ex.t

    def truth_rate(t: np.ndarray, _s: dict[str, str] = scen) -> np.ndarray:
        m, _ = profile(_s, np.asarray(t) - t_now, horizon * 60.0)
        return wavy(rate, amp, period, phase)(t) * m

    candidates = rng.sample(pool, min(5, len(pool)))
    return Situation(system, ex, history, rate, truth_rate, params, candidates, horizon, settings)


def truth_utility(sit: Situation, acts: Sequence[Act], obj: Any) -> tuple[float, dict[str, float]]:
    """The option's utility measured on the simulator: latency per SLO window against the SLO."""
    window = obj.window_sec
    ex = sit.ex.fork()
    seg = ex.run(sit.horizon_min * 60.0, sit.truth_rate, [(0.0, a) for a in acts])
    b = seg.bins
    per = max(1, int(round(window / b.interval)))
    nb = b.t_end.shape[0] // per * per
    arr = b.arrivals[:nb].reshape(-1, per).sum(axis=1)
    comp = b.completed[:nb].reshape(-1, per).sum(axis=1)
    errs = b.errors[:nb].reshape(-1, per).sum(axis=1)
    rt_sum = b.rt_sum[:nb].reshape(-1, per).sum(axis=1)
    units = b.units[:nb].reshape(-1, per).mean(axis=1)
    quality = seg.truth["quality"][:nb].reshape(-1, per).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if obj.latency_stat == "tail":
            lat = _window_quantile(seg, b.t_end[0] - b.interval, window, arr.shape[0], 0.95)
        else:
            lat = 1000.0 * rt_sum / comp
        err = np.where(comp > 0, errs / np.maximum(comp, 1), 1.0)
    breach = ~(lat <= obj.latency_ms)
    if obj.error_rate is not None:
        breach |= err > obj.error_rate
    good = arr * (1.0 - err)
    q = quality if sit.system != "checkout" else np.zeros_like(quality)
    value = float(np.sum(good * obj.value_per_request * (1.0 + obj.quality_weight * q) * ~breach))
    penalty = float(np.sum(good * obj.value_per_request * obj.breach_penalty * breach))
    cost = float(np.sum(units * obj.cost_per_unit_hour * window / 3600.0))
    return value - penalty - cost, {
        "value": value,
        "penalty": penalty,
        "cost": cost,
        "stake": float(np.sum(arr) * obj.value_per_request),
    }


def _window_quantile(seg: Segment, t0: float, window: float, n: int, q: float) -> np.ndarray:
    r = seg.requests
    done = r.finish
    rt = done - r.arrival
    k = ((done - t0) // window).astype(int)
    out = np.full(n, np.nan)
    for i in range(n):
        sel = k == i
        if sel.any():
            out[i] = 1000.0 * float(np.quantile(rt[sel], q))
    return out


@dataclass(slots=True)
class ChoiceResult:
    system: str
    seed: int
    twin_best: str
    true_best: str
    regret: float  # true utility lost by the twin's pick
    stake: float  # offered requests × value: the scale of the utility
    best_utility: float
    tie: bool  # the twin's pick is within 1 % of the stake of the true best
    scenario: str
    twin_order: list[str] = field(default_factory=list)
    true_utilities: dict[str, float] = field(default_factory=dict)
    # The best option in a second, independent run of the simulator (same situation and
    # plans, other random arrivals and service times): how often the simulator agrees with
    # itself bounds how often any prediction can match its single run.
    replicate_best: str = ""

    @property
    def match(self) -> bool:
        return self.twin_best == self.true_best

    @property
    def regret_share(self) -> float:
        """Regret as a share of the best option's utility (floored at 5 % of the stake)."""
        return self.regret / max(abs(self.best_utility), 0.05 * self.stake, 1e-12)


async def plan_choice(system: str, seed: int) -> ChoiceResult:
    from twin.models.plans.roles import system_settings
    from twin.models.plans.utility import objectives

    sit = make_situation(system, seed)
    twin = await TwinUnderTest.start(**sit.settings)
    try:
        twin.feed(sit.history)
        await twin.fit(sit.ex.source)
        twin.learn()
        plans = [(f"p{i + 1}", c) for i, c in enumerate(sit.candidates)]
        res = await twin.simulate("compare", sit.ex.source, [], sit.horizon_min, sit.params, plans)
        if not res.success:
            raise RuntimeError(res.explanation)
        order = [o.plan_id for o in sorted(res.plan_outcomes, key=lambda o: o.rank)]
        roles = twin.plans.roles.roles(twin.rt.state.store, sit.ex.source)
        obj = objectives(
            sit.params,
            system_settings(twin.plans.settings, sit.ex.source),
            twin.plans.settings,
            roles.has("latency_tail"),
        )
    finally:
        await twin.stop()
    options: dict[str, Any] = {"do_nothing": []} | dict(plans)
    utils: dict[str, float] = {}
    stake = 0.0
    for pid, acts in options.items():
        u, parts = truth_utility(sit, acts, obj)
        utils[pid] = u
        stake = max(stake, parts["stake"])
    true_best = max(utils, key=lambda k: (utils[k], -len(options[k])))
    again = replicate(sit, seed)
    utils2 = {pid: truth_utility(again, acts, obj)[0] for pid, acts in options.items()}
    replicate_best = max(utils2, key=lambda k: (utils2[k], -len(options[k])))
    pick = order[0]
    regret = utils[true_best] - utils[pick]
    return ChoiceResult(
        system,
        seed,
        pick,
        true_best,
        regret,
        stake,
        utils[true_best],
        regret <= 0.01 * stake,
        sit.params.get("scenario", "baseline"),
        order,
        utils,
        replicate_best,
    )


def replicate(sit: Situation, seed: int) -> Situation:
    """The same situation with the simulator's randomness drawn afresh."""
    ex = sit.ex.fork()
    ex.sim.rng = np.random.default_rng([seed, 1])
    ex.noise = np.random.default_rng([seed, 2])
    return replace(sit, ex=ex)


# ----------------------------------------------------------------------------- coverage


async def forecast_coverage(
    system: str, seed: int, origins: int = 3, horizon_min: int = 20, level: float = 0.9
) -> tuple[int, int]:
    """(inside, total) of later telemetry within the twin's ``level`` forecast intervals
    for the system's load, latency and utilisation series."""
    rng = random.Random(seed * 31 + _stable(system))
    sit = make_situation(system, seed)
    ex = sit.ex
    inside = total = 0
    twin = await TwinUnderTest.start(interval_level=level, **sit.settings)
    try:
        twin.feed(sit.history)
        roles = twin.plans.roles.roles(twin.rt.state.store, ex.source)
        names = [roles.metric(r) for r in ("load", "latency", "utilization") if roles.metric(r)]
        for _ in range(origins):
            await twin.fit(ex.source, names)
            res = await twin.simulate(
                "forecast", ex.source, [], horizon_min, {"metrics": ",".join(names)}
            )
            if not res.success:
                raise RuntimeError(res.explanation)
            seg = ex.run(
                horizon_min * 60.0,
                wavy(sit.rate, 0.05, rng.uniform(600, 2400), rng.uniform(0, 6.3)),
            )
            from twin.tools.exemplars.feed import points

            actual: dict[str, dict[float, float]] = {}
            for p in points(seg.telemetry):
                actual.setdefault(p.name, {})[round(p.t, 3)] = p.value
            for st in res.future_states:
                for n in names:
                    a = actual.get(n, {}).get(round(st.t, 3))
                    if a is None or n not in st.metrics:
                        continue
                    total += 1
                    inside += int(st.metrics[f"{n}.lower"] <= a <= st.metrics[f"{n}.upper"])
            twin.feed(seg)
    finally:
        await twin.stop()
    return inside, total


# ----------------------------------------------------------------------------- learned effects

# (system, (action on, params), (action off, params), true service factor of "on",
#  true quality change of "on")
EFFECT_ACTIONS = {
    "swim": (Act("ENABLE_CACHE"), Act("DISABLE_CACHE"), 0.8, None),
    "switch": (
        Act("SET_RESOLUTION", {"size": "416"}),
        Act("SET_RESOLUTION", {"size": "640"}),
        0.55,
        -0.06,
    ),
    "checkout": (
        Act("UPDATE_CONFIG", {"key": "db_pool_size", "value": "50"}),
        Act("UPDATE_CONFIG", {"key": "db_pool_size", "value": "10"}),
        0.85,
        None,
    ),
}


@dataclass(slots=True)
class EffectPoint:
    system: str
    n: int
    service_error: float  # |learned change - true change| / |true change| of the service time
    quality_error: float = math.nan
    whatif_error: float = math.nan  # latency what-if with the learned effect vs the simulator


async def learned_effect_errors(
    system: str, seed: int, checkpoints: Sequence[int] = (1, 3, 5, 10)
) -> list[EffectPoint]:
    rng = random.Random(seed * 101 + _stable(system))
    on, off, factor, dq = EFFECT_ACTIONS[system]
    if system == "swim":
        ex: Exemplar = SwimTier(
            seed,
            rng.randint(3, 6),
            rng.choice([0.3, 0.6, 1.0]),
            rng.uniform(0.03, 0.08),
            rng.uniform(0.08, 0.15),
        )
    elif system == "switch":
        ex = SwitchInference(seed, rng.randint(3, 6), rng.randint(1, 4), rng.uniform(0.7, 1.5))
    else:
        ex = K8sService(seed, rng.randint(3, 8), rng.uniform(0.03, 0.15), rng.uniform(0.3, 1.0))
    twin = await TwinUnderTest.start(**(K8S_SETTINGS if system == "checkout" else {}))
    out: list[EffectPoint] = []
    try:
        seen = 0
        for _ in range(max(checkpoints)):
            es = es_of(ex)
            rate = rng.uniform(0.3, 0.75) * ex.units(ex.config) / es
            twin.feed(ex.run(360.0, stationary(rate)))
            twin.feed(ex.run(420.0, stationary(rate), [(0.0, on)]))
            twin.learn()
            seen += 1
            # back to "off" at another random load (that execution teaches "off")
            rate2 = rng.uniform(0.3, 0.75) * ex.units(ex.config) / es_of(ex)
            twin.feed(ex.run(360.0, stationary(rate2)))
            twin.feed(ex.run(420.0, stationary(rate2), [(0.0, off)]))
            twin.learn()
            if seen in checkpoints:
                est = twin.plans.effects.estimate(ex.source, on.action_type, on.params)
                s = est.get("service")
                err = (
                    abs((math.exp(s.mean) - 1.0) - (factor - 1.0)) / abs(factor - 1.0)
                    if s
                    else math.inf
                )
                qerr = math.nan
                if dq is not None:
                    q = est.get("quality")
                    qerr = abs(q.mean - dq) / abs(dq) if q else math.inf
                point = EffectPoint(system, seen, err, qerr)
                # A what-if with the learned effect against the simulator.
                rate3 = rng.uniform(0.4, 0.7) * ex.units(ex.config) / es_of(ex)
                twin.feed(ex.run(900.0, stationary(rate3)))
                await twin.fit(ex.source)
                res = await twin.simulate("what_if", ex.source, [on], 30)
                probe = ex.fork()
                t_now = probe.t
                truth = probe.run(max(1800.0, 100_000 / rate3), stationary(rate3), [(0.0, on)])
                sim = 1000.0 * mean_latency(truth, t_now + 60.0)
                point.whatif_error = (res.custom_metrics["predicted_avg_rt_ms_mean"] - sim) / sim
                if abs(point.whatif_error) > 0.2 and DEBUG:
                    print(res.explanation, sim, rate3)
                out.append(point)
    finally:
        await twin.stop()
    return out
