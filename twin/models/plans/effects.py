"""Effects of actions learned from the execution log.

Every successful execution result, once the telemetry around it has arrived, gives one
estimate per measured metric: the observed level after the action (``post_sec`` of
telemetry after a ``settle_sec`` pause) against the counterfactual, i.e. what a
forecaster fitted to the ``pre_sec`` before the action predicts for that same window.
An execution with another action on the same target inside its windows is skipped
(confounded) and counted.

Measured per system, through its roles: the service time per unit ``E[S] = c·ρ/X``
(load-invariant, so it carries over to other loads: a queueing system turns it into a
service-time factor), latency (mean and tail), utilisation, throughput, error rate and
the quality metric. Positive metrics are compared in log space (a relative effect),
ratios that can be 0 (error rate) and the quality metric as differences.

Estimates are pooled per (system, action type + canonical parameters, metric) with a
random-effects model: each estimate has its standard error from the windows' spread;
the spread between occurrences (τ², DerSimonian–Laird, with a floor until three have
been seen) adds to it; the pooled effect is the precision-weighted mean shrunk towards
"no effect" by a weak prior (sd ``prior_sd``). The answer carries the posterior sd,
the predictive sd for the next occurrence (posterior + τ) and the number of
observations, which is what the what-if's confidence uses.

Bounds: ``max_keys`` (system, action) keys in LRU order, ``max_obs`` estimates per key
and metric, ``max_pending`` executions waiting for their telemetry.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.models.plans.roles import Binding, RoleMap

IGNORED_PARAMS = frozenset(
    {"reason", "requested_by", "id", "action_id", "target", "priority", "comment", "note", "source"}
)
LOG_METRICS = ("service", "latency", "latency_tail", "utilization", "throughput")
DELTA_METRICS = ("error_rate", "quality")
TAU_FLOOR = {"log": 0.05, "delta": 0.005}
MIN_POINTS = 5

Counterfactual = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def action_key(action_type: str, params: Mapping[str, Any]) -> str:
    """``SET_RESOLUTION(size=416)``: type + parameters that change what the action does."""
    parts = []
    for k in sorted(params):
        if k.lower() in IGNORED_PARAMS:
            continue
        v = str(params[k]).strip()
        try:
            f = float(v)
            v = f"{f:g}" if math.isfinite(f) else v.lower()
        except ValueError:
            v = v.lower()
        parts.append(f"{k.lower()}={v}")
    return f"{action_type.strip().upper()}({','.join(parts)})"


def level_trend(t_pre: np.ndarray, v_pre: np.ndarray, t_post: np.ndarray) -> np.ndarray:
    """Counterfactual: level + least-squares trend of the pre-window, the trend kept only
    when it is significant (|slope| > 2 standard errors), else the pre-window mean."""
    n = v_pre.shape[0]
    mean = float(v_pre.mean())
    if n < 8:
        return np.full(t_post.shape[0], mean)
    x = t_pre - t_pre.mean()
    sxx = float(np.dot(x, x))
    if sxx <= 0:
        return np.full(t_post.shape[0], mean)
    slope = float(np.dot(x, v_pre - mean)) / sxx
    resid = v_pre - mean - slope * x
    se = math.sqrt(float(np.dot(resid, resid)) / max(n - 2, 1) / sxx)
    if abs(slope) <= 2.0 * se:
        return np.full(t_post.shape[0], mean)
    return mean + slope * (t_post - t_pre.mean())


@dataclass(slots=True)
class Observation:
    t: float
    value: float
    se: float


@dataclass(slots=True)
class Estimate:
    """A pooled effect: ``mean`` (log ratio or difference), its posterior ``sd``, the
    between-occurrence spread ``tau``, and ``n`` observations."""

    metric: str
    kind: str  # "log" or "delta"
    mean: float
    sd: float
    tau: float
    n: int

    @property
    def predictive_sd(self) -> float:
        return math.sqrt(self.sd * self.sd + self.tau * self.tau)

    @property
    def factor(self) -> float:
        return math.exp(self.mean) if self.kind == "log" else math.nan

    def describe(self) -> str:
        if self.kind == "log":
            return f"{self.metric} ×{self.factor:.3f} (±{self.predictive_sd:.1%}, n={self.n})"
        return f"{self.metric} {self.mean:+.4g} (±{self.predictive_sd:.2g}, n={self.n})"


@dataclass(slots=True)
class _Stat:
    kind: str
    obs: deque[Observation]

    def pooled(self, metric: str, prior_sd: float) -> Estimate:
        y = np.array([o.value for o in self.obs])
        se2 = np.array([max(o.se, 1e-9) ** 2 for o in self.obs])
        n = y.shape[0]
        w = 1.0 / se2
        tau2 = 0.0
        if n >= 2:
            ybar = float(np.sum(w * y) / np.sum(w))
            q = float(np.sum(w * (y - ybar) ** 2))
            denom = float(np.sum(w) - np.sum(w * w) / np.sum(w))
            tau2 = max(0.0, (q - (n - 1)) / denom) if denom > 0 else 0.0
        if n < 3:
            tau2 = max(tau2, TAU_FLOOR[self.kind] ** 2 * (3 - n))
        ws = 1.0 / (se2 + tau2)
        prec = float(np.sum(ws)) + 1.0 / (prior_sd * prior_sd)
        mean = float(np.sum(ws * y)) / prec
        return Estimate(metric, self.kind, mean, math.sqrt(1.0 / prec), math.sqrt(tau2), n)


@dataclass(slots=True)
class EffectSettings:
    pre_sec: float = 300.0
    settle_sec: float = 60.0
    post_sec: float = 300.0
    prior_sd: float = 1.0
    max_keys: int = 4096
    max_obs: int = 50
    max_pending: int = 1000

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> EffectSettings:
        raw = settings.get("effects") or {}
        known = {
            k: type(getattr(cls(), k))(v) for k, v in raw.items() if k in cls.__dataclass_fields__
        }
        return cls(**known)


@dataclass(slots=True)
class Pending:
    t: float
    system: str
    action_type: str
    params: dict[str, str]
    key: str


@dataclass
class EffectTable:
    settings: EffectSettings = field(default_factory=EffectSettings)
    counterfactual: Counterfactual = level_trend
    table: OrderedDict[tuple[str, str], dict[str, _Stat]] = field(default_factory=OrderedDict)
    pending: deque[Pending] = field(default_factory=deque)
    seen: dict[str, deque[float]] = field(default_factory=dict)  # system -> recent action times
    observed_total: int = 0
    confounded_total: int = 0
    dropped_total: int = 0
    insufficient_total: int = 0

    # -- recording -----------------------------------------------------------------
    def on_action(
        self,
        t: float,
        system: str,
        action_type: str,
        params: Mapping[str, Any],
        success: bool | None,
    ) -> None:
        """Every execution result (confounding needs the failed ones too)."""
        if not system or not math.isfinite(t):
            return
        times = self.seen.get(system)
        if times is None:
            if len(self.seen) >= self.settings.max_keys:
                self.seen.pop(next(iter(self.seen)))
            times = self.seen[system] = deque(maxlen=64)
        times.append(t)
        if success is False:
            return
        if len(self.pending) >= self.settings.max_pending:
            self.pending.popleft()
            self.dropped_total += 1
        p = {str(k): str(v) for k, v in params.items()}
        self.pending.append(Pending(t, system, action_type.upper(), p, action_key(action_type, p)))

    def process(self, store: Any, roles_of: Callable[[str], RoleMap]) -> int:
        """Estimates the effects of pending executions whose telemetry has arrived."""
        s = self.settings
        done = 0
        keep: deque[Pending] = deque()
        while self.pending:
            p = self.pending.popleft()
            roles = roles_of(p.system)
            newest = _newest(store, roles)
            if newest < p.t + s.settle_sec + s.post_sec:
                keep.append(p)
                continue
            others = [
                x
                for x in self.seen.get(p.system, ())
                if x != p.t and p.t - s.pre_sec <= x <= p.t + s.settle_sec + s.post_sec
            ]
            if others:
                self.confounded_total += 1
                continue
            obs = measure(store, roles, p.t, s, self.counterfactual)
            if not obs:
                self.insufficient_total += 1
                continue
            self._add(p.system, p.key, obs)
            done += 1
        self.pending = keep
        self.observed_total += done
        return done

    def _add(self, system: str, key: str, obs: Mapping[str, tuple[str, Observation]]) -> None:
        k = (system, key)
        stats = self.table.get(k)
        if stats is None:
            stats = self.table[k] = {}
            while len(self.table) > self.settings.max_keys:
                self.table.popitem(last=False)
        self.table.move_to_end(k)
        for metric, (kind, o) in obs.items():
            st = stats.get(metric)
            if st is None or st.kind != kind:
                st = stats[metric] = _Stat(kind, deque(maxlen=self.settings.max_obs))
            st.obs.append(o)

    # -- answering -----------------------------------------------------------------
    def estimate(
        self, system: str, action_type: str, params: Mapping[str, Any]
    ) -> dict[str, Estimate]:
        stats = self.table.get((system, action_key(action_type, params)))
        if not stats:
            return {}
        return {m: st.pooled(m, self.settings.prior_sd) for m, st in stats.items() if st.obs}

    def summary(self, system: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = []
        for (sys_, key), stats in reversed(self.table.items()):
            if system is not None and sys_ != system:
                continue
            for m, st in stats.items():
                e = st.pooled(m, self.settings.prior_sd)
                rows.append(
                    {
                        "system": sys_,
                        "action": key,
                        "metric": m,
                        "kind": e.kind,
                        "effect": e.mean,
                        "sd": e.sd,
                        "tau": e.tau,
                        "n": e.n,
                    }
                )
            if len(rows) >= limit:
                break
        return rows[:limit]

    def reset(self) -> None:
        self.table.clear()
        self.pending.clear()
        self.seen.clear()

    def metrics(self) -> dict[str, float]:
        return {
            "effects_keys": float(len(self.table)),
            "effects_observed_total": float(self.observed_total),
            "effects_confounded_total": float(self.confounded_total),
            "effects_pending": float(len(self.pending)),
        }


def _newest(store: Any, roles: RoleMap) -> float:
    times = [
        s.last_t
        for s in (store.get(roles.system, b.metric) for b in roles.bindings.values())
        if s is not None and len(s)
    ]
    return max(times, default=-math.inf)


def _windows(
    store: Any, system: str, b: Binding | None, t: float, s: EffectSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    if b is None:
        return None
    series = store.get(system, b.metric)
    if series is None or not len(series):
        return None
    tp, vp = series.window(t - s.pre_sec, t - 1e-6)
    ta, va = series.window(t + s.settle_sec, t + s.settle_sec + s.post_sec)
    if tp.shape[0] < MIN_POINTS or ta.shape[0] < MIN_POINTS:
        return None
    return tp, vp * b.scale, ta, va * b.scale


def _aligned(store: Any, system: str, b: Binding | None, t: np.ndarray) -> np.ndarray | None:
    if b is None:
        return None
    s = store.get(system, b.metric)
    if s is None or not len(s):
        return None
    st, sv = s.arrays()
    i = np.searchsorted(st, t, side="right") - 1
    return np.where(i >= 0, sv[np.clip(i, 0, None)] * b.scale, np.nan)


def _service_series(
    store: Any, roles: RoleMap, t0: float, t1: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """E[S] per sample = c·ρ/X over [t0, t1] (None without utilisation, capacity and load)."""
    ub = roles.get("utilization")
    if ub is None or not roles.has("capacity"):
        return None
    series = store.get(roles.system, ub.metric)
    if series is None or not len(series):
        return None
    t, u = series.window(t0, t1)
    if t.shape[0] < MIN_POINTS:
        return None
    u = u * ub.scale
    c = _aligned(store, roles.system, roles.get("capacity"), t)
    xb = roles.get("throughput_basic")
    if xb is not None:
        # basic + optional where reported (optional alone may be missing: then basic alone)
        parts = [
            np.nan_to_num(a)
            for a in (
                _aligned(store, roles.system, xb, t),
                _aligned(store, roles.system, roles.get("throughput_optional"), t),
            )
            if a is not None
        ]
        x = sum(parts[1:], parts[0]) if parts else None
    else:
        x = _aligned(store, roles.system, roles.get("throughput") or roles.get("load"), t)
    if c is None or x is None:
        return None
    ok = np.isfinite(c) & np.isfinite(x) & (x > 0) & (u > 0) & (u < 1)
    if int(ok.sum()) < MIN_POINTS:
        return None
    return t[ok], c[ok] * u[ok] / x[ok]


def measure(
    store: Any, roles: RoleMap, t: float, s: EffectSettings, cf: Counterfactual = level_trend
) -> dict[str, tuple[str, Observation]]:
    """One execution's effect per metric: (kind, observation)."""
    out: dict[str, tuple[str, Observation]] = {}
    pre = _service_series(store, roles, t - s.pre_sec, t - 1e-6)
    post = _service_series(store, roles, t + s.settle_sec, t + s.settle_sec + s.post_sec)
    if pre is not None and post is not None:
        o = _compare(pre[0], pre[1], post[0], post[1], "log", cf)
        if o is not None:
            out["service"] = ("log", o)
    for metric in LOG_METRICS[1:] + DELTA_METRICS:
        w = _windows(store, roles.system, roles.get(metric), t, s)
        if w is None:
            continue
        kind = "delta" if metric in DELTA_METRICS else "log"
        o = _compare(*w, kind, cf)
        if o is not None:
            out[metric] = (kind, o)
    return out


def _compare(
    tp: np.ndarray, vp: np.ndarray, ta: np.ndarray, va: np.ndarray, kind: str, cf: Counterfactual
) -> Observation | None:
    ok_p, ok_a = np.isfinite(vp), np.isfinite(va)
    tp, vp, ta, va = tp[ok_p], vp[ok_p], ta[ok_a], va[ok_a]
    if tp.shape[0] < MIN_POINTS or ta.shape[0] < MIN_POINTS:
        return None
    base = cf(tp, vp, ta)
    after = float(va.mean())
    expected = float(np.mean(base))
    # Standard error of the difference of the two window means (independent windows).
    var = float(vp.var(ddof=1)) / vp.shape[0] + float(va.var(ddof=1)) / va.shape[0]
    if kind == "log":
        if after <= 0 or expected <= 0:
            return None
        return Observation(
            float(ta[-1]),
            math.log(after / expected),
            math.sqrt(max(var, 0.0)) / max(after, expected, 1e-12),
        )
    return Observation(float(ta[-1]), after - expected, math.sqrt(max(var, 0.0)))


def describe(estimates: Iterable[Estimate]) -> str:
    return "; ".join(e.describe() for e in estimates)
