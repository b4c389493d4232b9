"""A SimPy discrete-event simulation of a SWIM-like web tier (test/bench helper).

The system the capacity model assumes: Poisson arrivals at rate ``lam``; a request
carries optional content with probability ``dimmer`` (service ~ Exp(mean ``s_opt``)),
otherwise basic content (service ~ Exp(mean ``s_basic``)); ``servers`` identical servers
share one FCFS queue. The run yields SWIM-named telemetry aggregated per ``interval``
seconds of simulated time plus the overall mean response time after a warm-up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import simpy


@dataclass
class DesResult:
    mean_rt: float  # seconds, all requests completed after warm-up
    mean_rt_basic: float
    mean_rt_opt: float
    utilization: float
    completed: int
    telemetry: list[dict[str, float]] = field(
        default_factory=list
    )  # one dict per interval, with "t"


def run_swim_des(
    lam: float,
    servers: int,
    dimmer: float,
    s_basic: float,
    s_opt: float,
    n_requests: int,
    seed: int = 1,
    warmup_frac: float = 0.1,
    interval: float = 60.0,
    t0: float = 1_700_000_000.0,
    max_servers: int = 10,
) -> DesResult:
    rng = random.Random(seed)
    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=servers)
    warm_until = n_requests * warmup_frac / lam
    done: list[tuple[float, float, bool]] = []  # (finish time, response time, optional)
    busy: list[tuple[float, float]] = []  # (service start, service end)
    arrivals: list[float] = []

    def request(opt: bool):
        arrive = env.now
        service = rng.expovariate(1.0 / (s_opt if opt else s_basic))
        with pool.request() as req:
            yield req
            start = env.now
            yield env.timeout(service)
        busy.append((start, env.now))
        done.append((env.now, env.now - arrive, opt))

    def source():
        for _ in range(n_requests):
            yield env.timeout(rng.expovariate(lam))
            arrivals.append(env.now)
            env.process(request(rng.random() < dimmer))

    env.process(source())
    env.run()
    horizon = arrivals[-1] if arrivals else 0.0
    # Telemetry per interval (SWIM's metric names; times in ms like SWIM's monitor).
    telemetry: list[dict[str, float]] = []
    n_int = int(horizon // interval)
    a_cnt = [0] * (n_int + 1)
    for a in arrivals:
        a_cnt[min(int(a // interval), n_int)] += 1
    sums = [[0.0, 0, 0.0, 0] for _ in range(n_int + 1)]  # basic rt sum, n, opt rt sum, n
    for fin, rt, opt in done:
        k = int(fin // interval)
        if k <= n_int:
            s = sums[k]
            if opt:
                s[2] += rt
                s[3] += 1
            else:
                s[0] += rt
                s[1] += 1
    busy_t = [0.0] * (n_int + 1)
    for b0, b1 in busy:
        k0, k1 = int(b0 // interval), int(b1 // interval)
        for k in range(k0, min(k1, n_int) + 1):
            lo, hi = max(b0, k * interval), min(b1, (k + 1) * interval)
            if hi > lo:
                busy_t[k] += hi - lo
    for k in range(n_int):
        sb, nb, so, no = sums[k]
        rec = {
            "t": t0 + (k + 1) * interval,
            "dimmer": dimmer,
            "active_servers": float(servers),
            "servers": float(servers),
            "max_servers": float(max_servers),
            "arrival_rate": a_cnt[k] / interval,
            "basic_throughput": nb / interval,
            "optional_throughput": no / interval,
            "server_utilization": busy_t[k] / (interval * servers),
        }
        if nb:
            rec["basic_response_time"] = 1000.0 * sb / nb
        if no:
            rec["optional_response_time"] = 1000.0 * so / no
        if nb + no:
            rec["average_response_time"] = 1000.0 * (sb + so) / (nb + no)
        telemetry.append(rec)
    steady = [(rt, opt) for fin, rt, opt in done if fin >= warm_until]
    rts = [rt for rt, _ in steady]
    rb = [rt for rt, o in steady if not o]
    ro = [rt for rt, o in steady if o]
    total_busy = sum(b1 - b0 for b0, b1 in busy)
    return DesResult(
        sum(rts) / len(rts),
        sum(rb) / len(rb) if rb else float("nan"),
        sum(ro) / len(ro) if ro else float("nan"),
        total_busy / (servers * horizon) if horizon else 0.0,
        len(steady),
        telemetry,
    )


def telemetry_points(telemetry: list[dict[str, float]], source: str = "swim"):
    """The interval records as ``Point`` tuples (what ingestion would produce)."""
    from twin.core.events import Point, normalise_name

    out = []
    for rec in telemetry:
        t = rec["t"]
        for k, v in rec.items():
            if k != "t":
                out.append(Point(source, normalise_name(k), t, float(v), "unknown", None))
    return out
