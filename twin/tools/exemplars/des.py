"""A discrete-event simulator of one FCFS multi-server queue whose configuration changes
while it runs (servers added or removed, service times changed by a quality knob or a
configuration action).

Events are arrivals (a Poisson process with a time-varying rate), service starts and
completions, and configuration changes. Under FCFS an arriving request takes the unit
that frees up first, so the event list reduces to a heap of the units' next free
times (the Kiefer–Wolfowitz recursion): ``start = max(arrival, earliest free)``. That
is exact for G/G/c FCFS and about ten times faster than a general process-based
simulator (SimPy), which lets the benchmarks run thousands of replications. Added
units join after a start-up delay; a removed unit finishes the request it is serving.

Random numbers come from one ``numpy`` generator per simulator: arrival times first,
then per request three uniforms (content class, service time, error). ``fork`` copies
the whole state, so plans evaluated from the same situation see the same arrivals and
the same draws (common random numbers): differences between plans are the plans'.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special

# rate(t) in req/s for an array of absolute times
RateFn = Callable[[np.ndarray], np.ndarray]


@dataclass(slots=True)
class Bins:
    """Per-interval aggregates of a run (arrays over bins of ``interval`` seconds)."""

    t_end: np.ndarray  # end time of each bin
    interval: float
    arrivals: np.ndarray
    completed: np.ndarray
    rt_sum: np.ndarray  # seconds
    rt_p95: np.ndarray  # seconds (nan when nothing completed)
    busy: np.ndarray  # busy unit-seconds
    units: np.ndarray  # units in service at the bin's end
    errors: np.ndarray
    cls_completed: np.ndarray  # completions of the optional class
    cls_rt_sum: np.ndarray

    @property
    def mean_rt(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.rt_sum / self.completed

    @property
    def utilization(self) -> np.ndarray:
        return self.busy / (self.interval * np.maximum(self.units, 1))


@dataclass(slots=True)
class Requests:
    """Every request of a run (for truths that need more than the bins)."""

    arrival: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    optional: np.ndarray  # bool
    error: np.ndarray  # bool


@dataclass
class QueueSim:
    """The queue's state between runs: free times of the units, the clock, the RNG."""

    units: int
    seed: int
    t: float = 0.0
    startup_delay: float = 0.0
    free: list[float] = field(default_factory=list)
    rng: np.random.Generator = field(init=False)
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time, units from then on)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        if not self.free:
            self.free = [self.t] * self.units
        heapq.heapify(self.free)
        self.changes = [(-math.inf, self.units)]

    def units_at(self, t: np.ndarray) -> np.ndarray:
        times = np.array([c[0] for c in self.changes])
        counts = np.array([c[1] for c in self.changes], dtype=float)
        return counts[np.searchsorted(times, t, side="right") - 1]

    def fork(self) -> QueueSim:
        return copy.deepcopy(self)

    def resize(self, units: int, at: float) -> None:
        """Adds units (free after the start-up delay) or removes the first to free up."""
        units = max(1, int(units))
        while len(self.free) > units:
            heapq.heappop(self.free)
        while len(self.free) < units:
            heapq.heappush(self.free, at + self.startup_delay)
        self.units = units
        self.changes.append((at, units))
        if len(self.changes) > 10_000:
            del self.changes[1:5_000]

    def arrivals(self, rate: RateFn, until: float, grid: float = 1.0) -> np.ndarray:
        """Poisson arrival times in [t, until) for a time-varying rate (time change)."""
        if until <= self.t:
            return np.empty(0)
        n_grid = max(2, int(math.ceil((until - self.t) / grid)) + 1)
        g = np.linspace(self.t, until, n_grid)
        r = np.maximum(rate(g), 0.0)
        cum = np.concatenate(([0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * np.diff(g))))
        total = float(cum[-1])
        n = int(self.rng.poisson(total)) if total > 0 else 0
        u = np.sort(self.rng.random(n)) * total
        return np.asarray(np.interp(u, cum, g), dtype=float)

    def run(
        self,
        until: float,
        rate: RateFn,
        service: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
        changes: Sequence[tuple[float, Callable[[QueueSim, float], None]]] = (),
        error_prob: Callable[[np.ndarray], np.ndarray] | None = None,
        timeout: float = math.inf,
    ) -> Requests:
        """Runs to ``until``. ``service(arrival_times, u_class, u_service)`` gives
        (service seconds, optional-class flags) of each request under the configuration
        in force at its arrival; ``changes`` are (time, fn(sim, time)) in time order."""
        arr = self.arrivals(rate, until)
        n = arr.shape[0]
        u = self.rng.random((3, n))
        svc, opt = service(arr, u[0], u[1])
        err = u[2] < (error_prob(arr) if error_prob is not None else 0.0)
        start = np.empty(n)
        free = self.free
        pending = sorted(changes, key=lambda c: c[0])
        ci = 0
        next_change = pending[0][0] if pending else math.inf
        push = heapq.heapreplace
        arr_l, svc_l = arr.tolist(), svc.tolist()
        for i in range(n):
            a = arr_l[i]
            while a >= next_change:
                at, fn = pending[ci]
                fn(self, at)
                ci += 1
                next_change = pending[ci][0] if ci < len(pending) else math.inf
            f = free[0]
            s = a if f <= a else f
            start[i] = s
            push(free, s + svc_l[i])
        while ci < len(pending):
            at, fn = pending[ci]
            fn(self, at)
            ci += 1
        finish = start + svc
        err |= (finish - arr) > timeout
        self.t = until
        return Requests(arr, start, finish, opt, err)


def bin_requests(
    req: Requests,
    t0: float,
    t1: float,
    interval: float,
    units_at: Callable[[np.ndarray], np.ndarray],
) -> Bins:
    """Aggregates requests into bins of ``interval`` seconds over [t0, t1)."""
    nb = max(1, int(round((t1 - t0) / interval)))
    edges = t0 + interval * np.arange(nb + 1)
    arrivals = np.histogram(req.arrival, edges)[0].astype(float)
    done = (req.finish >= t0) & (req.finish < edges[-1])
    f = req.finish[done]
    rt = (req.finish - req.arrival)[done]
    k = np.minimum(((f - t0) // interval).astype(int), nb - 1)
    completed = np.bincount(k, minlength=nb).astype(float)
    rt_sum = np.bincount(k, weights=rt, minlength=nb)
    opt = req.optional[done]
    cls_completed = np.bincount(k[opt], minlength=nb).astype(float)
    cls_rt_sum = np.bincount(k[opt], weights=rt[opt], minlength=nb)
    errors = np.bincount(k, weights=req.error[done].astype(float), minlength=nb)
    p95 = np.full(nb, np.nan)
    order = np.argsort(k, kind="stable")
    ks, rts = k[order], rt[order]
    bounds = np.searchsorted(ks, np.arange(nb + 1))
    for b in range(nb):
        lo, hi = bounds[b], bounds[b + 1]
        if hi > lo:
            p95[b] = float(np.percentile(rts[lo:hi], 95))
    busy = _busy(req.start, req.finish, edges)
    return Bins(
        edges[1:],
        interval,
        arrivals,
        completed,
        rt_sum,
        p95,
        busy,
        units_at(edges[1:] - 1e-3),
        errors,
        cls_completed,
        cls_rt_sum,
    )


def _busy(start: np.ndarray, finish: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Busy unit-seconds per bin: B(x) = Σ_{s<x}(x - s) - Σ_{f<x}(x - f), differenced."""
    s = np.sort(start)
    f = np.sort(finish)
    cs = np.concatenate(([0.0], np.cumsum(s)))
    cf = np.concatenate(([0.0], np.cumsum(f)))
    ns = np.searchsorted(s, edges)
    nf = np.searchsorted(f, edges)
    b = (ns * edges - cs[ns]) - (nf * edges - cf[nf])
    return np.diff(b)


def gamma_service(mean: np.ndarray, cs2: float, u: np.ndarray) -> np.ndarray:
    """Gamma service times with the given means and squared CV, by inverse transform (CRN)."""
    if abs(cs2 - 1.0) < 1e-12:
        return -np.asarray(mean) * np.log1p(-u)
    shape = 1.0 / cs2
    return np.asarray(mean) * cs2 * special.gammaincinv(shape, u)
