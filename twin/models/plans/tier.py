"""A system's queue, calibrated from its recent telemetry through its metric roles.

Over the last ``window_sec`` of event time (and ``knob_history_sec`` for the knob
table), with every value converted to the role's canonical unit:

- **service time per unit** by the utilisation law, ``E[S] = Σ c·ρ / Σ X`` over time-
  aligned samples (X = served throughput, else the load), using only samples taken
  with the current knob setting; solved from the observed latency when there is no
  utilisation;
- **the quality knob**: a SWIM-style ``dimmer`` mixes a basic and an optional content
  class, split from the two classes' response times (equal waiting) or, once several
  dimmer settings have been seen, by a line through ``E[S]`` per setting; a discrete
  knob (a model level) gets a table ``setting → E[S]`` (and ``→ quality``) from the
  settings the history shows; settings never seen have no structural estimate;
- **latency shape**: a factor ``observed / model`` at the observed operating point (or
  over time-aligned samples when the load varies). Within a noise band that grows with
  the latency's elasticity to load it is ignored (near saturation the observed mean is
  dominated by load noise). When waiting is a sizeable share of the latency, the
  deviation is attributed to the waiting time (service-time variability, the
  Allen–Cunneen factor) rather than to the whole response time, which extrapolates
  better to other loads and configurations;
- a tail factor for a published latency quantile (p95), and the base error rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.models.plans import queue
from twin.models.plans.roles import Binding, RoleMap

FACTOR_BOUNDS = (0.1, 10.0)
NOISE_PER_ELASTICITY = 0.02
WAIT_SHARE_FOR_WAIT_FACTOR = 0.15
MIN_KNOB_SAMPLES = 3
MIN_SINCE_SEC = 60.0
FIT_SIGMA_FLOOR = 0.02


@dataclass(slots=True)
class Service:
    """Service of one configuration: mean, variability, and the class split (if any)."""

    es: float  # seconds
    cs2: float
    s_basic: float
    s_opt: float
    share_opt: float  # requests with optional content (dimmer), 0 otherwise


@dataclass(slots=True)
class Tier:
    system: str
    roles: RoleMap
    load: float  # mean offered load over the window, req/s
    units: int  # capacity units now
    max_units: int | None
    knob: float | None  # knob setting now
    knob_kind: str  # "dimmer", "levels" or "none"
    s_basic: float  # seconds (dimmer classes; both = E[S] without a dimmer)
    s_opt: float
    es_by_knob: dict[float, float] = field(default_factory=dict)
    quality_by_knob: dict[float, float] = field(default_factory=dict)
    rt_factor: float = 1.0
    wait_factor: float = 1.0
    tail_factor: float = 1.0
    tail_wait_factor: float = 1.0
    tail_q: float | None = None
    error_base: float | None = None
    utilization: float | None = None
    observed_latency_ms: float | None = None
    observed_tail_ms: float | None = None
    quality_now: float | None = None
    backlog: float = 0.0  # requests queued now beyond the steady state (a saturated tier)
    fit_sigma: float = FIT_SIGMA_FLOOR  # log error of the model where the tier was observed
    samples: int = 0
    window: tuple[float, float] = (math.nan, math.nan)
    newest: float = math.nan
    notes: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)

    def service(self, knob: float | None, scale: float = 1.0) -> Service | None:
        """Service at a knob setting (None if that setting has no estimate)."""
        if self.knob_kind == "dimmer" and knob is not None:
            d = min(1.0, max(0.0, knob))
            sb, so = self.s_basic * scale, self.s_opt * scale
            es = d * so + (1.0 - d) * sb
            es2 = 2.0 * (d * so * so + (1.0 - d) * sb * sb)
            return Service(es, es2 / (es * es) - 1.0 if es > 0 else 1.0, sb, so, d)
        if self.knob_kind == "levels" and knob is not None and knob != self.knob:
            at_knob = self.es_by_knob.get(_key(knob))
            if at_knob is None:
                return None
            return Service(at_knob * scale, 1.0, at_knob * scale, at_knob * scale, 0.0)
        es = self.s_basic * scale
        return Service(es, 1.0, es, es, 0.0)

    @property
    def mean_service(self) -> float:
        s = self.service(self.knob)
        return s.es if s is not None else self.s_basic

    def as_dict(self) -> dict[str, Any]:
        es = self.mean_service
        out: dict[str, Any] = {
            "arrival_rate": self.load,
            "servers": self.units,
            "max_servers": self.max_units,
            "dimmer": self.knob if self.knob_kind == "dimmer" else None,
            "knob": self.knob,
            "service_time_ms": es * 1000,
            "service_rate_per_server": 1.0 / es if es > 0 else math.inf,
            "rt_factor": self.rt_factor,
            "wait_factor": self.wait_factor,
            "tail_factor": self.tail_factor,
            "utilization": self.utilization,
            "observed_rt_ms": self.observed_latency_ms,
            "samples": self.samples,
        }
        if self.knob_kind == "dimmer":
            out["service_time_basic_ms"] = self.s_basic * 1000
            out["service_time_optional_ms"] = self.s_opt * 1000
        return out


def _key(v: float) -> float:
    return round(float(v), 6)


# ----------------------------------------------------------------------------- store reads


def _series(store: Any, system: str, b: Binding | None) -> Any:
    if b is None:
        return None
    s = store.get(system, b.metric)
    return s if s is not None and len(s) else None


def _window(
    store: Any, system: str, b: Binding | None, lo: float
) -> tuple[np.ndarray, np.ndarray] | None:
    s = _series(store, system, b)
    if s is None:
        return None
    t, v = s.window(lo, math.inf)
    if not t.shape[0]:
        t, v = np.array([s.last_t]), np.array([s.last_v])
    return t, v * b.scale  # type: ignore[union-attr]


def _mean(store: Any, system: str, b: Binding | None, lo: float) -> tuple[float | None, int]:
    w = _window(store, system, b, lo)
    if w is None:
        return None, 0
    v = w[1][np.isfinite(w[1])]
    return (float(v.mean()), int(v.shape[0])) if v.shape[0] else (None, 0)


def _latest(store: Any, system: str, b: Binding | None) -> float | None:
    s = _series(store, system, b)
    return float(s.last_v) * b.scale if s is not None else None  # type: ignore[union-attr]


def _aligned(store: Any, system: str, b: Binding | None, t: np.ndarray) -> np.ndarray | None:
    """Values (canonical units) at or just before each time in ``t``."""
    s = _series(store, system, b)
    if s is None:
        return None
    st, sv = s.arrays()
    i = np.searchsorted(st, t, side="right") - 1
    return np.where(i >= 0, sv[np.clip(i, 0, None)] * b.scale, np.nan)  # type: ignore[union-attr]


def _served(store: Any, system: str, roles: RoleMap, t: np.ndarray) -> np.ndarray | None:
    xb = _aligned(store, system, roles.get("throughput_basic"), t)
    xo = _aligned(store, system, roles.get("throughput_optional"), t)
    if xb is not None or xo is not None:
        return np.nan_to_num(xb if xb is not None else 0.0) + np.nan_to_num(
            xo if xo is not None else 0.0
        )
    x = _aligned(store, system, roles.get("throughput"), t)
    return x if x is not None else _aligned(store, system, roles.get("load"), t)


def _util_window(
    store: Any, system: str, roles: RoleMap, lo: float
) -> tuple[np.ndarray, np.ndarray] | None:
    w = _window(store, system, roles.get("utilization"), lo)
    if w is not None:
        return w
    if not roles.per_unit_utilization:
        return None
    first = store.get(system, roles.per_unit_utilization[0])
    if first is None or not len(first):
        return None
    t, _ = first.window(lo, math.inf)
    if not t.shape[0]:
        return None
    vals = [_aligned(store, system, Binding(n), t) for n in roles.per_unit_utilization]
    return t, np.nanmean(np.vstack([v for v in vals if v is not None]), axis=0)


def newest_time(store: Any, system: str, roles: RoleMap) -> float:
    times = [
        s.last_t
        for s in (store.get(system, b.metric) for b in roles.bindings.values())
        if s is not None and len(s)
    ]
    return max(times, default=-math.inf)


# ----------------------------------------------------------------------------- calibration


@dataclass(slots=True)
class _Samples:
    """Time-aligned samples of the window: utilisation, units, served rate, knob, latency."""

    t: np.ndarray
    u: np.ndarray
    c: np.ndarray
    x: np.ndarray
    knob: np.ndarray | None


def _samples(store: Any, system: str, roles: RoleMap, lo: float) -> _Samples | None:
    uw = _util_window(store, system, roles, lo)
    if uw is None or uw[0].shape[0] < 2:
        return None
    t, u = uw
    c = _aligned(store, system, roles.get("capacity"), t)
    x = _served(store, system, roles, t)
    if c is None or x is None:
        return None
    k = _aligned(store, system, roles.get("knob"), t)
    return _Samples(t, u, c, x, k)


def _es_utilisation_law(s: _Samples, mask: np.ndarray | None = None) -> tuple[float | None, int]:
    ok = np.isfinite(s.c) & np.isfinite(s.x) & (s.u > 0) & (s.u < 1) & (s.x > 0)
    if mask is not None:
        ok &= mask
    n = int(ok.sum())
    if n < 2 or float(np.sum(s.x[ok])) <= 0:
        return None, n
    return float(np.sum(s.c[ok] * s.u[ok]) / np.sum(s.x[ok])), n


def _knob_kind(roles: RoleMap, values: np.ndarray | None) -> str:
    b = roles.get("knob")
    if b is None:
        return "none"
    if b.metric == "dimmer" or roles.has("latency_basic", "latency_optional"):
        return "dimmer"
    if values is not None and values.shape[0]:
        v = values[np.isfinite(values)]
        if (
            v.shape[0]
            and float(v.min()) >= 0.0
            and float(v.max()) <= 1.0
            and np.unique(np.round(v, 6)).shape[0] > 5
        ):
            return "dimmer"
    return "levels"


def calibrate(
    store: Any,
    roles: RoleMap,
    window_sec: float = 3600.0,
    knob_history_sec: float = 86400.0,
    default_service_ms: float = 100.0,
    timeout_ms: float | None = None,
    since: float | None = None,
) -> Tier | None:
    """The tier of ``roles.system`` (None when it has no queue: see ``RoleMap.queue_ready``).

    ``since``: the time of the last executed action that may have changed the system in
    ways the roles do not show (a cache, a configuration): samples before it describe
    another system and are left out once a minute of telemetry after it has arrived."""
    system = roles.system
    if not roles.queue_ready:
        return None
    newest = newest_time(store, system, roles)
    if not math.isfinite(newest):
        return None
    lo = newest - window_sec
    hist_lo = newest - max(window_sec, knob_history_sec)
    changed_note = ""
    if since is not None and since > lo:
        if newest - since >= MIN_SINCE_SEC:
            lo = hist_lo = since + 1e-6
            changed_note = (
                f"calibrated from the {newest - since:.0f} s since the last unmodelled action (the "
                "system may have changed then)"
            )
        else:
            changed_note = (
                f"an unmodelled action {newest - since:.0f} s ago may have changed the system: "
                "calibration still reflects the time before it"
            )
    lam, n_lam = _mean(store, system, roles.get("load"), lo)
    xb, _ = _mean(store, system, roles.get("throughput_basic"), lo)
    xo, _ = _mean(store, system, roles.get("throughput_optional"), lo)
    x_parts = (xb or 0.0) + (xo or 0.0) if (xb is not None or xo is not None) else None
    x_total, _ = _mean(store, system, roles.get("throughput"), lo)
    x_total = x_parts if x_parts is not None else x_total
    c_latest = _latest(store, system, roles.get("capacity"))
    if (lam is None and not x_total) or c_latest is None:
        return None
    notes: list[str] = [changed_note] if changed_note else []
    assumed: list[str] = []
    if lam is None:
        lam = float(x_total or 0.0)
        notes.append("load taken from the throughput")
    c = max(1, int(round(c_latest)))
    m_raw = _latest(store, system, roles.get("max_capacity"))
    knob_now = _latest(store, system, roles.get("knob"))
    samples = _samples(store, system, roles, lo)
    hist = _samples(store, system, roles, hist_lo) if roles.has("knob") else samples
    kind = _knob_kind(roles, hist.knob if hist is not None else None)
    util, _ = _mean(store, system, roles.get("utilization"), lo)
    if util is None and samples is not None:
        util = float(np.nanmean(samples.u))
    # Latency figures of the current configuration (samples at the current knob only).
    now_mask = _config_mask(store, system, roles, knob_now, c)
    ravg = _masked_mean(store, system, roles.get("latency"), lo, now_mask)
    rb = _masked_mean(store, system, roles.get("latency_basic"), lo, now_mask)
    ro = _masked_mean(store, system, roles.get("latency_optional"), lo, now_mask)
    d_now = min(1.0, max(0.0, knob_now)) if (kind == "dimmer" and knob_now is not None) else 1.0
    if ravg is None and rb is not None and ro is not None:
        ravg = d_now * ro + (1 - d_now) * rb
    served = x_total if x_total and x_total > 0 else lam
    # E[S] of the current configuration, then the knob table from the longer history.
    es = None
    if samples is not None:
        mask = None
        if samples.knob is not None and knob_now is not None:
            mask = np.isclose(samples.knob, knob_now)
        es, n_es = _es_utilisation_law(samples, mask)
        if es is not None:
            notes.append(
                f"E[S] = Σ c·ρ / Σ X over {n_es} samples = {es * 1000:.1f} ms (utilisation law)"
            )
    if es is None and util is not None and 0.0 < util < 1.0 and served > 0:
        c_mean, _ = _mean(store, system, roles.get("capacity"), lo)
        es = (c_mean or c) * util / served
        notes.append(
            f"E[S] = c·ρ/X = {(c_mean or c):.3g}·{util:.3f}/{served:.3g} = {es * 1000:.1f} ms"
        )
    if es is None and ravg is not None and ravg > 0 and lam > 0:
        es = _solve_service_from_rt(lam, c, ravg / 1000.0)
        notes.append(f"E[S] solved from the observed latency: {es * 1000:.1f} ms")
    if es is None:
        es = default_service_ms / 1000.0
        assumed.append(f"service time {default_service_ms:g} ms")
    es_by_knob: dict[float, float] = {}
    quality_by_knob: dict[float, float] = {}
    if hist is not None and hist.knob is not None:
        for k in np.unique(np.round(hist.knob[np.isfinite(hist.knob)], 6)):
            e, n = _es_utilisation_law(hist, np.isclose(hist.knob, k))
            if e is not None and n >= MIN_KNOB_SAMPLES:
                es_by_knob[_key(k)] = e
        qb = roles.get("quality")
        if qb is not None:
            qt = _window(store, system, qb, hist_lo)
            if qt is not None:
                kk = _aligned(store, system, roles.get("knob"), qt[0])
                if kk is not None:
                    for k in np.unique(np.round(kk[np.isfinite(kk)], 6)):
                        sel = np.isclose(kk, k)
                        if int(sel.sum()) >= MIN_KNOB_SAMPLES:
                            quality_by_knob[_key(k)] = float(np.mean(qt[1][sel]))
    if knob_now is not None:
        es_by_knob[_key(knob_now)] = es
    s_basic = s_opt = es
    if kind == "dimmer":
        s_basic, s_opt = _split_dimmer(es, d_now, rb, ro, es_by_knob, notes)
    elif kind == "levels" and len(es_by_knob) > 1:
        notes.append(
            "service time per knob setting: "
            + ", ".join(f"{k:g} → {v * 1000:.0f} ms" for k, v in sorted(es_by_knob.items()))
        )
    tier = Tier(
        system,
        roles,
        float(lam),
        c,
        int(round(m_raw)) if m_raw is not None else None,
        knob_now,
        kind,
        s_basic,
        s_opt,
        es_by_knob,
        quality_by_knob,
        utilization=util,
        observed_latency_ms=ravg,
        samples=n_lam,
        window=(lo, newest),
        newest=newest,
        notes=notes,
        assumed=assumed,
    )
    if knob_now is not None and roles.has("quality"):
        tier.quality_now = quality_by_knob.get(
            _key(knob_now), _latest(store, system, roles.get("quality"))
        )
    _fit_latency(store, tier, lo, ravg)
    _fit_tail(store, tier, lo, now_mask)
    _backlog_now(store, tier)
    _fit_errors(store, tier, lo, now_mask, timeout_ms)
    if timeout_ms is not None:
        notes.append(
            f"request time-out {timeout_ms:g} ms (settings): longer responses count as errors"
        )
    return tier


def _fit_errors(store: Any, tier: Tier, lo: float, mask: Any, timeout_ms: float | None) -> None:
    """The error rate the configuration has whatever the load: the observed rate of the
    current configuration (unsaturated samples), minus the share of client time-outs the
    queue explains at the observed load when the time-out is known."""
    b = tier.roles.get("error_rate")
    w = _window(store, tier.system, b, lo)
    if w is None:
        return
    t, e = w
    ok = np.isfinite(e) & _not_draining(store, tier, t)
    if mask is not None:
        ok &= mask(t)
    if not ok.any():
        ok = np.isfinite(e)
    if not ok.any():
        return
    observed = float(np.mean(e[ok]))
    explained = 0.0
    svc = tier.service(tier.knob)
    if timeout_ms is not None and svc is not None:
        lam_w = _aligned(store, tier.system, tier.roles.get("load"), t[ok])
        lam = float(np.nanmean(lam_w)) if lam_w is not None else tier.load
        st = queue.evaluate(
            np.array([lam]), np.zeros(1), tier.units, svc.es, svc.cs2, tier.wait_factor
        )
        if not st.saturated[0]:
            cs2 = _tail_cs2(tier, svc)
            share = queue.share_slower_than(st, timeout_ms / 1000.0 / tier.rt_factor, svc.es, cs2)
            explained = float(share[0])
    tier.error_base = max(0.0, observed - explained)
    if explained > 0.0005:
        tier.notes.append(
            f"error rate {observed:.2%} observed, {explained:.2%} of it time-outs the queue "
            f"explains: base {tier.error_base:.2%}"
        )


def _backlog_now(store: Any, tier: Tier) -> None:
    """A saturated tier (utilisation ~1 now) carries a backlog into the horizon: under FCFS
    the requests that arrived while the newest completions waited are still queued, so
    backlog ≈ load × (newest latency - steady-state latency), in requests."""
    roles, system = tier.roles, tier.system
    lb = roles.get("latency")
    s = _series(store, system, lb)
    if s is None:
        return
    t_last = float(s.last_t)
    u = _aligned(store, system, roles.get("utilization"), np.array([t_last]))
    if u is None or not (float(u[0]) >= SATURATED_UTILIZATION):
        return
    lam = _aligned(store, system, roles.get("load"), np.array([t_last]))
    svc = tier.service(tier.knob)
    if svc is None or lam is None or not math.isfinite(float(lam[0])):
        return
    r_obs = float(s.last_v) * lb.scale / 1000.0  # type: ignore[union-attr]
    st = queue.evaluate(
        np.array([float(lam[0])]), np.zeros(1), tier.units, svc.es, svc.cs2, tier.wait_factor
    )
    steady = svc.es if st.saturated[0] else float(st.response[0])
    excess = r_obs / tier.rt_factor - steady
    cap = tier.units / svc.es
    if excess > 0:
        # FCFS: everything that arrived while the newest completions waited is still queued.
        tier.backlog = float(min(excess * float(lam[0]), cap * 3600.0))
        tier.notes.append(
            f"saturated now (utilisation {float(u[0]):.2f}, latency {r_obs * 1000:.0f} ms): a "
            f"backlog of ~{tier.backlog:.0f} requests carries into the horizon"
        )


def _config_mask(
    store: Any, system: str, roles: RoleMap, knob_now: float | None, units_now: int
) -> Any:
    """A function t -> bool mask 'sample taken in the current configuration' (same knob
    setting, same capacity)."""
    kb, cb = roles.get("knob"), roles.get("capacity")

    def mask(t: np.ndarray) -> np.ndarray:
        out = np.ones(t.shape[0], bool)
        k = _aligned(store, system, kb, t) if (kb is not None and knob_now is not None) else None
        if k is not None:
            out &= np.isclose(k, knob_now)  # type: ignore[arg-type]
        c = _aligned(store, system, cb, t) if cb is not None else None
        if c is not None:
            out &= np.round(np.nan_to_num(c)) == units_now
        return out

    return mask


def _masked_mean(store: Any, system: str, b: Binding | None, lo: float, mask: Any) -> float | None:
    w = _window(store, system, b, lo)
    if w is None:
        return None
    t, v = w
    ok = np.isfinite(v)
    if mask is not None:
        m = mask(t) & ok
        if int(m.sum()) >= 1:
            ok = m
    return float(v[ok].mean()) if ok.any() else None


def _split_dimmer(
    es: float,
    d: float,
    rb: float | None,
    ro: float | None,
    table: dict[float, float],
    notes: list[str],
) -> tuple[float, float]:
    """Basic and optional service times (seconds)."""
    if len(table) >= 2:
        ks = np.array(sorted(table))
        ys = np.array([table[k] for k in ks])
        if float(ks.max() - ks.min()) >= 0.2:
            slope, icpt = np.polyfit(ks, ys, 1)
            sb, so = float(icpt), float(icpt + slope)
            if sb > 0.05 * es and so > 0.05 * es:
                # Anchor at the current setting's own estimate.
                shift = es - (d * so + (1 - d) * sb)
                notes.append(
                    f"basic/optional service times from E[S] at {len(table)} dimmer settings: "
                    f"{1000 * (sb + shift):.1f} / {1000 * (so + shift):.1f} ms"
                )
                return sb + shift, so + shift
    delta = (ro - rb) / 1000.0 if (ro is not None and rb is not None) else 0.0
    sb = es - d * delta
    so = sb + delta
    if sb <= 0.05 * es or so <= 0.05 * es:
        if ro is not None and rb is not None and rb > 0 and ro > 0:
            ratio = ro / rb
            sb = es / (1.0 + d * (ratio - 1.0))
            so = sb * ratio
            notes.append(f"class split from the response-time ratio optional/basic = {ratio:.2f}")
        else:
            sb = so = es
            notes.append(
                "basic and optional service times not distinguishable: the dimmer has no modelled "
                "effect"
            )
    return sb, so


def predict_latency(tier: Tier, lam: float, c: int, svc: Service) -> float | None:
    """Mean response time (s) of the calibrated tier at one operating point (None if unstable)."""
    st = queue.evaluate(np.array([lam]), np.array([1.0]), c, svc.es, svc.cs2, tier.wait_factor)
    if st.saturated[0]:
        return None
    return float(st.wait[0] + svc.es) * tier.rt_factor


def _fit_latency(store: Any, tier: Tier, lo: float, ravg: float | None) -> None:
    """Latency shape: a waiting-time factor (service variability) and a flat factor, fitted
    on the window's configurations (units, knob; and load levels when the load varies)."""
    svc = tier.service(tier.knob)
    if svc is None:
        return
    varying = _load_varies(store, tier, lo)
    groups = _groups(store, tier, lo, by_load=varying)
    if not groups and ravg is not None and ravg > 0:
        groups = [_Group(tier.units, tier.knob, tier.load, ravg / 1000.0, 1)]
    k, k_sd, share = _wait_factor(tier, groups)
    what = f"{len(groups)} configuration(s)" + (" and load levels" if varying else "")
    if k != 1.0:
        tier.wait_factor = k
        tier.notes.append(
            f"waiting-time factor {k:.3f} ± {k_sd:.3f} from {what} (service-time variability; "
            f"waiting is {share:.0%} of the latency there)"
        )
    fit = _pool(tier, groups, tier.wait_factor)
    if fit is None:
        return
    raw, e, n_used = fit
    band = NOISE_PER_ELASTICITY * e if math.isfinite(e) else math.inf
    lf = math.log(raw)
    used = float(math.exp(math.copysign(max(0.0, abs(lf) - band), lf)))
    where = f" over {what}" if n_used > 1 else ""
    tier.notes.append(
        f"latency factor observed/model{where} = {raw:.3f}, used {used:.3f} (noise band "
        f"±{band:.2f} in log at load elasticity {e:.1f})"
    )
    tier.rt_factor = used
    tier.fit_sigma = _fit_residual(tier, groups)
    if tier.wait_factor != 1.0 and len(groups) > 1:
        # Several configurations or load levels: keep the waiting-time factor only if it
        # fits them better than a flat factor alone (a system that is not M/G/c at all
        # can make a large waiting factor fit one load level and miss the others).
        k_model = (tier.wait_factor, tier.rt_factor, tier.fit_sigma)
        tier.wait_factor = 1.0
        flat = _pool(tier, groups, 1.0)
        tier.rt_factor = flat[0] if flat is not None else 1.0
        flat_sigma = _fit_residual(tier, groups)
        if flat_sigma < k_model[2]:
            tier.fit_sigma = flat_sigma
            tier.notes.append(
                f"a flat factor {tier.rt_factor:.3f} fits the configurations better "
                f"({flat_sigma:.1%} vs {k_model[2]:.1%}) than the waiting-time factor: used instead"
            )
        else:
            tier.wait_factor, tier.rt_factor, tier.fit_sigma = k_model


def _fit_residual(tier: Tier, groups: list[_Group]) -> float:
    """RMS log error of the fitted model on the window's configurations (floor 2 %): the
    error of a prediction where the tier has been observed."""
    num = den = 0.0
    for g in groups:
        svc = tier.service(g.knob)
        if svc is None or g.latency <= 0:
            continue
        st = queue.evaluate(
            np.array([g.lam]), np.zeros(1), g.units, svc.es, svc.cs2, tier.wait_factor
        )
        if st.saturated[0]:
            continue
        model = float(st.response[0]) * tier.rt_factor
        num += g.n * math.log(g.latency / model) ** 2
        den += g.n
    return max(FIT_SIGMA_FLOOR, math.sqrt(num / den)) if den > 0 else FIT_SIGMA_FLOOR


def _load_varies(store: Any, tier: Tier, lo: float) -> bool:
    """More load variation over the window than the counting noise of a steady Poisson rate."""
    w = _window(store, tier.system, tier.roles.get("load"), lo)
    if w is None or w[0].shape[0] < 5:
        return False
    t, lam = w
    lam = lam[np.isfinite(lam)]
    if not lam.shape[0] or float(np.mean(lam)) <= 0:
        return False
    mean = float(np.mean(lam))
    step = float(np.median(np.diff(t))) if t.shape[0] > 1 else 1.0
    excess = float(np.var(lam)) - mean / max(step, 1e-9)
    return excess > 0 and math.sqrt(excess) / mean >= 0.1


K_PRIOR_SD = 0.5
ES_REL_ERROR = 0.02  # relative error of a utilisation-law service time


def _wait_factor(tier: Tier, groups: list[_Group]) -> tuple[float, float, float]:
    """(factor, its sd, waiting share) on the queue's waiting time, pooled over configurations.

    Per configuration ``k = (R - E[S]) / W`` with variance from the load noise of the
    observed mean (grows with the latency's elasticity to load) and from the service-time
    estimate's error (matters where waiting is short); precision-weighted, shrunk towards
    1 (exponential service) with sd ``K_PRIOR_SD``, and used only when it differs from 1
    by more than two standard deviations."""
    prec = K_PRIOR_SD**-2
    acc = prec * 1.0
    sw = sa = 0.0
    for g in groups:
        svc = tier.service(g.knob)
        if svc is None or g.latency <= 0:
            continue
        st = queue.evaluate(np.array([g.lam, g.lam * 1.01]), np.zeros(2), g.units, svc.es, svc.cs2)
        if st.saturated.any() or float(st.wait[0]) <= 0:
            continue
        wait, r0 = float(st.wait[0]), float(st.response[0])
        e = (math.log(float(st.response[1])) - math.log(r0)) / math.log(1.01)
        var = ((NOISE_PER_ELASTICITY * e * g.latency) ** 2 + (ES_REL_ERROR * svc.es) ** 2) / (
            wait * wait
        )
        var *= max(1.0, 30.0 / max(g.n, 1))  # few samples: less trust
        p = 1.0 / var
        prec += p
        acc += p * (g.latency - svc.es) / wait
        sw += g.n * wait
        sa += g.n * r0
    k = acc / prec
    sd = float(prec**-0.5)
    share = sw / sa if sa > 0 else 0.0
    if share < 0.05 or prec <= K_PRIOR_SD**-2 * 1.0001 or abs(k - 1.0) <= 2.0 * sd:
        return 1.0, sd, share  # not distinguishable from exponential service: keep the model
    return float(min(20.0, max(0.05, k))), sd, share


@dataclass(slots=True)
class _Group:
    """Latency samples of one configuration (units, knob) in the window."""

    units: int
    knob: float | None
    lam: float
    latency: float  # mean observed latency, seconds
    n: int


LOAD_BIN = math.log(1.15)  # load levels 15 % apart when the load varies
SMOOTH_SAMPLES = 6  # the queue follows the load over about a minute, not per 10 s sample


def _groups(store: Any, tier: Tier, lo: float, by_load: bool = False) -> list[_Group]:
    """Latency samples grouped by configuration (units, knob) and, when the load varies,
    by load level (of the load smoothed over ``SMOOTH_SAMPLES``)."""
    roles, system = tier.roles, tier.system
    w = _window(store, system, roles.get("latency"), lo)
    if w is None:
        return []
    t, r = w
    lam = _aligned(store, system, roles.get("load"), t)
    if lam is None:
        lam = _served(store, system, roles, t)
    c = _aligned(store, system, roles.get("capacity"), t)
    if lam is None or c is None:
        return []
    k = _aligned(store, system, roles.get("knob"), t)
    none = -1e300
    kk = np.nan_to_num(np.round(k, 6), nan=none) if k is not None else np.full(t.shape[0], none)
    ok = np.isfinite(lam) & np.isfinite(c) & (r > 0) & (lam > 0) & _not_draining(store, tier, t)
    cc = np.maximum(1, np.round(np.nan_to_num(c))).astype(int)
    if by_load and t.shape[0] >= SMOOTH_SAMPLES:
        kernel = np.ones(SMOOTH_SAMPLES) / SMOOTH_SAMPLES
        filled = np.where(np.isfinite(lam), lam, np.nanmean(lam))
        smooth = np.convolve(filled, kernel, mode="same")
        edge = SMOOTH_SAMPLES // 2
        smooth[:edge], smooth[-edge:] = filled[:edge], filled[-edge:]
        lam = smooth
        bins = np.floor(np.log(np.maximum(lam, 1e-12)) / LOAD_BIN).astype(int)
    else:
        bins = np.zeros(t.shape[0], int)
    out = []
    keys = {
        (int(a), float(b), int(d))
        for a, b, d in zip(cc[ok].tolist(), kk[ok].tolist(), bins[ok].tolist())
    }
    for ci, ki, di in sorted(keys):
        sel = ok & (cc == ci) & (kk == ki) & (bins == di)
        n = int(sel.sum())
        if n < MIN_KNOB_SAMPLES:
            continue
        rs = r[sel]
        keep = rs <= 10.0 * float(
            np.median(rs)
        )  # a backlog draining after a change, not this configuration
        out.append(
            _Group(
                ci,
                None if ki == none else ki,
                float(lam[sel][keep].mean()),
                float(rs[keep].mean()) / 1000.0,
                int(keep.sum()),
            )
        )
    return out


SATURATED_UTILIZATION = 0.985


def _not_draining(store: Any, tier: Tier, t: np.ndarray) -> np.ndarray:
    """Samples not taken while the tier was saturated (a backlog growing or draining)."""
    b = tier.roles.get("utilization")
    u = _aligned(store, tier.system, b, t) if b is not None else None
    if u is None:
        return np.ones(t.shape[0], bool)
    return ~(u >= SATURATED_UTILIZATION)


def _pool(
    tier: Tier, groups: list[_Group], wait_factor: float = 1.0
) -> tuple[float, float, int] | None:
    """(observed/model latency pooled over the groups, their mean elasticity, groups used).

    Groups near saturation carry less weight: their mean latency is dominated by load
    noise (weight n / max(1, elasticity)²)."""
    obs = model = esum = wsum = 0.0
    used = 0
    for g in groups:
        svc = tier.service(g.knob)
        if svc is None or g.latency <= 0:
            continue
        st = queue.evaluate(
            np.array([g.lam, g.lam * 1.01]), np.zeros(2), g.units, svc.es, svc.cs2, wait_factor
        )
        if st.saturated.any():
            continue
        r0, r1 = float(st.response[0]), float(st.response[1])
        e = (math.log(r1) - math.log(r0)) / math.log(1.01)
        w = g.n / max(1.0, e) ** 2
        obs += w * g.latency
        model += w * r0
        esum += w * e
        wsum += w
        used += 1
    if model <= 0 or wsum <= 0:
        return None
    raw = float(min(FACTOR_BOUNDS[1], max(FACTOR_BOUNDS[0], obs / model)))
    return raw, esum / wsum, used


def _elasticity(tier: Tier, svc: Service, delta: float = 0.01) -> float:
    """d ln R / d ln λ of the uncorrected queue at the observed point (inf if unstable)."""
    lam = np.array([tier.load, tier.load * (1 + delta)])
    st = queue.evaluate(lam, np.ones(2), tier.units, svc.es, svc.cs2)
    if st.saturated.any() or st.response[0] <= 0:
        return math.inf
    return float((math.log(st.response[1]) - math.log(st.response[0])) / math.log(1 + delta))


def _fit_tail(store: Any, tier: Tier, lo: float, mask: Any) -> None:
    """The published latency quantile: a factor on its queueing part where queueing is a
    sizeable share of it (monitors publish per-window quantiles, which see less of the
    queue's slow swings than the stationary quantile), else a flat factor."""
    b = tier.roles.get("latency_tail")
    if b is None:
        return
    tier.tail_q = b.quantile or 0.95
    obs = _masked_mean(store, tier.system, b, lo, mask)
    tier.observed_tail_ms = obs
    svc = tier.service(tier.knob)
    if obs is None or svc is None or obs <= 0:
        return
    lam = _masked_mean(store, tier.system, tier.roles.get("load"), lo, mask) or tier.load
    st = queue.evaluate(np.array([lam]), np.zeros(1), tier.units, svc.es, svc.cs2, tier.wait_factor)
    if st.saturated[0]:
        return
    st.cs2 = _tail_cs2(tier, svc)
    target = obs / 1000.0 / tier.rt_factor

    def q_at(f: float) -> float:
        return float(queue.response_quantile(tier.tail_q, st, f)[0])  # type: ignore[arg-type]

    q0, q1 = q_at(0.0), q_at(1.0)
    if q1 > 0 and (q1 - q0) / q1 >= WAIT_SHARE_FOR_WAIT_FACTOR and q_at(0.02) < target < q_at(5.0):
        lo_f, hi_f = 0.02, 5.0
        for _ in range(40):
            mid = 0.5 * (lo_f + hi_f)
            lo_f, hi_f = (mid, hi_f) if q_at(mid) < target else (lo_f, mid)
        tier.tail_wait_factor = 0.5 * (lo_f + hi_f)
        tier.notes.append(
            f"p{tier.tail_q * 100:g} latency: queueing part ×{tier.tail_wait_factor:.3f} to match "
            "the published quantile"
        )
    elif q1 > 0:
        tier.tail_factor = float(min(5.0, max(0.2, target / q1)))
        tier.notes.append(
            f"p{tier.tail_q * 100:g} latency factor observed/model = {tier.tail_factor:.3f}"
        )


def _tail_cs2(tier: Tier, svc: Service) -> float:
    """Service variability implied by the waiting factor (Allen–Cunneen: k = (1 + cs2)/2)."""
    if tier.wait_factor != 1.0:
        return float(min(4.0, max(0.05, 2.0 * tier.wait_factor * (1.0 + svc.cs2) / 2.0 - 1.0)))
    return svc.cs2


def tail_cs2(tier: Tier, svc: Service) -> float:
    return _tail_cs2(tier, svc)


def _solve_service_from_rt(lam: float, c: int, r: float) -> float:
    lo, hi = 1e-9, min(r, c / lam * (1 - 1e-9))
    for _ in range(60):
        mid = (lo + hi) / 2
        st = queue.evaluate(np.array([lam]), np.ones(1), c, mid, 1.0)
        if st.saturated[0] or float(st.response[0]) > r:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2
