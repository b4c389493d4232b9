"""What-if and plan comparison for any managed system: the glue between the store, the
forecaster and the pure pieces of this package.

One request, in order:

1. the system (``parameters.system`` or the actions' ``target``), its roles
   (``roles.py``) and per-system settings;
2. validation: unknown scenario, malformed action parameters → INVALID_ARGUMENT;
3. the load over the horizon: the load series' forecast (cached forecaster, never
   fitted on the request path), reshaped by the scenario (``scenarios.py``);
4. a queue calibrated from recent telemetry (``tier.py``), when the system has load,
   capacity and latency or utilisation; otherwise the forecasts of its role metrics;
5. per plan (and a "do nothing" baseline under the same scenario): the configuration
   after its actions (``actions.py``), learned effects for the rest (``effects.py``),
   the trajectories (``evaluate.py``), the SLO breach probability and the utility
   (``utility.py``), and a confidence that means "P(realised within ±tolerance)"
   (``skill.py``, measured by the ledger when it has history).

The engine keeps the learned-effects table and a small cache of calibrated tiers (per
system and newest sample time). Heavy work is numpy over the horizon; nothing here
blocks on I/O, so it can run in a worker process with a copy of the store.

Settings (``world_model.settings``; all optional): ``systems`` (per-system ``roles``,
``actions``, ``slo``, ``utility``, ``request_timeout_ms``), ``slo``/``utility``
defaults, ``effects`` windows, ``capacity_window_sec`` (3600), ``knob_history_sec``
(86400), ``max_whatif_states`` (360), ``max_compare_states`` (60), ``whatif_prior_error``
(0.1), ``confidence_tolerance`` (0.1), ``confidence_min_scored`` (20).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.core.errors import InvalidRequest
from twin.models.domain import (
    Action,
    EventBatch,
    Impact,
    PredictedState,
    SimulationRequest,
    SimulationResult,
)
from twin.models.plans import actions as acts
from twin.models.plans import effects as eff
from twin.models.plans import scenarios, skill, utility
from twin.models.plans.evaluate import (
    Band,
    Config,
    Trajectory,
    evaluate_series,
    evaluate_tier,
    slo_breach,
    step_lengths,
)
from twin.models.plans.roles import RoleCache, RoleMap, system_settings
from twin.models.plans.tier import Tier, calibrate
from twin.models.plans.types import BASELINE_PLAN_ID, MAX_PLANS, CandidatePlan, PlanOutcome

MAX_PER_UNIT_METRICS = 32
HEADLINE_ROLES = ("latency", "latency_tail", "utilization", "error_rate", "quality", "throughput")
SERIES_ROLES = (
    "load",
    "throughput",
    "utilization",
    "latency",
    "latency_tail",
    "error_rate",
    "quality",
    "capacity",
    "knob",
    "cost",
)
UNKNOWN_SIGMA = 0.5  # relative error assumed for an action nobody can model
LEVEL_SAMPLES = 30  # load level of a last-value forecast: the mean of this many recent samples
PLAN_SIGMA_FLOOR = 0.5  # share of the prior error every plan keeps (the future is not the window)


class ForecastLike:
    """What the engine needs from a forecast (``forecast.ForecastOut`` has it)."""

    times: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fitted: bool
    method: str


ForecastFn = Callable[[str, str, float, float], "ForecastLike | None"]


class Corrector:
    """Calibration corrections (``statistical.calibration.Calibrator`` has this shape)."""

    def has(self, system: str, metric: str) -> bool:
        return False

    def correct(self, system: str, metric: str, value: float, util: float | None = None) -> float:
        return value


@dataclass(slots=True)
class _Context:
    system: str
    note: str
    roles: RoleMap
    sys_settings: dict[str, Any]
    vocab: dict[str, acts.ActionKind]
    now: float
    horizon_sec: float
    load: scenarios.Load | None
    load_fitted: bool
    tier: Tier | None
    series: dict[str, Band] = field(default_factory=dict)  # non-queue systems: forecasts per role
    model_sigma: float = 0.1
    skill: skill.Skill | None = None
    timeout_ms: float | None = None
    scenario: str = "baseline"


@dataclass(slots=True)
class _Prediction:
    values: dict[str, Band]
    saturated: np.ndarray
    latency_sigma: np.ndarray
    units: int | None
    unit_delta: int
    knob: float | None
    notes: list[str]
    learned: list[str]
    unknown: list[str]
    extra_sigma: float
    clamped: bool = False
    config: Config | None = None
    traj: Trajectory | None = None
    model_sigma: float | None = None


class PlanEngine:
    def __init__(
        self,
        state: Any,
        settings: Mapping[str, Any] | None = None,
        forecast: ForecastFn | None = None,
        corrector: Any = None,
        level: float = 0.95,
    ) -> None:
        self.state = state
        self.forecast = forecast
        self.corrector = corrector or Corrector()
        self.level = level
        self.configure(settings or {})

    def configure(self, settings: Mapping[str, Any]) -> None:
        s = dict(settings)
        self.settings = s
        self.roles = RoleCache(s)
        self.effects = eff.EffectTable(eff.EffectSettings.from_settings(s))
        self.window_sec = float(s.get("capacity_window_sec", 3600.0))
        self.knob_history_sec = float(s.get("knob_history_sec", 86400.0))
        self.max_states = int(s.get("max_whatif_states", 360))
        self.max_compare_states = int(s.get("max_compare_states", 60))
        self.prior_error = float(s.get("whatif_prior_error", 0.1))
        self.tolerance = float(s.get("confidence_tolerance", 0.1))
        self.min_scored = int(s.get("confidence_min_scored", 20))
        self._tiers: OrderedDict[str, tuple[float, Tier | None]] = OrderedDict()
        self.answers_total = 0
        self.compares_total = 0

    # ------------------------------------------------------------------ ingestion side
    def update(self, batch: EventBatch) -> None:
        for rec in batch.actions:
            self.effects.on_action(
                rec.t, rec.target, rec.action_type, getattr(rec, "params", {}) or {}, rec.success
            )

    def background(self) -> int:
        """Learns the effects of executions with telemetry (cheap, off the request path)."""
        return self.effects.process(
            self.state.store, lambda system: self.roles.roles(self.state.store, system)
        )

    def reset(self) -> None:
        self.effects.reset()
        self.roles.clear()
        self._tiers.clear()

    def metrics(self) -> dict[str, float]:
        m = self.effects.metrics()
        m["plan_compares_total"] = float(self.compares_total)
        return m

    # ------------------------------------------------------------------ requests
    def pick_system(
        self, request: SimulationRequest, plans: Sequence[CandidatePlan] = ()
    ) -> tuple[str | None, str]:
        target = next((a.target for a in request.actions if a.target), None)
        target = target or next((a.target for p in plans for a in p.actions if a.target), None)
        target = target or request.parameters.get("system") or request.parameters.get("source")
        sources = self.state.store.sources()
        if target:
            return target, ""
        if not sources:
            return None, ""
        chosen = "swim" if "swim" in sources else sources[0]
        return chosen, f" (no system given; chose {chosen!r} of {', '.join(sources)})"

    def what_if(self, request: SimulationRequest) -> SimulationResult:
        ctx_or_fail = self._context(request, list(request.actions), self.max_states)
        if isinstance(ctx_or_fail, SimulationResult):
            return ctx_or_fail
        ctx = ctx_or_fail
        self.answers_total += 1
        base = self._predict(ctx, [])
        pred = self._predict(ctx, list(request.actions)) if request.actions else base
        obj = self._objectives(ctx, request.parameters)
        states = self._states(ctx, pred, base, request.simulation_id)
        impact = self._impact(ctx, pred, base, obj)
        conf, basis = self._confidence(ctx, pred)
        util_value, parts, p_breach = self._utility(ctx, pred, obj)
        expl = self._explain(ctx, pred, basis)
        meta = self._metadata(ctx, pred, basis)
        custom = self._custom(ctx, pred, base, p_breach, util_value)
        last = states[-1].metrics if states else {}
        unc = meta.get("uncertainty_metric", "")
        return SimulationResult(
            True,
            states,
            round(conf, 6),
            float(last.get(f"{unc}.lower", 0.0)),
            float(last.get(f"{unc}.upper", 0.0)),
            "; ".join(expl),
            impact,
            meta,
            custom,
            max(1, len(request.actions)),
        )

    def compare(
        self, request: SimulationRequest, plans: Sequence[CandidatePlan]
    ) -> tuple[SimulationResult, list[PlanOutcome]]:
        plans = self.validate_plans(plans, request.actions)
        all_actions = [a for p in plans for a in p.actions]
        ctx_or_fail = self._context(request, all_actions, self.max_compare_states, plans, "plan")
        if isinstance(ctx_or_fail, SimulationResult):
            return ctx_or_fail, []
        ctx = ctx_or_fail
        self.compares_total += 1
        obj = self._objectives(ctx, request.parameters)
        base = self._predict(ctx, [])
        outcomes: list[PlanOutcome] = []
        for plan in [CandidatePlan(BASELINE_PLAN_ID, [])] + list(plans):
            pred = base if not plan.actions else self._predict(ctx, plan.actions)
            u, parts, p_breach = self._utility(ctx, pred, obj)
            conf, basis = self._confidence(ctx, pred)
            states = self._states(ctx, pred, base, compact=True)
            impact = self._impact(ctx, pred, base, obj)
            p_any = float(np.mean(p_breach)) if p_breach.shape[0] else 0.0
            text = self._plan_text(ctx, plan, pred, u, parts, p_any, basis)
            outcomes.append(
                PlanOutcome(
                    plan.plan_id,
                    0,
                    u,
                    p_any,
                    states,
                    impact,
                    round(conf, 6),
                    text,
                    list(plan.actions),
                    parts,
                )
            )
        order = sorted(
            range(len(outcomes)), key=lambda i: (-outcomes[i].utility, len(outcomes[i].actions), i)
        )
        for rank, i in enumerate(order, 1):
            outcomes[i].rank = rank
        ranked = [outcomes[i] for i in order]
        best = ranked[0]
        runner = ranked[1] if len(ranked) > 1 else None
        margin = best.utility - runner.utility if runner is not None else math.inf
        expl = [
            f"compared {len(plans)} plan(s) and '{BASELINE_PLAN_ID}' on {ctx.system}{ctx.note} "
            f"over {ctx.horizon_sec / 60:g} min"
            + (f" ({ctx.scenario})" if ctx.scenario != "baseline" else ""),
            "ranking by utility: "
            + ", ".join(
                f"{o.rank}. {o.plan_id} {o.utility:+.4g} {obj.currency} (breach "
                f"{o.slo_breach_probability:.0%})"
                for o in ranked
            ),
            obj.describe(),
        ]
        if runner is not None:
            expl.append(
                f"best: {best.plan_id}, ahead of {runner.plan_id} by {margin:.4g} {obj.currency}"
            )
        meta = self._metadata(ctx, base, None)
        meta.update(
            {"best_plan": best.plan_id, "plans": str(len(outcomes)), "objectives": obj.describe()}
        )
        custom = {
            "best_utility": best.utility,
            "utility_margin": margin if math.isfinite(margin) else 0.0,
            "plans_compared": float(len(outcomes)),
        }
        result = SimulationResult(
            True,
            best.future_states,
            best.confidence,
            0.0,
            0.0,
            "; ".join(expl),
            best.impact,
            meta,
            custom,
            len(outcomes),
        )
        unc = meta.get("uncertainty_metric", "")
        if best.future_states and unc:
            result.uncertainty_lower = float(
                best.future_states[-1].metrics.get(f"{unc}.lower", 0.0)
            )
            result.uncertainty_upper = float(
                best.future_states[-1].metrics.get(f"{unc}.upper", 0.0)
            )
        return result, outcomes

    @staticmethod
    def validate_plans(
        plans: Sequence[CandidatePlan], loose_actions: Sequence[Action] = ()
    ) -> list[CandidatePlan]:
        out = list(plans)
        if not out and loose_actions:
            out = [CandidatePlan("plan-1", list(loose_actions))]
        if not out:
            raise InvalidRequest("a compare simulation needs at least one plan", "plans")
        if len(out) > MAX_PLANS:
            raise InvalidRequest(f"at most {MAX_PLANS} plans", "plans")
        seen: set[str] = set()
        fixed = []
        for i, p in enumerate(out):
            pid = p.plan_id.strip() or f"plan-{i + 1}"
            if pid == BASELINE_PLAN_ID:
                raise InvalidRequest(
                    f"plan_id {BASELINE_PLAN_ID!r} is reserved for the baseline the twin adds",
                    f"plans[{i}].plan_id",
                )
            if pid in seen:
                raise InvalidRequest(f"duplicate plan_id {pid!r}", f"plans[{i}].plan_id")
            seen.add(pid)
            fixed.append(CandidatePlan(pid, list(p.actions)))
        return fixed

    # ------------------------------------------------------------------ context
    def _context(
        self,
        request: SimulationRequest,
        actions: list[Action],
        max_states: int,
        plans: Sequence[CandidatePlan] = (),
        kind: str = "what_if",
    ) -> _Context | SimulationResult:
        store = self.state.store
        scenarios.validate(request.parameters, request.horizon_minutes)
        system, note = self.pick_system(request, plans)
        if system is None:
            return SimulationResult(
                False, explanation="the twin has received no telemetry yet; nothing to simulate"
            )
        if system not in store.sources():
            return SimulationResult(
                False,
                explanation=f"unknown system {system!r}; known: "
                f"{', '.join(store.sources()) or 'none yet'}",
            )
        roles = self.roles.roles(store, system)
        sys_settings = system_settings(self.settings, system)
        vocab = acts.vocabulary(sys_settings)
        if plans:
            for i, p in enumerate(plans):
                acts.validate(p.actions, vocab, f"plans[{i}].actions")
        else:
            acts.validate(actions, vocab)
        horizon_sec = max(60.0, request.horizon_minutes * 60.0)
        tier = self._tier(roles, sys_settings)
        now = tier.newest if tier is not None else _newest(store, roles)
        timeout = sys_settings.get("request_timeout_ms")
        ctx = _Context(
            system,
            note,
            roles,
            sys_settings,
            vocab,
            now,
            horizon_sec,
            None,
            False,
            tier,
            timeout_ms=float(timeout) if timeout is not None else None,
            scenario=scenarios.scenario_name(request.parameters),
        )
        ctx.skill = skill.source_of(self.state).skill(system, kind)
        ctx.model_sigma = self._model_sigma(ctx)
        ctx.load, ctx.load_fitted = self._load(ctx, request.parameters, max_states)
        if tier is None:
            ctx.series = self._series(ctx, max_states, ctx.load)
            if not ctx.series:
                return SimulationResult(
                    False, explanation=f"{system} has no numeric series to simulate"
                )
        return ctx

    def _tier(self, roles: RoleMap, sys_settings: Mapping[str, Any]) -> Tier | None:
        newest = _newest(self.state.store, roles)
        hit = self._tiers.get(roles.system)
        if hit is not None and hit[0] == newest and (hit[1] is None or hit[1].roles is roles):
            return hit[1]
        timeout = sys_settings.get("request_timeout_ms")
        vocab = acts.vocabulary(sys_settings)
        since = None
        for rec in reversed(self.state.actions):  # newest first; bounded deque
            if (
                rec.target == roles.system
                and rec.success is not False
                and rec.action_type.upper() not in vocab
            ):
                since = rec.t
                break
        tier = calibrate(
            self.state.store,
            roles,
            self.window_sec,
            self.knob_history_sec,
            timeout_ms=float(timeout) if timeout is not None else None,
            since=since,
        )
        self._tiers[roles.system] = (newest, tier)
        while len(self._tiers) > 256:
            self._tiers.popitem(last=False)
        return tier

    def _model_sigma(self, ctx: _Context) -> float:
        sk = ctx.skill
        if sk is not None and sk.n >= self.min_scored and math.isfinite(sk.rel_error):
            return float(sk.rel_error)
        s = self.prior_error
        t = ctx.tier
        if t is not None:
            if t.assumed:
                s *= 2.0
            if not (0.5 <= t.rt_factor <= 2.0):
                s *= 1.5
        return s

    def _load(
        self, ctx: _Context, params: Mapping[str, str], max_states: int
    ) -> tuple[scenarios.Load | None, bool]:
        roles = ctx.roles
        name = next((roles.metric(r) for r in ("load", "throughput") if roles.has(r)), None)
        fc = (
            self.forecast(ctx.system, name, ctx.horizon_sec, self.level)
            if (name and self.forecast is not None)
            else None
        )
        if fc is not None and fc.times.shape[0] and name:
            times, f_mean, f_lo, f_hi = fc.times, fc.mean, fc.lower, fc.upper
            method = fc.method
            end = ctx.now + ctx.horizon_sec
            if getattr(fc, "truncated", False) and float(times[-1]) < end - 1.0:
                # A fast series hits the forecaster's step limit before the horizon: hold
                # its last forecast on a coarse grid out to the horizon, and say so.
                extra = np.linspace(float(times[-1]), end, max_states + 1)[1:]
                times = np.concatenate((times, extra))
                f_mean, f_lo, f_hi = (
                    np.concatenate((a, np.full(extra.shape[0], a[-1])))
                    for a in (f_mean, f_lo, f_hi)
                )
                held = (float(fc.times[-1]) - ctx.now) / 60
                method += (
                    f" (held from +{held:.0f} min: the sampling step is too fine to forecast "
                    "further)"
                )
            if times.shape[0] > max_states:  # a uniform grid of at most max_states states
                grid = np.linspace(
                    float(times[-1])
                    - (float(times[-1]) - float(times[0])) * (max_states - 1) / max_states,
                    float(times[-1]),
                    max_states,
                )
                f_mean, f_lo, f_hi = (np.interp(grid, times, a) for a in (f_mean, f_lo, f_hi))
                times = grid
            scale = (roles.get("load") or roles.get("throughput")).scale  # type: ignore[union-attr]
            mean = f_mean * scale
            lo, hi = f_lo * scale, f_hi * scale
            if method.startswith(("naive", "fallback")):
                # A last-value forecast of a noisy rate is its last sample (a 10 s count can be
                # 20 % off), and a queue's latency is very sensitive to the load level: use
                # the recent mean as the level, keep the band's width.
                level = self._recent_level(ctx, name)
                if level is not None:
                    shift = level - float(mean[0])
                    mean, lo, hi = mean + shift, np.maximum(lo + shift, 0.0), hi + shift
                    method += f", level = mean of the last {LEVEL_SAMPLES} samples ({level:.4g})"
            ceiling = self._load_ceiling(ctx, name)
            if ceiling is not None and np.any(hi - mean > ceiling):
                lo, hi = np.maximum(lo, mean - ceiling), np.minimum(hi, mean + ceiling)
                method += (
                    f" (band capped at ±{ceiling:.3g} req/s, the load's own variability over the "
                    "window)"
                )
            load = scenarios.Load(times, mean, np.maximum(lo, 0.0), hi, method)
            fitted = bool(fc.fitted)
        else:
            level = ctx.tier.load if ctx.tier is not None else None
            if level is None:
                return None, False
            times = ctx.now + np.linspace(ctx.horizon_sec / 10, ctx.horizon_sec, 10)
            arr = np.full(10, level)
            load = scenarios.Load(
                times,
                arr,
                arr.copy(),
                arr.copy(),
                "held at the observed throughput (no load series)",
            )
            fitted = False
        return scenarios.shape(load, params, ctx.now, ctx.horizon_sec), fitted

    def _recent_level(self, ctx: _Context, name: str) -> float | None:
        s = self.state.store.get(ctx.system, name)
        if s is None or len(s) < 3:
            return None
        _, v = s.tail(LEVEL_SAMPLES)
        b = ctx.roles.get("load") or ctx.roles.get("throughput")
        v = v[np.isfinite(v)]
        return float(np.mean(v)) * (b.scale if b is not None else 1.0) if v.shape[0] else None

    def _load_ceiling(self, ctx: _Context, name: str) -> float | None:
        """Half-width a load band need not exceed: the z-score of the load's variation over
        the window beyond counting noise. A random-walk forecaster's band grows without
        bound; a request rate that has been steady for an hour does not."""
        s = self.state.store.get(ctx.system, name)
        if s is None or len(s) < 10:
            return None
        t, v = s.window(ctx.now - self.window_sec, math.inf)
        if t.shape[0] < 10:
            return None
        b = ctx.roles.get("load") or ctx.roles.get("throughput")
        v = v * (b.scale if b is not None else 1.0)
        mean, var = float(np.mean(v)), float(np.var(v))
        step = float(np.median(np.diff(t))) or 1.0
        var_u = max(var - mean / step, 0.25 * var)
        return _z(self.level) * max(math.sqrt(var_u), 0.02 * abs(mean))

    def _series(
        self, ctx: _Context, max_states: int, load: scenarios.Load | None
    ) -> dict[str, Band]:
        """Forecasts of the role metrics of a system without a queue model."""
        out: dict[str, Band] = {}
        grid: np.ndarray | None = None
        for role in SERIES_ROLES:
            b = ctx.roles.get(role)
            if b is None or self.forecast is None:
                continue
            if role == "load" and load is not None:
                out[role] = (load.mean, load.lower, load.upper)
                grid = load.times if grid is None else grid
                continue
            fc = self.forecast(ctx.system, b.metric, ctx.horizon_sec, self.level)
            if fc is None or not fc.times.shape[0]:
                continue
            if grid is None:
                n = fc.times.shape[0]
                stride = max(1, math.ceil(n / max_states))
                grid = fc.times[np.arange(n - 1, -1, -stride)[::-1]]
            out[role] = tuple(
                np.interp(grid, fc.times, x) * b.scale for x in (fc.mean, fc.lower, fc.upper)
            )
        if grid is not None:
            out["_times"] = (grid, grid, grid)
        return out

    # ------------------------------------------------------------------ prediction
    def _learned(
        self, ctx: _Context, actions: Sequence[Action]
    ) -> tuple[dict[str, eff.Estimate], list[str], list[str]]:
        """Learned effects of ``actions`` combined (log effects add, deltas add)."""
        combined: dict[str, eff.Estimate] = {}
        used, unknown = [], []
        for a in actions:
            est = self.effects.estimate(ctx.system, a.action_type, a.params)
            if not est:
                unknown.append(
                    eff.action_key(a.action_type, a.params) if a.params else a.action_type
                )
                continue
            used.append(f"{eff.action_key(a.action_type, a.params)}: {eff.describe(est.values())}")
            for m, e in est.items():
                prev = combined.get(m)
                if prev is None:
                    combined[m] = e
                else:
                    combined[m] = eff.Estimate(
                        m,
                        e.kind,
                        prev.mean + e.mean,
                        math.hypot(prev.sd, e.sd),
                        math.hypot(prev.tau, e.tau),
                        min(prev.n, e.n),
                    )
        return combined, used, unknown

    def _predict(self, ctx: _Context, actions: Sequence[Action]) -> _Prediction:
        tier = ctx.tier
        if tier is None:
            return self._predict_series(ctx, actions)
        assert ctx.load is not None
        cfg = acts.apply(
            actions,
            tier.units,
            tier.knob,
            tier.max_units,
            ctx.vocab,
            tier.knob_kind,
            lambda k: tier.service(k) is not None,
        )
        learned, used, unknown = self._learned(ctx, cfg.other + cfg.knob_unestimated)
        svc = tier.service(cfg.knob)
        assert svc is not None
        quality = None
        if tier.roles.has("quality"):
            quality = (
                tier.quality_by_knob.get(round(float(cfg.knob), 6))
                if cfg.knob is not None
                else None
            )
            quality = quality if quality is not None else tier.quality_now
        elif tier.knob_kind == "dimmer" and cfg.knob is not None:
            quality = cfg.knob
        c = Config(cfg.units, cfg.knob, svc, quality=quality)
        notes = list(cfg.notes)
        if "service" in learned:
            e = learned["service"]
            c.service_scale, c.service_sigma = math.exp(e.mean), e.predictive_sd
        elif "latency" in learned:
            e = learned["latency"]
            c.latency_log_shift, c.latency_sigma = e.mean, e.predictive_sd
        if "quality" in learned and quality is not None:
            c.quality_shift, c.quality_sigma = (
                learned["quality"].mean,
                learned["quality"].predictive_sd,
            )
        if "error_rate" in learned:
            c.error_shift = learned["error_rate"].mean
        for a in cfg.knob_unestimated:
            if eff.action_key(a.action_type, a.params) in set(unknown):
                notes.append(
                    f"{a.action_type} {a.params}: no telemetry at that knob setting and no learned "
                    "effect"
                )
        sigma = self._plan_sigma(ctx, tier, c)
        traj = evaluate_tier(tier, ctx.load, ctx.now, c, sigma, _z(self.level), ctx.timeout_ms)
        extra = UNKNOWN_SIGMA if unknown else 0.0
        return _Prediction(
            traj.values,
            traj.saturated,
            traj.latency_sigma,
            cfg.units,
            cfg.unit_delta,
            cfg.knob,
            notes,
            used,
            unknown,
            extra,
            cfg.clamped,
            c,
            traj,
            sigma,
        )

    def _plan_sigma(self, ctx: _Context, tier: Tier, c: Config) -> float:
        """The model's error for this plan: measured (ledger) when there is history; else the
        fit error where the tier was observed, growing towards the prior error the further
        the plan (and the scenario) takes the tier from what was observed (utilisation
        ratio, a doubling = the whole prior; another knob setting = half of it)."""
        if (
            ctx.skill is not None
            and ctx.skill.n >= self.min_scored
            and math.isfinite(ctx.skill.rel_error)
        ):
            return float(ctx.skill.rel_error)
        assert ctx.load is not None
        now = tier.service(tier.knob)
        es_now = now.es if now is not None else c.service.es
        rho_obs = max(tier.load * es_now / max(tier.units, 1), 1e-3)
        es_plan = c.service.es * c.service_scale
        rho_plan = min(max(float(np.max(ctx.load.mean)) * es_plan / max(c.units, 1), 1e-3), 1.5)
        rho_low = min(max(float(np.min(ctx.load.mean)) * es_plan / max(c.units, 1), 1e-3), 1.5)
        d = max(abs(math.log(rho_plan / rho_obs)), abs(math.log(rho_low / rho_obs))) / math.log(2.0)
        if c.knob is not None and tier.knob is not None and abs(c.knob - tier.knob) > 1e-9:
            d += 0.5
        return math.hypot(tier.fit_sigma, ctx.model_sigma * min(1.0, max(d, PLAN_SIGMA_FLOOR)))

    def _predict_series(self, ctx: _Context, actions: Sequence[Action]) -> _Prediction:
        base = {r: v for r, v in ctx.series.items() if r != "_times"}
        learned, used, unknown = self._learned(ctx, actions)
        values, moved = evaluate_series(base, learned, _z(self.level))
        n = ctx.series["_times"][0].shape[0]
        lat = values.get("latency")
        sigma = np.full(n, ctx.model_sigma)
        if lat is not None:
            band = (np.log(np.maximum(lat[2], 1e-9)) - np.log(np.maximum(lat[1], 1e-9))) / (
                2 * _z(self.level)
            )
            sigma = np.sqrt(band**2 + ctx.model_sigma**2)
        notes = [f"learned effect moves {', '.join(moved)}"] if moved else []
        extra = UNKNOWN_SIGMA if unknown else 0.0
        units = None
        if "capacity" in values:
            units = int(round(float(values["capacity"][0][-1])))
        return _Prediction(
            values, np.zeros(n, bool), sigma, units, 0, None, notes, used, unknown, extra
        )

    # ------------------------------------------------------------------ rendering
    def _times(self, ctx: _Context) -> np.ndarray:
        if ctx.tier is not None and ctx.load is not None:
            return ctx.load.times
        return ctx.series["_times"][0]

    def _states(
        self,
        ctx: _Context,
        pred: _Prediction,
        base: _Prediction,
        remember: str = "",
        compact: bool = False,
    ) -> list[PredictedState]:
        """States in the system's own metric names and units. ``compact`` (compare outcomes):
        no ``baseline.*`` copies (the do-nothing outcome is there) and no per-unit copies."""
        times = self._times(ctx)
        roles, system = ctx.roles, ctx.system
        n = times.shape[0]
        util = pred.values.get("utilization")
        butil = base.values.get("utilization")
        cols: dict[str, np.ndarray] = {}
        for role, (m, lo, hi) in pred.values.items():
            b = roles.get(role)
            if b is None:
                continue
            scale = b.scale or 1.0
            cols[b.metric] = m / scale
            if role in HEADLINE_ROLES:
                cols[f"{b.metric}.lower"] = lo / scale
                cols[f"{b.metric}.upper"] = hi / scale
                bv = base.values.get(role)
                if bv is not None and not compact:
                    cols[f"baseline.{b.metric}"] = bv[0] / scale
        if (
            roles.per_unit_utilization
            and util is not None
            and pred.units is not None
            and not compact
        ):
            prefix = roles.per_unit_utilization[0].rsplit(".", 1)[0]
            ub = roles.get("utilization")
            scale = ub.scale if ub is not None else 1.0
            for i in range(1, min(pred.units, MAX_PER_UNIT_METRICS) + 1):
                cols[f"{prefix}.{i}"] = util[0] / scale
        conf_state = [
            skill.confidence(math.sqrt(float(x) ** 2 + pred.extra_sigma**2), self.tolerance)
            for x in pred.latency_sigma
        ]
        if remember and hasattr(self.corrector, "remember"):
            # The raw (uncorrected) prediction, so a calibration event that refers to this
            # simulation id compares the actual with what the model itself predicted.
            keep = [
                k
                for k in cols
                if not k.endswith((".lower", ".upper")) and not k.startswith("baseline.")
            ]
            stride = max(1, n // 200)
            raw = [
                (float(times[i]), {k: float(cols[k][i]) for k in keep}) for i in range(0, n, stride)
            ]
            self.corrector.remember(remember, system, raw)
        self._correct_columns(system, cols, util, butil)
        names = list(cols)
        rows = np.vstack([cols[k] for k in names]).T.tolist() if names else [[] for _ in range(n)]
        unit_name = roles.metric("capacity") or "units"
        knob_name = roles.metric("knob")
        sat = pred.saturated.tolist() if pred.saturated.shape[0] else [False] * n
        states = []
        for i in range(n):
            minutes = (float(times[i]) - ctx.now) / 60.0
            desc = f"{system} +{minutes:.0f} min"
            if pred.units is not None and ctx.tier is not None:
                desc += f": {pred.units} {unit_name}" + (
                    f", {knob_name} {pred.knob:g}" if pred.knob is not None else ""
                )
            if sat[i]:
                desc += " — SATURATED (load >= capacity: the queue grows)"
            states.append(
                PredictedState(
                    float(times[i]), dict(zip(names, rows[i])), round(conf_state[i], 6), desc
                )
            )
        return states

    def _correct_columns(
        self, system: str, cols: dict[str, np.ndarray], util: Band | None, butil: Band | None
    ) -> None:
        """Calibration corrections (``polaris.digitaltwin.calibrate``), per metric that has one."""
        corr = self.corrector
        for k in list(cols):
            base = (
                k[9:]
                if k.startswith("baseline.")
                else (k.rsplit(".", 1)[0] if k.endswith((".lower", ".upper")) else k)
            )
            if not corr.has(system, base):
                continue
            u = butil if k.startswith("baseline.") else util
            vals = cols[k]
            us = u[0] if u is not None else [None] * vals.shape[0]
            cols[k] = np.array(
                [
                    corr.correct(system, base, float(v), None if x is None else float(x))
                    for v, x in zip(vals.tolist(), list(us))
                ]
            )

    # ------------------------------------------------------------------ scoring
    def _objectives(self, ctx: _Context, params: Mapping[str, str]) -> utility.Objectives:
        return utility.objectives(
            params, ctx.sys_settings, self.settings, ctx.roles.has("latency_tail")
        )

    def _utility(
        self, ctx: _Context, pred: _Prediction, obj: utility.Objectives
    ) -> tuple[float, dict[str, float], np.ndarray]:
        times = self._times(ctx)
        dt = step_lengths(times, ctx.now)
        n = times.shape[0]
        lat_role = (
            "latency_tail"
            if (obj.latency_stat == "tail" and "latency_tail" in pred.values)
            else "latency"
        )
        lat = pred.values.get(lat_role)
        err = pred.values.get("error_rate")
        err_sd = np.maximum(0.1 * err[0], 0.002) if err is not None else 0.0
        if (
            ctx.tier is not None
            and pred.config is not None
            and ctx.load is not None
            and pred.traj is not None
        ):
            p = slo_breach(
                ctx.tier,
                ctx.load,
                pred.config,
                pred.traj,
                obj.latency_ms,
                lat_role == "latency_tail",
                _z(self.level),
                obj.window_sec,
            )
            pe = utility.breach_probability(
                None, 0.0, obj, err[0] if err is not None else None, err_sd
            )
            if pe.shape[0]:
                p = 1.0 - (1.0 - p) * (1.0 - pe)
        else:
            p = utility.breach_probability(
                lat[0] if lat is not None else None,
                pred.latency_sigma,
                obj,
                err[0] if err is not None else None,
                err_sd,
            )
        if not p.shape[0]:
            p = np.zeros(n)
        # Value and penalty count offered requests: under overload a request waits in the
        # backlog (in breach), it is not "not served"; more capacity must never look worse.
        offered = pred.values.get("load") or pred.values.get("throughput")
        throughput = offered[0] if offered is not None else np.zeros(n)
        q = pred.values.get("quality")
        units = np.full(n, float(pred.units if pred.units is not None else 0))
        u, parts = utility.utility(
            dt,
            throughput,
            err[0] if err is not None else None,
            q[0] if q is not None else None,
            units,
            p,
            obj,
        )
        return u, parts, p

    def _impact(
        self, ctx: _Context, pred: _Prediction, base: _Prediction, obj: utility.Objectives
    ) -> Impact:
        hours = ctx.horizon_sec / 3600.0
        cost = pred.unit_delta * obj.cost_per_unit_hour * hours
        lat_p, lat_b = pred.values.get("latency"), base.values.get("latency")
        perf = 0.0
        if lat_p is not None and lat_b is not None:
            perf = float(np.mean((lat_b[0] - lat_p[0]) / np.maximum(lat_b[0], 1e-9)))
        up, ub = pred.values.get("utilization"), base.values.get("utilization")
        headroom = (
            float(np.mean(ub[0]) - np.mean(up[0])) if (up is not None and ub is not None) else 0.0
        )
        sat = int(pred.saturated.sum()) if pred.saturated.shape[0] else 0
        sat_b = int(base.saturated.sum()) if base.saturated.shape[0] else 0
        desc = (
            f"cost: {pred.unit_delta:+d} units × {obj.cost_per_unit_hour:g} {obj.currency}/h × "
            f"{hours:g} h = {cost:+.2f} {obj.currency}; "
            "performance: mean relative latency change vs. no action under the same scenario = "
            f"{perf:+.1%} (positive = faster); "
            f"reliability: utilisation headroom change = {headroom:+.3f} (positive = more headroom)"
        )
        if sat or sat_b:
            desc += f"; saturated states: {sat} with the plan, {sat_b} without"
        return Impact(cost, perf, headroom, obj.currency, desc)

    def _confidence(self, ctx: _Context, pred: _Prediction) -> tuple[float, skill.Basis]:
        sig = pred.latency_sigma
        model_sigma = pred.model_sigma if pred.model_sigma is not None else ctx.model_sigma
        spec = math.sqrt(max(float(np.mean(sig**2)) - model_sigma**2, 0.0)) if sig.shape[0] else 0.0
        extra = math.hypot(spec, pred.extra_sigma)
        if pred.saturated.shape[0] and pred.saturated.any():
            extra = math.hypot(extra, 0.5 * float(pred.saturated.mean()))
        if ctx.load is not None and not ctx.load_fitted and ctx.tier is not None:
            extra = math.hypot(extra, 0.1)
        basis = skill.assess(ctx.skill, model_sigma, extra, self.tolerance)
        return basis.confidence, basis

    # ------------------------------------------------------------------ text
    def _explain(self, ctx: _Context, pred: _Prediction, basis: skill.Basis) -> list[str]:
        t = ctx.tier
        out: list[str] = []
        if t is not None:
            out.append(
                f"what-if on {ctx.system}{ctx.note} with an M/G/c queue (Erlang C + Allen–Cunneen, "
                "fluid backlog under overload) "
                f"calibrated from the last {self.window_sec:g} s of telemetry"
            )
            out += pred.notes or ["no modelled actions: baseline only"]
            out.append(f"calibration: {'; '.join(t.notes)}")
            if not (0.5 <= t.rt_factor <= 2.0):
                out.append(
                    "the queueing shape matches the observed latency only after a factor "
                    f"{t.rt_factor:.2f}: relative changes are more reliable than absolute values"
                )
            if t.assumed:
                out.append(f"assumed (missing telemetry): {', '.join(t.assumed)}")
        else:
            missing = ", ".join(ctx.roles.missing_for_queue())
            out.append(
                f"what-if on {ctx.system}{ctx.note} without a queueing model (it lacks {missing}): "
                "forecasts of its metrics"
                + (", moved by effects learned from the execution log" if pred.learned else "")
            )
            out += pred.notes
        out.append(f"roles: {ctx.roles.describe()}")
        if ctx.load is not None:
            out.append(f"arrival rate over the horizon: {ctx.load.method}")
        if pred.learned:
            out.append("learned from executions: " + "; ".join(pred.learned))
        if pred.unknown:
            out.append(
                f"no effect model for {', '.join(pred.unknown)}: these actions are NOT reflected "
                "in the prediction (never seen executed, not modelled; low confidence)"
            )
        sat = int(pred.saturated.sum()) if pred.saturated.shape[0] else 0
        if sat:
            out.append(f"the configuration saturates in {sat} of {pred.saturated.shape[0]} states")
        out.append(f"confidence = P(|relative error| <= {self.tolerance:.0%}), {basis.text}")
        return out

    def _plan_text(
        self,
        ctx: _Context,
        plan: CandidatePlan,
        pred: _Prediction,
        u: float,
        parts: dict[str, float],
        p: float,
        basis: skill.Basis,
    ) -> str:
        what = (
            "; ".join(pred.notes)
            if pred.notes
            else ("no action" if not plan.actions else "no structural effect")
        )
        bits = [
            f"{plan.plan_id}: {what}",
            f"utility {u:.4g} = value {parts['value']:.4g} - breach penalty "
            f"{parts['penalty']:.4g} - cost {parts['cost']:.4g}",
        ]
        bits.append(f"SLO breach probability {p:.1%}")
        lat = pred.values.get("latency")
        if lat is not None:
            bits.append(f"mean latency {float(np.mean(lat[0])):.1f} ms")
        sat = int(pred.saturated.sum()) if pred.saturated.shape[0] else 0
        if sat:
            bits.append(f"saturated in {sat} of {pred.saturated.shape[0]} states")
        if pred.learned:
            bits.append("learned: " + "; ".join(pred.learned))
        if pred.unknown:
            bits.append(
                f"not modelled: {', '.join(pred.unknown)} (no effect assumed, low confidence)"
            )
        bits.append(f"confidence basis: {basis.basis}")
        return "; ".join(bits)

    def _metadata(
        self, ctx: _Context, pred: _Prediction, basis: skill.Basis | None
    ) -> dict[str, str]:
        roles = ctx.roles
        unc = (
            roles.metric("latency")
            or roles.metric("latency_tail")
            or roles.metric("utilization")
            or ""
        )
        meta = {
            "system": ctx.system,
            "model": "M/G/c (Erlang C, Allen-Cunneen, fluid backlog)"
            if ctx.tier is not None
            else "forecast + learned effects",
            "unknown_actions": ",".join(pred.unknown),
            "action_effects_modelled": str(not pred.unknown).lower(),
            "learned_actions": str(len(pred.learned)),
            "arrival_forecast": ctx.load.method if ctx.load is not None else "",
            "uncertainty_metric": unc,
            "interval_level": str(self.level),
            "scenario": ctx.scenario,
            "roles": ";".join(f"{r}={b.metric}" for r, b in roles.bindings.items()),
        }
        if basis is not None:
            meta["confidence_basis"] = basis.basis
            meta["confidence_sigma"] = f"{basis.sigma:.4g}"
        return meta

    def _custom(
        self, ctx: _Context, pred: _Prediction, base: _Prediction, p_breach: np.ndarray, u: float
    ) -> dict[str, float]:
        custom: dict[str, float] = {}
        t = ctx.tier
        if t is not None:
            custom = {
                k: float(v)
                for k, v in t.as_dict().items()
                if isinstance(v, (int, float)) and v is not None and math.isfinite(float(v))
            }
        lat_p, lat_b = pred.values.get("latency"), base.values.get("latency")
        if lat_p is not None:
            custom["predicted_avg_rt_ms_mean"] = float(np.mean(lat_p[0]))
        if lat_b is not None:
            custom["baseline_avg_rt_ms_mean"] = float(np.mean(lat_b[0]))
        if pred.units is not None:
            custom["servers_after"] = float(pred.units)
        if pred.knob is not None:
            custom[
                "dimmer_after" if (t is not None and t.knob_kind == "dimmer") else "knob_after"
            ] = float(pred.knob)
        custom["saturated_states"] = float(pred.saturated.sum()) if pred.saturated.shape[0] else 0.0
        custom["slo_breach_probability"] = float(np.mean(p_breach)) if p_breach.shape[0] else 0.0
        custom["utility"] = u
        return custom


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + min(0.999, max(0.5, level)) / 2.0)


def _newest(store: Any, roles: RoleMap) -> float:
    times = [
        s.last_t
        for s in (store.get(roles.system, m) for m in store.metrics_of(roles.system))
        if s is not None and len(s)
    ]
    return max(times, default=-math.inf)
