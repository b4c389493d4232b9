"""The measured error of past predictions, and what confidence means.

A what-if's ``confidence`` is the probability that the realised value of its headline
metric (mean latency, else utilisation) falls within ``tolerance`` (default ±10 %) of
the prediction.

- **Prior** (no scored history): ``P(|e| <= tol)`` for a relative error ``e ~ N(0, σ²)``,
  σ combining the model's structural error ``prior_error`` (10 % for a calibrated queue)
  with what the answer itself knows is uncertain (the load forecast's band, learned
  effects' spread, assumptions, saturation, actions nobody can model).
- **Measured** (the ledger, ``twin.core.ledger``, has scored predictions of that kind on
  that system): ``skill.confidence(prior)``, the measured share of outcomes within
  ±10 % shrunk towards the prior by n/(n+5), scaled down by this answer's own extra
  uncertainty (an unknown action still lowers it); the intervals then use the measured
  relative error once ``min_scored`` predictions are scored.

The explanation and ``metadata.confidence_basis`` say which. The ledger is found as
``state.ledger`` and needs ``skill(system, kind, metric=None) -> Skill | None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Skill:
    """Scored predictions of one (system, kind[, metric]) (the ledger's shape)."""

    n: int
    mase: float = math.nan
    rel_error: float = math.nan  # relative error of the scored predictions
    coverage: float = math.nan  # share of actuals inside the nominal interval
    interval_scale: float = 1.0  # factor the ledger applies to intervals
    within_tolerance: float = math.nan  # share of outcomes within ±10 % of the prediction

    def confidence(self, prior: float) -> float:
        if self.n <= 0 or not math.isfinite(self.within_tolerance):
            return prior
        w = self.n / (self.n + 5.0)
        return w * self.within_tolerance + (1.0 - w) * prior


@runtime_checkable
class SkillSource(Protocol):
    def skill(self, system: str, kind: str, metric: str | None = None) -> Skill | None: ...


class NoHistory:
    """The fallback while no ledger is attached: nothing has been scored."""

    def skill(self, system: str, kind: str, metric: str | None = None) -> Skill | None:
        return None


def source_of(state: Any) -> SkillSource:
    ledger = getattr(state, "ledger", None)
    return ledger if isinstance(ledger, SkillSource) else NoHistory()


def confidence(sigma: float, tolerance: float = 0.1) -> float:
    """P(|e| <= tolerance) for e ~ N(0, sigma²)."""
    if not math.isfinite(sigma):
        return 0.0
    if sigma <= 0:
        return 1.0
    return math.erf(tolerance / (sigma * math.sqrt(2.0)))


@dataclass(frozen=True, slots=True)
class Basis:
    confidence: float
    sigma: float  # σ of the relative error behind the prior
    basis: str  # "ledger" or "prior"
    text: str


def assess(
    skill: Skill | None, model_sigma: float, extra_sigma: float, tolerance: float = 0.1
) -> Basis:
    """Confidence of one answer: measured (ledger) when there is history, else the prior."""
    sigma = math.sqrt(model_sigma**2 + extra_sigma**2)
    prior = confidence(sigma, tolerance)
    n = skill.n if skill is not None else 0
    if skill is None or n <= 0:
        return Basis(
            prior,
            sigma,
            "prior",
            f"no scored history: prior model error {model_sigma:.0%} combined with this answer's "
            f"own uncertainty {extra_sigma:.0%}",
        )
    plain = confidence(model_sigma, tolerance)
    measured = skill.confidence(plain)
    conf = measured * (prior / plain if plain > 0 else 1.0)
    wt = (
        f", {skill.within_tolerance:.0%} within ±{tolerance:.0%}"
        if math.isfinite(skill.within_tolerance)
        else ""
    )
    re = f", relative error {skill.rel_error:.1%}" if math.isfinite(skill.rel_error) else ""
    extra = (
        f"; this answer's own extra uncertainty {extra_sigma:.0%}" if extra_sigma > 0.005 else ""
    )
    return Basis(
        conf,
        sigma,
        "ledger",
        f"measured: {n} scored predictions of this kind on this system{wt}{re}{extra}",
    )
