"""Closed forms of the M/G/c queue with two content classes (a SWIM-like tier).

``c`` identical servers share one FCFS queue; a share ``dimmer`` of requests carries
optional content (mean service ``s_opt``), the rest basic content (``s_basic``), each
exponential. ``mgc`` gives the steady state by Erlang C with the Allen–Cunneen correction
``(1 + Cs²)/2``; both classes wait the same time in queue.

The twin's what-if no longer lives here: ``twin.models.plans`` calibrates any request-
serving system through its metric roles and evaluates plans vectorised over a horizon
(``plans.queue``). These scalar forms stay as the reference the tests and the exemplar
simulator are checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
