"""Random microservice systems: reproducible, varied, and the diagnosis finds resource and
error faults on systems it was not designed on (different names, sizes and call graphs)."""

from __future__ import annotations

import asyncio

import pytest

from twin._proto import digital_twin_pb2 as pb
from twin.core.events import iso
from twin.evaluation.replay import replay_and_diagnose
from twin.tools.random_systems import KINDS, generate_system


def test_reproducible_and_varied() -> None:
    a, b = generate_system(7, "cpu"), generate_system(7, "cpu")
    assert a.points == b.points and a.root_cause == b.root_cause and a.calls == b.calls
    sizes = {len(generate_system(s).services) for s in range(8)}
    assert len(sizes) > 3 and min(sizes) >= 12 and max(sizes) <= 40
    rs = generate_system(3, "delay")
    assert rs.root_cause in rs.services and any(rs.root_cause in c for c in rs.calls.values())
    assert all(p.source in rs.services for p in rs.points[:500])
    with pytest.raises(ValueError):
        generate_system(1, "nope")
    assert {generate_system(s).kind for s in range(8)} == set(KINDS)


def test_diagnosis_on_random_systems() -> None:
    async def rank(seed: int, kind: str) -> int:
        rs = generate_system(seed, kind)
        req = pb.DiagnosisRequest(diagnosis_id=f"rs-{seed}", timestamp=iso(rs.fault_t))
        out = await replay_and_diagnose([rs.points], req)
        return out.ranking.index(rs.root_cause) + 1 if rs.root_cause in out.ranking else 0

    async def go() -> list[int]:
        return [
            await rank(100 + i, kind)
            for i, kind in enumerate(["cpu", "errors", "cpu", "errors", "memory", "memory"])
        ]

    ranks = asyncio.run(go())
    assert sum(r == 1 for r in ranks) >= 5, ranks  # the bench shows 1.00 / 1.00 / 0.90-1.00 on 40
