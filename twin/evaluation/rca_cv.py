"""Cross-validation of the diagnosis on labelled incidents (``polaris-twin eval rca --cv``).

The diagnosis has knobs whose values were chosen on the design cases
(``diagnosis.TUNABLE``). An in-sample score says how well those choices fit the cases
they were chosen on; cross-validation says how well *the way they are chosen* carries to
cases it did not see. For each fold, one of the candidate configurations (the shipped
default, and each knob moved to each of its alternatives, one at a time) is selected on
the *other* folds' cases (objective: AC@1 + Avg@5, ties to the earlier candidate, i.e.
the default) and scored on the held-out fold. The held-out ranks of all folds are pooled
into AC@1 / AC@3 / Avg@5, overall and per fault type.

Two groupings:

* **leave one fault type out**: the choice is made without any case of the held-out
  fault type (how a new kind of fault fares);
* **leave one day out**: the choice is made on the other days' incidents (the UTC day
  of ``fault_start``).

Each case is ranked once per candidate with the pure ``rank_services`` on the input
gathered from the case's twin (the same input the ``Diagnose`` RPC ranked; the default
candidate's ranking equals the RPC's, which ``eval rca --cv`` checks). Labels are read
only for selection on the training folds and for scoring.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from twin.models.statistical.diagnosis import (
    DEFAULT_CONFIG,
    TUNABLE,
    DiagnosisConfig,
    DiagnosisInput,
    rank_services,
)

__all__ = [
    "Candidate",
    "candidate_configs",
    "cross_validate",
    "day_of",
    "format_cv",
    "rank_under_candidates",
]

Candidate = tuple[str, DiagnosisConfig]


def candidate_configs(
    base: DiagnosisConfig = DEFAULT_CONFIG, tunable: Mapping[str, Sequence[float]] = TUNABLE
) -> list[Candidate]:
    """The default first, then every knob moved to each of its other values, one at a time."""
    out: list[Candidate] = [("default", base)]
    for knob, values in tunable.items():
        cur = getattr(base, knob)
        for v in values:
            if v != cur:
                changes: dict[str, object] = {knob: v}
                cfg: DiagnosisConfig = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
                out.append((f"{knob}={v:g}", cfg))
    return out


def widest(candidates: Sequence[Candidate]) -> DiagnosisConfig:
    """A config whose windows cover every candidate's (to gather the input once)."""
    base = candidates[0][1]
    return dataclasses.replace(
        base,
        baseline_sec=max(c.baseline_sec for _, c in candidates),
        horizon_sec=max(c.horizon_sec for _, c in candidates),
    )


def rank_under_candidates(
    inputs: Mapping[str, DiagnosisInput],
    candidates: Sequence[Candidate],
    progress: Callable[[Iterable[Any], int, str], Iterable[Any]] | None = None,
) -> list[dict[str, list[str]]]:
    """For each candidate, the ranking (service names, best first) of every case."""
    out: list[dict[str, list[str]]] = []
    items = list(enumerate(candidates))
    it: Iterable[Any] = progress(items, len(items), "cv candidates") if progress else items
    for _i, (_name, cfg) in it:
        out.append(
            {cid: [s.service for s in rank_services(inp, cfg)[0]] for cid, inp in inputs.items()}
        )
    return out


def _rank(ranking: Sequence[str], truth: str) -> int:
    r = [s for s in ranking if not s.startswith("_")]
    return r.index(truth) + 1 if truth in r else 0


def _objective(ranks: Sequence[int]) -> float:
    if not ranks:
        return -math.inf
    n = len(ranks)
    ac = [sum(1 for r in ranks if 0 < r <= k) / n for k in range(1, 6)]
    return ac[0] + sum(ac) / 5.0


def day_of(fault_start: float) -> str:
    return datetime.fromtimestamp(fault_start, UTC).strftime("%Y-%m-%d")


def cross_validate(
    rankings: Sequence[Mapping[str, Sequence[str]]],
    candidates: Sequence[Candidate],
    labels: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, str],
) -> dict[str, Any]:
    """Leave-one-group-out selection among ``candidates``; returns the pooled held-out
    rankings (``{case_id: ranking}``) and the candidate chosen per fold."""
    cases = sorted(groups)
    truth = {c: str(labels[c]["root_cause"]) for c in cases}
    ranks = [{c: _rank(r[c], truth[c]) for c in cases} for r in rankings]
    held: dict[str, list[str]] = {}
    chosen: dict[str, str] = {}
    for g in sorted(set(groups.values())):
        train = [c for c in cases if groups[c] != g]
        test = [c for c in cases if groups[c] == g]
        best, best_obj = 0, -math.inf
        for i in range(len(candidates)):
            obj = _objective([ranks[i][c] for c in train])
            if obj > best_obj + 1e-12:
                best, best_obj = i, obj
        chosen[g] = candidates[best][0]
        for c in test:
            held[c] = list(rankings[best][c])
    return {"rankings": held, "chosen": chosen}


def format_cv(
    rows: Sequence[tuple[str, dict[str, Any]]], fault_types: Sequence[str], n_candidates: int
) -> str:
    """Overall and per-fault-type tables, one column group per scheme."""

    def cell(a: dict[str, Any]) -> str:
        return f"{a['AC@1']:6.2f} {a['AC@3']:6.2f} {a['Avg@5']:6.2f}"

    names = [n for n, _ in rows]
    head = f"{'':<22} {'n':>4} " + " | ".join(f"{n:^20}" for n in names)
    sub = f"{'':<22} {'':>4} " + " | ".join(f"{'AC@1':>6} {'AC@3':>6} {'Avg@5':>6}" for _ in names)
    lines = [
        f"cross-validation: {n_candidates} candidate configs; "
        "each fold's config is chosen on the other folds",
        head,
        sub,
        f"{'overall':<22} {rows[0][1]['overall']['n']:>4} "
        + " | ".join(cell(r["overall"]) for _, r in rows),
        "per fault_type",
    ]
    for ft in fault_types:
        n = rows[0][1]["fault_type"][ft]["n"]
        lines.append(f"{ft:<22} {n:>4} " + " | ".join(cell(r["fault_type"][ft]) for _, r in rows))
    for name, r in rows:
        if r.get("chosen"):
            lines.append(
                f"{name}: chosen per held-out fold: "
                + ", ".join(f"{g} -> {c}" for g, c in r["chosen"].items())
            )
    return "\n".join(lines)
