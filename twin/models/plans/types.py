"""Plan comparison in the domain (the types live in ``twin.models.domain``)."""

from __future__ import annotations

from twin.models.domain import CandidatePlan, PlanOutcome

BASELINE_PLAN_ID = "do_nothing"
MAX_PLANS = 32

__all__ = ["BASELINE_PLAN_ID", "MAX_PLANS", "CandidatePlan", "PlanOutcome"]
