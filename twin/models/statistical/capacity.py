"""What-if capacity model of a SWIM-like web tier.

The system
----------
Requests arrive at rate λ (``arrival.rate``, req/s). A share ``d`` of them (the
``dimmer``) carries optional content and needs a mean service time ``s_opt``; the rest
need ``s_basic``. ``c`` identical servers (``active.servers``) share one FCFS queue. That
is an M/G/c queue whose service time is a two-class mixture; we use Erlang C for the
M/M/c waiting time and the Allen–Cunneen correction ``(1 + Cs²)/2`` for the service
time variability (each class exponential, so ``E[S²] = 2·(d·s_opt² + (1-d)·s_basic²)``).
Both classes wait the same time in queue, so ``R_basic = Wq + s_basic`` and
``R_opt = Wq + s_opt``.

Calibration from telemetry (``calibrate_tier``), over the last ``window_sec`` of event
time of the system's series:

- mean service time by the utilisation law: ``E[S] = c·ρ / X`` with ρ the mean
  utilisation (``server.utilization`` or the mean of ``utilization.server.N``) and X the
  served throughput (``basic.throughput + optional.throughput``, else ``arrival.rate``);
- the class split from the response times: since both classes wait equally,
  ``s_opt - s_basic = R_opt - R_basic``; with ``E[S] = d·s_opt + (1-d)·s_basic`` that
  gives both service times (equal when the split is not observable);
- a response-time factor ``observed R / model R`` at the observed operating point,
  so a system that is not exactly M/G/c (network time, a different discipline) is
  matched where we see it and extrapolated by the queueing shape;
- when utilisation is missing, ``E[S]`` is solved from the observed response time.

``simulate_tier`` applies ADD_SERVER / SCALE_UP (+count), REMOVE_SERVER / SCALE_DOWN
(-count), SET_DIMMER (value) to the calibrated tier, clamps servers to
[1, ``max.servers``] and evaluates the queue at each forecast arrival rate over the
horizon (the interval bounds of λ give the bounds of the predictions). Other action
types have no effect model: they are listed, not invented, and lower the confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.models.domain import Action

SERVER_DELTA = {"ADD_SERVER": 1, "SCALE_UP": 1, "REMOVE_SERVER": -1, "SCALE_DOWN": -1}
KNOWN_ACTIONS = frozenset(SERVER_DELTA) | {"SET_DIMMER"}
UNSTABLE_RT_MS = 1e6
FACTOR_BOUNDS = (0.1, 10.0)
NOISE_PER_ELASTICITY = 0.02
MAX_PER_SERVER_METRICS = 32  # reported (with "saturated") when the queue is unstable
REQUIRED = ("arrival.rate|throughput", "active.servers|servers")


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load ``a = λ·E[S]`` (1.0 if a >= c)."""
    if c < 1:
        return 1.0
    if a <= 0:
        return 0.0
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):  # Erlang B by the stable recursion
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1.0 - rho + rho * b)


@dataclass(slots=True)
class Perf:
    utilization: float
    wq: float  # seconds
    r_basic: float  # seconds
    r_opt: float
    r_avg: float
    x_basic: float  # req/s
    x_opt: float
    stable: bool


def mgc(lam: float, c: int, dimmer: float, s_basic: float, s_opt: float) -> Perf:
    """Steady-state M/G/c (two exponential classes) by Erlang C + Allen–Cunneen."""
    d = min(1.0, max(0.0, dimmer))
    es = d * s_opt + (1.0 - d) * s_basic
    es2 = 2.0 * (d * s_opt * s_opt + (1.0 - d) * s_basic * s_basic)
    cs2 = es2 / (es * es) - 1.0 if es > 0 else 1.0
    a = lam * es
    rho = a / c if c else math.inf
    if rho >= 1.0 or c < 1:
        cap = c / es if es > 0 else 0.0
        return Perf(1.0, math.inf, math.inf, math.inf, math.inf, cap * (1 - d), cap * d, False)
    wq = erlang_c(c, a) * es / (c * (1.0 - rho)) * (1.0 + cs2) / 2.0
    return Perf(rho, wq, wq + s_basic, wq + s_opt, wq + es, lam * (1.0 - d), lam * d, True)


@dataclass(slots=True)
class TierCalibration:
    system: str
    arrival_rate: float
    servers: int
    max_servers: int | None
    dimmer: float
    s_basic: float  # seconds
    s_opt: float
    rt_factor: float = 1.0
    utilization: float | None = None
    observed_rt_ms: float | None = None
    samples: int = 0
    window: tuple[float, float] = (math.nan, math.nan)
    notes: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)

    @property
    def mean_service(self) -> float:
        return self.dimmer * self.s_opt + (1 - self.dimmer) * self.s_basic

    def predict(self, lam: float, servers: int, dimmer: float) -> Perf:
        p = mgc(lam, servers, dimmer, self.s_basic, self.s_opt)
        if p.stable and self.rt_factor != 1.0:
            k = self.rt_factor
            p = Perf(
                p.utilization,
                p.wq * k,
                p.r_basic * k,
                p.r_opt * k,
                p.r_avg * k,
                p.x_basic,
                p.x_opt,
                True,
            )
        return p

    def as_dict(self) -> dict[str, Any]:
        return {
            "arrival_rate": self.arrival_rate,
            "servers": self.servers,
            "max_servers": self.max_servers,
            "dimmer": self.dimmer,
            "service_time_basic_ms": self.s_basic * 1000,
            "service_time_optional_ms": self.s_opt * 1000,
            "service_rate_per_server": 1.0 / self.mean_service
            if self.mean_service > 0
            else math.inf,
            "rt_factor": self.rt_factor,
            "utilization": self.utilization,
            "observed_rt_ms": self.observed_rt_ms,
            "samples": self.samples,
        }


def _mean(store: Any, system: str, names: tuple[str, ...], lo: float) -> tuple[float | None, int]:
    for name in names:
        s = store.get(system, name)
        if s is None or not len(s):
            continue
        _, v = s.window(lo, math.inf)
        if not v.shape[0]:
            v = np.array([s.last_v])
        return float(v.mean()), int(v.shape[0])
    return None, 0


def _utilization(store: Any, system: str, lo: float) -> tuple[float | None, int]:
    u, n = _mean(store, system, ("server.utilization", "utilization"), lo)
    if u is not None:
        return u, n
    per = [
        s
        for s in store
        if s.source == system and s.name.startswith("utilization.server.") and len(s)
    ]
    if not per:
        return None, 0
    vals = [
        float(s.window(lo, math.inf)[1].mean()) if s.window(lo, math.inf)[1].shape[0] else s.last_v
        for s in per
    ]
    return float(np.mean(vals)), len(vals)


def _latest(store: Any, system: str, names: tuple[str, ...], default: float) -> float:
    for name in names:
        s = store.get(system, name)
        if s is not None and len(s):
            return float(s.last_v)
    return default


def _service_time_aligned(store: Any, system: str, lo: float) -> float | None:
    """Σ c_i·ρ_i / Σ X_i over utilisation samples of the window (None if not available)."""
    u_series = store.get(system, "server.utilization") or store.get(system, "utilization")
    if u_series is None or not len(u_series):
        return None
    t, u = u_series.window(lo, math.inf)
    if t.shape[0] < 2:
        return None
    c = _aligned(store, system, ("active.servers", "servers"), t)
    xb = _aligned(store, system, ("basic.throughput",), t)
    xo = _aligned(store, system, ("optional.throughput",), t)
    # Throughput = basic + optional where either is reported (one alone counts on its own).
    parts = [np.nan_to_num(a) for a in (xb, xo) if a is not None]
    x = (
        sum(parts[1:], parts[0])
        if parts
        else _aligned(store, system, ("arrival.rate", "request.rate"), t)
    )
    if c is None or x is None:
        return None
    ok = np.isfinite(c) & np.isfinite(x) & (u > 0) & (u < 1)
    if ok.sum() < 2 or float(np.sum(x[ok])) <= 0:
        return None
    return float(np.sum(c[ok] * u[ok]) / np.sum(x[ok]))


def tier_newest(store: Any, system: str) -> float:
    return max((s.last_t for s in store if s.source == system and len(s)), default=-math.inf)


def calibrate_tier(
    store: Any, system: str, window_sec: float = 600.0, default_service_ms: float = 100.0
) -> TierCalibration | None:
    """Calibrates the queue from the system's recent telemetry (None if not a web tier)."""
    newest = tier_newest(store, system)
    if not math.isfinite(newest):
        return None
    lo = newest - window_sec
    lam, n_lam = _mean(store, system, ("arrival.rate", "request.rate", "arrival.rate.per.sec"), lo)
    xb, _ = _mean(store, system, ("basic.throughput",), lo)
    xo, _ = _mean(store, system, ("optional.throughput",), lo)
    x_total = (xb or 0.0) + (xo or 0.0) if (xb is not None or xo is not None) else None
    c_raw, _ = _mean(store, system, ("active.servers", "servers"), lo)
    if (lam is None and not x_total) or c_raw is None:
        return None
    notes: list[str] = []
    assumed: list[str] = []
    if lam is None:
        lam = float(x_total or 0.0)
        notes.append("arrival rate taken from throughput")
    # The configuration now (latest samples) vs. the window means the estimates use.
    c = max(1, int(round(_latest(store, system, ("active.servers", "servers"), c_raw))))
    m_raw, _ = _mean(store, system, ("max.servers",), lo)
    d_raw, _ = _mean(store, system, ("dimmer",), lo)
    if d_raw is None:
        assumed.append("dimmer=1")
    d_mean = min(1.0, max(0.0, d_raw if d_raw is not None else 1.0))
    d = min(1.0, max(0.0, _latest(store, system, ("dimmer",), d_mean)))
    util, n_u = _utilization(store, system, lo)
    rb, _ = _mean(store, system, ("basic.response.time",), lo)
    ro, _ = _mean(store, system, ("optional.response.time",), lo)
    ravg, _ = _mean(store, system, ("average.response.time", "response.time"), lo)
    if ravg is None and rb is not None and ro is not None:
        ravg = d * ro + (1 - d) * rb
    served = x_total if x_total and x_total > 0 else lam
    es_aligned = _service_time_aligned(store, system, lo)
    if es_aligned is not None:
        es = es_aligned
        notes.append(f"E[S] = Σ c·ρ / Σ X over the window = {es * 1000:.1f} ms (utilisation law)")
    elif util is not None and 0.0 < util < 1.0 and served > 0:
        es = c_raw * util / served
        notes.append(f"E[S] = c·ρ/X = {c_raw:.3g}·{util:.3f}/{served:.3g} = {es * 1000:.1f} ms")
    elif ravg is not None and ravg > 0 and lam > 0:
        es = _solve_service_from_rt(lam, c, ravg / 1000.0)
        notes.append(f"E[S] solved from the observed response time: {es * 1000:.1f} ms")
    else:
        es = default_service_ms / 1000.0
        assumed.append(f"service time {default_service_ms:g} ms")
    delta = (ro - rb) / 1000.0 if (ro is not None and rb is not None) else 0.0
    s_basic = es - d_mean * delta
    s_opt = s_basic + delta
    if s_basic <= 0.05 * es or s_opt <= 0.05 * es:
        if ro is not None and rb is not None and rb > 0 and ro > 0:
            # Equal waiting does not fit the observed gap: assume service times in the
            # ratio of the observed response times instead.
            ratio = ro / rb
            s_basic = es / (1.0 + d_mean * (ratio - 1.0))
            s_opt = s_basic * ratio
            notes.append(f"class split from the response-time ratio optional/basic = {ratio:.2f}")
        else:
            s_basic = s_opt = es
            notes.append(
                "basic and optional service times not distinguishable: the dimmer has no modelled "
                "effect"
            )
    cal = TierCalibration(
        system,
        float(lam),
        c,
        int(round(m_raw)) if m_raw is not None else None,
        d,
        s_basic,
        s_opt,
        1.0,
        util,
        ravg,
        n_lam or n_u,
        (lo, newest),
        notes,
        assumed,
    )
    factor = _rt_factor(store, system, lo, cal)
    if factor is not None and math.isfinite(factor) and factor > 0:
        cal.rt_factor = float(min(FACTOR_BOUNDS[1], max(FACTOR_BOUNDS[0], factor)))
        notes.append(
            f"response-time factor observed/model over the varying load = {cal.rt_factor:.3f}"
        )
    elif ravg is not None and ravg > 0:
        model = cal.predict(lam, c, d)
        if model.stable and model.r_avg > 0:
            factor = float(
                min(FACTOR_BOUNDS[1], max(FACTOR_BOUNDS[0], (ravg / 1000.0) / model.r_avg))
            )
            # Under a steady load near saturation the observed mean response time is
            # dominated by load noise (its elasticity e to the arrival rate is large):
            # deviations within a noise band of NOISE_PER_ELASTICITY·e (in log terms)
            # are not evidence of a structural mismatch and are ignored; larger ones
            # (a system that is not M/G/c) are kept beyond the band.
            e = rt_elasticity(cal, lam, c, d)
            band = NOISE_PER_ELASTICITY * e if math.isfinite(e) else math.inf
            lf = math.log(factor)
            used = math.copysign(max(0.0, abs(lf) - band), lf)
            cal.rt_factor = float(math.exp(used))
            notes.append(
                f"response-time factor observed/model = {factor:.3f}, used {cal.rt_factor:.3f} "
                f"(noise band ±{band:.2f} in log at load elasticity {e:.1f})"
            )
    return cal


def rt_elasticity(cal: TierCalibration, lam: float, c: int, d: float, delta: float = 0.01) -> float:
    """d ln R / d ln λ of the (uncorrected) queue at an operating point (inf if unstable)."""
    p0 = mgc(lam, c, d, cal.s_basic, cal.s_opt)
    p1 = mgc(lam * (1 + delta), c, d, cal.s_basic, cal.s_opt)
    if not (p0.stable and p1.stable) or p0.r_avg <= 0:
        return math.inf
    return (math.log(p1.r_avg) - math.log(p0.r_avg)) / math.log(1 + delta)


def _aligned(store: Any, system: str, names: tuple[str, ...], t: np.ndarray) -> np.ndarray | None:
    """Values of the first present series at (or just before) each time in ``t``."""
    for name in names:
        s = store.get(system, name)
        if s is None or not len(s):
            continue
        st, sv = s.arrays()
        i = np.searchsorted(st, t, side="right") - 1
        out = np.where(i >= 0, sv[np.clip(i, 0, None)], np.nan)
        return out
    return None


def _rt_factor(store: Any, system: str, lo: float, cal: TierCalibration) -> float | None:
    """observed/model response time from time-aligned samples, when the load varies.

    With a roughly steady arrival rate (coefficient of variation < 10 %) the caller
    compares means instead: per-sample rates are then mostly counting noise, which at
    high utilisation the convex queueing curve would turn into a biased factor.
    """
    ref = next(
        (
            store.get(system, n)
            for n in ("average.response.time", "response.time")
            if store.get(system, n) is not None
        ),
        None,
    )
    if ref is None or not len(ref):
        return None
    t, r_obs = ref.window(lo, math.inf)
    if t.shape[0] < 5:
        return None
    lam = _aligned(store, system, ("arrival.rate", "request.rate"), t)
    c = _aligned(store, system, ("active.servers", "servers"), t)
    d = _aligned(store, system, ("dimmer",), t)
    if lam is None or c is None:
        return None
    ok = np.isfinite(lam)
    if (
        not ok.any()
        or float(np.mean(lam[ok])) <= 0
        or float(np.std(lam[ok]) / np.mean(lam[ok])) < 0.1
    ):
        return None
    obs_sum = model_sum = 0.0
    for i in range(t.shape[0]):
        if not (math.isfinite(lam[i]) and math.isfinite(c[i])) or r_obs[i] <= 0:
            continue
        di = float(d[i]) if d is not None and math.isfinite(d[i]) else cal.dimmer
        p = cal.predict(float(lam[i]), max(1, int(round(c[i]))), di)
        if p.stable and p.r_avg > 0:
            obs_sum += r_obs[i] / 1000.0
            model_sum += p.r_avg
    return obs_sum / model_sum if model_sum > 0 else None


def _solve_service_from_rt(lam: float, c: int, r: float) -> float:
    lo, hi = 1e-9, min(r, c / lam * (1 - 1e-9))
    for _ in range(80):
        mid = (lo + hi) / 2
        p = mgc(lam, c, 1.0, mid, mid)
        if not p.stable or p.r_avg > r:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _param(action: Action, keys: tuple[str, ...], default: float | None) -> float | None:
    for k in keys:
        if k in action.params:
            try:
                v = float(action.params[k])
            except ValueError:
                return None
            return v if math.isfinite(v) else None
    return default


@dataclass(slots=True)
class Plan:
    servers: int
    dimmer: float
    notes: list[str]
    unknown: list[str]
    invalid: list[str]
    server_delta: int


def plan_actions(cal: TierCalibration, actions: list[Action]) -> Plan:
    c, d = cal.servers, cal.dimmer
    notes: list[str] = []
    unknown: list[str] = []
    invalid: list[str] = []
    for a in actions:
        kind = a.action_type.upper()
        if kind in SERVER_DELTA:
            n = _param(a, ("count", "servers", "delta", "value"), 1.0)
            if n is None or n < 0:
                invalid.append(f"{kind}: bad count {a.params}")
                continue
            want = c + SERVER_DELTA[kind] * int(round(n))
            new = max(1, want)
            if cal.max_servers is not None:
                new = min(new, cal.max_servers)
            note = f"{kind} {SERVER_DELTA[kind] * int(round(n)):+d}: servers {c} → {new}"
            if new != want:
                note += (
                    f" (clamped to [1, {cal.max_servers if cal.max_servers is not None else '∞'}])"
                )
            notes.append(note)
            c = new
        elif kind == "SET_DIMMER":
            v = _param(a, ("value", "dimmer", "level"), None)
            if v is None:
                invalid.append("SET_DIMMER needs params.value in [0, 1]")
                continue
            new_d = min(1.0, max(0.0, v))
            notes.append(f"SET_DIMMER: dimmer {d:g} → {new_d:g}")
            d = new_d
        else:
            unknown.append(kind)
    return Plan(c, d, notes, unknown, invalid, c - cal.servers)


def tier_metrics(
    cal: TierCalibration, lam: float, c: int, d: float
) -> tuple[dict[str, float], bool]:
    p = cal.predict(max(lam, 0.0), c, d)
    ms = 1000.0
    m = {
        "arrival.rate": lam,
        "active.servers": float(c),
        "servers": float(c),
        "dimmer": d,
        "server.utilization": p.utilization,
        "basic.throughput": p.x_basic,
        "optional.throughput": p.x_opt,
        "basic.response.time": p.r_basic * ms if p.stable else UNSTABLE_RT_MS,
        "optional.response.time": p.r_opt * ms if p.stable else UNSTABLE_RT_MS,
        "average.response.time": p.r_avg * ms if p.stable else UNSTABLE_RT_MS,
    }
    for i in range(
        1, min(c, MAX_PER_SERVER_METRICS) + 1
    ):  # FCFS shared queue: servers equally busy
        m[f"utilization.server.{i}"] = p.utilization
    return m, p.stable
