"""One plan over a horizon: arrays in, arrays out (no store, no request, no I/O).

``evaluate_tier`` runs the calibrated queue (``tier.Tier``) under a configuration at
the load's mean and at its band's bounds, and returns each role's trajectory in
canonical units (req/s, ms, ratios) with lower/upper bounds:

- the latency bounds combine the load band (the queue at the band's bounds) with the
  model's own error (``model_sigma``, log scale) and learned effects' spread;
- learned effects enter structurally where they can (a service-time factor goes into
  the queue) and as shifts otherwise (error rate, quality);
- ``saturated`` marks states where the load reaches the capacity or a backlog remains.

``evaluate_series`` does the same for a system without a queue model: the forecast of
each role's metric, moved by learned effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from twin.models.plans import queue
from twin.models.plans.effects import Estimate
from twin.models.plans.scenarios import Load
from twin.models.plans.tier import Service, Tier, tail_cs2

Z90 = 1.6448536269514722
Band = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(slots=True)
class Config:
    """A tier's configuration under a plan, with learned effects folded in."""

    units: int
    knob: float | None
    service: Service
    service_scale: float = 1.0  # learned service-time factor
    service_sigma: float = 0.0  # its predictive sd (log)
    quality: float | None = None
    quality_shift: float = 0.0
    quality_sigma: float = 0.0
    error_shift: float = 0.0
    latency_log_shift: float = 0.0  # a learned latency effect used directly (no service effect)
    latency_sigma: float = 0.0


@dataclass(slots=True)
class Trajectory:
    """Per-role arrays: ``values[role]`` = (mean, lower, upper) in canonical units."""

    values: dict[str, Band] = field(default_factory=dict)
    saturated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    latency_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))  # log-sd per state
    own_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ... without the load band
    units: int = 0

    def mean(self, role: str) -> np.ndarray | None:
        v = self.values.get(role)
        return v[0] if v is not None else None


def step_lengths(times: np.ndarray, now: float) -> np.ndarray:
    prev = np.concatenate(([now], times[:-1]))
    return np.maximum(times - prev, 0.0)


def _const(n: int, v: float) -> Band:
    a = np.full(n, float(v))
    return (a, a, a)


def evaluate_tier(
    tier: Tier,
    load: Load,
    now: float,
    cfg: Config,
    model_sigma: float,
    level_z: float = Z90,
    timeout_ms: float | None = None,
) -> Trajectory:
    dt = step_lengths(load.times, now)
    n = load.times.shape[0]
    svc = cfg.service
    es = svc.es * cfg.service_scale
    zero = np.zeros(n)
    # The mean path carries a fluid backlog through overloads; the band is the steady state
    # at the band's loads plus that same backlog (a state's interval, not a whole path
    # stuck at the band's edge).
    st = queue.evaluate(load.mean, dt, cfg.units, es, svc.cs2, tier.wait_factor, tier.backlog)
    steady = {
        name: queue.evaluate(lam, zero, cfg.units, es, svc.cs2, tier.wait_factor)
        for name, lam in (("mean", load.mean), ("lower", load.lower), ("upper", load.upper))
    }
    backlog_wait = np.maximum(st.wait - steady["mean"].wait, 0.0)
    runs = {
        "mean": st,
        "lower": _plus_wait(steady["lower"], backlog_wait),
        "upper": _plus_wait(steady["upper"], backlog_wait),
    }
    k = tier.rt_factor * math.exp(cfg.latency_log_shift)

    def lat(s: queue.QueueStates, service: float) -> np.ndarray:
        return 1000.0 * (s.wait + service) * k

    lat_m, lat_lo_load, lat_hi_load = lat(st, es), lat(runs["lower"], es), lat(runs["upper"], es)
    # The load band's effect on latency (log terms) combined with the model's own error;
    # service-time errors are amplified by queueing.
    band = (np.log(np.maximum(lat_hi_load, 1e-9)) - np.log(np.maximum(lat_lo_load, 1e-9))) / (
        2.0 * level_z
    )
    amplify = 1.0 + np.where(st.saturated, 1.0, st.pwait)
    own = np.sqrt(model_sigma**2 + (amplify * cfg.service_sigma) ** 2 + cfg.latency_sigma**2)
    sigma = np.sqrt(band**2 + own**2)
    spread = np.exp(level_z * own)
    out = Trajectory(units=cfg.units, saturated=st.saturated, latency_sigma=sigma, own_sigma=own)
    out.values["load"] = (load.mean, load.lower, load.upper)
    out.values["latency"] = (lat_m, lat_lo_load / spread, lat_hi_load * spread)
    # While the mean path is saturated (a backlog) the tier is fully busy at every band load.
    sat = st.saturated
    out.values["utilization"] = (
        st.utilization,
        np.where(sat, 1.0, runs["lower"].utilization),
        np.where(sat, 1.0, runs["upper"].utilization),
    )
    out.values["throughput"] = (
        st.throughput,
        np.where(sat, st.throughput, runs["lower"].throughput),
        np.where(sat, st.throughput, runs["upper"].throughput),
    )
    out.values["capacity"] = _const(n, cfg.units)
    if cfg.knob is not None:
        out.values["knob"] = _const(n, cfg.knob)
    if tier.knob_kind == "dimmer":
        d = svc.share_opt
        for role, s_cls in (("latency_basic", svc.s_basic), ("latency_optional", svc.s_opt)):
            s_cls *= cfg.service_scale
            out.values[role] = (
                lat(st, s_cls),
                lat(runs["lower"], s_cls) / spread,
                lat(runs["upper"], s_cls) * spread,
            )
        thr = out.values["throughput"]
        out.values["throughput_basic"] = (thr[0] * (1 - d), thr[1] * (1 - d), thr[2] * (1 - d))
        out.values["throughput_optional"] = (thr[0] * d, thr[1] * d, thr[2] * d)
    if tier.tail_q is not None:
        cs2 = tail_cs2(tier, svc)
        tails = []
        for name in ("mean", "lower", "upper"):
            s = runs[name]
            tails.append(
                1000.0
                * queue.response_quantile(tier.tail_q, _with_cs2(s, cs2), tier.tail_wait_factor)
                * k
                * tier.tail_factor
            )
        out.values["latency_tail"] = (tails[0], tails[1] / spread, tails[2] * spread)
    if tier.error_base is not None or timeout_ms is not None:
        base = (tier.error_base or 0.0) + cfg.error_shift
        errs = []
        for name in ("mean", "lower", "upper"):
            e = np.full(n, base)
            if timeout_ms is not None:
                e = e + queue.share_slower_than(
                    runs[name], timeout_ms / 1000.0 / k, es, tail_cs2(tier, svc)
                )
            errs.append(np.clip(e, 0.0, 1.0))
        out.values["error_rate"] = (errs[0], errs[1], errs[2])
    if cfg.quality is not None:
        q = cfg.quality + cfg.quality_shift
        half = level_z * cfg.quality_sigma
        out.values["quality"] = (np.full(n, q), np.full(n, q - half), np.full(n, q + half))
    return out


def _plus_wait(s: queue.QueueStates, extra: np.ndarray) -> queue.QueueStates:
    return queue.QueueStates(
        s.utilization,
        s.throughput,
        s.wait + extra,
        s.response + extra,
        s.pwait,
        s.backlog,
        s.saturated,
        s.es,
        s.cs2,
    )


def slo_breach(
    tier: Tier,
    load: Load,
    cfg: Config,
    traj: Trajectory,
    slo_ms: float,
    tail: bool,
    level_z: float = Z90,
    window_sec: float = 60.0,
) -> np.ndarray:
    """P(latency > SLO) per state, the SLO judged on ``window_sec`` windows.

    Latency rises monotonically with load, so a state breaches when its load exceeds the
    load ``λ*`` at which the configuration's steady-state latency reaches the SLO: with
    the load ~ N(mean, band) and the model's own error turned into load terms at ``λ*``
    (``σ_model·λ*/elasticity``), ``p = P(λ > λ*)``. A backlog left by an overload keeps
    latency above its steady state: then ``P(L_mean·e^ε > SLO)`` on the mean path counts
    too (the larger of the two)."""
    from scipy import special as sp

    svc = cfg.service
    es = svc.es * cfg.service_scale
    cap = cfg.units / es if es > 0 else 0.0
    k = tier.rt_factor * math.exp(cfg.latency_log_shift)
    if cap <= 0:
        return np.ones(load.times.shape[0])
    rho = np.concatenate((np.linspace(1e-3, 0.9, 120), 1.0 - np.geomspace(0.1, 1e-4, 120)))
    lam = rho * cap
    st = queue.evaluate(lam, np.zeros(lam.shape[0]), cfg.units, es, svc.cs2, tier.wait_factor)
    if tail and tier.tail_q is not None:
        curve = (
            1000.0
            * queue.response_quantile(
                tier.tail_q, _with_cs2(st, tail_cs2(tier, svc)), tier.tail_wait_factor
            )
            * k
            * tier.tail_factor
        )
    else:
        curve = 1000.0 * (st.wait + es) * k
    above = np.flatnonzero(curve > slo_ms)
    own = traj.own_sigma if traj.own_sigma.shape[0] else np.full(load.times.shape[0], 0.1)
    if above.shape[0] == 0:
        star, elast = cap, 1.0 / (1.0 - rho[-1])
    elif above[0] == 0:
        return np.ones(load.times.shape[0])
    else:
        i = int(above[0])
        f = (math.log(slo_ms) - math.log(curve[i - 1])) / (
            math.log(curve[i]) - math.log(curve[i - 1])
        )
        star = float(lam[i - 1] + f * (lam[i] - lam[i - 1]))
        elast = float(
            (math.log(curve[i]) - math.log(curve[i - 1]))
            / (math.log(lam[i]) - math.log(lam[i - 1]))
        )
    sd_load = np.maximum((load.upper - load.lower) / (2.0 * level_z), 0.0)
    # The SLO is judged per window: a window's own arrivals and service times vary around
    # the rate (Poisson counts, service variability), like a load error of this size.
    sd_window = np.sqrt(np.maximum(load.mean, 0.0) * (1.0 + svc.cs2) / max(window_sec, 1.0))
    sd = np.sqrt(sd_load**2 + sd_window**2 + (own * star / max(elast, 1e-6)) ** 2)
    z = (star - load.mean) / np.maximum(sd, 1e-12)
    p_load = 0.5 * sp.erfc(z / math.sqrt(2.0))
    role = "latency_tail" if (tail and "latency_tail" in traj.values) else "latency"
    mean_path = traj.values[role][0]
    zb = (math.log(slo_ms) - np.log(np.maximum(mean_path, 1e-12))) / np.maximum(own, 1e-6)
    p_path = 0.5 * sp.erfc(zb / math.sqrt(2.0))
    return np.asarray(np.maximum(p_load, p_path), dtype=float)


def _with_cs2(s: queue.QueueStates, cs2: float) -> queue.QueueStates:
    return queue.QueueStates(
        s.utilization, s.throughput, s.wait, s.response, s.pwait, s.backlog, s.saturated, s.es, cs2
    )


def evaluate_series(
    base: dict[str, Band], effects: dict[str, Estimate], level_z: float = Z90
) -> tuple[dict[str, Band], list[str]]:
    """Forecast trajectories (per role) moved by learned effects; returns the moved roles."""
    out = dict(base)
    moved = []
    for role, (m, lo, hi) in base.items():
        e = effects.get(role)
        if e is None:
            continue
        s = e.predictive_sd
        if e.kind == "log":
            f = math.exp(e.mean)
            mm = m * f
            out[role] = (
                mm,
                np.minimum(lo * f * math.exp(-level_z * s), mm),
                np.maximum(hi * f * math.exp(level_z * s), mm),
            )
        else:
            mm = m + e.mean
            out[role] = (
                mm,
                np.minimum(lo + e.mean - level_z * s, mm),
                np.maximum(hi + e.mean + level_z * s, mm),
            )
        moved.append(role)
    return out, moved
