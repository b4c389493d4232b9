"""Random microservice systems with injected faults: a generalisation check for diagnosis.

The diagnosis was designed on one real system (Online Boutique, 10 services) and one
generated one (``twin.tools.scenarios``, 5 services). Here every seed draws a *different*
system: 12-40 services with made-up names, a random call graph (an entry tier, call depth
up to 6, shared back ends), a handful of request flows whose rates wander independently,
and the Nezha metric set per service (CPU, memory, server and client latency
percentiles, workload, network bytes, success rate), with noise, quantisation and bursts.

Faults (``KINDS``) on one service at ``fault_t``:

* ``cpu``: CPU contention (utilisation up, its latency up, its callers wait);
* ``delay``: network delay on the service (its callers' calls to it take longer; the service
  itself sees nothing);
* ``errors``: the service fails a share of its requests (its callers see errors too);
* ``memory``: a leak (memory grows, GC pauses add latency late).

Unrelated things happen as in real data: an earlier incident on another service in the
history, a noisy neighbour (one service with heavy-tailed noise), and missing series.
Ground truth is ``root_cause``. The generator is a sanity check of mechanisms (scale, call
depth, different names), not a benchmark to tune on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from twin.core.events import Point

__all__ = ["KINDS", "RandomSystem", "generate_system"]

KINDS = ("cpu", "delay", "errors", "memory")
_SYLL = (
    "al",
    "bor",
    "cen",
    "dax",
    "el",
    "fin",
    "gor",
    "hul",
    "ix",
    "jan",
    "kor",
    "lum",
    "mer",
    "nox",
    "ori",
    "pax",
    "qua",
    "ril",
    "sen",
    "tor",
    "ul",
    "vex",
    "wen",
    "yor",
    "zed",
)
STEP = 60.0


@dataclass(slots=True)
class RandomSystem:
    seed: int
    kind: str
    root_cause: str
    fault_t: float
    services: list[str]
    calls: dict[str, list[str]]
    points: list[Point] = field(default_factory=list)


def _names(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(_SYLL) for _ in range(rng.randint(2, 3))) + rng.choice(
            ("-svc", "-api", "", "-service", "d")
        )
        if name not in out:
            out.append(name)
    return out


def generate_system(seed: int, kind: str | None = None) -> RandomSystem:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    kind = kind or KINDS[seed % len(KINDS)]
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    n = rng.randint(12, 40)
    names = _names(rng, n)
    entry = names[0]
    # Call graph: services in layers; each service calls 0-3 services of deeper layers.
    depth = rng.randint(3, 6)
    layer = {entry: 0}
    for s in names[1:]:
        layer[s] = rng.randint(1, depth)
    calls: dict[str, list[str]] = {s: [] for s in names}
    for s in names:
        deeper = [x for x in names if layer[x] > layer[s]]
        if deeper:
            k = rng.randint(2, 4) if s == entry else rng.choice((0, 1, 1, 2, 2, 3))
            calls[s] = rng.sample(deeper, min(k, len(deeper)))
    for s in names[1:]:  # everyone is reachable: callers from shallower layers
        if not any(s in c for c in calls.values()):
            callers = [x for x in names if layer[x] < layer[s]]
            calls[rng.choice(callers)].append(s)
    # Flows: a request type enters at the entry tier and follows a random subtree.
    n_flows = rng.randint(3, 6)
    hist_min = rng.uniform(40.0, 60.0)
    after_min = 10.0
    steps = int((hist_min + after_min) * 60 // STEP)
    # In the past (2017-2020): Diagnose refuses incident times far ahead of the wall clock.
    start = 1_500_000_000.0 + (seed % 10_000) * 10_007.0
    t = start + STEP * np.arange(steps)
    fault_t = start + hist_min * 60.0
    fault_t = float(t[np.searchsorted(t, fault_t)]) - rng.uniform(0.0, 30.0)
    on = (t >= fault_t).astype(float)
    visits = {s: np.zeros(steps) for s in names}
    for _ in range(n_flows):
        base = rng.uniform(2.0, 20.0)
        walk = np.exp(np.cumsum(nrng.normal(0.0, 0.03, steps)))
        rate = base * walk * (1.0 + 0.05 * nrng.standard_normal(steps))
        stack = [entry]
        seen: set[str] = set()
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            visits[s] += rate * rng.uniform(0.8, 2.0)
            stack.extend(c for c in calls[s] if rng.random() < 0.7)
    cap = {s: float(np.median(visits[s])) * rng.uniform(2.5, 6.0) + 1.0 for s in names}
    own_ms = {s: rng.uniform(2.0, 40.0) for s in names}
    mem_mb = {s: rng.uniform(100.0, 1500.0) for s in names}

    roots = [s for s in names if s != entry] if kind == "delay" else names
    root = rng.choice(roots)
    extra_cpu = {s: np.zeros(steps) for s in names}
    extra_ms = {s: np.zeros(steps) for s in names}
    delay_to = {s: np.zeros(steps) for s in names}  # ms added to every call *to* s
    err = {s: np.zeros(steps) for s in names}
    leak = {s: np.zeros(steps) for s in names}
    ramp = np.clip((t - fault_t) / 60.0 + 1.0, 0.0, 1.0) * on
    if kind == "cpu":
        extra_cpu[root] += ramp * rng.uniform(0.3, 0.6)
    elif kind == "delay":
        delay_to[root] += ramp * rng.uniform(100.0, 500.0)
    elif kind == "errors":
        err[root] += ramp * rng.uniform(5.0, 40.0)
        extra_ms[root] -= ramp * own_ms[root] * 0.3  # failing fast
    else:
        leak[root] = np.maximum(t - fault_t, 0.0) / 60.0 * mem_mb[root] * rng.uniform(0.02, 0.06)
        extra_ms[root] += (
            np.maximum(t - fault_t, 0.0) / 600.0 * own_ms[root] * rng.uniform(1.0, 3.0)
        )
    # An earlier, unrelated incident on another service.
    if rng.random() < 0.6:
        other = rng.choice([s for s in names if s != root])
        t1 = start + rng.uniform(0.2, 0.7) * hist_min * 60.0
        w = (t >= t1) & (t < t1 + rng.uniform(3.0, 6.0) * 60.0)
        extra_cpu[other][w] += rng.uniform(0.2, 0.4)

    # Latency bottom-up: server = own / (1 - u) + sum of callee latencies (+ delay to them).
    order = sorted(names, key=lambda s: -layer[s])
    lat: dict[str, np.ndarray] = {}
    client: dict[str, np.ndarray] = {}
    util: dict[str, np.ndarray] = {}
    eff_err: dict[str, np.ndarray] = {}
    for s in order:
        u = np.clip(visits[s] / cap[s] + extra_cpu[s], 0.0, 0.95)
        util[s] = u
        wait = np.zeros(steps)
        e = err[s].copy()
        for c in calls[s]:
            wait = wait + lat[c] + delay_to[c]
            e = e + 0.5 * eff_err[c]
        client[s] = wait
        lat[s] = np.maximum(own_ms[s] + extra_ms[s], 0.5) / (1.0 - u) + wait
        eff_err[s] = np.clip(e, 0.0, 100.0)

    noisy = rng.choice([s for s in names if s != root]) if rng.random() < 0.5 else ""

    def noise(x: np.ndarray, rel: float, s: str, q: float = 0.0) -> np.ndarray:
        y = x * (1.0 + rel * nrng.standard_normal(steps))
        burst = nrng.random(steps) < 0.03
        y = np.where(burst, y * (1.0 + nrng.uniform(0.2, 1.0, steps)), y)
        if s == noisy:
            y = y * (1.0 + 0.3 * np.abs(nrng.standard_t(2.0, steps)))
        if q:
            y = np.round(y / q) * q
        return y

    pts: list[Point] = []
    for s in names:
        mets = {
            "cpu": (noise(util[s] * 100.0, 0.05, s, 0.01), "%"),
            "mem": (noise(mem_mb[s] + leak[s], 0.003, s, 0.1), "Mi"),
            "latency_p90": (noise(lat[s] * 1.6 / 1000.0, 0.08, s, 0.0005), "s"),
            "latency_p99": (noise(lat[s] * 2.5 / 1000.0, 0.15, s, 0.0005), "s"),
            "workload": (noise(visits[s], 0.04, s, 0.01), "ops"),
            "net_rx_bytes": (noise(visits[s] * 900.0, 0.06, s, 1.0), "B/s"),
            "net_tx_bytes": (noise(visits[s] * 2400.0, 0.06, s, 1.0), "B/s"),
            "success_rate": (
                np.clip(100.0 - noise(eff_err[s] + 0.05, 0.3, s, 0.01), 0.0, 100.0),
                "%",
            ),
        }
        if calls[s]:
            mets["client_latency_p90"] = (noise(client[s] * 1.6 / 1000.0, 0.1, s, 0.0005), "s")
        for m, (vals, unit) in mets.items():
            if rng.random() < 0.03:  # a missing series now and then
                continue
            name = m.replace("_", ".")
            pts.extend(Point(s, name, float(tt), float(v), unit, None) for tt, v in zip(t, vals))
    pts.sort(key=lambda p: p.t)
    return RandomSystem(seed, kind, root, fault_t, names, calls, pts)
