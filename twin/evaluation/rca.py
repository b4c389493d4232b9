"""Root-cause diagnosis accuracy on labelled incidents: ``polaris-twin eval rca``.

Each case directory holds ``metrics.csv`` (``timestamp,<service>/<metric>,...``, unix
seconds, empty cells = missing) and ``case.json`` (``system``, ``fault_start`` and the
labels). For every case a *fresh* twin is built in process, the metrics are ingested
as telemetry through ``TwinRuntime.ingest_points`` (the NATS ingestion path), and the
incident is diagnosed through the same mapping as the ``Diagnose`` RPC: a proto
``DiagnosisRequest`` → ``mapping.to_diagnosis`` → ``model.diagnose`` →
``mapping.from_diagnosis``; the ranking is read from the response's hypotheses.

Ranking reads only ``metrics.csv`` and the ``system``/``fault_start`` of ``case.json``
(:func:`load_case_input`). Labels are read afterwards by :func:`load_labels` for
scoring alone. Services whose names start with ``_`` are never ranked nor scored.

Scores (service level): AC@k = share of cases whose root cause is in the top k,
Avg@5 = mean of AC@1..AC@5; overall, per ``fault_type`` and per ``fault_class``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.evaluation.replay import ranking_of, replay_and_diagnose

__all__ = [
    "CaseInput",
    "configure_parser",
    "default_rca_dir",
    "diagnose_case",
    "list_cases",
    "load_case_input",
    "load_labels",
    "main",
    "rank_cases",
    "ranking_of",
    "run",
    "score",
]


def default_rca_dir() -> Path:
    """``$POLARIS_RCA_DIR`` or ``<repo>/../shared/rca/nezha-ob``."""
    env = os.environ.get("POLARIS_RCA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "rca" / "nezha-ob"


@dataclass(slots=True)
class CaseInput:
    """Everything the ranking may see of a case."""

    case_id: str
    system: str
    fault_start: float
    points: list[Any] = field(default_factory=list)  # twin.core.events.Point


def list_cases(cases_dir: Path, limit: int | None = None) -> list[Path]:
    dirs = sorted(
        p
        for p in Path(cases_dir).iterdir()
        if p.is_dir() and (p / "metrics.csv").is_file() and (p / "case.json").is_file()
    )
    return dirs[:limit] if limit else dirs


def _metric_name(raw: str) -> str:
    from twin.core.events import normalise_name

    return normalise_name(raw)


def load_case_input(case_dir: Path) -> CaseInput:
    """Reads ``metrics.csv`` and only ``system`` + ``fault_start`` from ``case.json``."""
    from twin.core.events import Point

    meta = json.loads((case_dir / "case.json").read_text())
    system = str(meta.get("system") or "")
    fault_start = float(meta["fault_start"])
    del meta  # nothing else of case.json is used for ranking
    points: list[Point] = []
    with open(case_dir / "metrics.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols: list[tuple[int, str, str]] = []
        for j, h in enumerate(header[1:], 1):
            src, sep, metric = h.partition("/")
            if not sep or not src or not metric:
                continue
            cols.append((j, src, _metric_name(metric)))
        for row in reader:
            if not row or not row[0]:
                continue
            t = float(row[0])
            for j, src, metric in cols:
                cell = row[j] if j < len(row) else ""
                if cell == "":
                    continue
                try:
                    v = float(cell)
                except ValueError:
                    continue
                if math.isfinite(v):
                    points.append(Point(src, metric, t, v, "unknown", None))
    return CaseInput(case_dir.name, system, fault_start, points)


def load_labels(case_dir: Path) -> dict[str, Any]:
    """The labels, for scoring only (never passed to the ranking)."""
    meta = json.loads((case_dir / "case.json").read_text())
    rc = meta.get("root_cause") or {}
    return {
        "root_cause": rc.get("service") if isinstance(rc, dict) else rc,
        "fault_type": meta.get("fault_type") or "unknown",
        "fault_class": meta.get("fault_class") or "unknown",
    }


# --------------------------------------------------------------------------- the twin


def _request(case: CaseInput, description: str = "") -> Any:
    from twin._proto import digital_twin_pb2 as pb
    from twin.core.events import iso

    return pb.DiagnosisRequest(
        diagnosis_id=f"rca-{case.case_id}",
        anomaly_description=description
        or f"incident on {case.system or 'the system'} at {iso(case.fault_start)}",
        timestamp=iso(case.fault_start),
        context={"system": case.system} if case.system else {},
    )


def _chunks(points: list[Any], size: int = 5000) -> list[list[Any]]:
    return [points[i : i + size] for i in range(0, len(points), size)]


async def diagnose_case(case: CaseInput, description: str = "") -> tuple[list[str], Any]:
    """Fresh twin → ingest → Diagnose (RPC mapping) → (ranking, proto response)."""
    out = await replay_and_diagnose(_chunks(case.points), _request(case, description))
    return out.ranking, out.response


@dataclass(slots=True)
class CaseRun:
    """What one case's diagnosis produced (nothing here was derived from its labels)."""

    case_id: str
    fault_start: float
    ranking: list[str]
    probabilities: dict[str, float]  # service -> hypothesis probability
    no_incident: float | None  # probability of the "no incident" answer, if the model gives one
    diagnosis_input: Any = None  # diagnosis.DiagnosisInput, when gathered for cross-validation


def progress(items: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
    """A progress bar on stderr (tqdm, from the ``tools`` extra) when there is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(
        items,
        total=total,
        desc=desc,
        unit="case" if "case" in desc else "it",
        disable=None,
        leave=False,
    )


async def run_cases(
    case_dirs: Sequence[Path], gather_config: Any = None, show_progress: bool = True
) -> list[CaseRun]:
    """Every case through a fresh twin; with ``gather_config`` (a ``DiagnosisConfig``) also
    the diagnosis input gathered from the twin's state under that config's windows."""
    from twin.evaluation.replay import NO_INCIDENT_PREFIX, service_of

    out: list[CaseRun] = []
    it: Iterable[Path] = (
        progress(case_dirs, len(case_dirs), "eval rca cases") if show_progress else case_dirs
    )
    for d in it:
        case = load_case_input(d)
        inspect = None
        if gather_config is not None:
            from twin.models.statistical.diagnosis import gather

            def inspect(rt: Any, case: CaseInput = case) -> Any:
                return gather(
                    rt.state, case.fault_start, gather_config, rt.model.anomaly_scores, case.system
                )

        rep = await replay_and_diagnose(_chunks(case.points), _request(case), inspect)
        probs: dict[str, float] = {}
        none_p: float | None = None
        for h in rep.response.hypotheses:
            if h.hypothesis.lower().startswith(NO_INCIDENT_PREFIX):
                none_p = float(h.probability)
            else:
                probs.setdefault(service_of(h), float(h.probability))
        out.append(
            CaseRun(case.case_id, case.fault_start, rep.ranking, probs, none_p, rep.inspected)
        )
    return out


async def rank_cases(case_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """``{case_id, ranking}`` per case (no progress bar)."""
    runs = await run_cases(list(case_dirs), show_progress=False)
    return [{"case_id": r.case_id, "ranking": r.ranking} for r in runs]


# --------------------------------------------------------------------------- scoring


def _acc(ranks: Sequence[int]) -> dict[str, float]:
    n = len(ranks)
    if not n:
        return {"n": 0, "AC@1": math.nan, "AC@3": math.nan, "Avg@5": math.nan}
    ac = {k: sum(1 for r in ranks if 0 < r <= k) / n for k in range(1, 6)}
    return {"n": n, "AC@1": ac[1], "AC@3": ac[3], "Avg@5": sum(ac.values()) / 5.0}


def score(rankings: Sequence[dict[str, Any]], labels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """AC@1/AC@3/Avg@5 overall, per fault_type and per fault_class."""
    ranks: list[int] = []
    by_type: dict[str, list[int]] = {}
    by_class: dict[str, list[int]] = {}
    per_case = []
    for r in rankings:
        lab = labels[r["case_id"]]
        ranking = [s for s in r["ranking"] if not s.startswith("_")]
        rc = lab["root_cause"]
        rank = ranking.index(rc) + 1 if rc in ranking else 0
        ranks.append(rank)
        by_type.setdefault(lab["fault_type"], []).append(rank)
        by_class.setdefault(lab["fault_class"], []).append(rank)
        per_case.append(
            {
                "case_id": r["case_id"],
                "rank": rank,
                "root_cause": rc,
                "fault_type": lab["fault_type"],
            }
        )
    return {
        "overall": _acc(ranks),
        "fault_type": {k: _acc(v) for k, v in sorted(by_type.items())},
        "fault_class": {k: _acc(v) for k, v in sorted(by_class.items())},
        "cases": per_case,
    }


def format_report(rep: dict[str, Any], elapsed: float) -> str:
    def row(name: str, a: dict[str, float]) -> str:
        return f"{name:<22} {a['n']:>4} {a['AC@1']:6.2f} {a['AC@3']:6.2f} {a['Avg@5']:6.2f}"

    lines = [
        f"{'':<22} {'n':>4} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6}",
        row("overall", rep["overall"]),
        "",
    ]
    lines += ["per fault_type"] + [row(k, v) for k, v in rep["fault_type"].items()] + [""]
    lines += ["per fault_class"] + [row(k, v) for k, v in rep["fault_class"].items()] + [""]
    lines.append(f"{rep['overall']['n']} cases in {elapsed:.1f}s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``polaris-twin eval rca``."""
    p.add_argument(
        "--cases",
        type=Path,
        default=default_rca_dir(),
        help="directory of <case_id>/{metrics.csv,case.json}",
    )
    p.add_argument(
        "--results", type=Path, default=None, help="write one JSON line per case {case_id, ranking}"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N cases (sorted by id)")
    p.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of tables"
    )
    p.add_argument(
        "--cv",
        action="store_true",
        help="also cross-validate: leave one fault type out and leave one day out "
        "(knobs chosen on the other folds)",
    )
    p.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="write a summary chart (PNG; needs the 'plot' extra)",
    )


def _cross_validation(
    runs: Sequence[CaseRun], labels: dict[str, dict[str, Any]], show_progress: bool
) -> dict[str, Any]:
    from twin.evaluation import rca_cv

    cands = rca_cv.candidate_configs()
    inputs = {r.case_id: r.diagnosis_input for r in runs}
    rankings = rca_cv.rank_under_candidates(inputs, cands, progress if show_progress else None)
    # The default candidate ranks exactly what the Diagnose RPC answered.
    mismatch = [r.case_id for r in runs if rankings[0][r.case_id][: len(r.ranking)] != r.ranking]
    schemes = {
        "leave-one-fault-type-out": {r.case_id: str(labels[r.case_id]["fault_type"]) for r in runs},
        "leave-one-day-out": {r.case_id: rca_cv.day_of(r.fault_start) for r in runs},
    }
    out: dict[str, Any] = {"candidates": [n for n, _ in cands], "rpc_mismatch": mismatch}
    for name, groups in schemes.items():
        cv = rca_cv.cross_validate(rankings, cands, labels, groups)
        rep = score([{"case_id": c, "ranking": rk} for c, rk in cv["rankings"].items()], labels)
        rep["chosen"] = cv["chosen"]
        out[name] = rep
    return out


def _no_incident_summary(
    runs: Sequence[CaseRun], labels: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The "no incident" probability the diagnosis gave these (faulty) cases, overall and
    per fault type (low is right: every labelled case is an incident)."""
    ps = [
        (r.no_incident, str(labels[r.case_id]["fault_type"]))
        for r in runs
        if r.no_incident is not None
    ]
    if not ps:
        return None
    vals = [p for p, _ in ps]
    by: dict[str, list[float]] = {}
    for p, ft in ps:
        by.setdefault(ft, []).append(p)
    return {
        "n": len(vals),
        "mean": sum(vals) / len(vals),
        "max": max(vals),
        "share_above_half": sum(p > 0.5 for p in vals) / len(vals),
        "by_fault_type": {k: sum(v) / len(v) for k, v in sorted(by.items())},
    }


def run(args: argparse.Namespace) -> int:
    cases_dir = Path(args.cases)
    if not cases_dir.is_dir():
        print(f"RCA cases not found: {cases_dir}", file=sys.stderr)
        return 2
    dirs = list_cases(cases_dir, args.limit)
    if not dirs:
        print(f"no cases in {cases_dir}", file=sys.stderr)
        return 2
    want_cv = bool(getattr(args, "cv", False))
    show = not getattr(args, "json", False)
    gather_cfg = None
    if want_cv:
        from twin.evaluation.rca_cv import candidate_configs, widest

        gather_cfg = widest(candidate_configs())
    t_start = time.perf_counter()
    runs = asyncio.run(run_cases(dirs, gather_cfg, show_progress=show))
    rankings = [{"case_id": r.case_id, "ranking": r.ranking} for r in runs]
    elapsed = time.perf_counter() - t_start
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "w") as f:
            for r in rankings:
                f.write(json.dumps({"case_id": r["case_id"], "ranking": r["ranking"]}) + "\n")
    # Labels are read only now, for scoring (and, with --cv, for choosing on training folds).
    labels = {d.name: load_labels(d) for d in dirs}
    rep = score(rankings, labels)
    none = _no_incident_summary(runs, labels)
    if none is not None:
        rep["no_incident_probability"] = none
    if want_cv:
        rep["cv"] = _cross_validation(runs, labels, show)
    elapsed = time.perf_counter() - t_start
    if getattr(args, "chart", None):
        from twin.evaluation.rca_chart import write_chart

        write_chart(Path(args.chart), rep, title=f"eval rca: {cases_dir.name} ({len(runs)} cases)")
    if getattr(args, "json", False):
        print(json.dumps({**rep, "elapsed_sec": elapsed}, indent=2, default=float))
        return 0
    print(format_report(rep, elapsed))
    if none is not None:
        print(
            f"\n'no incident' probability on these (faulty) cases: mean {none['mean']:.2f}, "
            f"max {none['max']:.2f}, "
            f"share > 0.5: {none['share_above_half']:.2f}; by fault type: "
            + ", ".join(f"{k} {v:.2f}" for k, v in none["by_fault_type"].items())
        )
    if want_cv:
        from twin.evaluation.rca_cv import format_cv

        cv = rep["cv"]
        rows = [
            ("in-sample", rep),
            ("leave-1-type-out", cv["leave-one-fault-type-out"]),
            ("leave-1-day-out", cv["leave-one-day-out"]),
        ]
        print()
        print(format_cv(rows, list(rep["fault_type"]), len(cv["candidates"])))
        if cv["rpc_mismatch"]:
            print(
                "WARNING: the pure ranking differs from the RPC's on "
                f"{len(cv['rpc_mismatch'])} case(s): {cv['rpc_mismatch'][:5]}"
            )
    if getattr(args, "chart", None):
        print(f"chart: {args.chart}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twin.evaluation.rca", description=__doc__.splitlines()[0]
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
