"""The structural model of a request-serving tier, vectorised over a horizon.

``c`` identical units (servers, replicas, workers) share one FCFS queue; requests
arrive at rate λ(t) and need a mean service time ``es`` (seconds) with squared
coefficient of variation ``cs2``. Per state of the horizon:

- steady state by Erlang C (M/M/c) with the Allen–Cunneen correction ``(1 + cs2)/2``
  for the waiting time, times a calibrated ``wait_factor``;
- overload by a fluid backlog: ``Q_j = max(0, Q_{j-1} + (λ_j - c/es)·Δt_j)`` (a Lindley
  recursion, solved with cumulative sums), which adds ``Q/(c/es)`` of waiting and
  drains when the load falls again. A spike that saturates the tier therefore gives
  a finite, growing latency (what a user sees) rather than "infinity", and a plan
  that avoids the saturation shows up as a large gain;
- a response-time quantile (p95, ...) from a gamma distribution with the mean and
  variance of ``backlog + wait + service`` (two-moment fit; waiting is 0 with
  probability 1 - C and exponential otherwise, service is gamma with ``cs2``).

Everything is numpy in, numpy out: no store, no request, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

RHO_CAP = 0.98  # steady-state waiting is evaluated at most here; beyond, the backlog grows


def erlang_c(c: int, a: np.ndarray) -> np.ndarray:
    """P(wait) in M/M/c for offered loads ``a = λ·es`` (1 where ``a >= c``)."""
    a = np.asarray(a, dtype=float)
    out = np.ones_like(a)
    if c < 1:
        return out
    ok = (a > 0) & (a < c)
    if not ok.any():
        return np.where(a <= 0, 0.0, out)
    x = a[ok]
    # Erlang B = Poisson pmf(c; a) / cdf(c; a), in log space so large c stays finite.
    log_pmf = c * np.log(x) - x - special.gammaln(c + 1.0)
    cdf = special.pdtr(c, x)
    b = np.exp(log_pmf) / np.maximum(cdf, 1e-300)
    rho = x / c
    out[ok] = b / (1.0 - rho + rho * b)
    out[a <= 0] = 0.0
    return out


@dataclass(slots=True)
class QueueStates:
    """Per-state figures of a tier over a horizon (seconds, req/s, ratios)."""

    utilization: np.ndarray
    throughput: np.ndarray
    wait: np.ndarray  # mean waiting in queue, incl. backlog
    response: np.ndarray  # mean response time = wait + service
    pwait: np.ndarray  # probability of waiting (1 while saturated)
    backlog: np.ndarray  # requests queued beyond the steady state (fluid)
    saturated: np.ndarray  # bool: λ >= capacity, or a backlog not yet drained
    es: float
    cs2: float


def evaluate(
    lam: np.ndarray,
    dt: np.ndarray,
    c: int,
    es: float,
    cs2: float = 1.0,
    wait_factor: float = 1.0,
    backlog0: float = 0.0,
) -> QueueStates:
    """The tier at arrival rates ``lam`` (req/s); ``dt`` = seconds each state lasts."""
    lam = np.maximum(np.asarray(lam, dtype=float), 0.0)
    dt = np.asarray(dt, dtype=float)
    c = max(int(c), 0)
    cap = c / es if es > 0 and c > 0 else 0.0  # req/s the tier can serve
    if cap <= 0:
        n = lam.shape[0]
        inf = np.full(n, np.inf)
        return QueueStates(
            np.ones(n), np.zeros(n), inf, inf, np.ones(n), np.zeros(n), np.ones(n, bool), es, cs2
        )
    rho = lam / cap
    rho_eff = np.minimum(rho, RHO_CAP)
    a = rho_eff * c
    pw = erlang_c(c, a)
    wq = wait_factor * pw * es / (c * (1.0 - rho_eff)) * (1.0 + cs2) / 2.0
    # Fluid backlog (Lindley recursion via cumulative sums).
    steps = (lam - cap) * dt
    s = backlog0 + np.cumsum(steps)
    q_end = s - np.minimum(np.minimum.accumulate(s), 0.0)
    q_start = np.concatenate(([backlog0], q_end[:-1]))
    q_mid = 0.5 * (q_start + q_end)
    saturated = (rho >= 1.0) | (q_end > 1e-9)
    wait = wq + q_mid / cap
    util = np.where(saturated, 1.0, rho)
    thr = np.where(saturated, cap, lam)
    return QueueStates(
        util, thr, wait, wait + es, np.where(saturated, 1.0, pw), q_end, saturated, es, cs2
    )


def response_quantile(
    q: float, st: QueueStates, wait_factor: float = 1.0, iterations: int = 36
) -> np.ndarray:
    """The ``q``-quantile of the response time (seconds) per state.

    R = backlog wait + W + S: service S ~ gamma(mean ``es``, ``cs2``); queueing W is 0
    with probability 1 - C and exponential otherwise (mean ``wait / C``). So
    ``P(R > x) = (1 - C)·P(S > x - b) + C·P(S + E > x - b)``, the first term exact, the
    second a two-moment gamma fit; solved for ``x`` by bisection, vectorised over states.
    ``wait_factor`` scales the queueing part: a per-window quantile (what a monitor
    publishes every 10 s) sees less of the queue's slow swings than the stationary one.
    """
    es, cs2 = st.es, max(st.cs2, 1e-3)
    pw = np.clip(st.pwait, 1e-12, 1.0)
    steady_wait = np.where(st.saturated, 0.0, np.maximum(st.wait, 0.0))
    backlog = np.where(st.saturated, np.maximum(st.wait, 0.0), 0.0)
    e_mean = wait_factor * steady_wait / pw  # mean wait of a request that waits
    a_s, b_s = 1.0 / cs2, es * cs2
    m2 = es + e_mean
    v2 = cs2 * es * es + e_mean * e_mean
    a2 = np.maximum(m2 * m2 / np.maximum(v2, 1e-18), 1e-3)
    b2 = m2 / a2
    target = 1.0 - q
    lo = np.zeros_like(m2)
    hi = np.maximum(m2, es) * 50.0 + 1e-6
    for _ in range(iterations):
        x = 0.5 * (lo + hi)
        tail = (1.0 - pw) * special.gammaincc(a_s, x / b_s) + pw * special.gammaincc(a2, x / b2)
        too_small = tail > target
        lo = np.where(too_small, x, lo)
        hi = np.where(too_small, hi, x)
    return np.asarray(0.5 * (lo + hi) + backlog, dtype=float)


def share_slower_than(st: QueueStates, timeout: float, es: float, cs2: float) -> np.ndarray:
    """Share of requests slower than ``timeout`` seconds (two-moment gamma fit of R)."""
    pw = np.clip(st.pwait, 1e-12, 1.0)
    wq = np.maximum(st.wait, 0.0)
    mean = wq + es
    var = np.maximum(2.0 * wq * wq / pw - wq * wq, 0.0) + max(cs2, 1e-3) * es * es
    shape = np.maximum(mean * mean / np.maximum(var, 1e-18), 1e-3)
    return np.asarray(special.gammaincc(shape, timeout * shape / mean), dtype=float)
