"""How the hybrid fuses its members' answers: pure functions of the answers and weights.

- **simulations** (``fuse_simulations``) - per metric per timestamp, a weighted mean
  with weights = configured weight × the member's confidence at that time, normalised
  (members on other time grids are interpolated linearly onto the grid of the most
  trusted member, never extrapolated). The result's confidence is the configured-weight
  mean of the members' confidences; its uncertainty band is the weighted mean of the
  members' bands under consensus and their envelope otherwise.
- **diagnoses** (``fuse_diagnoses``) - hypotheses from several members that say the
  same thing (token Jaccard similarity ≥ ``hypothesis_match``) are merged; the combined
  probability is the linear opinion pool Σ aᵢ·pᵢ (aᵢ = normalised weight × confidence
  of the member; a member that did not propose it contributes 0), so the probabilities
  still sum to at most 1; then re-ranked.

**Consensus**: at least ``consensus.min_models`` members answered and they agree - for
simulations the mean relative spread ((max − min) / |fused|) of the values they
predicted in common is ≤ ``consensus.agreement_threshold``; for diagnoses the members
whose top hypothesis is the fused top one carry ≥ ``consensus.min_top_agreement`` of the
weight. Without consensus the confidence is multiplied by ``consensus.penalty`` and the
explanation says so.

Nothing here awaits, counts or logs: membership, fan-out and the counters are the
business of ``twin.models.hybrid``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from twin.models.domain import (
    DiagnosisResult,
    Hypothesis,
    Impact,
    PlanOutcome,
    PredictedState,
    SimulationResult,
)

__all__ = [
    "OTHER_WEIGHT",
    "Consensus",
    "Fused",
    "Outcome",
    "fuse_diagnoses",
    "fuse_plan_outcomes",
    "fuse_simulations",
    "interpolate",
    "jaccard",
    "member_metadata",
    "member_shares",
    "tokens",
]

OTHER_WEIGHT = 0.1  # weight of a member the settings do not weigh
_WORD = re.compile(r"[a-z0-9]+")
_STOP = {
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "is",
    "are",
    "and",
    "or",
    "from",
    "its",
    "by",
    "for",
    "with",
    "due",
    "be",
}
R = TypeVar("R", SimulationResult, DiagnosisResult)


@dataclass(frozen=True, slots=True)
class Consensus:
    min_models: int = 2
    agreement_threshold: float = 0.25
    min_top_agreement: float = 0.5
    penalty: float = 0.5


@dataclass(slots=True)
class Outcome:
    """One member's part in one answer."""

    name: str
    result: Any = None
    reason: str = ""
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.reason


@dataclass(slots=True)
class _Group:
    texts: dict[str, Hypothesis] = field(default_factory=dict)  # member → its hypothesis
    tokens: set[str] = field(default_factory=set)
    probability: float = 0.0
    contributions: dict[str, float] = field(default_factory=dict)


def tokens(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b) if (a | b) else 0.0


def is_bound(key: str, metrics: Mapping[str, float]) -> bool:
    """``cpu.lower``/``cpu.upper`` next to ``cpu``: an interval bound, fused with its metric."""
    for suffix in (".lower", ".upper"):
        if key.endswith(suffix) and key[: -len(suffix)] in metrics:
            return True
    return False


def interpolate(
    states: list[PredictedState], t: float, tol: float = 1.0
) -> tuple[dict[str, float], float] | None:
    """Metrics and confidence of a member's trajectory at ``t`` (linear, no extrapolation)."""
    if not states:
        return None
    if t < states[0].t - tol or t > states[-1].t + tol:
        return None
    for i, s in enumerate(states):
        if abs(s.t - t) <= tol:
            return dict(s.metrics), s.confidence
        if s.t > t and i > 0:
            a, b = states[i - 1], s
            f = (t - a.t) / (b.t - a.t)
            metrics = {
                k: a.metrics[k] + f * (b.metrics[k] - a.metrics[k])
                for k in a.metrics
                if k in b.metrics
            }
            return metrics, a.confidence + f * (b.confidence - a.confidence)
    return None


@dataclass(slots=True)
class Fused(Generic[R]):
    """A fused answer, whether the members agreed, and each member's effective share."""

    result: R
    agreed: bool
    effective: dict[str, float]


def member_shares(
    good: list[Outcome], weights: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """(normalised configured weights, normalised weight × confidence) of the contributors."""
    w = {o.name: weights.get(o.name, OTHER_WEIGHT) for o in good}
    tw = sum(w.values())
    base = {n: (v / tw if tw > 0 else 1.0 / len(w)) for n, v in w.items()}
    eff = {o.name: w[o.name] * max(0.0, float(o.result.confidence)) for o in good}
    te = sum(eff.values())
    eff = {n: (v / te) for n, v in eff.items()} if te > 0 else dict(base)
    return base, eff


def member_metadata(
    model: str,
    weights: Mapping[str, float],
    good: list[Outcome],
    dropped: dict[str, str],
    eff: dict[str, float],
) -> dict[str, str]:
    """Which members contributed (weights, confidences), which were dropped and why."""
    meta = {
        "model": model,
        "members": ",".join(o.name for o in good),
        "weights": ",".join(f"{o.name}={weights.get(o.name, OTHER_WEIGHT):g}" for o in good),
        "dropped": ",".join(dropped),
    }
    for o in good:
        p = f"member.{o.name}"
        meta[f"{p}.weight"] = f"{weights.get(o.name, OTHER_WEIGHT):g}"
        meta[f"{p}.confidence"] = f"{float(o.result.confidence):.4g}"
        meta[f"{p}.effective_weight"] = f"{eff.get(o.name, 0.0):.4g}"
        meta[f"{p}.latency_ms"] = f"{o.latency * 1000:.1f}"
    for n, why in dropped.items():
        meta[f"dropped.{n}"] = why
    return meta


def fuse_simulations(
    good: list[Outcome],
    weights: Mapping[str, float],
    consensus: Consensus,
) -> Fused[SimulationResult]:
    """One simulation from the members' answers (at least one, all successful)."""
    base, eff = member_shares(good, weights)
    order = sorted(good, key=lambda o: -eff[o.name])
    grid = [s.t for s in sorted(order[0].result.future_states, key=lambda s: s.t)]
    trajectories = {o.name: sorted(o.result.future_states, key=lambda s: s.t) for o in good}
    spreads: list[float] = []
    states: list[PredictedState] = []
    envelopes: list[dict[str, tuple[float, float]]] = []
    for t in grid:
        points = {n: interpolate(tr, t) for n, tr in trajectories.items()}
        at = {n: v for n, v in points.items() if v is not None}
        names = sorted(
            {k for metrics, _ in at.values() for k in metrics if not is_bound(k, metrics)}
        )
        fused: dict[str, float] = {}
        envelope: dict[str, tuple[float, float]] = {}
        for k in names:
            vals = [
                (n, metrics, conf)
                for n, (metrics, conf) in at.items()
                if k in metrics and math.isfinite(metrics[k])
            ]
            if not vals:
                continue
            ws = [weights.get(n, OTHER_WEIGHT) * max(0.0, c) for n, _, c in vals]
            if sum(ws) <= 0:
                ws = [weights.get(n, OTHER_WEIGHT) for n, _, _ in vals]
            total = sum(ws)
            if total <= 0:
                ws, total = [1.0] * len(vals), float(len(vals))
            xs = [m[k] for _, m, _ in vals]
            value = xs[0] if len(vals) == 1 else sum(w * x for w, x in zip(ws, xs)) / total
            fused[k] = value
            # Prediction intervals (``<metric>.lower``/``.upper``, e.g. from the statistical
            # member): weighted mean of the bounds, a member without bounds counting as a
            # point (lower = upper = its value), so the fused interval holds the fused value.
            los = [min(m.get(f"{k}.lower", m[k]), m[k]) for _, m, _ in vals]
            his = [max(m.get(f"{k}.upper", m[k]), m[k]) for _, m, _ in vals]
            if any(f"{k}.lower" in m or f"{k}.upper" in m for _, m, _ in vals):
                fused[f"{k}.lower"] = (
                    los[0] if len(vals) == 1 else sum(w * x for w, x in zip(ws, los)) / total
                )
                fused[f"{k}.upper"] = (
                    his[0] if len(vals) == 1 else sum(w * x for w, x in zip(ws, his)) / total
                )
            if len(vals) >= 2:
                envelope[k] = (min(los), max(his))
                spreads.append((max(xs) - min(xs)) / max(abs(value), 1e-9))
        wsum = sum(weights.get(n, OTHER_WEIGHT) for n in at)
        conf = (
            sum(weights.get(n, OTHER_WEIGHT) * c for n, (_, c) in at.items()) / wsum
            if wsum > 0
            else 0.0
        )
        states.append(PredictedState(t, fused, conf, "fused from " + ", ".join(sorted(at))))
        envelopes.append(envelope)
    mean_spread = sum(spreads) / len(spreads) if spreads else math.nan
    max_spread = max(spreads) if spreads else math.nan
    n = len(good)
    cons = consensus
    if n < cons.min_models:
        agreed, why = False, f"only {n} member(s) answered (consensus needs {cons.min_models})"
    elif n == 1:
        agreed, why = True, "single member answered (settings.consensus.min_models <= 1)"
    elif not spreads:
        agreed, why = False, "the members predicted no metric in common"
    elif mean_spread > cons.agreement_threshold:
        agreed, why = (
            False,
            f"members disagree: mean relative spread {mean_spread:.1%} > "
            f"{cons.agreement_threshold:.0%} (max {max_spread:.1%})",
        )
    else:
        agreed, why = (
            True,
            f"consensus of {n} members: mean relative spread {mean_spread:.1%} <= "
            f"{cons.agreement_threshold:.0%}",
        )
    confidence = sum(base[o.name] * float(o.result.confidence) for o in good)
    if not agreed:
        confidence *= cons.penalty
        for st, env in zip(states, envelopes):
            st.confidence *= cons.penalty
            # Disagreement: every metric's interval widens to cover all members.
            for k, (lo, hi) in env.items():
                st.metrics[f"{k}.lower"] = min(lo, st.metrics.get(f"{k}.lower", lo))
                st.metrics[f"{k}.upper"] = max(hi, st.metrics.get(f"{k}.upper", hi))
    # The result-level band: members declaring ``uncertainty_metric`` (the statistical
    # model) give an interval of that metric's value - then it is the fused interval
    # of that metric at the horizon; otherwise it is a band around the confidence.
    unc_metric = next(
        (
            o.result.metadata.get("uncertainty_metric")
            for o in order
            if o.result.metadata.get("uncertainty_metric")
        ),
        None,
    )
    last = states[-1].metrics if states else {}
    if unc_metric and f"{unc_metric}.lower" in last:
        lower, upper = last[f"{unc_metric}.lower"], last[f"{unc_metric}.upper"]
    else:
        unc_metric = None
        banded = [o for o in good if not o.result.metadata.get("uncertainty_metric")] or good
        if agreed:
            tw = sum(eff[o.name] for o in banded) or 1.0
            lower = sum(eff[o.name] * float(o.result.uncertainty_lower) for o in banded) / tw
            upper = sum(eff[o.name] * float(o.result.uncertainty_upper) for o in banded) / tw
        else:
            lower = min(float(o.result.uncertainty_lower) for o in banded)
            upper = max(float(o.result.uncertainty_upper) for o in banded)
        lower, upper = min(lower, confidence), max(upper, confidence)
    impacts = [(o, o.result.impact) for o in good if o.result.impact is not None]
    impact = None
    if impacts:
        tw = sum(eff[o.name] for o, _ in impacts) or 1.0
        impact = Impact(
            sum(eff[o.name] * i.cost_impact for o, i in impacts) / tw,
            sum(eff[o.name] * i.performance_impact for o, i in impacts) / tw,
            sum(eff[o.name] * i.reliability_impact for o, i in impacts) / tw,
            impacts[0][1].cost_currency,
            "; ".join(
                f"[{o.name}] {i.impact_description}" for o, i in impacts if i.impact_description
            ),
        )
    shares = ", ".join(f"{o.name} {eff[o.name]:.2f}" for o in order)
    explanation = (
        f"hybrid simulation fused from {shares} (weight x confidence); "
        + (why if agreed else f"NO CONSENSUS - {why}; confidence lowered x{cons.penalty:g}")
        + "".join(f" | [{o.name}] {o.result.explanation}" for o in order if o.result.explanation)
    )
    meta: dict[str, str] = {}
    meta.update(
        {
            "fusion": "confidence_weighted_mean",
            "consensus": str(agreed).lower(),
            "consensus_reason": why,
            "agreement.mean_relative_spread": ""
            if math.isnan(mean_spread)
            else f"{mean_spread:.4g}",
            "agreement.max_relative_spread": "" if math.isnan(max_spread) else f"{max_spread:.4g}",
            "time_grid": order[0].name,
        }
    )
    if unc_metric:
        meta["uncertainty_metric"] = unc_metric
    custom = {"members_contributing": float(n), "consensus": 1.0 if agreed else 0.0}
    if spreads:
        custom["mean_relative_spread"] = mean_spread
        custom["max_relative_spread"] = max_spread
    result = SimulationResult(
        True,
        states,
        confidence,
        lower,
        upper,
        explanation,
        impact,
        meta,
        custom,
        sum(o.result.scenarios_processed for o in good),
    )
    return Fused(result, agreed, eff)


def fuse_diagnoses(
    good: list[Outcome],
    weights: Mapping[str, float],
    consensus: Consensus,
    hypothesis_match: float,
) -> Fused[DiagnosisResult]:
    """One diagnosis from the members' answers (at least one, all with hypotheses)."""
    base, eff = member_shares(good, weights)
    order = sorted(good, key=lambda o: -eff[o.name])
    groups: list[_Group] = []
    tops: dict[str, _Group] = {}
    for o in order:
        hyps = sorted(o.result.hypotheses, key=lambda h: -h.probability)
        total = sum(max(0.0, h.probability) for h in hyps)
        scale = 1.0 / total if total > 1.0 else 1.0  # a member's probabilities may not sum above 1
        for i, h in enumerate(hyps):
            tk = tokens(h.hypothesis)
            best, best_sim = None, 0.0
            for g in groups:
                if o.name in g.texts:
                    continue
                sim = jaccard(tk, g.tokens)
                if sim > best_sim:
                    best, best_sim = g, sim
            if best is None or best_sim < hypothesis_match:
                best = _Group(tokens=set(tk))
                groups.append(best)
            best.texts[o.name] = h
            contribution = eff[o.name] * max(0.0, h.probability) * scale
            best.contributions[o.name] = contribution
            best.probability += contribution
            if i == 0:
                tops[o.name] = best
    groups.sort(key=lambda g: -g.probability)
    hypotheses = []
    for rank, g in enumerate(groups, 1):
        lead = max(g.contributions, key=lambda n: g.contributions[n])
        h0 = g.texts[lead]
        evidence: list[str] = []
        for n in g.texts:
            for e in g.texts[n].evidence:
                if e not in evidence:
                    evidence.append(e)
        reasoning = f"supported by {', '.join(f'{n} ({g.contributions[n]:.3f})' for n in g.texts)}"
        reasoning += "".join(
            f" | [{n}] {g.texts[n].reasoning}" for n in g.texts if g.texts[n].reasoning
        )
        hypotheses.append(
            Hypothesis(h0.hypothesis, round(g.probability, 12), reasoning, evidence[:10], rank)
        )
    top = groups[0]
    support = sum(eff[name] for name, g in tops.items() if g is top)
    answered = len(good)
    cons = consensus
    if answered < cons.min_models:
        agreed, why = (
            False,
            f"only {answered} member(s) answered (consensus needs {cons.min_models})",
        )
    elif support < cons.min_top_agreement:
        agreed, why = (
            False,
            f"members disagree on the top hypothesis: {support:.0%} of the weight supports it (< "
            f"{cons.min_top_agreement:.0%})",
        )
    else:
        agreed, why = (
            True,
            f"consensus of {answered} members: {support:.0%} of the weight has the same top "
            "hypothesis",
        )
    confidence = sum(base[o.name] * float(o.result.confidence) for o in good)
    if not agreed:
        confidence *= cons.penalty
    lead_member = next((o for o in order if tops.get(o.name) is top), order[0])
    supporting: list[str] = []
    for o in order:
        for e in o.result.supporting_evidence:
            if e not in supporting:
                supporting.append(e)
    shares = ", ".join(f"{o.name} {eff[o.name]:.2f}" for o in order)
    explanation = (
        f"hybrid diagnosis: hypotheses of {shares} (weight x confidence) merged and re-ranked; "
        + (why if agreed else f"NO CONSENSUS - {why}; confidence lowered x{cons.penalty:g}")
    )
    meta: dict[str, str] = {}
    meta.update(
        {
            "fusion": "linear_opinion_pool",
            "consensus": str(agreed).lower(),
            "consensus_reason": why,
            "agreement.top_support": f"{support:.4g}",
            "hypotheses_merged": str(sum(len(g.texts) for g in groups) - len(groups)),
        }
    )
    result = DiagnosisResult(
        True,
        hypotheses,
        lead_member.result.causal_chain,
        confidence,
        explanation,
        supporting[:20],
        meta,
    )
    return Fused(result, agreed, eff)


def fuse_plan_outcomes(
    good: list[Outcome], weights: Mapping[str, float], consensus: Consensus
) -> list[PlanOutcome]:
    """Plan outcomes of a "compare" fused per plan across the members that ranked plans.

    Per plan: its future states are fused like a simulation (``fuse_simulations`` over the
    members' outcomes of that plan); utility and SLO breach probability are the
    weight × confidence mean of the members' figures; then the plans are ranked again by
    the fused utility. Members that answered without plan outcomes take no part.
    """
    ranked = [o for o in good if o.result.plan_outcomes]
    if not ranked:
        return []
    order: list[str] = []
    for o in ranked:
        for p in sorted(o.result.plan_outcomes, key=lambda p: p.rank):
            if p.plan_id not in order:
                order.append(p.plan_id)
    fused: list[PlanOutcome] = []
    for pid in order:
        per = [
            (o, next(p for p in o.result.plan_outcomes if p.plan_id == pid))
            for o in ranked
            if any(p.plan_id == pid for p in o.result.plan_outcomes)
        ]
        sims = [
            Outcome(
                o.name,
                SimulationResult(
                    True, p.future_states, p.confidence, impact=p.impact, explanation=p.explanation
                ),
            )
            for o, p in per
        ]
        f = fuse_simulations(sims, weights, consensus)
        ws = {o.name: weights.get(o.name, OTHER_WEIGHT) * max(0.0, p.confidence) for o, p in per}
        total = sum(ws.values()) or float(len(per))
        share = {n: (w / total if sum(ws.values()) > 0 else 1.0 / len(per)) for n, w in ws.items()}
        util = sum(share[o.name] * p.utility for o, p in per)
        breach = sum(share[o.name] * p.slo_breach_probability for o, p in per)
        parts: dict[str, float] = {}
        for o, p in per:
            for k, v in p.parts.items():
                parts[k] = parts.get(k, 0.0) + share[o.name] * v
        text = f"{pid}: utility {util:.4g} fused from " + ", ".join(
            f"{o.name} {p.utility:.4g} (share {share[o.name]:.2f})" for o, p in per
        )
        text += ("" if f.agreed else "; members disagree on its future states") + "".join(
            f" | [{o.name}] {p.explanation}" for o, p in per
        )
        fused.append(
            PlanOutcome(
                pid,
                0,
                util,
                breach,
                f.result.future_states,
                f.result.impact,
                f.result.confidence,
                text,
                list(per[0][1].actions),
                parts,
            )
        )
    idx = sorted(range(len(fused)), key=lambda i: (-fused[i].utility, len(fused[i].actions), i))
    for r, i in enumerate(idx, 1):
        fused[i].rank = r
    return fused
