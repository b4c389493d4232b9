"""Exemplar output into a twin: in process (``Point``s and ``ActionRecord``s through the
runtime, as the NATS ingestor applies them) or over NATS in the wire formats."""

from __future__ import annotations

from typing import Any

import orjson

from twin.core.events import Point, decode_execution, normalise_name, parse_time
from twin.tools.exemplars.systems import Segment


def points(events: list[dict[str, Any]]) -> list[Point]:
    """Telemetry event dicts as ingestion ``Point``s (same normalisation as the decoder)."""
    times: dict[str, float] = {}
    out = []
    for ev in events:
        ts = ev["timestamp"]
        t = times.get(ts)
        if t is None:
            t = times[ts] = parse_time(ts)
        out.append(
            Point(
                ev["source"],
                normalise_name(ev["name"]),
                t,
                float(ev["value"]),
                ev.get("unit", "unknown"),
                None,
            )
        )
    return out


def feed(rt: Any, seg: Segment, batch: int = 500) -> None:
    """Applies a segment to an in-process ``TwinRuntime``: telemetry and execution results
    in event-time order, each execution result decoded from its JSON like a NATS message."""
    from twin.models.domain import EventBatch

    pts = points(seg.telemetry)
    execs = sorted(((parse_time(e["finished_at"]), e) for e in seg.executions), key=lambda x: x[0])
    i = 0
    for t_exec, ex in execs + [(float("inf"), None)]:
        j = i
        while j < len(pts) and pts[j].t < t_exec:
            j += 1
        for k in range(i, j, batch):
            rt.ingest_points(pts[k : min(j, k + batch)])
        i = j
        if ex is not None:
            rec = rt.state.apply_execution(decode_execution(orjson.dumps(ex)), t_exec)
            rt.model.update(EventBatch((), (rec,), ()))


async def publish(nc: Any, seg: Segment, batch: int = 100) -> int:
    """Publishes a segment on the original subjects (telemetry batches, execution results)."""
    import uuid

    n = 0
    events = seg.telemetry
    for k in range(0, len(events), batch):
        chunk = events[k : k + batch]
        await nc.publish(
            "polaris.telemetry.events.batch",
            orjson.dumps({"batch_id": str(uuid.uuid4()), "count": len(chunk), "events": chunk}),
        )
        n += len(chunk)
    for ex in seg.executions:
        await nc.publish("polaris.execution.results", orjson.dumps(ex))
        n += 1
    await nc.flush()
    return n
