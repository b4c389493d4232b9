"""Replay one incident into a fresh in-process twin and diagnose it through the RPC mapping.

Shared by ``eval rca`` (real incidents from CSV) and the generated fault scenarios
(``twin.tools.scenarios``): a fresh ``TwinRuntime`` with the statistical world model, the
telemetry applied through ``TwinRuntime.ingest_points`` (the NATS ingestion path),
execution results through ``state.apply_execution`` plus the model's update, and then a
proto ``DiagnosisRequest`` → ``mapping.to_diagnosis`` → ``model.diagnose`` →
``mapping.from_diagnosis``. There is no fallback model: if the statistical model cannot
be built the evaluation fails rather than silently measuring something else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twin.core.events import ExecutionResult, Point, to_epoch

__all__ = [
    "NO_INCIDENT_PREFIX",
    "Feed",
    "Replayed",
    "make_runtime",
    "ranking_of",
    "replay_and_diagnose",
    "service_of",
]

#: A feed is telemetry chunks (lists of decoded points) and execution results, in event time order.
Feed = Iterable[list[Point] | ExecutionResult]

#: Hypotheses that say "nothing is wrong" start with this (see ``diagnosis.NO_INCIDENT``).
NO_INCIDENT_PREFIX = "no incident"


def make_runtime() -> Any:
    """A fresh in-process twin with the statistical world model."""
    from twin.core.config import load_config
    from twin.runtime import TwinRuntime

    # One case at a time: compute runs in threads (a worker pool per fresh twin would cost
    # more to start than the diagnosis it runs; the results are the same).
    overrides = {
        "digital_twin": {
            "world_model": {"implementation": "statistical"},
            "performance": {"compute_workers": 0},
        }
    }
    return TwinRuntime(load_config(overrides=overrides, environ={}))


def service_of(h: Any) -> str:
    """The service a hypothesis blames ("" for a no-incident hypothesis)."""
    text = h.hypothesis
    if text.lower().startswith(NO_INCIDENT_PREFIX):
        return ""
    for marker in (" is the root cause", " is the likely root cause"):
        if marker in text:
            return text.split(marker, 1)[0].strip()
    for ev in h.evidence:
        if "/" in ev:
            return ev.split("/", 1)[0].strip()
    return text.split()[0] if text.split() else ""


def ranking_of(resp: Any) -> list[str]:
    """Services named by a proto ``DiagnosisResponse``'s hypotheses, best first (no ``_`` ones)."""
    ranking: list[str] = []
    for h in sorted(resp.hypotheses, key=lambda h: h.rank):
        svc = service_of(h)
        if svc and not svc.startswith("_") and svc not in ranking:
            ranking.append(svc)
    return ranking


@dataclass(slots=True)
class Replayed:
    ranking: list[str]
    response: Any  # proto DiagnosisResponse
    inspected: Any = None  # what ``inspect`` returned (read from the twin before shutdown)


async def replay_and_diagnose(
    feed: Feed,
    request: Any,
    inspect: Callable[[Any], Any] | None = None,
) -> Replayed:
    """Fresh twin → feed → Diagnose (proto ``request``, RPC mapping) → ranking + response.

    ``inspect(runtime)``, if given, runs after the diagnosis and before the twin shuts
    down (an evaluation may read the state, e.g. to gather the diagnosis input)."""
    from twin.models.base import EventBatch
    from twin.service import mapping

    rt = make_runtime()
    await rt.initialize()
    try:
        for item in feed:
            if isinstance(item, ExecutionResult):
                t = to_epoch(item.finished_at, to_epoch(item.started_at, 0.0))
                rec = rt.state.apply_execution(item, t)
                rt.model.update(EventBatch((), (rec,), ()))
            elif item:
                rt.ingest_points(item)
        dreq = mapping.to_diagnosis(request)
        res = await rt.model.diagnose(dreq)
        resp = mapping.from_diagnosis(dreq.diagnosis_id, res)
        seen = inspect(rt) if inspect is not None else None
    finally:
        await rt.shutdown()
    return Replayed(ranking_of(resp), resp, seen)
